"""Reading what the user named: one-line errors for every way a path can be wrong, and
reads that stop at a bound whatever the input claims to be (a device, /dev/zero, a FIFO).

An input is opened once as an `Input`: positional reads that check their bounds and name
the input in every error. Regular files (and block devices) are read in place, holes and
all. Anything else (standard input from a pipe, a FIFO, process substitution's
/dev/fd/N, a compressed file) is a stream: it is read forward only as far as a caller
asks, and what has been read is kept in a spool (a sparse temporary file), so that a
reader can go back, and so that a core can still be rewritten whole once the stream
has been drained (`Input.drain`). A decode of a piped core therefore reads its notes and
stops; a 1 GiB core costs what its notes cost.

Compressed inputs (zstd, xz, gzip, lz4) are recognised by their magic, never by name,
and decompressed as a stream (files.compressed).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import stat
import sys
from collections.abc import Iterator
from typing import IO, BinaryIO, Protocol

from xcr0tool.errors import InputError

STDIN = "<stdin>"
# Reads of a stream ask for at least this much (a pipe gives at most 64 KiB at a time):
# enough to make few system calls, little enough that stopping after the notes reads
# little past them.
STREAM_READ = 64 << 10
# Copies and spools move at most this much at once: memory stays bounded whatever the
# input's size.
CHUNK = 1 << 20
# Holes are looked for and made in blocks of this size (a multiple of every file
# system's block size on Linux; a smaller run of zeros is written as data).
HOLE_BLOCK = 64 << 10


def reason(error: OSError) -> str:
    """An OSError as the lower-case phrase our one-line messages use."""
    return (error.strerror or str(error)).lower()


def check_readable_file(path: str, expected: str = "an XSAVE image or a core") -> None:
    """One line naming the file, for what every input can be: missing, unreadable, a
    directory."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except PermissionError:
        raise InputError(path, "permission denied") from None
    except OSError as exc:
        raise InputError(path, reason(exc)) from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(path, f"is a directory, not {expected}")


def read_limited(path: str, limit: int, expected: str) -> bytes:
    """A whole input file of at most `limit` bytes, read with that bound (so a device or
    a lying file costs at most limit + 1 bytes of memory); one line naming the file
    otherwise."""
    check_readable_file(path, expected)
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputError(path, reason(exc)) from None
    if len(data) > limit:
        raise InputError(path, f"over {limit} bytes: too large for {expected}")
    return data


@functools.lru_cache(maxsize=8)
def _zeros(size: int) -> bytes:
    return bytes(size)


def is_zero(data: bytes) -> bool:
    """All zero bytes (a memcmp; cheap to refuse, as most data has a non-zero byte at
    one end)."""
    return not data or (data[0] == 0 and data[-1] == 0 and data == _zeros(len(data)))


def _temporary() -> IO[bytes]:
    """An unnamed temporary file for a stream's spool."""
    import tempfile  # only here: it imports shutil, which imports lzma and bz2

    return tempfile.TemporaryFile(prefix="xcr0tool-stream-")


class Input:
    """An opened input. `name` is how errors call it; `size` is known for a file, and for
    a stream once its end has been read. `mode` holds the permission bits of a regular
    file (what an output made from it may have), None otherwise."""

    name: str
    size: int | None
    mode: int | None = None
    kind: str = "file"  # "file", "stream", or a compression format's name

    def error(self, problem: str) -> InputError:
        return InputError(self.name, problem)

    # -- reading --------------------------------------------------------------------
    def read_upto(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes at `offset`: fewer only where the input ends."""
        raise NotImplementedError

    def need(self, what: str, end: int) -> None:
        """Fail, naming `what`, unless the input holds `end` bytes."""
        raise NotImplementedError

    def read(self, what: str, offset: int, size: int) -> bytes:
        """Exactly `size` bytes at `offset`, or one line saying where `what` was cut."""
        data = self.read_upto(offset, size)
        if len(data) < size:
            self.need(what, offset + size)
            raise self.error(f"truncated: {what} ends at {offset + size:#x}")
        return data

    # -- copying --------------------------------------------------------------------
    def drain(self) -> None:
        """Have the whole input at hand (a stream: read to its end), for a copy."""

    def data_runs(self, offset: int, size: int) -> Iterator[tuple[int, int]]:
        """The runs of [offset, offset + size) that hold data; what is between them is a
        hole (reads as zeros, takes no disk). Only after `drain`."""
        raise NotImplementedError

    def fileno(self) -> int:
        """A descriptor of a regular file holding the input's bytes (after `drain`)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Input:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _data_runs(fd: int, offset: int, size: int) -> Iterator[tuple[int, int]]:
    """SEEK_DATA/SEEK_HOLE (lseek(2)) over a regular file; where the file system cannot
    say, the whole range is data."""
    end = offset + size
    at = offset
    while at < end:
        try:
            data = os.lseek(fd, at, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:  # nothing but a hole up to the end of file
                return
            yield at, end - at  # EINVAL: no SEEK_DATA here
            return
        if data >= end:
            return
        try:
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        except OSError:
            hole = end
        yield data, hole - data
        at = hole


class FileInput(Input):
    """A regular file or a block device, read in place with pread."""

    def __init__(self, handle: BinaryIO, name: str, size: int, mode: int | None) -> None:
        self._handle = handle
        self.name = name
        self.size = size
        self.mode = mode

    def read_upto(self, offset: int, size: int) -> bytes:
        assert self.size is not None
        size = max(0, min(size, self.size - offset))
        if not size:
            return b""
        try:
            return os.pread(self._handle.fileno(), size, offset)
        except OSError as error:
            raise self.error(reason(error)) from None

    def need(self, what: str, end: int) -> None:
        assert self.size is not None
        if end > self.size:
            raise self.error(f"truncated: {what} ends at {end:#x}, file is {self.size:#x} bytes")

    def data_runs(self, offset: int, size: int) -> Iterator[tuple[int, int]]:
        return _data_runs(self._handle.fileno(), offset, size)

    def fileno(self) -> int:
        return self._handle.fileno()

    def close(self) -> None:
        self._handle.close()


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...

    def close(self) -> None: ...


class StreamInput(Input):
    """A stream read forward on demand, everything read kept in a sparse spool."""

    def __init__(self, stream: _Readable, name: str, kind: str = "stream") -> None:
        self._stream = stream
        self.name = name
        self.kind = kind
        self.size = None
        self._spool: IO[bytes] | None = None
        self._have = 0  # bytes read from the stream, all in the spool
        self._spool_end = 0  # bytes written to the spool file (less any trailing hole)

    @property
    def consumed(self) -> int:
        """Bytes read from the stream so far."""
        return self._have

    def _fill(self, end: int) -> None:
        """Read the stream until it has given `end` bytes, or ended."""
        while self._have < end and self.size is None:
            want = min(max(end - self._have, STREAM_READ), CHUNK)
            try:
                chunk = self._stream.read(want)
            except OSError as error:
                raise self.error(reason(error)) from None
            except (EOFError, ValueError, RuntimeError) as error:
                # The decompressors' own errors (files.compressed turns theirs into these).
                raise self.error(f"not a valid {self.kind} stream: {error}") from None
            if not chunk:
                self.size = self._have
                break
            self._append(chunk)
        if self._spool is not None and self._spool_end < self._have:
            # A run of zeros at the end was not written: make it a hole, so that the
            # spool reads back as the stream.
            self._spool.truncate(self._have)
            self._spool_end = self._have

    def _append(self, chunk: bytes) -> None:
        if self._spool is None:
            self._spool = _temporary()
        at = self._have
        self._have += len(chunk)
        # Zero blocks become holes: a sparse core piped in stays sparse in the spool,
        # and so in a rewrite of it.
        if is_zero(chunk):
            return
        blocks = range(0, len(chunk), HOLE_BLOCK) if len(chunk) > HOLE_BLOCK else (0,)
        for start in blocks:
            block = chunk[start : start + HOLE_BLOCK] if len(chunk) > HOLE_BLOCK else chunk
            if len(block) == HOLE_BLOCK and is_zero(block):
                continue
            try:
                os.pwrite(self._spool.fileno(), block, at + start)
            except OSError as error:
                raise InputError(
                    self.name, f"cannot keep it in a temporary file: {reason(error)}"
                ) from None
            self._spool_end = max(self._spool_end, at + start + len(block))

    def read_upto(self, offset: int, size: int) -> bytes:
        self._fill(offset + size)
        size = max(0, min(size, self._have - offset))
        if not size or self._spool is None:
            return b""
        return os.pread(self._spool.fileno(), size, offset)

    def need(self, what: str, end: int) -> None:
        self._fill(end)
        if end > self._have:
            raise self.error(
                f"truncated: {what} ends at {end:#x}, the {self.kind} ends after"
                f" {self._have:#x} bytes"
            )

    def drain(self) -> None:
        if self.size is None:
            _grow_pipe(self._stream)
        while self.size is None:
            self._fill(self._have + CHUNK)

    def data_runs(self, offset: int, size: int) -> Iterator[tuple[int, int]]:
        self.drain()
        if self._spool is None:
            return iter(())
        return _data_runs(self._spool.fileno(), offset, size)

    def fileno(self) -> int:
        self.drain()
        if self._spool is None:
            self._spool = _temporary()
        return self._spool.fileno()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.close()
        if self._spool is not None:
            self._spool.close()


def _grow_pipe(stream: object) -> None:
    """A pipe read to its end moves 1 MiB per read(2), not 64 KiB (fcntl(2)
    F_SETPIPE_SZ; the default /proc/sys/fs/pipe-max-size allows it). Only for a whole
    read: before, the writer should be able to run no further ahead than it must."""
    import fcntl  # here, not with the module: only a piped input is read whole

    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
        if setpipe is not None and stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, setpipe, CHUNK)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        pass


def _stdin_stream() -> BinaryIO:
    """Standard input as bytes, or one line when there is none (`<&-`: Python then has
    no sys.stdin at all)."""
    stream = sys.stdin
    buffer = getattr(stream, "buffer", None)
    if stream is None or buffer is None:
        raise InputError(
            STDIN, "standard input is closed: pipe an image or a core in, or name a SOURCE"
        )
    try:
        os.fstat(buffer.fileno())
    except (AttributeError, io.UnsupportedOperation, ValueError):
        pass  # no descriptor (an in-memory stream, as click's CliRunner gives): a stream
    except OSError:
        raise InputError(
            STDIN, "standard input is closed: pipe an image or a core in, or name a SOURCE"
        ) from None
    return buffer


def stdin_is_terminal() -> bool:
    """Whether standard input is a terminal (False when it is closed)."""
    stream = sys.stdin
    return bool(stream is not None and stream.isatty())


def open_input(name: str) -> Input:
    """The input SOURCE names: a path, or `-` for standard input. A compressed input
    comes back decompressed (files.compressed). Anything wrong is one line naming it."""
    plain = _open_stdin() if name == "-" else _open_path(name)
    from xcr0tool.files.compressed import MAGIC_SIZE, format_of, stream_of

    kind = format_of(plain.read_upto(0, MAGIC_SIZE))
    if kind is None:
        return plain
    try:
        result = StreamInput(stream_of(kind, plain), plain.name, kind)
    except BaseException:
        plain.close()
        raise
    result.mode = plain.mode
    return result


def _open_stdin() -> Input:
    buffer = _stdin_stream()
    try:
        fd = buffer.fileno()
        info = os.fstat(fd)
    except (AttributeError, io.UnsupportedOperation, ValueError, OSError):
        return StreamInput(buffer, STDIN)
    # `< core`: a regular file, read in place, if nothing has been read from it yet.
    if stat.S_ISREG(info.st_mode) and _position(fd) == 0:
        handle = os.fdopen(os.dup(fd), "rb", buffering=0)
        return FileInput(handle, STDIN, info.st_size, stat.S_IMODE(info.st_mode))
    return StreamInput(os.fdopen(os.dup(fd), "rb", buffering=0), STDIN)


def _position(fd: int) -> int:
    try:
        return os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return -1


def _open_path(path: str) -> Input:
    check_readable_file(path)
    try:
        handle = open(path, "rb", buffering=0)  # noqa: SIM115 - owned by the Input
    except OSError as exc:
        raise InputError(path, reason(exc)) from None
    try:
        info = os.fstat(handle.fileno())
        # A regular file of size 0 may be a /proc or /sys file, whose size says nothing
        # of its contents: that one is read as a stream.
        if stat.S_ISREG(info.st_mode) and info.st_size:
            return FileInput(handle, path, info.st_size, stat.S_IMODE(info.st_mode))
        if stat.S_ISBLK(info.st_mode):
            size = os.lseek(handle.fileno(), 0, os.SEEK_END)
            return FileInput(handle, path, size, None)
    except OSError as exc:
        handle.close()
        raise InputError(path, reason(exc)) from None
    # A FIFO, a pipe (/dev/fd/N of process substitution), a character device.
    stream = StreamInput(handle, path)
    if stat.S_ISREG(info.st_mode):
        stream.mode = stat.S_IMODE(info.st_mode)
    return stream
