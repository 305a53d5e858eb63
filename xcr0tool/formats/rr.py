"""rr trace files: the `version` header and the frames of `events` (rr 5.x, TRACE_VERSION 85).

Facts, each checked against rr's source (rr-debugger/rr, src/TraceStream.cc, util.cc,
CompressedWriter.h, CompressedReader.cc) and against `capnp compile -ocapnp` of rr's
schema (src/rr_trace.capnp), which prints every field's bit offset:

- `version`: the ASCII TRACE_VERSION and a newline, then one packed, uncompressed Header
  message (TraceWriter::close, writePackedMessageToFd). rr refuses any other version
  (TraceReader::TraceReader: "has an incompatible version").
- Header (9 data words, 3 pointers): x86.hasCpuidFaulting is bit 32, x86.xcr0 the u64 at
  byte 8, nativeArch the u16 at byte 18 (stored XOR its default x8664 = 1), x86.cpuidRecords
  pointer 1: 24-byte records {u32 eax_in, u32 ecx_in, u32 eax, ebx, ecx, edx} (util.h
  CPUIDRecord; ecx_in UINT32_MAX for leaves without sub-leaves; util.cc
  gather_cpuid_records records all 64 sub-leaves of leaf 0xD).
- XCR0: Header.x86.xcr0, or CPUID.(0xD,0) EDX:EAX when that is 0, or 3 without leaf 0xD
  (TraceReader::xcr0).
- `events`: blocks of {u32 compressed_length, u32 uncompressed_length} and brotli data,
  in that order (CompressedWriter.h BlockHeader; the schema's comment has it the other
  way round). rr cuts blocks of 1 MiB of uncompressed data wherever they fall, so a
  frame may span blocks. The uncompressed stream is packed Frame messages
  (TraceWriter::write_frame), each built with a 64-word first segment, so a frame with
  XSAVE data has several segments and far pointers.
- Frame (7 data words, 5 pointers): tid the i32 at byte 0, arch the u16 at byte 4
  (x86 0, x8664 1, aarch64 2), the event union's tag the u16 at byte 6, extraRegisters
  pointer 2, whose pointer 0 is the raw data: on x86 the XSAVE image PTRACE_GETREGSET
  NT_X86_XSTATE returned on the recording machine (standard format, its layout). rr
  replays it only if its size is CPUID.(0xD,0).EBX of the header's records
  (ExtraRegisters::set_to_raw_data, "Invalid XSAVE data length").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from xcr0tool.errors import InputError, XcrError
from xcr0tool.formats.capnp import (
    CapnpError,
    Message,
    PackedSource,
    Struct,
    read_packed_message,
    read_segment_table,
)

TRACE_VERSION = 85
NO_SUBLEAF = 0xFFFFFFFF
XSAVE_LEAF = 0xD
CPUID_RECORD_SIZE = 24
VERSION_FILE_LIMIT = 1 << 20  # a header is a few KiB (some 100 CPUID records)

# rr's events blocks hold 1 MiB uncompressed (TraceStream.cc, substreams "events");
# anything much larger is not a block rr wrote, and is refused before it is allocated.
BLOCK_LIMIT = 64 << 20

ARCH_X86, ARCH_X8664, ARCH_AARCH64 = 0, 1, 2
ARCH_NAMES = {ARCH_X86: "x86", ARCH_X8664: "x86-64", ARCH_AARCH64: "aarch64"}

# Header data section (byte or bit offsets, from capnp compile -ocapnp)
_HEADER_HAS_CPUID_FAULTING_BIT = 32
_HEADER_XCR0 = 8
_HEADER_NATIVE_ARCH = 18
_HEADER_NATIVE_ARCH_DEFAULT = ARCH_X8664
_HEADER_CPUID_RECORDS_PTR = 1

# Frame
_FRAME_TID = 0
_FRAME_ARCH = 4
_FRAME_EVENT_TAG = 6
_FRAME_SYSCALL_NUMBER = 28  # event.syscall.number, bits [224, 256)
_FRAME_EXTRA_REGISTERS_PTR = 2
_EXTRA_REGISTERS_RAW_PTR = 0
_ROOT_WORDS = 1 + 7 + 5  # the root pointer, then Frame's 7 data words and 5 pointers

# Frame.event union tags, in the schema's order of declaration
EVENT_NAMES = (
    "instructionTrap",
    "patchSyscall",
    "syscallbufAbortCommit",
    "syscallbufReset",
    "sched",
    "growMap",
    "signal",
    "signalDelivery",
    "signalHandler",
    "exit",
    "syscallbufFlush",
    "syscall",
    "patchAfterSyscall",
    "patchVsyscall",
    "patchTrappingInstruction",
)
_SYSCALL_TAG = 11


@dataclass(frozen=True)
class RrHeader:
    """What an rr trace's `version` file says about the recording machine."""

    version: int
    xcr0: int  # the XCR0 rr itself uses for the trace (TraceReader::xcr0)
    cpuid: dict[tuple[int, int], tuple[int, int, int, int]]  # (leaf, subleaf) -> regs
    has_cpuid_faulting: bool
    xcr0_source: str = "Header.x86.xcr0"
    native_arch: int = ARCH_X8664

    def leaf_0d(self) -> dict[int, tuple[int, int, int, int]]:
        """CPUID leaf 0xD as recorded: {sub-leaf: regs}, the non-zero sub-leaves only (as
        xcr0tool.cpu.leaf_0d gives this machine's)."""
        return {
            sub: regs
            for (leaf, sub), regs in self.cpuid.items()
            if leaf == XSAVE_LEAF and sub < 64 and any(regs)
        }

    @property
    def xsave_size(self) -> int:
        """The size of every frame's XSAVE data: CPUID.(0xD,0).EBX, or 512 (FXSAVE) when the
        recorder had no leaf 0xD (util.cc, xsave_layout_from_trace)."""
        sub0 = self.cpuid.get((XSAVE_LEAF, 0))
        return 512 if sub0 is None else sub0[1]

    @property
    def vendor(self) -> str:
        regs = self.cpuid.get((0, NO_SUBLEAF)) or self.cpuid.get((0, 0))
        if regs is None:
            return ""
        raw = b"".join(r.to_bytes(4, "little") for r in (regs[1], regs[3], regs[2]))
        return raw.decode("latin-1").rstrip("\0")


@dataclass(frozen=True)
class RrFrame:
    """One frame of `events`: its index (rr's frame time less one), the task, and the raw
    XSAVE image when the frame carries extra registers."""

    index: int
    tid: int
    arch: int
    xsave: bytes | None
    event: str = ""  # the event's kind, as the schema names it ("signal", "syscall 59")


def decode_header(data: bytes, name: str) -> RrHeader:
    """The `version` file's bytes (`name` for messages) as an RrHeader."""
    line, newline, _rest = data[:32].partition(b"\n")
    if not newline or not line.isdigit():
        shown = data[:16].decode("ascii", "backslashreplace")
        raise InputError(
            name, f"not an rr trace header: it starts {shown!r}, not a version number and newline"
        )
    version = int(line)
    if version != TRACE_VERSION:
        raise InputError(
            name,
            f"rr trace version {version}: only version {TRACE_VERSION} (rr 5.x) can be read;"
            " a trace of another rr version needs that rr",
        )
    body = data[len(line) + 1 :]
    try:
        root = read_packed_message(PackedSource(body)).root()
        cpuid_bytes = root.data(_HEADER_CPUID_RECORDS_PTR) or b""
        recorded_xcr0 = root.u64(_HEADER_XCR0)
        faulting = root.bit(_HEADER_HAS_CPUID_FAULTING_BIT)
        native_arch = root.u16(_HEADER_NATIVE_ARCH) ^ _HEADER_NATIVE_ARCH_DEFAULT
    except CapnpError as exc:
        raise InputError(name, f"the Header message after the version line: {exc}") from None
    if native_arch not in (ARCH_X86, ARCH_X8664):
        arch = ARCH_NAMES.get(native_arch, f"arch code {native_arch}")
        raise InputError(name, f"recorded on {arch}: an rr trace of {arch} has no XSAVE state")
    if len(cpuid_bytes) % CPUID_RECORD_SIZE:
        raise InputError(
            name,
            f"Header.x86.cpuidRecords is {len(cpuid_bytes)} bytes, not a whole number of"
            f" {CPUID_RECORD_SIZE}-byte CPUID records",
        )
    cpuid: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    for at in range(0, len(cpuid_bytes), CPUID_RECORD_SIZE):
        leaf, sub, eax, ebx, ecx, edx = (
            int.from_bytes(cpuid_bytes[at + k : at + k + 4], "little") for k in range(0, 24, 4)
        )
        cpuid.setdefault((leaf, sub), (eax, ebx, ecx, edx))  # rr's find_cpuid_record: first
    if recorded_xcr0:
        xcr0, source = recorded_xcr0, "Header.x86.xcr0"
    elif (XSAVE_LEAF, 0) in cpuid:
        eax, _ebx, _ecx, edx = cpuid[(XSAVE_LEAF, 0)]
        xcr0, source = eax | edx << 32, "CPUID.(0xD,0) EDX:EAX (Header.x86.xcr0 is 0)"
    else:
        xcr0, source = 3, "x87 and SSE (Header.x86.xcr0 is 0 and there is no CPUID leaf 0xD)"
    return RrHeader(version, xcr0, cpuid, faulting, source, native_arch)


def read_header_file(path: str, name: str | None = None) -> RrHeader:
    """A trace's `version` file, read whole (it is small; a larger one is refused)."""
    name = name or path
    try:
        with open(path, "rb") as handle:
            data = handle.read(VERSION_FILE_LIMIT + 1)
    except OSError as exc:
        raise InputError(name, (exc.strerror or str(exc)).lower()) from None
    if len(data) > VERSION_FILE_LIMIT:
        raise InputError(
            name, f"over {VERSION_FILE_LIMIT} bytes: not an rr trace header (a few KiB)"
        )
    if not data:
        raise InputError(name, "empty: not an rr trace header")
    return decode_header(data, name)


# events -----------------------------------------------------------------------------------
def _brotli_decompressor() -> Callable[[bytes, int], tuple[bytes, bool]]:
    """brotli's streaming decoder, imported only when an events file is read."""
    try:
        import brotli
    except ImportError:
        raise XcrError(
            "reading an rr trace's events needs the brotli module: pip install brotli"
        ) from None

    def decompress(data: bytes, limit: int) -> tuple[bytes, bool]:
        # At most `limit` bytes come out, whatever the stream claims (output_buffer_limit):
        # a lying length or a decompression bomb costs no more than the block's claim.
        decoder = brotli.Decompressor()
        out = decoder.process(data, output_buffer_limit=limit)
        return out, bool(decoder.is_finished())

    return decompress


class _Blocks:
    """The decompressed blocks of an events file, one at a time."""

    def __init__(self, handle: BinaryIO, name: str, size: int):
        self._handle = handle
        self._name = name
        self._size = size
        self._offset = 0
        self._at = 0  # where the block being read starts
        self.index = -1
        self.frame = 0  # the frame being read, for messages
        self._decompress = _brotli_decompressor()

    def _refuse(self, problem: str) -> InputError:
        return InputError(
            self._name, f"frame {self.frame}: block {self.index} at byte {self._at}: {problem}"
        )

    def next(self) -> bytes | None:
        self._at = self._offset
        head = self._handle.read(8)
        if not head:
            return None
        self.index += 1
        if len(head) < 8:
            raise self._refuse(f"truncated: {len(head)} of the 8 bytes of a block header")
        compressed = int.from_bytes(head[:4], "little")
        uncompressed = int.from_bytes(head[4:], "little")
        left = self._size - self._offset - 8
        for what, value in (("compressed", compressed), ("uncompressed", uncompressed)):
            if value > BLOCK_LIMIT:
                raise self._refuse(
                    f"claims {value} bytes {what}; rr writes blocks of 1 MiB, and more than"
                    f" {BLOCK_LIMIT >> 20} MiB is refused"
                )
        if compressed > left:
            raise self._refuse(
                f"truncated: claims {compressed} compressed bytes, the file has {left} more"
            )
        data = self._handle.read(compressed)
        if len(data) < compressed:
            raise self._refuse(f"truncated: {len(data)} of {compressed} compressed bytes")
        self._offset += 8 + compressed
        try:
            out, finished = self._decompress(data, uncompressed + 1)
        except Exception as exc:  # brotli.error, whatever the binding calls it
            raise self._refuse(f"corrupt brotli data ({exc or 'the decoder refused it'})") from None
        if len(out) > uncompressed:
            raise self._refuse(
                f"claims {uncompressed} bytes uncompressed, its brotli data gives more than"
                f" {uncompressed}"
            )
        if len(out) < uncompressed or not finished:
            state = "" if finished else " (the brotli stream does not end)"
            raise self._refuse(
                f"claims {uncompressed} bytes uncompressed, its brotli data gives {len(out)}{state}"
            )
        return out


def iter_frames(
    path: str, *, name: str | None = None, xsave_size: int | None = None
) -> Iterator[RrFrame]:
    """Every frame of an events file, read block by block: memory is one block and one
    frame, whatever the file's size. `xsave_size`: the header's CPUID.(0xD,0).EBX; a
    frame's XSAVE data shorter than that is refused (rr refuses it too)."""
    name = name or path
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, after the generator's last use
    except OSError as exc:
        raise InputError(name, (exc.strerror or str(exc)).lower()) from None
    with handle:
        blocks = _Blocks(handle, name, os.fstat(handle.fileno()).st_size)
        source = PackedSource(b"", blocks.next)
        index = 0
        while not source.at_end():
            blocks.frame = index
            try:
                frame = _read_frame(source, index)
            except CapnpError as exc:
                raise InputError(name, f"frame {index}: {exc}") from None
            if frame.xsave is not None:
                if frame.arch not in (ARCH_X86, ARCH_X8664):
                    raise InputError(
                        name,
                        f"frame {index}: extra registers of a"
                        f" {ARCH_NAMES.get(frame.arch, f'arch code {frame.arch}')} task"
                        " are not XSAVE data",
                    )
                if xsave_size is not None and len(frame.xsave) < xsave_size:
                    raise InputError(
                        name,
                        f"frame {index}: its XSAVE data is {len(frame.xsave)} bytes, shorter"
                        f" than the {xsave_size} bytes of the recording CPU"
                        " (CPUID.(0xD,0).EBX in the trace header)",
                    )
            yield frame
            index += 1


def _read_frame(source: PackedSource, index: int) -> RrFrame:
    """One packed Frame. Its root struct is looked at first: most frames carry no extra
    registers, and the rest of them (memWrites lists) is skipped, never unpacked."""
    sizes = read_segment_table(source)
    source.mark()
    try:
        head = bytearray()
        peek = min(sizes[0], _ROOT_WORDS)
        source.unpack(peek, head)
        root_pointer = int.from_bytes(head[:8], "little")
        struct_words = (root_pointer >> 32 & 0xFFFF) + (root_pointer >> 48)
        # A struct right after the root pointer, as capnp's builder places it, and within
        # the words looked at (else: the whole message, the slow way)
        if (
            root_pointer & 3 == 0
            and root_pointer >> 2 & ((1 << 30) - 1) == 0
            and (1 + struct_words <= peek)
        ):
            root = Message([bytes(head)]).root()
            if not root.has_pointer(_FRAME_EXTRA_REGISTERS_PTR):
                source.unpack(sizes[0] - peek, None)
                for size in sizes[1:]:
                    source.unpack(size, None)
                return _frame(index, root, None)
        source.rewind()
    finally:
        source.release()
    segments = []
    for size in sizes:
        out = bytearray()
        source.unpack(size, out)
        segments.append(bytes(out))
    root = Message(segments).root()
    extra = root.struct(_FRAME_EXTRA_REGISTERS_PTR)
    raw = None if extra is None else extra.data(_EXTRA_REGISTERS_RAW_PTR)
    return _frame(index, root, raw or None)


def _frame(index: int, root: Struct, xsave: bytes | None) -> RrFrame:
    tag = root.u16(_FRAME_EVENT_TAG)
    event = EVENT_NAMES[tag] if tag < len(EVENT_NAMES) else f"event tag {tag}"
    if tag == _SYSCALL_TAG:
        event = f"syscall {root.i32(_FRAME_SYSCALL_NUMBER)}"
    return RrFrame(index, root.i32(_FRAME_TID), root.u16(_FRAME_ARCH), xsave, event)
