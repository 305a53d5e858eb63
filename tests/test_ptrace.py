"""xcr0tool.sources.ptrace against live processes: a C child with known register values, gdb,
and tracers that get in the way.

The child (compiled with gcc at test time) runs THREADS workers; worker i loads
qword q of vector register r with value(i, r, q) and opmask k_j with kvalue(i, j), then
counts and sleeps in raw system calls for ever, so no C code can disturb the registers.
Each worker's counter lives in a shared file: a counter that moves is a thread that runs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_cpu import compile_c

from xcr0tool.errors import InputError
from xcr0tool.sources import cpu
from xcr0tool.sources.ptrace import LiveThread, explain_refusal, read_process_xstate

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not cpu.is_x86_64_linux(), reason="needs Linux on x86-64")

SLOT_CHURN, SLOT_SIGUSR1, SLOT_VFORK = 500, 501, 502

CHILD_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { ISA_SSE, ISA_AVX, ISA_AVX512 };
enum { SLOT_CHURN = 500, SLOT_SIGUSR1 = 501, SLOT_VFORK = 502 };

static volatile uint64_t *counters;
static int isa;

struct worker { int index; uint64_t regs[32 * 8]; uint64_t k[8]; };

static uint64_t value(int thread, int reg, int q) {
    return 0xA500000000000000ULL | (uint64_t)thread << 40 | (uint64_t)reg << 24
         | (uint64_t)q << 8 | 0x5A;
}

static void fill(struct worker *w) {
    for (int r = 0; r < 32; r++)
        for (int q = 0; q < 8; q++) w->regs[r * 8 + q] = value(w->index, r, q);
    for (int j = 0; j < 8; j++) w->k[j] = 0xC0DE000000000000ULL | (uint64_t)w->index << 16 | j;
}

/* Count, then sleep 1 ms, in raw system calls, for ever. */
#define SLEEP_LOOP \
    "1:\n\t" \
    "lock incq (%1)\n\t" \
    "mov $35, %%eax\n\t" \
    "mov %2, %%rdi\n\t" \
    "xor %%esi, %%esi\n\t" \
    "syscall\n\t" \
    "jmp 1b\n"
#define CLOBBERS "rax", "rcx", "rdi", "rsi", "r11", "memory"

#define X(n, o) "movdqu " #o "(%0), %%xmm" #n "\n\t"
#define Y(n, o) "vmovdqu " #o "(%0), %%ymm" #n "\n\t"
#define Z(n, o) "vmovdqu64 " #o "(%0), %%zmm" #n "\n\t"

static void __attribute__((noreturn)) hold(struct worker *w) {
    static const struct timespec ms = {0, 1000000};
    volatile uint64_t *ctr = &counters[w->index];
    if (isa == ISA_SSE) {
        __asm__ volatile(
            X(0,0) X(1,64) X(2,128) X(3,192) X(4,256) X(5,320) X(6,384) X(7,448)
            X(8,512) X(9,576) X(10,640) X(11,704) X(12,768) X(13,832) X(14,896) X(15,960)
            SLEEP_LOOP :: "r"(w->regs), "r"(ctr), "r"(&ms) : CLOBBERS);
    } else if (isa == ISA_AVX) {
        __asm__ volatile(
            Y(0,0) Y(1,64) Y(2,128) Y(3,192) Y(4,256) Y(5,320) Y(6,384) Y(7,448)
            Y(8,512) Y(9,576) Y(10,640) Y(11,704) Y(12,768) Y(13,832) Y(14,896) Y(15,960)
            SLEEP_LOOP :: "r"(w->regs), "r"(ctr), "r"(&ms) : CLOBBERS);
    } else {
        __asm__ volatile(
            "kmovq 0(%3), %%k0\n\t" "kmovq 8(%3), %%k1\n\t" "kmovq 16(%3), %%k2\n\t"
            "kmovq 24(%3), %%k3\n\t" "kmovq 32(%3), %%k4\n\t" "kmovq 40(%3), %%k5\n\t"
            "kmovq 48(%3), %%k6\n\t" "kmovq 56(%3), %%k7\n\t"
            Z(0,0) Z(1,64) Z(2,128) Z(3,192) Z(4,256) Z(5,320) Z(6,384) Z(7,448)
            Z(8,512) Z(9,576) Z(10,640) Z(11,704) Z(12,768) Z(13,832) Z(14,896) Z(15,960)
            Z(16,1024) Z(17,1088) Z(18,1152) Z(19,1216) Z(20,1280) Z(21,1344) Z(22,1408)
            Z(23,1472) Z(24,1536) Z(25,1600) Z(26,1664) Z(27,1728) Z(28,1792) Z(29,1856)
            Z(30,1920) Z(31,1984)
            SLEEP_LOOP :: "r"(w->regs), "r"(ctr), "r"(&ms), "r"(w->k) : CLOBBERS);
    }
    __builtin_unreachable();
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    printf("tid %d %ld\n", w->index, (long)syscall(SYS_gettid));
    fflush(stdout);
    hold(w);
}

static void *noop(void *arg) { return arg; }

static void *churn_main(void *arg) {
    (void)arg;
    for (;;) {
        pthread_t t;
        if (pthread_create(&t, NULL, noop, NULL) == 0) pthread_join(t, NULL);
        __atomic_add_fetch(&counters[SLOT_CHURN], 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

/* A thread blocked in vfork() cannot stop until the vfork child is gone: a real
 * way (posix_spawn does this) to keep a tracer waiting with threads attached. */
static int vfork_seconds;
static int vfork_child(void *arg) {
    (void)arg;
    static const char msg[] = "vfork-blocked\n";
    if (write(1, msg, sizeof msg - 1) < 0) syscall(SYS_exit, 1);
    struct timespec ts = {vfork_seconds, 0};
    nanosleep(&ts, NULL);
    syscall(SYS_exit, 0);
    return 0;
}

static void *vfork_main(void *arg) {
    (void)arg;
    static char stack[64 * 1024] __attribute__((aligned(16)));
    pid_t child = clone(vfork_child, stack + sizeof stack, CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
    waitpid(child, NULL, 0);
    counters[SLOT_VFORK] = 1;
    for (;;) pause();
    return NULL;
}

static void on_usr1(int sig) {
    (void)sig;
    __atomic_add_fetch(&counters[SLOT_SIGUSR1], 1, __ATOMIC_RELAXED);
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    /* Let any process of ours attach even under Yama ptrace_scope 1: the readers in
     * these tests are siblings, not ancestors. Fails harmlessly without Yama. */
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    int fd = open(argv[1], O_RDWR);
    counters = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (counters == MAP_FAILED) { perror("mmap"); return 2; }
    int n = atoi(argv[2]);
    isa = !strcmp(argv[3], "avx512") ? ISA_AVX512 : !strcmp(argv[3], "avx") ? ISA_AVX : ISA_SSE;
    int churners = 0, leader_exit = 0;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "churn")) churners = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "vfork")) vfork_seconds = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "leader-exit")) leader_exit = atoi(argv[i + 1]);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    static struct worker workers[64];
    for (int i = 0; i < n && i < 64; i++) { workers[i].index = i; fill(&workers[i]); }
    for (int i = 1; i < n && i < 64; i++) {
        pthread_t t;
        pthread_create(&t, NULL, worker_main, &workers[i]);
    }
    for (int i = 0; i < churners; i++) { pthread_t t; pthread_create(&t, NULL, churn_main, NULL); }
    if (vfork_seconds) { pthread_t t; pthread_create(&t, NULL, vfork_main, NULL); }
    printf("ready\n");
    fflush(stdout);
    if (leader_exit) pthread_exit(NULL);
    worker_main(&workers[0]);
    return 0;
}
"""

TRACER_C = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

/* tinytracer TID: PTRACE_ATTACH one thread, let it run on, hold on to it. */
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    pid_t tid = atoi(argv[1]);
    if (ptrace(PTRACE_ATTACH, tid, 0, 0) != 0) { perror("PTRACE_ATTACH"); return 1; }
    int status;
    if (waitpid(tid, &status, __WALL) < 0) { perror("waitpid"); return 1; }
    ptrace(PTRACE_CONT, tid, 0, 0); /* swallow only our own attach SIGSTOP */
    printf("attached\n");
    fflush(stdout);
    for (;;) {
        if (waitpid(tid, &status, __WALL) < 0) { pause(); continue; }
        if (WIFSTOPPED(status)) ptrace(PTRACE_CONT, tid, 0, WSTOPSIG(status));
    }
}
"""


def value(thread: int, reg: int, q: int) -> int:
    return 0xA5 << 56 | thread << 40 | reg << 24 | q << 8 | 0x5A


def kvalue(thread: int, j: int) -> int:
    return 0xC0DE << 48 | thread << 16 | j


# ---------------------------------------------------------------- building and running


@pytest.fixture(scope="session")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("ptrace_bin")
    purpose = "cannot build the test child"
    return {
        "xstate_child": compile_c(
            work, "xstate_child", CHILD_C, "-Wall", "-pthread", purpose=purpose
        ),
        "tinytracer": compile_c(work, "tinytracer", TRACER_C, "-Wall", purpose=purpose),
    }


def host_isa() -> str:
    """The widest register set this CPU and OS let the child load (its "avx512" uses
    kmovq, so it needs AVX512BW as well as AVX512F)."""
    xcr0 = cpu.xgetbv(0) if cpu.cpuid(1)[2] & 1 << 27 else 0
    avx = cpu.cpuid(1)[2] & 1 << 28 and xcr0 & 0b110 == 0b110
    ebx7 = cpu.cpuid(7)[1] if cpu.cpuid(0)[0] >= 7 else 0
    avx512 = ebx7 & 1 << 16 and ebx7 & 1 << 30 and xcr0 & 0xE6 == 0xE6
    return "avx512" if avx512 else "avx" if avx else "sse"


ISA_ORDER = ["sse", "avx", "avx512"]


def need_isa(isa: str) -> None:
    have = host_isa()
    if ISA_ORDER.index(isa) > ISA_ORDER.index(have):
        pytest.skip(f"this CPU/OS only allows {have} registers (CPUID and XCR0), not {isa}")


class Child:
    """The C child: its pid, its workers' tids, and its counters."""

    def __init__(self, binary: Path, workdir: Path, threads: int, isa: str, *extra: str) -> None:
        self.counter_file = workdir / f"counters-{time.monotonic_ns()}"
        self.counter_file.write_bytes(bytes(4096))
        self.proc = subprocess.Popen(
            [str(binary), str(self.counter_file), str(threads), isa, *extra],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid
        self.isa = isa
        self.lines: list[str] = []
        self.workers: dict[int, int] = {}  # worker index -> tid
        leader_exit = "leader-exit" in extra
        want = threads - 1 if leader_exit else threads
        self.read_until(lambda: len(self.workers) == want and "ready" in self.lines)
        indices = list(self.workers)
        self.wait_for(lambda: all(self.counter(i) > 0 for i in indices), "workers to start")

    def read_until(self, done: Callable[[], bool]) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 10
        while not done() and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"child exited: {self.proc.wait()}")
            line = line.strip()
            self.lines.append(line)
            if line.startswith("tid "):
                _, index, tid = line.split()
                self.workers[int(index)] = int(tid)

    @staticmethod
    def wait_for(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.01)

    def counter(self, slot: int) -> int:
        with open(self.counter_file, "rb") as handle:
            handle.seek(8 * slot)
            return int(struct.unpack("<Q", handle.read(8))[0])

    def tasks(self) -> list[int]:
        return sorted(int(t) for t in os.listdir(f"/proc/{self.pid}/task"))

    def status(self, tid: int, key: str) -> str:
        try:
            text = Path(f"/proc/{self.pid}/task/{tid}/status").read_text()
        except OSError:
            return ""
        match = re.search(rf"^{key}:\s*(.*)$", text, re.M)
        return match.group(1).strip() if match else ""

    def assert_untraced(self) -> None:
        for tid in self.tasks():
            tracer = self.status(tid, "TracerPid")
            assert tracer in ("", "0"), f"thread {tid} is still traced by {tracer}"

    def assert_released_but(self, victim: int) -> None:
        """Every thread but `victim` is untraced, and every worker runs on."""
        for tid in self.tasks():
            if tid != victim:
                assert self.status(tid, "TracerPid") == "0"
        self.assert_runs_on()

    def assert_runs_on(self) -> None:
        before = {i: self.counter(i) for i in self.workers}
        self.wait_for(
            lambda: all(self.counter(i) > before[i] + 5 for i in self.workers),
            "every worker to run on",
            timeout=5,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


Spawn = Callable[..., Child]
Tracer = Callable[[int], int]


@pytest.fixture
def spawn(binaries: dict[str, Path], tmp_path: Path) -> Iterator[Spawn]:
    children: list[Child] = []

    def start(threads: int, isa: str = "sse", *extra: str) -> Child:
        child = Child(binaries["xstate_child"], tmp_path, threads, isa, *extra)
        children.append(child)
        return child

    yield start
    for child in children:
        child.stop()


# ---------------------------------------------------------------- checking images


def qwords(image: bytes, offset: int, count: int) -> tuple[int, ...]:
    return struct.unpack_from(f"<{count}Q", image, offset)


def check_image(thread: LiveThread, index: int, isa: str) -> None:
    table = cpu.leaf_0d()
    image = thread.xstate
    xcr0 = cpu.xgetbv(0)
    assert len(image) == table[0][1]  # the kernel's user XSAVE size is CPUID's for XCR0
    xstate_bv, xcomp_bv = qwords(image, 512, 2)
    assert xcomp_bv == 0  # ptrace always gives the standard format
    assert qwords(image, 464, 1)[0] == xcr0  # the kernel puts its XCR0 there
    assert xstate_bv & 0b10
    for r in range(16):
        assert qwords(image, 160 + 16 * r, 2) == (value(index, r, 0), value(index, r, 1)), r
    if isa in ("avx", "avx512"):
        assert xstate_bv & 0b100
        ymm = table[2][1]
        for r in range(16):
            assert qwords(image, ymm + 16 * r, 2) == (value(index, r, 2), value(index, r, 3))
    if isa == "avx512":
        assert xstate_bv & 0xE0 == 0xE0
        opmask, hi256, hi16 = table[5][1], table[6][1], table[7][1]
        assert qwords(image, opmask, 8) == tuple(kvalue(index, j) for j in range(8))
        for r in range(16):
            want = tuple(value(index, r, q) for q in range(4, 8))
            assert qwords(image, hi256 + 32 * r, 4) == want, f"zmm{r} upper half"
        for r in range(16, 32):
            want = tuple(value(index, r, q) for q in range(8))
            assert qwords(image, hi16 + 64 * (r - 16), 8) == want, f"zmm{r}"


# ---------------------------------------------------------------- reading


@pytest.mark.parametrize("isa", ISA_ORDER)
def test_every_thread_with_its_registers(spawn: Spawn, isa: str) -> None:
    need_isa(isa)
    child = spawn(4, isa)
    notes: list[str] = []
    threads = read_process_xstate(child.pid, f"pid:{child.pid}", notes)
    assert notes == []
    assert [t.tid for t in threads] == [child.workers[i] for i in range(4)]
    by_tid = {tid: index for index, tid in child.workers.items()}
    for thread in threads:
        check_image(thread, by_tid[thread.tid], isa)
    child.assert_untraced()
    child.assert_runs_on()


GDB_VIEWS = {  # isa: (register, how many, gdb's qword view)
    "sse": ("xmm", 16, "v2_int64"),
    "avx": ("ymm", 16, "v4_int64"),
    "avx512": ("zmm", 32, "v8_int64"),
}


def gdb_registers(pid: int, isa: str, workdir: Path) -> dict[int, list[tuple[int, ...]]]:
    """{tid: [each vector register as qwords, then k0..k7 for avx512]}, as gdb reads them."""
    reg, count, view = GDB_VIEWS[isa]
    names = [f"${reg}{i}.{view}" for i in range(count)]
    if isa == "avx512":
        names += [f"$k{j}" for j in range(8)]
    script = workdir / "registers.py"
    script.write_text(
        "import gdb\n"
        "for t in gdb.selected_inferior().threads():\n"
        "    t.switch()\n"
        f"    regs = [gdb.parse_and_eval(n).format_string(format='x') for n in {names!r}]\n"
        "    print('REGS', t.ptid[1], '|'.join(regs))\n"
    )
    run = subprocess.run(
        ["gdb", "-batch", "-nx", "-p", str(pid), "-x", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found: dict[int, list[tuple[int, ...]]] = {}
    for line in run.stdout.splitlines():
        if line.startswith("REGS "):
            _, tid, regs = line.split(" ", 2)
            found[int(tid)] = [
                tuple(int(x, 16) for x in re.findall(r"0x[0-9a-f]+", r)) for r in regs.split("|")
            ]
    assert found, run.stdout + run.stderr
    return found


def gdb_major() -> int:
    version = subprocess.run(["gdb", "--version"], check=False, capture_output=True, text=True)
    first = version.stdout
    match = re.search(r"(\d+)\.\d+", first.splitlines()[0] if first else "")
    return int(match.group(1)) if match else 0


def our_registers(image: bytes, isa: str) -> list[tuple[int, ...]]:
    """The same registers as gdb_registers(), assembled from our image by CPUID offsets."""
    table = cpu.leaf_0d()
    regs = []
    for r in range(32 if isa == "avx512" else 16):
        if r < 16:
            value = qwords(image, 160 + 16 * r, 2)
            if isa != "sse":
                value += qwords(image, table[2][1] + 16 * r, 2)
            if isa == "avx512":
                value += qwords(image, table[6][1] + 32 * r, 4)
        else:
            value = qwords(image, table[7][1] + 64 * (r - 16), 8)
        regs.append(value)
    if isa == "avx512":
        regs += [(k,) for k in qwords(image, table[5][1], 8)]
    return regs


@pytest.mark.gdb
@pytest.mark.parametrize("isa", ISA_ORDER)
def test_equals_gdb_for_every_thread(spawn: Spawn, tmp_path: Path, isa: str) -> None:
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed")
    need_isa(isa)
    # only an "avx512" run (need_isa let it through: XCR0 has opmask) may read sub-leaf 5;
    # a CPU without AVX-512 has none
    opmask = cpu.leaf_0d()[5][1] if isa == "avx512" else 1088
    if opmask != 1088 and gdb_major() < 14:
        # Seen here: gdb 13.1 on Zen 4 shows $k3 = zmm6's top qword.
        pytest.skip(
            f"gdb {gdb_major()} reads AVX-512 state at Intel's fixed offsets (opmask at 1088); "
            f"this CPU puts opmask at {opmask}, so gdb, not xcr0tool, would be wrong"
        )
    child = spawn(3, isa)
    ours = read_process_xstate(child.pid, f"pid:{child.pid}")
    child.assert_untraced()
    theirs = gdb_registers(child.pid, isa, tmp_path)
    assert sorted(theirs) == [t.tid for t in ours]
    for thread in ours:
        assert theirs[thread.tid] == our_registers(thread.xstate, isa), f"thread {thread.tid}"
    child.assert_untraced()
    child.assert_runs_on()


def test_a_thread_id_reads_its_whole_process(spawn: Spawn) -> None:
    child = spawn(3)
    tid = child.workers[2]
    notes: list[str] = []
    threads = read_process_xstate(tid, f"pid:{tid}", notes)
    assert notes == [
        f"{tid} is a thread of process {child.pid}: reading every thread of {child.pid}"
    ]
    assert [t.tid for t in threads] == [child.workers[i] for i in range(3)]
    child.assert_untraced()


def test_stopped_process_stays_stopped(spawn: Spawn) -> None:
    child = spawn(3)
    os.kill(child.pid, signal.SIGSTOP)
    child.wait_for(
        lambda: all(child.status(t, "State").startswith("T") for t in child.tasks()),
        "the group-stop",
    )
    threads = read_process_xstate(child.pid, f"pid:{child.pid}")
    by_tid = {tid: index for index, tid in child.workers.items()}
    for thread in threads:
        check_image(thread, by_tid[thread.tid], "sse")
    child.assert_untraced()
    # back in the group-stop (a detached thread re-enters it as it wakes up): no
    # SIGSTOP swallowed, none added
    child.wait_for(
        lambda: all(child.status(t, "State").startswith("T (stopped)") for t in child.tasks()),
        "the group-stop to resume",
        timeout=2,
    )
    frozen = {i: child.counter(i) for i in child.workers}
    time.sleep(0.1)
    assert {i: child.counter(i) for i in child.workers} == frozen
    os.kill(child.pid, signal.SIGCONT)
    child.assert_runs_on()


def test_threads_that_come_and_go(spawn: Spawn) -> None:
    """Threads created and exiting all the time: every read succeeds, skips the dead."""
    child = spawn(3, "sse", "churn", "4")
    by_tid = {tid: index for index, tid in child.workers.items()}
    notes: list[str] = []
    reads = 0
    deadline = time.monotonic() + 20
    while reads < 200 and time.monotonic() < deadline:
        threads = read_process_xstate(child.pid, f"pid:{child.pid}", notes)
        reads += 1
        seen = {t.tid for t in threads}
        assert set(by_tid) <= seen
        for thread in threads:
            if thread.tid in by_tid:
                check_image(thread, by_tid[thread.tid], "sse")
        if reads >= 50 and notes:
            break
    child.assert_untraced()
    churn = child.counter(SLOT_CHURN)
    child.assert_runs_on()
    # The churning thread goes on too (waited for: on a loaded machine it may not have
    # been scheduled since the last read).
    child.wait_for(lambda: child.counter(SLOT_CHURN) > churn, "the churn to go on", timeout=10)
    # no thread left behind as a traced zombie
    assert not [t for t in child.tasks() if child.status(t, "State").startswith(("Z", "t"))]
    pattern = r"thread \d+ (exited before it could be attached|exited during the read|"
    pattern += (
        r"has exited \(zombie\)|vanished during the read|was killed during the read); skipped"
    )
    assert all(re.fullmatch(pattern, note) for note in notes), notes
    assert notes, f"no thread exited during {reads} reads of a churning process"


def test_main_thread_exited(spawn: Spawn) -> None:
    child = spawn(3, "sse", "leader-exit", "1")
    child.wait_for(lambda: child.status(child.pid, "State").startswith("Z"), "a zombie leader")
    notes: list[str] = []
    threads = read_process_xstate(child.pid, f"pid:{child.pid}", notes)
    assert notes == [f"thread {child.pid} has exited (zombie); skipped"]
    assert [t.tid for t in threads] == [child.workers[1], child.workers[2]]
    for thread in threads:
        check_image(thread, 1 if thread.tid == child.workers[1] else 2, "sse")
    child.assert_untraced()
    child.assert_runs_on()


READER = """
import os, sys
from xcr0tool.errors import InputError
from xcr0tool.sources.ptrace import read_process_xstate
pid = int(sys.argv[1])
try:
    threads = read_process_xstate(pid, f"pid:{pid}")
except InputError as exc:
    print(exc)
    sys.exit(4)
except KeyboardInterrupt:
    # checked here, while this tracer still lives: its exit would detach anyway
    tracers = [open(f"/proc/{pid}/task/{t}/status").read().split("TracerPid:")[1].split()[0]
               for t in os.listdir(f"/proc/{pid}/task")]
    print("KeyboardInterrupt", ",".join(tracers))
    sys.exit(3)
print("read", len(threads))
"""


def reader_held_by_vfork(
    spawn: Spawn, threads: int, script: str = READER
) -> tuple[Child, subprocess.Popen[str]]:
    """A child with a thread blocked in vfork(), and a `script` reading it in another
    process: attached, and kept waiting for that thread to stop."""
    child = spawn(threads, "sse", "vfork", "2")
    child.read_until(lambda: "vfork-blocked" in child.lines)
    reader = subprocess.Popen(
        [sys.executable, "-c", script, str(child.pid)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child.wait_for(lambda: child.status(child.pid, "TracerPid") == str(reader.pid), "the attach")
    return child, reader


@pytest.mark.slow
def test_slow_thread_signals_are_delivered(spawn: Spawn) -> None:
    """A thread blocked in vfork() stops late; a signal sent meanwhile still arrives."""
    child, reader = reader_held_by_vfork(spawn, 2)
    os.kill(child.pid, signal.SIGUSR1)
    out, err = reader.communicate(timeout=30)
    assert reader.returncode == 0, err
    assert out.split() == ["read", "3"]  # worker 0 (the main thread), worker 1, the vfork thread
    assert child.counter(SLOT_VFORK) == 1
    child.wait_for(lambda: child.counter(SLOT_SIGUSR1) == 1, "SIGUSR1 to be handled")
    child.assert_untraced()
    child.assert_runs_on()


@pytest.mark.slow
def test_sigint_while_attached(spawn: Spawn) -> None:
    """Ctrl-C during the read: every thread is detached first, then KeyboardInterrupt."""
    child, reader = reader_held_by_vfork(spawn, 2)
    # The reader is now attached and waiting for the vfork thread to stop. Press
    # Ctrl-C twice: a reader that let the first one through would be cleaning up
    # (waiting to detach) when the second one hits it.
    (blocked,) = set(child.tasks()) - set(child.workers.values())
    reader.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert child.status(blocked, "TracerPid") == str(reader.pid)
    reader.send_signal(signal.SIGINT)
    out, err = reader.communicate(timeout=30)
    assert reader.returncode == 3, err
    word, tracers = out.split()
    assert word == "KeyboardInterrupt"
    assert set(tracers.split(",")) == {"0"}
    child.assert_untraced()
    child.assert_runs_on()


@pytest.mark.slow
def test_process_killed_during_the_read(spawn: Spawn) -> None:
    """SIGKILL while attached: the reader reaps every thread and says so, it does not hang.

    The main thread of a killed process cannot be reaped before its other threads, and
    only the tracer can reap those: a reader blocked on the main thread would deadlock.
    """
    child, reader = reader_held_by_vfork(spawn, 3)
    child.proc.kill()
    out, err = reader.communicate(timeout=30)
    assert (reader.returncode, out.strip()) == (
        4,
        f"pid:{child.pid}: the process has exited; nothing to read",
    ), err
    assert child.proc.wait(timeout=10) == -signal.SIGKILL


# ---------------------------------------------------------------- refusals


@pytest.fixture
def tracer(binaries: dict[str, Path]) -> Iterator[Tracer]:
    started: list[subprocess.Popen[str]] = []

    def attach(tid: int) -> int:
        proc = subprocess.Popen(
            [str(binaries["tinytracer"]), str(tid)], stdout=subprocess.PIPE, text=True
        )
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "attached"
        return proc.pid

    yield attach
    for proc in started:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_already_traced_process(spawn: Spawn, tracer: Tracer) -> None:
    child = spawn(2)
    other = tracer(child.pid)
    with pytest.raises(InputError) as caught:
        read_process_xstate(child.pid, f"pid:{child.pid}")
    assert str(caught.value) == (
        f"pid:{child.pid}: already traced by pid {other} (tinytracer); detach it first"
    )
    # the main thread is refused first; nothing of ours stays attached anywhere
    assert child.status(child.pid, "TracerPid") == str(other)
    assert child.status(child.workers[1], "TracerPid") == "0"


def test_already_traced_thread_releases_the_others(spawn: Spawn, tracer: Tracer) -> None:
    """An error after some threads are attached: those are detached and run on."""
    child = spawn(4)
    victim = max(child.workers.values())  # seized last: the others are attached by then
    other = tracer(victim)
    with pytest.raises(InputError) as caught:
        read_process_xstate(child.pid, f"pid:{child.pid}")
    assert str(caught.value) == (
        f"pid:{child.pid}: thread {victim} already traced by pid {other} (tinytracer); "
        "detach it first"
    )
    child.assert_released_but(victim)


@pytest.mark.gdb
@pytest.mark.slow
def test_already_traced_by_gdb(spawn: Spawn) -> None:
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed")
    child = spawn(2)
    gdb = subprocess.Popen(
        ["gdb", "-batch", "-nx", "-p", str(child.pid), "-ex", "python import time; time.sleep(2)"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        child.wait_for(lambda: child.status(child.pid, "TracerPid") == str(gdb.pid), "gdb")
        with pytest.raises(InputError) as caught:
            read_process_xstate(child.pid, f"pid:{child.pid}")
        assert str(caught.value) == (
            f"pid:{child.pid}: already traced by pid {gdb.pid} (gdb); detach it first"
        )
    finally:
        gdb.wait(timeout=60)
    child.assert_untraced()
    child.assert_runs_on()


def test_no_such_process() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert not os.path.exists(f"/proc/{gone.pid}")
    with pytest.raises(InputError) as caught:
        read_process_xstate(gone.pid, f"pid:{gone.pid}")
    assert str(caught.value) == f"pid:{gone.pid}: no such process (ESRCH); check the pid"


def test_ourselves() -> None:
    pid = os.getpid()
    with pytest.raises(InputError) as caught:
        read_process_xstate(pid, f"pid:{pid}")
    assert str(caught.value) == f"pid:{pid}: cannot trace ourselves; use the source `self`"


def test_kernel_thread() -> None:
    kthreadd = 2
    if Path("/proc/2/comm").read_text().strip() != "kthreadd":
        pytest.skip("pid 2 is not kthreadd here (a pid namespace?)")
    with pytest.raises(InputError) as caught:
        read_process_xstate(kthreadd, "pid:2")
    assert str(caught.value) == "pid:2: a kernel thread: it has no user XSAVE state to read"


def test_other_user_is_refused(spawn: Spawn) -> None:
    """A real EPERM: a process running as another uid, read without CAP_SYS_PTRACE."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    child = spawn(2)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        message = "no error"
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            read_process_xstate(child.pid, f"pid:{child.pid}")
        except InputError as exc:
            message = str(exc)
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as handle:
        message = handle.read().decode()
    os.waitpid(pid, 0)
    assert message == (
        f"pid:{child.pid}: permission denied: the process runs as uid 0 and we as uid 65534; "
        "run as root or as uid 0"
    )
    child.assert_untraced()


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (
            {"tracer_pid": 1234, "tracer_comm": "gdb"},
            "already traced by pid 1234 (gdb); detach it first",
        ),
        ({"tracer_pid": 1234, "tracer_comm": None}, "already traced by pid 1234; detach it first"),
        (
            {"tracer_pid": 77, "tracer_comm": "strace", "thread": 12},
            "thread 12 already traced by pid 77 (strace); detach it first",
        ),
        (
            {"yama_scope": 1},
            "Yama ptrace_scope is 1: run as root, or `sudo sysctl kernel.yama.ptrace_scope=0`",
        ),
        (
            {"yama_scope": 2},
            "Yama ptrace_scope is 2: only root (CAP_SYS_PTRACE) may attach; run as root",
        ),
        (
            {"yama_scope": 3, "privileged": True},
            "Yama ptrace_scope is 3: attaching is disabled until reboot",
        ),
        (
            {"yama_scope": 1, "target_uids": (0, 0, 0)},
            "permission denied: the process runs as uid 0 and we as uid 1000; "
            "run as root or as uid 0",
        ),
        (
            {"yama_scope": 1, "privileged": True},
            "permission denied (EPERM): the process is not dumpable (set-user-ID, or "
            "PR_SET_DUMPABLE 0) or a security module refuses; run as root",
        ),
        (
            {"yama_scope": 0},
            "permission denied (EPERM): the process is not dumpable (set-user-ID, or "
            "PR_SET_DUMPABLE 0) or a security module refuses; run as root",
        ),
    ],
)
def test_refusal_explanations(facts: dict[str, object], expected: str) -> None:
    base: dict[str, object] = {
        "tracer_pid": 0,
        "tracer_comm": None,
        "yama_scope": None,
        "privileged": False,
        "our_uid": 1000,
        "target_uids": (1000, 1000, 1000),
    }
    base.update(facts)
    assert explain_refusal(**base) == expected  # type: ignore[arg-type]
