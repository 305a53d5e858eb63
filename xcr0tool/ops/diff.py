"""Compare XSAVE images by state: registers, not bytes; or bytes, each one placed.

State: every register of both images as registers.py reads it, so a component in init
state counts as its init values, and images in different formats or layouts compare
register by register. A register whose component one image has no space for (masked
away, another XCR0) is "only in A" or "only in B": a difference. A component a source
does not keep at all (XsaveImage.absent: AMX in a CRIU image) is not compared.

Raw: byte by byte at the same offsets, each differing byte named by the component,
field and register it belongs to in each image.

Threads pair by position (the first of A with the first of B, ...) or as --pair
TID_A:TID_B says; a thread with no partner is a difference of its own.
"""

from __future__ import annotations

import fnmatch
import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache
from itertools import zip_longest

from xcr0tool.arch import legacy
from xcr0tool.arch.components import LEGACY_SIZE, component, is_extended
from xcr0tool.errors import InputError
from xcr0tool.model.image import FXSAVE, XsaveImage
from xcr0tool.model.registers import (  # the lanes are the register model's
    DEFAULT_LANES,
    LANES,
    lane_widths,
    lanes_of,
    registers,
    select,
)
from xcr0tool.model.reread import Reread
from xcr0tool.sources.open import SourceResult

STATE, RAW = "state", "raw"


class DiffStatus(str, Enum):
    """How a pair of threads, or a register, compares (the JSON "status")."""

    SAME = "same"
    DIFFERENT = "different"
    ONLY_A = "only-a"
    ONLY_B = "only-b"

    __str__ = str.__str__


SAME, DIFFERENT, ONLY_A, ONLY_B = DiffStatus


# Lanes ---------------------------------------------------------------------------------
def format_lane(raw: int, width: int, kind: str) -> str:
    """A lane as hex, or as a float when the view is f32/f64 and the lane is whole."""
    if kind in ("f32", "f64") and width == LANES[kind]:
        (number,) = struct.unpack("<f" if width == 4 else "<d", raw.to_bytes(width, "little"))
        if math.isnan(number):
            return f"nan(0x{raw:0{2 * width}x})"
        return f"{number:.9g}" if width == 4 else repr(number)
    return f"{raw:0{2 * width}x}"


@dataclass(frozen=True)
class LaneChange:
    index: int  # 0 is the lowest lane
    a: str
    b: str


def lane_changes(a: int, b: int, size: int, kind: str) -> tuple[LaneChange, ...]:
    widths = lane_widths(size, kind)
    pairs = zip(lanes_of(a, size, kind), lanes_of(b, size, kind), widths, strict=True)
    return tuple(
        LaneChange(i, format_lane(x, w, kind), format_lane(y, w, kind))
        for i, (x, y, w) in enumerate(pairs)
        if x != y
    )


# State ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegisterChange:
    name: str
    component: int
    size: int  # bytes
    a: int | None  # None: the register is only in B
    b: int | None
    lanes: tuple[LaneChange, ...]  # the differing lanes; empty when one side has none

    @property
    def status(self) -> DiffStatus:
        if self.a is None:
            return ONLY_B
        if self.b is None:
            return ONLY_A
        return DIFFERENT


@dataclass(frozen=True)
class HeaderChange:
    field: str  # format, size, xcr0, xcr0_source, xstate_bv, xcomp_bv, layout
    a: str
    b: str


def header_values(image: XsaveImage) -> dict[str, str]:
    """The header fields diff compares, as text."""
    return {
        "format": image.format,
        "size": str(len(image.data)),
        "xcr0": f"{image.xcr0:#x}",
        "xcr0_source": image.xcr0_source,
        "xstate_bv": f"{image.xstate_bv:#x}",
        "xcomp_bv": f"{image.xcomp_bv:#x}",
        "layout": image.layout.source,
    }


def compare_headers(a: XsaveImage, b: XsaveImage) -> tuple[HeaderChange, ...]:
    """The header fields that differ. Layouts differ when they place or size a component
    differently, not merely because each names its own source (two cores' notes)."""
    fa, fb = header_values(a), header_values(b)
    same_layout = a.layout == b.layout  # Layout equality: same places and sizes
    return tuple(
        HeaderChange(k, fa[k], fb[k])
        for k in fa
        if fa[k] != fb[k] and not (k == "layout" and same_layout)
    )


def compare_registers(
    a: XsaveImage, b: XsaveImage, kind: str = DEFAULT_LANES, patterns: Sequence[str] = ()
) -> tuple[RegisterChange, ...]:
    """Registers whose values differ, and those only one image has, in A's order then
    B's."""
    regs_a = {r.name: r for r in select(registers(a), patterns)}
    regs_b = {r.name: r for r in select(registers(b), patterns)}
    unknown = a.absent | b.absent
    changes = []
    for name in regs_a | regs_b:  # A's names in A's order, then those only B has
        ra, rb = regs_a.get(name), regs_b.get(name)
        if unknown >> (ra or rb).component & 1:  # type: ignore[union-attr]
            continue
        if ra is not None and rb is not None:
            if ra.value != rb.value:
                size = max(ra.size, rb.size)
                lanes = lane_changes(ra.value, rb.value, size, kind)
                changes.append(RegisterChange(name, ra.component, size, ra.value, rb.value, lanes))
        elif ra is not None:
            changes.append(RegisterChange(name, ra.component, ra.size, ra.value, None, ()))
        elif rb is not None:
            changes.append(RegisterChange(name, rb.component, rb.size, None, rb.value, ()))
    return tuple(changes)


# Raw -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Place:
    """What a byte of an image is: its component (None for the header and reserved
    bytes), the field it is part of, and the gdb register it shows in, if any."""

    component: int | None
    field: str
    register: str | None

    @property
    def component_name(self) -> str | None:
        return None if self.component is None else component(self.component).name

    def describe(self) -> str:
        owner = "" if self.component_name is None else f"{self.component_name} "
        register = f" ({self.register})" if self.register and self.register != self.field else ""
        return f"{owner}{self.field}{register}"


PAST_END = Place(None, "past the end", None)
GAP = Place(None, "no component", None)


@cache
def _legacy_places(long_mode: bool) -> list[tuple[int, int, Place]]:
    """The legacy region and header, byte ranges to places: the one field table
    (arch/legacy.py; SDM vol. 1 tables 10-2 and 10-3), the padding of array slots
    (st0-st7 use 10 of their 16 bytes) named "<slot> padding"."""
    out = []
    for row in (*legacy.fields(long_mode), *legacy.HEADER):
        for start, name, register in row.slots():
            out.append((start, start + row.size, Place(row.component, name, register)))
            if row.repeat > 1 and row.stride > row.size:
                padding = Place(row.component, f"{name} padding", None)
                out.append((start + row.size, start + row.stride, padding))
    return out


def byte_places(image: XsaveImage) -> list[Place]:
    """The place of every byte of the image."""
    places = [GAP] * len(image.data)

    def fill(start: int, end: int, place: Place) -> None:
        end = min(end, len(places))
        places[start:end] = [place] * max(0, end - start)

    for start, end, place in _legacy_places(image.long_mode):
        if image.format == FXSAVE and start >= LEGACY_SIZE:
            break  # an FXSAVE area has no header
        fill(start, end, place)
    if image.format == FXSAVE:
        return places
    for i, offset in image.offsets.items():
        if not is_extended(i):
            continue
        comp = component(i)
        size = image.size_of(i)
        fill(offset, offset + size, Place(i, f"{comp.name} bytes", None))
        for f in comp.fields:
            if f.offset + f.size <= size:
                # ymm3h shows in ymm3, zmm3h in zmm3 (the catalogue's Field.register)
                place = Place(i, f.name, f.register_name)
                fill(offset + f.offset, offset + f.offset + f.size, place)
    return places


@dataclass(frozen=True)
class ByteRun:
    """Adjacent differing bytes that share their places in both images."""

    offset: int
    a: bytes  # shorter than b where A ends first
    b: bytes
    a_place: Place
    b_place: Place

    @property
    def length(self) -> int:
        return max(len(self.a), len(self.b))

    def registers(self) -> set[str]:
        return {p.register for p in (self.a_place, self.b_place) if p.register}


def compare_bytes(
    a: XsaveImage, b: XsaveImage, patterns: Sequence[str] = ()
) -> tuple[ByteRun, ...]:
    places_a, places_b = byte_places(a), byte_places(b)
    runs: list[ByteRun] = []
    for offset in range(max(len(a.data), len(b.data))):
        byte_a = a.data[offset : offset + 1]
        byte_b = b.data[offset : offset + 1]
        if byte_a == byte_b:
            continue
        place_a = places_a[offset] if byte_a else PAST_END
        place_b = places_b[offset] if byte_b else PAST_END
        last = runs[-1] if runs else None
        if (
            last is not None
            and last.offset + last.length == offset
            and (last.a_place, last.b_place) == (place_a, place_b)
        ):
            runs[-1] = ByteRun(last.offset, last.a + byte_a, last.b + byte_b, place_a, place_b)
        else:
            runs.append(ByteRun(offset, byte_a, byte_b, place_a, place_b))
    if patterns:
        runs = [
            r
            for r in runs
            if any(fnmatch.fnmatchcase(n, p) for n in r.registers() for p in patterns)
        ]
    return tuple(runs)


# Pairs and sources ---------------------------------------------------------------------
@dataclass(frozen=True)
class ThreadDiff:
    a: XsaveImage | None  # None: a thread only B has
    b: XsaveImage | None
    header: tuple[HeaderChange, ...] = ()
    registers: tuple[RegisterChange, ...] = ()
    bytes: tuple[ByteRun, ...] = ()

    @property
    def status(self) -> DiffStatus:
        if self.a is None:
            return ONLY_B
        if self.b is None:
            return ONLY_A
        return DIFFERENT if self.registers or self.bytes else SAME


@dataclass(frozen=True)
class DiffResult:
    a: SourceResult
    b: SourceResult
    mode: str  # state | raw
    lanes: str
    patterns: tuple[str, ...]
    pairs: Sequence[ThreadDiff]  # a tuple, or StreamedPairs for an rr trace's frames

    def statuses(self) -> list[DiffStatus]:
        """Each pair's status, without comparing again."""
        if isinstance(self.pairs, StreamedPairs):
            return self.pairs.statuses()
        return [p.status for p in self.pairs]

    @property
    def same(self) -> bool:
        return all(status == SAME for status in self.statuses())


_STATUSES = tuple(DiffStatus)


class StreamedPairs(Reread[ThreadDiff]):
    """The pairs of two sources of which one is an rr trace whose images are read again at
    each iteration (sources/rrtrace.py's TraceImages): compared once for their statuses,
    which is all that is held (a byte a pair), and again as they are iterated, so that
    no pair's images are held. A pair found the same is not compared again: only its
    header is (a same pair shows its header changes, never register changes)."""

    def __init__(
        self,
        a: Sequence[XsaveImage],
        b: Sequence[XsaveImage],
        compare: Callable[[XsaveImage, XsaveImage], ThreadDiff],
    ) -> None:
        self._a, self._b, self._compare = a, b, compare
        self._status = bytearray()
        for pair in self._pairs(None):
            self._status.append(_STATUSES.index(pair.status))

    def _pairs(self, known: bytearray | None) -> Iterator[ThreadDiff]:
        for index, (x, y) in enumerate(zip_longest(self._a, self._b)):
            if x is None or y is None:
                yield ThreadDiff(x, y)
            elif known is not None and _STATUSES[known[index]] == SAME:
                yield ThreadDiff(x, y, compare_headers(x, y))
            else:
                yield self._compare(x, y)

    def statuses(self) -> list[DiffStatus]:
        return [_STATUSES[code] for code in self._status]

    def __len__(self) -> int:
        return len(self._status)

    def __iter__(self) -> Iterator[ThreadDiff]:
        return self._pairs(self._status)


def _thread(source: SourceResult, tid: int) -> XsaveImage:
    found = [image for image in source.images if image.tid == tid]
    if found:
        return found[0]
    known = [str(i.tid) for i in source.images if i.tid is not None]
    if not known:
        raise InputError(source.name, f"--pair names thread {tid}, but this source has no threads")
    raise InputError(source.name, f"no thread {tid} (threads: {', '.join(known)})")


def pair_threads(
    a: SourceResult, b: SourceResult, pairs: Sequence[tuple[int, int]] = ()
) -> list[tuple[XsaveImage | None, XsaveImage | None]]:
    """By position, or only the pairs named (TID_A, TID_B)."""
    if not pairs:
        return list(zip_longest(a.images, b.images))
    return [(_thread(a, tid_a), _thread(b, tid_b)) for tid_a, tid_b in pairs]


def diff_images(
    a: XsaveImage,
    b: XsaveImage,
    *,
    lanes: str = DEFAULT_LANES,
    patterns: Sequence[str] = (),
    raw: bool = False,
) -> ThreadDiff:
    if raw:
        return ThreadDiff(a, b, compare_headers(a, b), bytes=compare_bytes(a, b, patterns))
    return ThreadDiff(a, b, compare_headers(a, b), compare_registers(a, b, lanes, patterns))


def diff_sources(
    a: SourceResult,
    b: SourceResult,
    *,
    lanes: str = DEFAULT_LANES,
    patterns: Sequence[str] = (),
    raw: bool = False,
    pairs: Sequence[tuple[int, int]] = (),
) -> DiffResult:
    if lanes not in LANES:
        raise ValueError(f"lanes {lanes!r}: one of {', '.join(LANES)}")

    def compare(x: XsaveImage, y: XsaveImage) -> ThreadDiff:
        return diff_images(x, y, lanes=lanes, patterns=patterns, raw=raw)

    mode = RAW if raw else STATE
    if not pairs and not (isinstance(a.images, list) and isinstance(b.images, list)):
        streamed = StreamedPairs(a.images, b.images, compare)
        return DiffResult(a, b, mode, lanes, tuple(patterns), streamed)
    diffs = [
        ThreadDiff(x, y) if x is None or y is None else compare(x, y)
        for x, y in pair_threads(a, b, pairs)
    ]
    return DiffResult(a, b, mode, lanes, tuple(patterns), tuple(diffs))
