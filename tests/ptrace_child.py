"""The ptrace tests' C child and tracer (tests/unit/sources/test_ptrace.py,
tests/oracles/test_live.py): a child whose workers hold known register values and count
in a shared file, so that "runs on" is seen, not assumed; a tracer that holds a thread.

The child runs THREADS workers; worker i loads qword q of vector register r with
value(i, r, q) and opmask k_j with kvalue(i, j), then counts and sleeps in raw system
calls for ever, so no C code can disturb the registers. The fixtures (`spawn`, `tracer`)
are in tests/conftest.py.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cbuild
import pytest
from paths import REPO

from xcr0tool.sources import cpu

SLOT_CHURN, SLOT_SIGUSR1, SLOT_VFORK, SLOT_RELEASE = 500, 501, 502, 503

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
enum { SLOT_CHURN = 500, SLOT_SIGUSR1 = 501, SLOT_VFORK = 502, SLOT_RELEASE = 503 };

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
 * way (posix_spawn does this) to keep a tracer waiting with threads attached. The
 * vfork child goes when the test says so (SLOT_RELEASE), not after a fixed time that
 * a loaded machine may spend before the tracer is even there; vfork_seconds bounds
 * it for a test that never says so. */
static int vfork_seconds;
static int vfork_child(void *arg) {
    (void)arg;
    static const char msg[] = "vfork-blocked\n";
    if (write(1, msg, sizeof msg - 1) < 0) syscall(SYS_exit, 1);
    static const struct timespec tick = {0, 10000000};
    for (long i = 0; i < vfork_seconds * 100L; i++) {
        if (__atomic_load_n(&counters[SLOT_RELEASE], __ATOMIC_RELAXED)) break;
        nanosleep(&tick, NULL);
    }
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
    int churners = 0, leader_exit = 0, vfork_in_main = 0;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "churn")) churners = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "vfork")) vfork_seconds = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "vfork-main")) vfork_seconds = atoi(argv[i + 1]), vfork_in_main = 1;
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
    if (vfork_seconds && !vfork_in_main) { pthread_t t; pthread_create(&t, NULL, vfork_main, NULL); }
    printf("ready\n");
    fflush(stdout);
    if (leader_exit) pthread_exit(NULL);
    if (vfork_in_main) vfork_main(NULL); /* the main thread is the one that cannot stop */
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


def binaries() -> dict[str, Path]:
    """The child and the tracer, built once per session."""
    purpose = "cannot build the test child"
    return {
        "xstate_child": cbuild.compile_c(
            "xstate_child", CHILD_C, "-Wall", "-pthread", purpose=purpose
        ),
        "tinytracer": cbuild.compile_c("tinytracer", TRACER_C, "-Wall", purpose=purpose),
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
        main_not_a_worker = "leader-exit" in extra or "vfork-main" in extra
        want = threads - 1 if main_not_a_worker else threads
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

    def release_vfork(self) -> None:
        """Let the vfork child (`vfork SECONDS`) exit, and so the vfork() return."""
        with open(self.counter_file, "r+b") as handle:
            handle.seek(8 * SLOT_RELEASE)
            handle.write(struct.pack("<Q", 1))

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
        self.release_vfork()  # a vfork child outlives a killed parent: let it go too
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


Spawn = Callable[..., Child]
Tracer = Callable[[int], int]


def spawning(workdir: Path) -> Iterator[Spawn]:
    """spawn(threads, isa, *extra) -> a running Child; every child is killed at the end."""
    children: list[Child] = []
    child_binary = binaries()["xstate_child"]

    def start(threads: int, isa: str = "sse", *extra: str) -> Child:
        child = Child(child_binary, workdir, threads, isa, *extra)
        children.append(child)
        return child

    yield start
    for child in children:
        child.stop()


def tracing() -> Iterator[Tracer]:
    """tracer(tid) -> the pid of a tinytracer attached to `tid`; killed at the end."""
    started: list[subprocess.Popen[str]] = []
    tracer_binary = binaries()["tinytracer"]

    def attach(tid: int) -> int:
        proc = subprocess.Popen([str(tracer_binary), str(tid)], stdout=subprocess.PIPE, text=True)
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


# How a program in a terminal's foreground meets Ctrl-C: SIGINT neither ignored nor
# blocked, and Python's own handler, which raises KeyboardInterrupt. Set, not inherited:
# pytest started as a background job of a non-interactive shell (`pytest &`, `.ci/run &`)
# has SIGINT ignored (POSIX, Shell Command Language 2.11), an ignored signal stays
# ignored across exec, and Python then installs no handler of its own.
FOREGROUND = """
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
"""


def reader_held_by_vfork(
    spawn: Spawn,
    threads: int,
    script: str = READER,
    prelude: str = FOREGROUND,
    in_main: bool = False,
) -> tuple[Child, subprocess.Popen[str]]:
    """A child with a thread blocked in vfork() (its main thread if `in_main`, which is
    then no worker), and a `script` reading it in another process (after `prelude`,
    which sets how it takes SIGINT): attached to every thread and waiting for that one
    to stop, which it cannot until `child.release_vfork()`."""
    child = spawn(threads, "sse", "vfork-main" if in_main else "vfork", "60")
    child.read_until(lambda: "vfork-blocked" in child.lines)
    reader = subprocess.Popen(
        [sys.executable, "-c", prelude + script, str(child.pid)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child.wait_for(
        lambda: all(child.status(t, "TracerPid") == str(reader.pid) for t in child.tasks()),
        "the reader to attach to every thread",
    )
    return child, reader
