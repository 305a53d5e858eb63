"""NT_X86_XSTATE of every thread of a live process, through ptrace, in-process.

How a read goes, and why:

* PTRACE_SEIZE, not PTRACE_ATTACH: SEIZE sends no SIGSTOP, so there is no stop signal
  to swallow afterwards and no stray group-stop. PTRACE_INTERRUPT then stops each
  thread (PTRACE_EVENT_STOP) wherever it is; a thread asleep in a restartable system
  call resumes it after the detach.
* Attachment is per thread. /proc/PID/task is listed again until a listing shows no
  thread we have not seized, and once more after every seized thread has stopped:
  a thread may create another right up to the moment it stops.
* waitpid(tid, __WALL | WNOHANG), polled over all threads, collects each stop (a
  blocking wait on one thread can deadlock, see `_Session.settle`). A thread may
  stop for a signal before it sees the interrupt (signal-delivery-stop): that signal
  is handed back to it by PTRACE_DETACH, so nothing is lost or added. A thread
  already in a group-stop (the process was SIGSTOPped) reports PTRACE_EVENT_STOP with
  the stop signal and is back in the group-stop after the detach, as it was.
* PTRACE_GETREGSET(NT_X86_XSTATE): the kernel clamps iov_len to the size of its regset
  (its user XSAVE size) and zero-fills up to that; the returned iov_len is the image
  size. The regset is made of 8-byte units: iov_len must be a multiple of 8.
* Every seized thread is detached whatever happens: success, an error, a thread that
  dies half-way (ESRCH: skipped and noted), KeyboardInterrupt. SIGINT is held off
  while threads are attached and released once all are detached, to do what its
  disposition says: a Ctrl-C raises KeyboardInterrupt then. PTRACE_DETACH only works
  on a stopped thread, so a thread that is slow to stop (blocked in vfork(), or in an
  uninterruptible sleep) is waited for even after Ctrl-C.

Known and unavoidable (gdb and strace share it): an interrupted epoll_wait() or an
inotify read() in the target returns EINTR instead of restarting (ptrace(2), BUGS).

The tracer is the calling OS thread: all of this runs in one call, on one thread.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

from xcr0tool.errors import InputError, XcrError
from xcr0tool.sources import cpu

log = logging.getLogger(__name__)

# include/uapi/linux/ptrace.h, include/uapi/linux/elf.h
PTRACE_DETACH = 17
PTRACE_GETREGSET = 0x4204
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128
NT_X86_XSTATE = 0x202
WALL = 0x40000000  # __WALL: wait for clone children (threads) as well
_SYS_PTRACE = 101  # x86-64 syscall number
_CAP_SYS_PTRACE = 19
_PF_KTHREAD = 0x00200000
_MAX_REGSET = 16 << 20  # far beyond any XSAVE area (AMX is ~11 KiB); stops a runaway retry

# A tracee's life here: seized (running) -> stopped -> detached; or gone (exited and
# reaped, or never attached); or dying (SIGKILLed while stopped, not yet reaped).
_SEIZED, _STOPPED, _DYING, _GONE, _DETACHED = "seized", "stopped", "dying", "gone", "detached"
_POLL_MIN = 0.0005  # seconds between waitpid polls while threads are slow to stop
_POLL_MAX = 0.02
_NO_SUCH_PROCESS = "no such process (ESRCH); check the pid"


@dataclass
class LiveThread:
    tid: int
    xstate: bytes


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


def _ptrace(request: int, tid: int, addr: int = 0, data: int = 0) -> int:
    """ptrace(2); returns 0 or the errno."""
    return cpu.syscall(
        _SYS_PTRACE,
        ctypes.c_long(request),
        ctypes.c_long(tid),
        ctypes.c_void_p(addr),
        ctypes.c_void_p(data),
    )


# ---------------------------------------------------------------- /proc readers


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _status_field(path: str, key: str) -> str | None:
    text = _read(path)
    if text is None:
        return None
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name == key:
            return value.strip()
    return None


def _tracer_of(task_dir: str) -> int:
    value = _status_field(f"{task_dir}/status", "TracerPid")
    return int(value) if value and value.isdigit() else 0


def _comm(pid: int) -> str | None:
    text = _read(f"/proc/{pid}/comm")
    return text.strip() if text else None


def _stat_fields(task_dir: str) -> list[str] | None:
    """Fields of /proc/.../stat after the `(comm)` (which may hold spaces)."""
    text = _read(f"{task_dir}/stat")
    if text is None or ")" not in text:
        return None
    return text.rsplit(")", 1)[1].split()


def _is_dead(task_dir: str) -> bool:
    fields = _stat_fields(task_dir)
    return fields is None or fields[0] in ("Z", "X", "x")


def _is_kernel_thread(pid: int) -> bool:
    fields = _stat_fields(f"/proc/{pid}")
    # fields[0] is the state (field 3 of stat); flags is field 9
    return fields is not None and len(fields) > 6 and int(fields[6]) & _PF_KTHREAD != 0


def _list_tasks(pid: int) -> list[int] | None:
    try:
        names = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    return sorted(int(n) for n in names if n.isdigit())


def _have_cap_sys_ptrace() -> bool:
    value = _status_field("/proc/self/status", "CapEff")
    try:
        return value is not None and int(value, 16) >> _CAP_SYS_PTRACE & 1 == 1
    except ValueError:
        return False


def _yama_scope() -> int | None:
    text = _read("/proc/sys/kernel/yama/ptrace_scope")
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _uids(pid: int) -> tuple[int, ...] | None:
    value = _status_field(f"/proc/{pid}/status", "Uid")
    try:
        return tuple(int(v) for v in value.split()[:3]) if value else None
    except ValueError:
        return None


# ---------------------------------------------------------------- messages


def explain_refusal(
    *,
    tracer_pid: int,
    tracer_comm: str | None,
    yama_scope: int | None,
    privileged: bool,
    our_uid: int,
    target_uids: tuple[int, ...] | None,
    thread: int | None = None,
) -> str:
    """Why PTRACE_SEIZE said EPERM, and what to do about it: the problem half of an InputError.

    `privileged` means we hold CAP_SYS_PTRACE; `target_uids` are the real, effective and
    saved uids of the target (the kernel wants all three to equal ours). The checks
    follow the kernel's order of likelihood: an existing tracer, Yama's hard lock-down,
    different credentials, Yama's descendants-only rule, then the rest.
    """
    who = f"thread {thread} " if thread is not None else ""
    if tracer_pid:
        by = f"pid {tracer_pid} ({tracer_comm})" if tracer_comm else f"pid {tracer_pid}"
        return f"{who}already traced by {by}; detach it first"
    if yama_scope == 3:
        return "Yama ptrace_scope is 3: attaching is disabled until reboot"
    if not privileged:
        if target_uids and any(uid != our_uid for uid in target_uids):
            owner = target_uids[1] if len(target_uids) > 1 else target_uids[0]
            return (
                f"permission denied: the process runs as uid {owner} and we as uid "
                f"{our_uid}; run as root or as uid {owner}"
            )
        if yama_scope == 1:
            return (
                "Yama ptrace_scope is 1: run as root, or `sudo sysctl kernel.yama.ptrace_scope=0`"
            )
        if yama_scope == 2:
            return "Yama ptrace_scope is 2: only root (CAP_SYS_PTRACE) may attach; run as root"
    return (
        "permission denied (EPERM): the process is not dumpable (set-user-ID, or "
        "PR_SET_DUMPABLE 0) or a security module refuses; run as root"
    )


# ---------------------------------------------------------------- SIGINT deferral


class _DeferSigint:
    """Hold SIGINT off while threads are attached; release it once they are not.

    Blocking the signal in this thread covers a single-threaded program. In a program
    with other threads the kernel may hand SIGINT to one of them and Python would then
    raise KeyboardInterrupt here, in the main thread, at any point: so when we run in
    the main thread the Python-level handler is swapped for a recorder too.

    A held SIGINT is not a Ctrl-C to act on here: only its disposition, once released,
    says what it is. The kernel queues a blocked signal even when it is ignored
    (kernel/signal.c, sig_ignored(): "Blocked signals are never ignored"), and a
    non-interactive shell starts its background jobs with SIGINT ignored; a caller may
    have it blocked, or a handler that only takes note. So nothing is skipped for it.
    """

    def __init__(self) -> None:
        self.caught = False
        self._old_mask: set[int | signal.Signals] = set()
        self._old_handler: Any = None
        self._swapped = False

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.caught = True

    def __enter__(self) -> _DeferSigint:
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())  # reads the mask only
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        except BaseException:
            # pthread_sigmask() runs the handlers of signals that came before it, after
            # changing the mask (CPython's signal_pthread_sigmask_impl calls
            # PyErr_CheckSignals): a Ctrl-C just before it raises here with SIGINT
            # already blocked. Nothing is attached yet; unblock, or it stays held.
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            raise
        self._old_mask = old_mask
        if threading.current_thread() is threading.main_thread():
            handler = signal.getsignal(signal.SIGINT)
            if handler not in (None, signal.SIG_IGN):
                self._old_handler = handler
                signal.signal(signal.SIGINT, self._record)
                self._swapped = True
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._swapped:
            signal.signal(signal.SIGINT, self._old_handler)
        # Unblocking delivers a held SIGINT to the original handler right here (an
        # ignored one is dropped; one the caller blocks stays pending for the caller).
        signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)
        if self.caught:
            signal.raise_signal(signal.SIGINT)


# ---------------------------------------------------------------- the session


@dataclass
class _Tracee:
    tid: int
    state: str = _SEIZED
    inject: int = 0  # signal PTRACE_DETACH hands back (from a signal-delivery-stop)


class _Session:
    def __init__(self, pid: int, name: str, notes: list[str]) -> None:
        self.pid = pid
        self.name = name
        self.notes = notes
        self.tracees: dict[int, _Tracee] = {}
        self.size = _initial_iov_size()

    def note(self, text: str) -> None:
        self.notes.append(text)
        log.info("%s: %s", self.name, text)

    # -- attach

    def attach_all(self) -> None:
        while True:
            tids = _list_tasks(self.pid)
            if tids is None:
                if not self.tracees:
                    raise InputError(self.name, _NO_SUCH_PROCESS)
                tids = []
            new = [tid for tid in tids if tid not in self.tracees]
            for tid in new:
                self.seize(tid)
            if new:
                continue  # list again at once: more threads may have been created
            if not any(t.state == _SEIZED for t in self.tracees.values()):
                return
            self.settle()  # then list again: a thread may have cloned before it stopped

    def seize(self, tid: int) -> None:
        task_dir = f"/proc/{self.pid}/task/{tid}"
        err = _ptrace(PTRACE_SEIZE, tid)
        if err == errno.ESRCH:
            self.tracees[tid] = _Tracee(tid, _GONE)
            if tid == self.pid and not any(t.state != _GONE for t in self.tracees.values()):
                raise InputError(self.name, _NO_SUCH_PROCESS)
            self.note(f"thread {tid} exited before it could be attached; skipped")
            return
        if err == errno.EPERM and _is_dead(task_dir):
            # The kernel refuses to attach to a zombie; a main thread that called
            # pthread_exit() stays one while the other threads run on.
            self.tracees[tid] = _Tracee(tid, _GONE)
            self.note(f"thread {tid} has exited (zombie); skipped")
            return
        if err == errno.EPERM:
            tracer = _tracer_of(task_dir)
            raise InputError(
                self.name,
                explain_refusal(
                    tracer_pid=tracer,
                    tracer_comm=_comm(tracer) if tracer else None,
                    yama_scope=_yama_scope(),
                    privileged=_have_cap_sys_ptrace(),
                    our_uid=os.geteuid(),
                    target_uids=_uids(self.pid),
                    thread=tid if tid != self.pid else None,
                ),
            )
        if err:
            raise InputError(
                self.name, f"cannot attach to thread {tid}: {os.strerror(err)} (PTRACE_SEIZE)"
            )
        tracee = self.tracees[tid] = _Tracee(tid)
        err = _ptrace(PTRACE_INTERRUPT, tid)
        if err not in (0, errno.ESRCH):  # ESRCH: it is dying; settle() reaps it
            # Attached but never asked to stop: it cannot be detached (that needs a
            # stop) and waiting for it would hang. Never seen; say what it means.
            tracee.state = _GONE
            raise XcrError(
                f"{self.name}: PTRACE_INTERRUPT of thread {tid} failed: {os.strerror(err)}; "
                "that thread stays attached until this process exits"
            )

    # -- waiting

    def settle(self) -> None:
        """Wait until every tracee has stopped or is gone (and reaped).

        Polls every pending thread rather than blocking on one: when the process is
        killed, its main thread cannot be reaped before the other threads are, and
        those are zombies that only we, their tracer, can reap; blocking on the main
        thread first would deadlock. Threads that had already stopped die too, and
        are reaped by `dead_leader` when the main thread is the one still pending.
        """
        delay = _POLL_MIN
        while True:
            pending = [t for t in self.tracees.values() if t.state in (_SEIZED, _DYING)]
            if not pending:
                return
            changed = [self.poll(t) for t in pending]  # poll all: no short-circuit
            if any(changed) or self.dead_leader(pending):
                delay = _POLL_MIN
                continue
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def dead_leader(self, pending: list[_Tracee]) -> bool:
        """The main thread is pending but dead: make progress possible; True if done.

        A dead main thread is not reported while other threads remain (the kernel's
        delay_group_leader()). If the process was killed while the main thread had not
        stopped yet (blocked in vfork(), or not yet scheduled), the threads that had
        stopped are zombies too, and only we can reap them: polling only the pending
        ones waited for ever. If every other thread is alive in our stop ('t': SIGKILL
        wakes every thread of the process as it is sent, complete_signal()), the main
        thread exited alone (pthread_exit) and is skipped, as seize() skips one.
        """
        leader = self.tracees.get(self.pid)
        if leader is None or pending != [leader]:
            return False
        if not _is_dead(f"/proc/{self.pid}/task/{self.pid}"):
            return False
        stopped = [t for t in self.tracees.values() if t.state == _STOPPED]
        changed = [self.poll(t) for t in stopped]  # poll all: no short-circuit
        if any(changed):
            return True
        states = [_stat_fields(f"/proc/{self.pid}/task/{t.tid}") for t in stopped]
        if all(fields is not None and fields[0] == "t" for fields in states):
            leader.state = _GONE
            self.note(f"thread {self.pid} has exited (zombie); skipped")
            return True
        return False  # others still on their way out: poll again

    def poll(self, tracee: _Tracee) -> bool:
        """One non-blocking waitpid for a tracee not yet known gone; True if it changed."""
        try:
            tid, status = os.waitpid(tracee.tid, WALL | os.WNOHANG)
        except ChildProcessError:
            tracee.state = _GONE
            self.note(f"thread {tracee.tid} vanished during the read; skipped")
            return True
        if tid == 0:
            return False
        if os.WIFSTOPPED(status):
            if tracee.state == _SEIZED:
                tracee.state = _STOPPED
                # Event 0 is a signal-delivery-stop: a signal on its way in, handed back
                # by PTRACE_DETACH. PTRACE_EVENT_STOP is our interrupt or a group-stop
                # (which the detach leaves in force); no options were set, so no other
                # event can occur.
                tracee.inject = os.WSTOPSIG(status) if status >> 16 == 0 else 0
            return True
        killed = tracee.state in (_DYING, _STOPPED)  # a stopped thread cannot exit itself
        tracee.state = _GONE
        how = "was killed" if killed else "exited"
        self.note(f"thread {tracee.tid} {how} during the read; skipped")
        return True

    # -- read

    def read(self, tracee: _Tracee) -> bytes | None:
        while True:
            buf = ctypes.create_string_buffer(self.size)
            iov = _Iovec(ctypes.addressof(buf), self.size)
            err = _ptrace(PTRACE_GETREGSET, tracee.tid, NT_X86_XSTATE, ctypes.addressof(iov))
            if err == errno.ESRCH:
                # A stopped tracee answers ESRCH once SIGKILL is on its way: settle()
                # reaps it later.
                tracee.state = _DYING
                return None
            if err == errno.ENODEV:
                raise InputError(
                    self.name,
                    "the kernel offers no NT_X86_XSTATE (no XSAVE on this CPU or kernel)",
                )
            if err:
                raise XcrError(
                    f"{self.name}: PTRACE_GETREGSET(NT_X86_XSTATE) of thread "
                    f"{tracee.tid} failed: {os.strerror(err)}"
                )
            if iov.iov_len < self.size or self.size >= _MAX_REGSET:
                return ctypes.string_at(buf, iov.iov_len)
            self.size *= 2  # filled to the brim: the kernel may have more

    # -- detach

    def detach_all(self) -> None:
        problems: list[str] = []
        try:
            self.settle()  # PTRACE_DETACH needs a stopped thread: wait for the rest
        except Exception as exc:  # keep going: detach what can be detached
            problems.append(str(exc))
        for tracee in self.tracees.values():
            if tracee.state != _STOPPED:
                continue
            err = _ptrace(PTRACE_DETACH, tracee.tid, 0, tracee.inject)
            if err == errno.ESRCH:
                tracee.state = _DYING
            elif err:
                problems.append(f"thread {tracee.tid}: {os.strerror(err)}")
            else:
                tracee.state = _DETACHED
        try:
            self.settle()  # reap the threads killed while we held them
        except Exception as exc:
            problems.append(str(exc))
        if problems:
            raise XcrError(
                f"{self.name}: could not detach from every thread ({'; '.join(problems)}); "
                "they stay traced until this process exits"
            )


def _initial_iov_size() -> int:
    """CPUID.(0xD,0).ECX (the largest XSAVE area this CPU can need) and a page more.

    Generous on purpose: the kernel clamps to its own size, and a buffer filled to the
    brim is retried twice as large.
    """
    ecx = 0
    if cpu.cpuid(0)[0] >= 0xD:
        ecx = cpu.cpuid(0xD, 0)[2]
    return (max(ecx, 4096) + 4095) // 4096 * 4096 + 4096


def read_process_xstate(pid: int, name: str, notes: list[str] | None = None) -> list[LiveThread]:
    """The NT_X86_XSTATE image of every thread of process `pid`, main thread first.

    `name` is how the input is called in error messages (the CLI passes the source as
    typed, "pid:N"). Threads that exit during the read are skipped; a line saying so
    is appended to `notes` when given (and logged at INFO level).
    """
    if not cpu.is_x86_64_linux():
        raise XcrError("reading a live process needs Linux on x86-64 (a 64-bit Python)")
    if notes is None:
        notes = []
    if pid <= 0:
        raise InputError(name, f"{pid} is not a process id")
    proc = f"/proc/{pid}"
    tgid_text = _status_field(f"{proc}/status", "Tgid")
    if tgid_text is None or not os.path.isdir(f"{proc}/task"):
        raise InputError(name, _NO_SUCH_PROCESS)
    tgid = int(tgid_text)
    if tgid == os.getpid():
        raise InputError(name, "cannot trace ourselves; use the source `self`")
    if _is_kernel_thread(tgid):
        raise InputError(name, "a kernel thread: it has no user XSAVE state to read")
    if tgid != pid:
        notes.append(f"{pid} is a thread of process {tgid}: reading every thread of {tgid}")

    session = _Session(tgid, name, notes)
    results: list[LiveThread] = []
    # The reads are done even with a SIGINT held: they take microseconds a thread, and a
    # held SIGINT may be one this program does not act on (see _DeferSigint); skipping
    # them for it read nothing and said "the process has exited". A Ctrl-C still
    # raises KeyboardInterrupt once every thread is detached, and the reads are dropped.
    with _DeferSigint():
        try:
            session.attach_all()
            for tracee in session.tracees.values():
                if tracee.state == _STOPPED:
                    data = session.read(tracee)
                    if data is not None:
                        results.append(LiveThread(tracee.tid, data))
        finally:
            session.detach_all()
    if not results:
        raise InputError(name, "the process has exited; nothing to read")
    results.sort(key=lambda t: (t.tid != tgid, t.tid))
    return results
