"""xcr0tool.sources.ptrace against live processes: a C child with known register values, gdb,
and tracers that get in the way.

The child (tests/ptrace_child.py, compiled with gcc at test time) runs THREADS workers;
worker i loads qword q of vector register r with value(i, r, q) and opmask k_j with
kvalue(i, j), then counts and sleeps in raw system calls for ever, so no C code can
disturb the registers. Each worker's counter lives in a shared file: a counter that
moves is a thread that runs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from ptrace_child import (
    ISA_ORDER,
    SLOT_CHURN,
    SLOT_SIGUSR1,
    SLOT_VFORK,
    Spawn,
    Tracer,
    kvalue,
    need_isa,
    reader_held_by_vfork,
    value,
)

from xcr0tool.errors import InputError
from xcr0tool.sources import cpu
from xcr0tool.sources.ptrace import LiveThread, explain_refusal, read_process_xstate

pytestmark = [
    pytest.mark.skipif(not cpu.is_x86_64_linux(), reason="needs Linux on x86-64"),
    # One worker runs every test that attaches to a live process, one after another:
    # their children spin (counters, threads that come and go) and they give them
    # seconds to move, which two such tests side by side on a small machine may not.
    pytest.mark.xdist_group("ptrace"),
]


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


@pytest.mark.slow
def test_slow_thread_signals_are_delivered(spawn: Spawn) -> None:
    """A thread blocked in vfork() stops late; a signal sent meanwhile still arrives."""
    child, reader = reader_held_by_vfork(spawn, 2)
    os.kill(child.pid, signal.SIGUSR1)  # queued by the time kill() returns
    child.release_vfork()
    out, err = reader.communicate(timeout=30)
    assert reader.returncode == 0, err
    assert out.split() == ["read", "3"]  # worker 0 (the main thread), worker 1, the vfork thread
    assert child.counter(SLOT_VFORK) == 1
    child.wait_for(lambda: child.counter(SLOT_SIGUSR1) == 1, "SIGUSR1 to be handled")
    child.assert_untraced()
    child.assert_runs_on()


def sigint_held(pid: int) -> bool:
    """SIGINT is pending in process `pid`: blocked, not yet delivered (kill(2) makes it
    pending for the whole process, ShdPnd in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("SigPnd", "ShdPnd") and int(value, 16) >> (signal.SIGINT - 1) & 1:
            return True
    return False


@pytest.mark.slow
def test_sigint_while_attached(spawn: Spawn) -> None:
    """Ctrl-C during the read: every thread is detached first, then KeyboardInterrupt."""
    child, reader = reader_held_by_vfork(spawn, 2)
    # The reader is attached to every thread and waits for the vfork thread to stop,
    # which it cannot before release_vfork(). Press Ctrl-C twice: a reader that let the
    # first one through would be cleaning up (waiting to detach) when the second one
    # hits it.
    (blocked,) = set(child.tasks()) - set(child.workers.values())
    reader.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert child.status(blocked, "TracerPid") == str(reader.pid)
    reader.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert child.status(blocked, "TracerPid") == str(reader.pid)
    assert sigint_held(reader.pid)  # held off while attached, not taken and lost
    child.release_vfork()
    out, err = reader.communicate(timeout=30)
    assert reader.returncode == 3, (out, err)
    word, tracers = out.split()
    assert word == "KeyboardInterrupt"
    assert set(tracers.split(",")) == {"0"}
    child.assert_untraced()
    child.assert_runs_on()


# A SIGINT the reader does not act on, and what it must print (stdout, stderr) then.
NOT_ACTED_ON = {
    # as a background job of a non-interactive shell starts (`xcr0tool ... &` in a script)
    "ignored": (
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n",
        "read 3\n",
        "",
    ),
    # blocked by the caller: still pending for it when the read returns
    "blocked": (
        "import atexit, signal\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
        "atexit.register(lambda: print('pending', signal.SIGINT in signal.sigpending()))\n",
        "read 3\npending True\n",
        "",
    ),
    # a handler that takes note and carries on: called once, after the detach
    "noted": (
        "import signal, sys\n"
        "signal.signal(signal.SIGINT, lambda *_: print('noted', file=sys.stderr))\n",
        "read 3\n",
        "noted\n",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("disposition", sorted(NOT_ACTED_ON))
def test_sigint_not_acted_on_leaves_the_read_alone(spawn: Spawn, disposition: str) -> None:
    """A SIGINT that comes while attached but that the program ignores, blocks or only
    notes is not a Ctrl-C: the read completes, and the signal then does what its
    disposition says. (The kernel queues a blocked signal even when it is ignored.)"""
    prelude, want_out, want_err = NOT_ACTED_ON[disposition]
    child, reader = reader_held_by_vfork(spawn, 2, prelude=prelude)
    reader.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert sigint_held(reader.pid)  # still attached, the signal held off
    child.release_vfork()
    out, err = reader.communicate(timeout=30)
    assert (reader.returncode, out, err) == (0, want_out, want_err)
    assert child.counter(SLOT_VFORK) == 1
    child.assert_untraced()
    child.assert_runs_on()


def test_sigint_as_the_read_starts(spawn: Spawn, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C that came just before the read blocks SIGINT raises KeyboardInterrupt
    from that very pthread_sigmask() call, with SIGINT already blocked (CPython runs
    pending handlers after changing the mask): nothing is attached, and SIGINT is not
    left blocked, or every later Ctrl-C of the caller would be held for ever."""
    child = spawn(2)
    real = signal.pthread_sigmask

    def late_ctrl_c(how: int, mask: Iterable[int]) -> set[signal.Signals]:
        mask = set(mask)
        old = real(how, mask)
        if how == signal.SIG_BLOCK and signal.SIGINT in mask:
            raise KeyboardInterrupt
        return old

    before = real(signal.SIG_BLOCK, ())
    monkeypatch.setattr(signal, "pthread_sigmask", late_ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt):
            read_process_xstate(child.pid, f"pid:{child.pid}")
        assert real(signal.SIG_BLOCK, ()) == before
    finally:
        real(signal.SIG_SETMASK, before)
    child.assert_untraced()


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


@pytest.mark.slow
def test_process_killed_before_its_main_thread_stopped(spawn: Spawn) -> None:
    """SIGKILL while the other threads have stopped and the main thread has not: the
    dead main thread is not reported before they are reaped, and they are zombies only
    the reader can reap. A reader that polled only the threads it still waited for
    (the main thread) waited for ever, its SIGINT held off: seen under load."""
    child, reader = reader_held_by_vfork(spawn, 3, in_main=True)
    workers = list(child.workers.values())
    child.wait_for(
        lambda: all(child.status(t, "State").startswith("t") for t in workers), "the stops"
    )
    time.sleep(0.3)  # the reader collects those stops (it polls every 20 ms at most)
    child.proc.kill()
    out, err = reader.communicate(timeout=30)
    assert (reader.returncode, out.strip()) == (
        4,
        f"pid:{child.pid}: the process has exited; nothing to read",
    ), err
    assert child.proc.wait(timeout=10) == -signal.SIGKILL


# ---------------------------------------------------------------- refusals


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
