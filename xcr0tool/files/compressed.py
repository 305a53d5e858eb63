"""Compressed inputs: zstd (systemd-coredump's .zst), xz, gzip and lz4 (the frame format),
recognised by their magic numbers, decompressed as a stream and only as far as a reader
asks (a decode stops after the notes, whatever the core's size).

Each decompressor is imported only when an input needs it: none is on the path of an
uncompressed input. zstd comes from the standard library's `compression.zstd` (Python
3.14, PEP 784) or, before 3.14, from `backports.zstd`, the same module published by its
authors for older Pythons; lz4 from the `lz4` package (python-lz4); xz and gzip from the
standard library's lzma and zlib.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from xcr0tool.errors import InputError

# Compressed bytes are read this much at a time (files.input reads what they give on).
STREAM_READ = 64 << 10


class Source(Protocol):
    """What is decompressed: an input's positional reads (files.input.Input)."""

    name: str

    def read_upto(self, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...


# Magic numbers: zstd RFC 8878 section 3.1.1 (frame) and 3.1.2 (skippable frames,
# 0x184D2A50-5F, which systemd does not write but zstd accepts); xz file format 1.2.0
# section 2.1.1.1; gzip RFC 1952 section 2.3.1; LZ4 frame format section "General
# structure" (0x184D2204).
_ZSTD = b"\x28\xb5\x2f\xfd"
_XZ = b"\xfd7zXZ\x00"
_GZIP = b"\x1f\x8b"
_LZ4 = b"\x04\x22\x4d\x18"
MAGIC_SIZE = 6

# What decompressing may cost in memory. liblzma's default is no limit: an xz header can
# ask for a 1.5 GiB dictionary; `xz -9` needs 65 MiB to decompress. zstd's decoder
# refuses windows above 128 MiB by default (ZSTD_WINDOWLOG_LIMIT_DEFAULT, 2^27), which
# covers every level without --long; gzip's window is 32 KiB, lz4's blocks 4 MiB.
XZ_MEMLIMIT = 256 << 20


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    @property
    def needs_input(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


def format_of(head: bytes) -> str | None:
    """The compression format whose magic `head` starts with, or None."""
    if head.startswith(_ZSTD) or (
        len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] >> 4 == 5
    ):
        return "zstd"
    if head.startswith(_XZ):
        return "xz"
    if head.startswith(_GZIP):
        return "gzip"
    if head.startswith(_LZ4):
        return "lz4"
    return None


def stream_of(kind: str, source: Source) -> _Stream:
    """The decompressed bytes of `source`, compressed in format `kind` (format_of), as a
    stream: read(n) at a time."""
    return _Stream(source, _factory(kind, source))


def _factory(kind: str, source: Source) -> Callable[[], _Decompressor]:
    try:
        if kind == "zstd":
            import importlib

            try:
                zstd: Any = importlib.import_module("compression.zstd")
            except ImportError:
                zstd = importlib.import_module("backports.zstd")
            factory: Callable[[], _Decompressor] = zstd.ZstdDecompressor
            return factory
        if kind == "xz":
            import lzma

            return lambda: lzma.LZMADecompressor(memlimit=XZ_MEMLIMIT)
        if kind == "gzip":
            return _GzipMember
        import lz4.frame

        return lz4.frame.LZ4FrameDecompressor
    except ImportError:
        package = {"zstd": "backports.zstd", "lz4": "lz4"}[kind]
        raise InputError(
            source.name,
            f"{kind}-compressed, and the {package} package is not installed"
            f" (pip install {package}), or decompress it first",
        ) from None


class _GzipMember:
    """zlib's decompressobj with the interface lzma's, zstd's and lz4's share."""

    def __init__(self) -> None:
        import zlib

        self._error = zlib.error
        # wbits 16 + 15: a gzip member (RFC 1952) with the largest window.
        self._inflate = zlib.decompressobj(wbits=16 + 15)

    @property
    def eof(self) -> bool:
        return self._inflate.eof

    @property
    def unused_data(self) -> bytes:
        return self._inflate.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._inflate.unconsumed_tail

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        try:
            return self._inflate.decompress(
                self._inflate.unconsumed_tail + data, max(max_length, 0)
            )
        except self._error as error:
            raise ValueError(str(error)) from None


class _Stream:
    """The decompressed bytes of `source`, read(n) at a time. Concatenated frames or
    members (zstd and gzip allow them) are read one after another; bytes after the last
    one that do not start another are ignored, as zstd(1) and gzip(1) warn and do."""

    def __init__(self, source: Source, factory: Callable[[], _Decompressor]) -> None:
        self._source = source
        self._factory = factory
        self._decompressor = factory()
        self._at = 0  # next offset to read in source
        self._pending = b""

    def _raw(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        data = self._source.read_upto(self._at, STREAM_READ)
        self._at += len(data)
        return data

    def read(self, size: int) -> bytes:
        try:
            return self._read(size)
        except (EOFError, ValueError, RuntimeError):
            raise
        except Exception as error:  # each library's own error class (ZstdError, LZMAError, ...)
            raise ValueError(str(error) or type(error).__name__) from None

    def _read(self, size: int) -> bytes:
        while True:
            decompressor = self._decompressor
            if decompressor.eof:
                rest = decompressor.unused_data or self._raw()
                if not rest or format_of(rest.ljust(MAGIC_SIZE, b"\0")[:MAGIC_SIZE]) is None:
                    return b""
                self._decompressor = self._factory()
                self._pending = rest
                continue
            data = self._raw() if decompressor.needs_input else b""
            out = decompressor.decompress(data, size)
            if out:
                return out
            if not data and decompressor.needs_input and not decompressor.eof:
                raise EOFError("it ends before its end-of-stream marker")

    def close(self) -> None:
        self._source.close()
