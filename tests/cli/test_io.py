"""Inputs and outputs: what is written never harms (devices, FIFOs, links, modes), holes
stay holes, hostile cores cost bounded time and memory, streams stop after the notes,
compressed cores read as streams. Its stderr's one line is checked word for word.

A command whose input and output are files named on the command line runs in this
process (tests/clirunner.py: the program's own entry point, exit status and streams);
one whose claim is about the process runs as a program: a pipe or a redirected file
on its standard input, a closed one, its standard output as a descriptor (/dev/stdout,
a terminal), a terminal on its standard error, its peak memory, a fresh interpreter's
imports."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import bigcores
import pytest
from bare_python import run_bare
from clirunner import ok, one_line_error, run

from xcr0tool.sources.corewriter import write_core
from xcr0tool.sources.elfcore import read_core

XCR0TOOL = [sys.executable, "-m", "xcr0tool"]
CORE = bigcores.FIXTURE
GIB = bigcores.GIB
# A decode's own peak memory is about 25 MiB here; a bound it cannot reach by reading
# what a core claims (gigabytes), with room for another Python.
RSS_LIMIT_KIB = 120 << 10
CLOSED = "standard input is closed: pipe an image or a core in, or name a SOURCE"


def program(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """xcr0tool as a program; its standard input a pipe holding `stdin`, when given."""
    return subprocess.run([*XCR0TOOL, *args], input=stdin, capture_output=True, check=False)


@contextlib.contextmanager
def umask_of(mask: int) -> Iterator[None]:
    """This process's umask set to `mask` for a command run in it."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# The child reports its own peak memory, measured by its parent with getrusage. It runs
# with 2 GiB of address space and 120 s at most: a reader that believes what a hostile
# core claims fails here instead of taking the machine.
_MEASURE = (
    "import resource, subprocess, sys, time\n"
    "def limit():\n"
    "    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
    "start = time.perf_counter()\n"
    "try:\n"
    "    code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, preexec_fn=limit,"
    " timeout=120)\n"
    "except subprocess.TimeoutExpired:\n"
    "    code = 124\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(usage.ru_maxrss, time.perf_counter() - start)\n"
    "sys.exit(code)\n"
)


def measured(*args: str) -> tuple[int, str, int, float]:
    """Exit status, stderr, peak RSS (KiB) and seconds of one xcr0tool run."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *XCR0TOOL, *args],
        capture_output=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    rss, seconds = result.stdout.split()
    return result.returncode, result.stderr.decode(), int(rss), float(seconds)


def sparse_here(directory: Path) -> None:
    """Skip unless files here can have holes that SEEK_DATA sees."""
    probe = directory / "probe"
    with open(probe, "wb") as out:
        out.truncate(64 << 20)
        out.seek(32 << 20)
        out.write(b"x")
    try:
        with open(probe, "rb") as f:
            data = os.lseek(f.fileno(), 0, os.SEEK_DATA)
        small = probe.stat().st_blocks * 512 < 1 << 20
    except OSError:
        data, small = 0, False
    probe.unlink()
    if not small or data == 0:
        pytest.skip(f"{directory}: this file system keeps no holes (or SEEK_DATA cannot see them)")


def phdrs(path: Path) -> list[list[int]]:
    with open(path, "rb") as f:
        return bigcores._phdrs(f.read(1 << 16))[2]


def load_with_bytes(path: Path) -> list[int]:
    return next(p for p in phdrs(path) if p[0] == bigcores.PT_LOAD and p[5])


def read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def umask() -> int:
    value = os.umask(0)
    os.umask(value)
    return value


# ---- outputs never harm ------------------------------------------------------------


ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="only root can replace a device node (and mknod one): run as root"
)
# The tests that write through the machine's own /dev/null and /dev/stdout run on one
# worker, one after another: each puts the file right after itself should a regression
# replace it, and none must find it replaced by another's.
MACHINE_FILES = pytest.mark.xdist_group("machine-files")


@MACHINE_FILES
@ROOT_ONLY
@pytest.mark.parametrize("command", [["extract"], ["mask", "--xcr0", "0x7"]])
def test_dev_null_stays_a_character_device(tmp_path: Path, command: list[str]) -> None:
    # First a private null device (major 1, minor 3, as /dev/null): a writer that
    # replaces devices fails here, before it can replace the machine's /dev/null.
    private = tmp_path / "null"
    os.mknod(private, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    ok(run(*command, str(CORE), "-o", str(private)))
    assert stat.S_ISCHR(os.lstat(private).st_mode)
    before = os.stat("/dev/null")
    try:
        ok(run(*command, str(CORE), "-o", "/dev/null"))
        after = os.stat("/dev/null")
        assert stat.S_ISCHR(after.st_mode)
        assert (after.st_ino, after.st_rdev, after.st_mode) == (
            before.st_ino,
            before.st_rdev,
            before.st_mode,
        )
    finally:
        if not stat.S_ISCHR(os.lstat("/dev/null").st_mode):  # put the machine right
            os.unlink("/dev/null")
            os.mknod("/dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            os.chmod("/dev/null", 0o666)


@contextlib.contextmanager
def dev_stdout_kept() -> Iterator[None]:
    """Put /dev/stdout right after a test that names it, should a regression replace
    the link (as temp + rename did): the machine's other programs write through it."""
    try:
        yield
    finally:
        if not os.path.islink("/dev/stdout") and os.access("/dev", os.W_OK):
            os.unlink("/dev/stdout")
            os.symlink("/proc/self/fd/1", "/dev/stdout")


@MACHINE_FILES
@pytest.mark.parametrize("name", ["private", "/dev/fd/1", "/dev/stdout"])
def test_dev_stdout_writes_to_the_descriptor_at_its_offset(tmp_path: Path, name: str) -> None:
    image = ok(run("extract", str(CORE)))
    out = tmp_path / "log"
    out.write_bytes(b"head\n")
    # A link of the test's own to /proc/self/fd/1 first: the same path through the
    # writer, and nothing of the machine's to break.
    private = tmp_path / "stdout"
    private.symlink_to("/proc/self/fd/1")
    target = str(private) if name == "private" else name
    with dev_stdout_kept(), open(out, "ab") as append:  # as `>>` would give it
        result = subprocess.run(
            [*XCR0TOOL, "extract", str(CORE), "-o", target],
            stdout=append,
            stderr=subprocess.PIPE,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == b"head\n" + image  # appended, not replaced
    assert private.is_symlink() and os.path.islink("/dev/stdout")


@MACHINE_FILES
def test_dev_stdout_on_a_terminal_is_refused(tmp_path: Path) -> None:
    private = tmp_path / "stdout"
    private.symlink_to("/proc/self/fd/1")
    for target in (str(private), "/dev/stdout"):
        controller, terminal = pty.openpty()
        try:
            with dev_stdout_kept():
                result = subprocess.run(
                    [*XCR0TOOL, "extract", str(CORE), "-o", target],
                    stdout=terminal,
                    stderr=subprocess.PIPE,
                    check=False,
                )
        finally:
            os.close(terminal)
            os.close(controller)
        assert result.returncode == 2
        assert result.stderr.decode().splitlines() == [
            "xcr0tool: refusing to write binary data to a terminal: pass -o FILE or pipe the output"
        ]


def test_fifo_is_written_through(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = run("mask", "--xcr0", "0x7", str(CORE), "-o", str(fifo))
    reader.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert received == [ok(run("mask", "--xcr0", "0x7", str(CORE)))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


def test_symlink_stays_and_its_target_is_written_whole(tmp_path: Path) -> None:
    here, there = tmp_path / "links", tmp_path / "files"
    here.mkdir()
    there.mkdir()
    target = there / "image.bin"
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = here / "out.bin"
    link.symlink_to(target)
    ok(run("extract", str(CORE), "-o", str(link)))
    assert link.is_symlink()
    assert os.readlink(link) == str(target)
    assert target.read_bytes() == ok(run("extract", str(CORE)))
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # an existing file keeps its mode
    # No temporary left, in either directory.
    assert [p.name for p in here.iterdir()] == ["out.bin"]
    assert [p.name for p in there.iterdir()] == ["image.bin"]


def test_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "out.bin"
    link.symlink_to("made.bin")
    ok(run("extract", str(CORE), "-o", str(link)))
    assert link.is_symlink()
    assert (tmp_path / "made.bin").read_bytes() == ok(run("extract", str(CORE)))


@pytest.mark.parametrize(
    ("input_mode", "output_mode"),
    [(0o600, 0o600), (0o640, 0o640), (0o644, 0o644), (0o755, 0o644), (0o444, 0o444)],
)
@pytest.mark.parametrize("command", [["extract"], ["mask", "--xcr0", "0x7"]])
def test_new_file_is_never_more_readable_than_its_input(
    tmp_path: Path, input_mode: int, output_mode: int, command: list[str]
) -> None:
    core = tmp_path / "core"
    shutil.copyfile(CORE, core)
    core.chmod(input_mode)
    out = tmp_path / "out"
    with umask_of(0o022):
        result = run(*command, str(core), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == output_mode


def test_new_file_from_a_pipe_gets_the_usual_mode(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = program("mask", "--xcr0", "0x7", "-o", str(out), stdin=CORE.read_bytes())
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask()


def test_new_file_from_a_redirected_file_keeps_its_privacy(tmp_path: Path) -> None:
    core = tmp_path / "core"
    shutil.copyfile(CORE, core)
    core.chmod(0o600)
    out = tmp_path / "out"
    with open(core, "rb") as redirected:  # `< core`
        result = subprocess.run(
            [*XCR0TOOL, "mask", "--xcr0", "0x7", "-o", str(out)],
            stdin=redirected,
            capture_output=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_existing_target_keeps_its_mode_and_owner(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"old")
    out.chmod(0o604)
    if os.geteuid() == 0:
        os.chown(out, 4321, 4322)
    ok(run("mask", "--xcr0", "0x7", str(CORE), "-o", str(out)))
    info = out.stat()
    assert stat.S_IMODE(info.st_mode) == 0o604
    if os.geteuid() == 0:  # only root may give a file away
        assert (info.st_uid, info.st_gid) == (4321, 4322)


# ---- holes stay holes ------------------------------------------------------------


def test_mask_of_a_sparse_8_gib_core_keeps_its_holes(tmp_path: Path) -> None:
    sparse_here(tmp_path)
    marks = (0, 3 * GIB, 8 * GIB - bigcores.PAGE)
    core = bigcores.with_memory(tmp_path / "big.core", 8 * GIB, marks=marks)
    out = tmp_path / "masked.core"
    start = time.perf_counter()
    ok(run("mask", "--xcr0", "0x7", str(core), "-o", str(out)))
    elapsed = time.perf_counter() - start
    before, after = core.stat(), out.stat()
    # Before: 8 GiB of zeros written, 8 GiB on disk, 46 s.
    assert after.st_blocks * 512 <= before.st_blocks * 512 + (1 << 20)
    load = load_with_bytes(out)
    assert load[5] == 8 * GIB
    assert load[2] % bigcores.PAGE == load[3] % bigcores.PAGE
    for at in marks:
        assert read_at(out, load[2] + at, bigcores.PAGE) == bigcores.MARK
    assert read_at(out, load[2] + GIB, bigcores.PAGE) == bytes(bigcores.PAGE)
    assert elapsed < 30, f"{elapsed:.1f} s"


def test_piped_sparse_core_is_spooled_and_written_sparse(tmp_path: Path) -> None:
    sparse_here(tmp_path)
    # 64 MiB: sixteen times the bound below, should the output be written whole.
    size = 64 << 20
    core = bigcores.with_memory(tmp_path / "big.core", size, marks=(0, size // 2))
    out = tmp_path / "masked.core"
    with open(core, "rb") as data:
        piped = subprocess.Popen(["cat"], stdin=data, stdout=subprocess.PIPE)
        result = subprocess.run(
            [*XCR0TOOL, "mask", "--xcr0", "0x7", "-", "-o", str(out)],
            stdin=piped.stdout,
            capture_output=True,
            check=False,
        )
        assert piped.stdout is not None
        piped.stdout.close()
        piped.wait()
    assert result.returncode == 0, result.stderr
    assert out.stat().st_blocks * 512 < 4 << 20
    by_path = tmp_path / "by-path.core"
    ok(run("mask", "--xcr0", "0x7", str(core), "-o", str(by_path)))
    assert out.read_bytes() == by_path.read_bytes()


def pty_stderr(*args: str) -> tuple[int, bytes]:
    """Exit status and what a terminal on stderr saw."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*XCR0TOOL, *args], stdout=subprocess.DEVNULL, stderr=terminal, stdin=subprocess.DEVNULL
    )
    os.close(terminal)
    seen = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(controller, 1 << 16)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    return process.wait(), seen


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    sparse_here(tmp_path)
    core = bigcores.with_memory(tmp_path / "big.core", 512 << 20, marks=(0,))
    code, seen = pty_stderr("mask", "--xcr0", "0x7", str(core), "-o", str(tmp_path / "a"))
    assert code == 0
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", seen).decode()
    assert re.search(r"writing a .* 512\.0/512\.0 MiB", text), text
    # In a pipe: the three "removed" lines, nothing else.
    piped = program("mask", "--xcr0", "0x7", str(core), "-o", str(tmp_path / "b"))
    lines = piped.stderr.decode().splitlines()
    assert len(lines) == 3 and all("removed" in line for line in lines), lines
    # And none for a small output, on a terminal.
    code, seen = pty_stderr("mask", "--xcr0", "0x7", str(CORE), "-o", str(tmp_path / "c"))
    assert code == 0 and b"writing" not in seen


# ---- bounded whatever the core claims ------------------------------------------------


@pytest.mark.parametrize("align", [1 << 63, 1 << 50, 1 << 32, 3])
@pytest.mark.parametrize("command", [["mask", "--xcr0", "0x7"], ["convert", "--layout", "intel"]])
def test_absurd_alignment_inside_the_notes_keeps_the_output_small(
    tmp_path: Path, align: int, command: list[str]
) -> None:
    core = bigcores.bad_align(tmp_path / "in.core", align)
    out = tmp_path / "out.core"
    # Before: ValueError (mask), or "out.core: cannot write: invalid argument" (convert).
    ok(run(*command, str(core), "-o", str(out)))
    assert out.stat().st_size < core.stat().st_size + (4 << 20)
    load = load_with_bytes(out)
    assert load[2] % bigcores.PAGE == load[3] % bigcores.PAGE
    assert read_at(out, load[2], bigcores.PAGE) == bigcores.MARK
    assert ok(run("decode", "--json", str(out)))


def note_segment(path: Path) -> list[int]:
    return next(p for p in phdrs(path) if p[0] == bigcores.PT_NOTE)


HOSTILE = {
    "PT_NOTE of 4 GiB in a sparse 8 GiB file": (
        lambda d: bigcores.huge_note_segment(d / "c"),
        "note segment 0 claims 4294967296 bytes: more notes than any core holds"
        " (at most 1073741824 bytes in all)",
    ),
    "one note of 4 GiB": (
        lambda d: bigcores.huge_note(d / "c"),
        "note segment 0 claims 4294971416 bytes: more notes than any core holds"
        " (at most 1073741824 bytes in all)",
    ),
    "PN_XNUM with 2^32-1 program headers in a sparse 256 GiB file": (
        lambda d: bigcores.many_phdrs(d / "c"),
        "claims 4294967295 program headers, more than any core holds (at most 1048576)",
    ),
    "NT_X86_XSTATE of 512 MiB": (
        lambda d: bigcores.huge_note(d / "c", size=GIB, note_type=0x202, descsz=512 << 20),
        "note 7 (NT_X86_XSTATE) claims 536870912 bytes, more than such a note holds"
        " (at most 1048576)",
    ),
    "a flood of 12-byte notes": (
        lambda d: bigcores.note_flood(d / "c", 4 << 20),
        "more than 262144 notes: more than any core holds",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("command", ["decode", "mask"])
def test_hostile_cores_cost_bounded_time_and_memory(
    tmp_path: Path, case: str, command: str
) -> None:
    sparse_here(tmp_path)
    make, problem = HOSTILE[case]
    core = make(tmp_path)
    args = ["decode", str(core)]
    if command == "mask":
        args = ["mask", "--xcr0", "0x7", str(core), "-o", str(tmp_path / "o")]
    code, stderr, rss, seconds = measured(*args)
    assert code == 2, stderr
    assert stderr.splitlines() == [f"xcr0tool: {core}: {problem}"]
    assert rss < RSS_LIMIT_KIB, f"{rss} KiB"
    # Unloaded, all of these take well under a second; a loaded CI machine gets room.
    assert seconds < 15, f"{seconds:.1f} s"
    assert not (tmp_path / "o").exists()


def test_a_big_note_nobody_reads_is_skipped(tmp_path: Path) -> None:
    sparse_here(tmp_path)
    core = bigcores.huge_note(tmp_path / "c", size=GIB, note_type=0x999, descsz=512 << 20)
    code, stderr, rss, _ = measured("decode", str(core))
    assert code == 0, stderr
    assert rss < RSS_LIMIT_KIB, f"{rss} KiB"
    # And a rewrite copies it, holes and all.
    out = tmp_path / "o"
    ok(run("mask", "--xcr0", "0x7", str(core), "-o", str(out)))
    assert out.stat().st_blocks * 512 < 4 << 20
    assert [n.type for n in read_core(str(out)).notes][-1] == 0x999


def test_zero_padding_ending_a_note_segment_is_kept(tmp_path: Path) -> None:
    claim = note_segment(CORE)[5] + 4096
    core = bigcores.huge_note_segment(tmp_path / "c", claim=claim, size=64 << 10)
    read = read_core(str(core))
    assert [t.tid for t in read.threads] == [t.tid for t in read_core(str(CORE)).threads]
    write_core(read, str(tmp_path / "same"))
    assert (tmp_path / "same").read_bytes() == core.read_bytes()


@pytest.mark.parametrize(
    "args",
    [
        ["decode", "-"],
        ["validate", "-"],
        ["convert", "-"],
        ["mask", "--xcr0", "0x7"],
        ["extract", "-"],
        ["diff", "-", str(CORE)],
    ],
)
def test_closed_standard_input(args: list[str]) -> None:
    # `<&-`: the child starts with no descriptor 0 (and Python with no sys.stdin).
    result = subprocess.run(
        [*XCR0TOOL, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        preexec_fn=lambda: os.close(0),
    )
    assert one_line_error(result) == f"xcr0tool: <stdin>: {CLOSED}"


def test_truncated_input_is_blamed_not_the_output(tmp_path: Path) -> None:
    core = bigcores.with_memory(tmp_path / "in.core", 1 << 20, marks=(0,))
    with open(core, "r+b") as f:
        f.truncate(core.stat().st_size - 4096)
    out = tmp_path / "out.core"
    line = one_line_error(run("mask", "--xcr0", "0x7", str(core), "-o", str(out)))
    end = bigcores.memory_start() + (1 << 20)
    assert line == (
        f"xcr0tool: {core}: truncated: segment 25 ends at {end:#x}, file is {end - 4096:#x} bytes"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.core"]


# ---- streams stop after the notes ------------------------------------------------------


def feed(process: subprocess.Popen[bytes], write_fd: int, path: Path) -> int:
    """Write `path` into the pipe until the reader goes away; the bytes it took."""
    sent = 0
    with open(path, "rb") as data:
        while chunk := data.read(1 << 16):
            try:
                sent += os.write(write_fd, chunk)
            except BrokenPipeError:
                break
    os.close(write_fd)
    return sent


def fed(args: Sequence[str], core: Path, stdin: bool) -> tuple[int, bytes, int]:
    """Run xcr0tool reading `core` through a pipe (its stdin, or /dev/fd/N as process
    substitution gives it); exit status, stdout, and the bytes it took from the pipe."""
    read_fd, write_fd = os.pipe()
    argv = [*XCR0TOOL, *(a.replace("PIPE", f"/dev/fd/{read_fd}") for a in args)]
    process = subprocess.Popen(
        argv,
        stdin=read_fd if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=() if stdin else (read_fd,),
    )
    os.close(read_fd)
    sent = feed(process, write_fd, core)
    out, err = process.communicate()
    assert process.returncode in (0, 1), err.decode()
    return process.returncode, out, sent


@pytest.fixture(scope="module")
def gib_core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("gib")
    return bigcores.with_memory(directory / "1g.core", GIB, marks=(0, GIB // 2))


# The notes end in the first 8 KiB; a pipe holds 64 KiB, and a read asks for at most
# 64 KiB more: stopping after the notes takes well under 1 MiB of a 1 GiB core.
STOPPED = 1 << 20


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["decode", "-"], True),
        (["validate", "-"], True),
        (["diff", "-", str(CORE)], True),
        (["decode", "PIPE"], False),
        (["validate", "PIPE"], False),
        (["diff", str(CORE), "PIPE"], False),
        (["compat", "PIPE", "amd-zen4"], False),
    ],
)
def test_a_piped_core_is_read_up_to_its_notes(gib_core: Path, args: list[str], stdin: bool) -> None:
    code, out, sent = fed(args, gib_core, stdin)
    # Before: all of it (1 GiB), spooled to a temporary file, or "not a regular file".
    assert sent < STOPPED, f"took {sent} bytes of a {gib_core.stat().st_size}-byte core"
    pipe = next(a for a in args if a in ("-", "PIPE"))
    by_path = run(*(str(gib_core) if a == pipe else a for a in args))
    assert code == by_path.returncode
    if args[0] == "diff":
        assert out.splitlines()[-1] == by_path.stdout.splitlines()[-1] == b"same"
        return
    # Same output, but for the name.
    shown = re.sub(r"/dev/fd/\d+", str(gib_core), out.decode(errors="replace"))
    expected = by_path.stdout.decode(errors="replace")
    if args[0] == "compat":  # it also calls a machine by its file's name, in columns
        fd = re.search(r"/dev/fd/(\d+)", out.decode()).group(1)  # type: ignore[union-attr]
        shown = re.sub(rf"\b{fd}\b", "NAME", shown.replace(str(gib_core), "PATH"))
        expected = expected.replace(str(gib_core), "PATH").replace(gib_core.name, "NAME")
        shown, expected = re.sub(r" +", " ", shown), re.sub(r" +", " ", expected)
    assert shown == (expected.replace(str(gib_core), "<stdin>") if stdin else expected)


def test_bash_process_substitution(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    other = tmp_path / "other.core"
    shutil.copyfile(CORE, other)
    command = " ".join([*XCR0TOOL, "diff", f"<(cat {CORE})", f"<(cat {other})"])
    result = subprocess.run([bash, "-c", command], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert b"same" in result.stdout


# ---- compressed cores --------------------------------------------------------------

COMPRESSORS = {
    "zstd": ["zstd", "-q", "-c"],
    "xz": ["xz", "-c", "-T1"],
    "gzip": ["gzip", "-c"],
    "lz4": ["lz4", "-q", "-c"],
}


def compressed(tool: str, source: Path, dest: Path) -> Path:
    argv = COMPRESSORS[tool]
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed (.ci/run installs it)")
    with open(dest, "wb") as out:
        subprocess.run([*argv, str(source)], stdout=out, check=True)
    return dest


@pytest.mark.parametrize("tool", list(COMPRESSORS))
def test_compressed_core_by_path_and_on_stdin(tmp_path: Path, tool: str) -> None:
    sparse_here(tmp_path)
    # 16 MiB: sixteen times what reading up to the notes may cost (STOPPED), should the
    # whole stream be read; compressing more zeros would only cost time (xz: 1 s more).
    core = bigcores.with_memory(tmp_path / "c.core", 16 << 20, marks=(0,))
    packed = compressed(tool, core, tmp_path / f"c.core.{tool}")
    plain = ok(run("decode", "--json", str(core)))
    assert ok(run("decode", "--json", str(packed))) == plain.replace(
        str(core).encode(), str(packed).encode()
    )
    assert ok(program("decode", "--json", "-", stdin=packed.read_bytes())) == plain.replace(
        str(core).encode(), b"<stdin>"
    )
    # Read as a stream, up to the notes: a 16 MiB core costs well under 1 MiB.
    from xcr0tool.files.input import open_input

    opened = open_input(str(packed))
    try:
        assert [t.tid for t in read_core(opened).threads] == [
            t.tid for t in read_core(str(core)).threads
        ]
        assert 0 < opened.consumed < STOPPED  # type: ignore[attr-defined]
    finally:
        opened.close()
    # A rewrite decompresses it all, and writes an uncompressed core.
    masked, expected = tmp_path / "m.core", tmp_path / "e.core"
    ok(run("mask", "--xcr0", "0x7", str(packed), "-o", str(masked)))
    ok(run("mask", "--xcr0", "0x7", str(core), "-o", str(expected)))
    assert masked.read_bytes() == expected.read_bytes()


@pytest.mark.parametrize("tool", list(COMPRESSORS))
def test_corrupt_compressed_core(tmp_path: Path, tool: str) -> None:
    packed = compressed(tool, CORE, tmp_path / "c")
    cut = tmp_path / "cut"
    cut.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    line = one_line_error(run("decode", str(cut)))
    assert line.startswith(f"xcr0tool: {cut}: not a valid {tool} stream: "), line


def test_compressed_raw_image_on_stdin() -> None:
    image = ok(run("extract", str(CORE)))
    gzip = shutil.which("gzip")
    if gzip is None:
        pytest.skip("gzip is not installed")
    packed = subprocess.run([gzip, "-c"], input=image, capture_output=True, check=True).stdout
    assert ok(program("decode", "--json", "-", stdin=packed)) == ok(
        program("decode", "--json", "-", stdin=image)
    )


def test_decompressors_load_only_for_compressed_inputs() -> None:
    code = (
        "import sys\n"
        "from xcr0tool.sources.open import open_source\n"
        f"open_source({str(CORE)!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('lz4', 'lzma', 'backports', 'compression', 'gzip')))\n"
    )
    assert run_bare(code).strip() == "[]"


def test_host_save_goes_through_the_one_writer(tmp_path: Path) -> None:
    target = tmp_path / "layout.json"
    target.write_text("{}")
    target.chmod(0o600)
    link = tmp_path / "saved.json"
    link.symlink_to(target.name)
    result = run("host", "--save", str(link))
    if result.returncode == 2 and b"XSAVE" in result.stderr:
        pytest.skip(f"no XSAVE here: {result.stderr.decode().strip()}")
    ok(result)
    assert link.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert ok(run("layout", "--layout", str(link), "--json"))
