"""Where output goes: rich on a terminal, plain text in a pipe, JSON, raw bytes.

Binary output goes only to a file or a pipe, never to a terminal (like gzip). Every file
xcr0tool writes goes through `write_output`, which never harms what it writes to:

- A regular file (new or existing) is written whole or not at all: to a temporary
  beside it, then renamed over it. An existing file keeps its mode, and its owner and
  group where this process may set them. A new file is never more readable than the
  input it was made from: the input's permission bits (less any execute bits) and the
  umask, or 0666 and the umask when the input is no regular file (a pipe).
- A symbolic link stays: the file it points to is written as above, whole or not at
  all (the temporary goes beside that file, in its directory). A link to nothing
  creates the file it names, as a shell's `>` does. (A file's other hard links, like
  any rename's, keep naming the old bytes.)
- Anything else is written through, never replaced: a device (/dev/null stays a
  character device, even for root), a FIFO, /dev/stdout and /dev/fd/N (which write to
  that descriptor, at its offset, as `-o -` writes to standard output). There a
  failure part way can leave part of the output, as with any pipe; every check that
  can fail before the first byte (a core's layout, its bounds) is made before it.

Holes stay holes: `Sink.zeros` and `Sink.copy` seek over them in a regular file (the
file is extended at the end if it ends in one), so a sparse core's rewrite is sparse.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, cast

from xcr0tool.errors import InputError, XcrError
from xcr0tool.files.input import CHUNK, Input, reason

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

# A progress bar shows for outputs of at least this size, on a terminal: a copy of less
# takes well under a second.
PROGRESS_MIN = 256 << 20
# Links followed by hand before giving up, as the kernel's MAXSYMLINKS (40) does.
_MAX_LINKS = 40
_OWN_FD = re.compile(r"/(?:proc/(?:self|thread-self|(\d+))/fd|dev/fd)/(\d+)")


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def console(stderr: bool = False) -> Console:
    """A rich console; imported only when a terminal will see it. rich itself honours
    NO_COLOR."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def write_json(data: object) -> None:
    # Indented for a person at a terminal; compact in a pipe, where json's C encoder
    # runs (indent forces the pure-Python one, several times slower on big cores).
    indent = 2 if stdout_is_terminal() else None
    sys.stdout.write(json.dumps(data, indent=indent))
    sys.stdout.write("\n")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def new_file_mode(input_mode: int | None) -> int:
    """The permission bits of a new output made from an input with `input_mode` (None:
    no regular file behind it): never more readable than the input, never executable."""
    base = 0o666 if input_mode is None else 0o666 & input_mode
    return base & ~_umask()


class _Bar:
    """A rich progress bar on standard error, for long writes on a terminal."""

    def __init__(self, name: str, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress: Progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True, highlight=False),
            transient=True,
        )
        # The name goes in as text, never as markup.
        self._task: TaskID = self._progress.add_task("writing", total=total)
        label = os.path.basename(name) or name  # the bar has the width of a terminal
        self._progress.update(self._task, description=f"writing {_escape(label)}")
        self._progress.start()

    def advance(self, size: int) -> None:
        self._progress.advance(self._task, size)

    def stop(self) -> None:
        self._progress.stop()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class Sink:
    """Sequential output: bytes, zeros (holes where the target can have them) and copies
    of an input's ranges (its holes kept)."""

    def __init__(
        self,
        fd: int,
        name: str,
        *,
        holes: bool,
        bar: _Bar | None = None,
        stream: IO[bytes] | None = None,
    ) -> None:
        self._fd = fd
        self._stream = stream  # for a standard output with no descriptor (in-memory)
        self.name = name
        self.holes = holes  # a regular file: zeros can be a hole
        self.position = 0
        self._pending_hole = False
        self._bar = bar

    def _failed(self, error: OSError) -> InputError:
        return InputError(self.name, f"cannot write: {reason(error)}")

    def _advance(self, size: int) -> None:
        self.position += size
        if self._bar is not None:
            self._bar.advance(size)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        total = len(view)
        try:
            if self._stream is not None:
                self._stream.write(view)
                self._advance(total)
                view = view[total:]
            while view:
                done = os.write(self._fd, view[:CHUNK])
                view = view[done:]
                self._advance(done)
        except OSError as error:
            if isinstance(error, BrokenPipeError):
                raise
            raise self._failed(error) from None
        if total:
            self._pending_hole = False
        return total

    def zeros(self, size: int) -> None:
        """`size` zero bytes: a hole in a regular file."""
        if size <= 0:
            return
        if not self.holes:
            while size:
                step = min(size, CHUNK)
                self.write(bytes(step))
                size -= step
            return
        try:
            os.lseek(self._fd, size, os.SEEK_CUR)
        except OSError as error:
            raise self._failed(error) from None
        self._advance(size)
        self._pending_hole = True

    def copy(self, source: Input, offset: int, size: int) -> None:
        """`size` bytes of `source` from `offset`; its holes stay holes here."""
        source.drain()
        at, end = offset, offset + size
        for start, length in source.data_runs(offset, size):
            self.zeros(start - at)
            self._copy_data(source, start, length)
            at = start + length
        self.zeros(end - at)

    def _copy_data(self, source: Input, offset: int, size: int) -> None:
        if self.holes:
            # copy_file_range(2): the kernel copies (or shares extents), no bytes through
            # this process. EXDEV before Linux 5.3, EINVAL or ENOSYS elsewhere: by hand.
            try:
                while size:
                    done = os.copy_file_range(source.fileno(), self._fd, min(size, 1 << 30), offset)
                    if not done:
                        break
                    offset += done
                    size -= done
                    self._advance(done)
                    self._pending_hole = False
            except OSError:
                pass
        while size:
            chunk = source.read_upto(offset, min(size, CHUNK))
            if not chunk:
                raise source.error(f"truncated while copying: it ends before {offset + size:#x}")
            self.write(chunk)
            offset += len(chunk)
            size -= len(chunk)

    def finish(self) -> None:
        """A file ending in a hole gets its length."""
        if self._pending_hole:
            try:
                end = os.lseek(self._fd, 0, os.SEEK_CUR)
                if os.fstat(self._fd).st_size < end:
                    os.ftruncate(self._fd, end)
            except OSError as error:
                raise self._failed(error) from None


def write_output(
    path: str | None,
    fill: Callable[[Sink], object],
    *,
    mode: int | None = None,
    binary: bool = True,
    size: int = 0,
) -> None:
    """The one writer: `fill` writes into a Sink for -o PATH, or standard output when
    PATH is None or `-`. `mode`: the permission bits of the input the output is made
    from (None: no regular file). `size`: the expected output size, for a progress bar.
    Binary output is refused on a terminal."""
    if path is None or path == "-":
        try:
            fd = sys.stdout.fileno()
        except (AttributeError, ValueError, OSError):
            _write_stream(fill, binary=binary)
            return
        _write_fd(fd, "<stdout>", fill, binary=binary, size=size, flush=True)
        return
    own, through = _plan(path)
    if own is not None:
        _write_fd(own, path, fill, binary=binary, size=size, flush=own in (1, 2))
        return
    if through:
        _write_through(path, fill, binary=binary, size=size)
        return
    _write_atomic(path, fill, mode=mode, size=size)


def write_atomic(path: str, fill: Callable[[Sink], object]) -> None:
    """A text file (a layout file), through the one writer."""
    write_output(path, fill, binary=False)


def write_binary(data: bytes, output: str | None, mode: int | None = None) -> None:
    """Raw bytes to -o FILE, or to stdout when stdout is not a terminal."""
    write_output(output, lambda out: out.write(data), mode=mode, size=len(data))


def refuse_terminal() -> None:
    raise XcrError("refusing to write binary data to a terminal: pass -o FILE or pipe the output")


def _plan(path: str) -> tuple[int | None, bool]:
    """(a descriptor of this process the path names, whether to write through)."""
    current = path
    for _ in range(_MAX_LINKS):
        own = _OWN_FD.fullmatch(current)
        if own and (own.group(1) is None or int(own.group(1)) == os.getpid()):
            return int(own.group(2)), False
        if own:
            # Another process's descriptor: open it, never replace what it names.
            return None, True
        try:
            target = os.readlink(current)
        except OSError:
            break
        current = os.path.join(os.path.dirname(current), target)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None, False  # a new file, or a link to nothing: created
    except OSError as error:
        raise InputError(path, f"cannot write: {reason(error)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(path, "cannot write: is a directory")
    return None, not stat.S_ISREG(info.st_mode)


def _bar(name: str, size: int) -> _Bar | None:
    if size < PROGRESS_MIN or sys.stderr is None or not sys.stderr.isatty():
        return None
    return _Bar(name, size)


def _regular(fd: int) -> bool:
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        # O_APPEND ignores the offset: a hole cannot be made by seeking.
        return not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND
    except OSError:
        return False


def _write_fd(
    fd: int, name: str, fill: Callable[[Sink], object], *, binary: bool, size: int, flush: bool
) -> None:
    if flush:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stdout.flush()
    if binary and os.isatty(fd):
        refuse_terminal()
    _fill(Sink(fd, name, holes=_regular(fd), bar=_bar(name, size)), fill)


def _write_stream(fill: Callable[[Sink], object], *, binary: bool) -> None:
    """Standard output with no descriptor (an in-memory one, as click's CliRunner and
    embedding programs give): through its binary buffer, zeros written out."""
    if binary and stdout_is_terminal():
        refuse_terminal()
    stream = cast("IO[bytes]", getattr(sys.stdout, "buffer", None) or sys.stdout)
    _fill(Sink(-1, "<stdout>", holes=False, stream=stream), fill)
    stream.flush()


def _fill(sink: Sink, fill: Callable[[Sink], object]) -> None:
    try:
        fill(sink)
        sink.finish()
    finally:
        if sink._bar is not None:
            sink._bar.stop()


def _write_through(path: str, fill: Callable[[Sink], object], *, binary: bool, size: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as error:
        raise InputError(path, f"cannot write: {reason(error)}") from None
    try:
        if binary and os.isatty(fd):
            refuse_terminal()
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.ftruncate(fd, 0)  # another process's file, by its /proc/PID/fd link
        _fill(Sink(fd, path, holes=_regular(fd), bar=_bar(path, size)), fill)
    finally:
        os.close(fd)


def _write_atomic(
    path: str, fill: Callable[[Sink], object], *, mode: int | None, size: int
) -> None:
    """A regular file through a temporary beside it (beside the file a link names), so
    that it is whole or untouched; on any failure the temporary goes."""
    target = os.path.realpath(path) if os.path.islink(path) else path
    directory = os.path.dirname(os.path.abspath(target))
    try:
        existing: os.stat_result | None = os.stat(target)
    except OSError:
        existing = None
    try:
        import tempfile  # only here: it imports shutil, which imports lzma and bz2

        handle, temporary = tempfile.mkstemp(
            prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory
        )
    except OSError as exc:
        raise InputError(path, f"cannot write here: {reason(exc)}") from None
    try:
        if existing is not None:
            # The owner first: chown(2) clears set-user-ID bits that chmod then restores.
            with contextlib.suppress(OSError):
                os.fchown(handle, existing.st_uid, existing.st_gid)
            os.fchmod(handle, stat.S_IMODE(existing.st_mode))
        else:
            os.fchmod(handle, new_file_mode(mode))
        _fill(Sink(handle, path, holes=True, bar=_bar(path, size)), fill)
        os.fsync(handle)
        os.close(handle)
        handle = -1
        os.replace(temporary, target)
    except BaseException as error:
        if handle >= 0:
            os.close(handle)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError) and not isinstance(error, BrokenPipeError):
            raise InputError(path, f"cannot write: {reason(error)}") from None
        raise
