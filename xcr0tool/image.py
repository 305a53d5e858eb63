"""The XSAVE image model: which components an image holds, where, and in what state.

An image is bytes plus the layout that places its components. The hot paths (transforms,
diff of many threads) read the header with int.from_bytes at the offsets grammar.py
declares; the grammars are used where whole structures are decoded.

Semantics (SDM vol. 1 §13.6 and §13.8): a component whose XSTATE_BV bit is clear is in
its init state; its bytes mean nothing and its registers read as init values. MXCSR
belongs to both SSE and AVX: it is at its init value only when both are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from xcr0tool.components import (
    CATALOGUE_MASK,
    COMPACTED_BIT,
    EXTENDED_START,
    LEGACY_SIZE,
    SUPERVISOR_MASK,
    bits,
    describe_mask,
)
from xcr0tool.errors import InputError, LayoutError
from xcr0tool.layout import LEGACY_BITS, Layout
from xcr0tool.offsets import FP_XSTATE_MAGIC1, FP_XSTATE_MAGIC2
from xcr0tool.offsets import SW_BYTES as SW_BYTES_OFFSET
from xcr0tool.offsets import XCOMP_BV as XCOMP_BV_OFFSET
from xcr0tool.offsets import XSTATE_BV as XSTATE_BV_OFFSET

FCW_INIT = 0x037F
MXCSR_INIT = 0x1F80
MXCSR_MASK_DEFAULT = 0xFFBF  # SDM §10.5.1.2: a saved MXCSR_MASK of 0 means this

STANDARD = "standard"
COMPACTED = "compacted"
FXSAVE = "fxsave"  # a bare 512-byte legacy region (NT_PRFPREG): no header, x87 and SSE in use


def read_u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def read_u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 8], "little")


@dataclass(frozen=True)
class SignalFrameInfo:
    """struct _fpx_sw_bytes at bytes 464-511 of a signal frame's fpstate."""

    extended_size: int
    xfeatures: int
    xstate_size: int
    magic2: int | None  # the u32 at xstate_size, None when past the end of the buffer

    @property
    def magic2_ok(self) -> bool:
        return self.magic2 == FP_XSTATE_MAGIC2


def header_fields(data: bytes) -> tuple[int, int]:
    """(XSTATE_BV, XCOMP_BV) of an XSAVE image."""
    return read_u64(data, XSTATE_BV_OFFSET), read_u64(data, XCOMP_BV_OFFSET)


def signal_frame_info(data: bytes) -> SignalFrameInfo | None:
    if len(data) < LEGACY_SIZE or read_u32(data, SW_BYTES_OFFSET) != FP_XSTATE_MAGIC1:
        return None
    xstate_size = read_u32(data, SW_BYTES_OFFSET + 16)
    magic2 = read_u32(data, xstate_size) if xstate_size + 4 <= len(data) else None
    return SignalFrameInfo(
        extended_size=read_u32(data, SW_BYTES_OFFSET + 4),
        xfeatures=read_u64(data, SW_BYTES_OFFSET + 8),
        xstate_size=xstate_size,
        magic2=magic2,
    )


def plausible_xcr0(value: int, xstate_bv: int) -> bool:
    """Is this a value XCR0 can hold, covering XSTATE_BV? (SDM §13.3: bit 0 always set,
    AVX needs SSE; no supervisor bits in XCR0.)"""
    return (
        value & 1 == 1
        and not value & SUPERVISOR_MASK
        and not value & COMPACTED_BIT
        and (not value & 0b100 or value & 0b10 != 0)
        and xstate_bv & ~value == 0
    )


@dataclass(frozen=True)
class XsaveImage:
    data: bytes
    layout: Layout
    origin: str  # where the image came from, for messages: "core.123 thread 4242"
    xcr0: int  # the features the image was saved for
    xcr0_source: str  # how xcr0 was learnt
    tid: int | None = None
    long_mode: bool = True  # 64-bit legacy region (FIP/FDP 8 bytes); False for 32-bit cores
    format: str = STANDARD
    notes: tuple[str, ...] = field(default=())

    # Header --------------------------------------------------------------------
    @cached_property
    def xstate_bv(self) -> int:
        if self.format == FXSAVE:
            return LEGACY_BITS
        return read_u64(self.data, XSTATE_BV_OFFSET)

    @cached_property
    def xcomp_bv(self) -> int:
        if self.format == FXSAVE:
            return 0
        return read_u64(self.data, XCOMP_BV_OFFSET)

    @property
    def compacted(self) -> bool:
        return self.format == COMPACTED

    @cached_property
    def signal_frame(self) -> SignalFrameInfo | None:
        return signal_frame_info(self.data)

    @cached_property
    def xcr0_word(self) -> int | None:
        """Bytes 464-471 as the kernel writes them for ptrace and cores (None in a signal frame)."""
        if self.signal_frame is not None or len(self.data) < LEGACY_SIZE:
            return None
        return read_u64(self.data, SW_BYTES_OFFSET)

    # Components ------------------------------------------------------------------
    @cached_property
    def offsets(self) -> dict[int, int]:
        """Where each component with space in this image starts."""
        if self.format == FXSAVE:
            return {0: 0, 1: 160}
        if self.compacted:
            return self.layout.compacted_offsets(self.xcomp_bv | LEGACY_BITS)
        return self.layout.standard_offsets(self.xcr0 | LEGACY_BITS)

    @property
    def component_ids(self) -> list[int]:
        return sorted(self.offsets)

    def size_of(self, component_id: int) -> int:
        return self.layout.require(component_id).size

    def in_use(self, component_id: int) -> bool:
        return bool(self.xstate_bv >> component_id & 1)

    @property
    def mxcsr_in_use(self) -> bool:
        return bool(self.xstate_bv & 0b110)

    def stored_bytes(self, component_id: int) -> bytes:
        """The bytes in the image's space for the component, whatever its state."""
        offset = self.offsets[component_id]
        return self.data[offset : offset + self.size_of(component_id)]

    def component_bytes(self, component_id: int) -> bytes:
        """The component's value: its stored bytes when in use, else its init value.
        (For x87 and SSE use the legacy-region helpers in registers.py.)"""
        if self.in_use(component_id):
            return self.stored_bytes(component_id)
        return bytes(self.size_of(component_id))

    def stale_components(self) -> list[int]:
        """Extended components in init state whose space holds non-zero bytes."""
        return [
            i
            for i in self.component_ids
            if i >= 2 and not self.in_use(i) and any(self.stored_bytes(i))
        ]

    def describe(self) -> str:
        return (
            f"{self.format}, XCR0 {self.xcr0:#x} ({describe_mask(self.xcr0)}),"
            f" XSTATE_BV {self.xstate_bv:#x}"
        )


@dataclass(frozen=True)
class HostFallback:
    """This machine's XCR0, and its layout read only if the image needs it."""

    xcr0: int
    layout: Callable[[], Layout]

    def fits(self, xstate_bv: int, size: int) -> bool:
        """Could this machine have saved the image? Its XCR0 covers XSTATE_BV and its
        standard size is the image's."""
        return (
            plausible_xcr0(self.xcr0, xstate_bv) and self.layout().standard_size(self.xcr0) == size
        )


def _needed_size(layout: Layout, xcr0: int, compacted_bv: int | None) -> int:
    if compacted_bv is not None:
        return layout.compacted_size(compacted_bv)
    return layout.standard_size(xcr0)


def build_image(
    data: bytes,
    *,
    origin: str,
    layout: Layout | None,
    tid: int | None = None,
    long_mode: bool = True,
    xcr0: int | None = None,
    xcr0_source: str | None = None,
    host: HostFallback | None = None,
) -> XsaveImage:
    """Recognise the format of `data`, learn its XCR0, choose a layout, check that the
    image holds what its header promises, and return the model.

    `layout`: an explicit layout (core note, --layout); None means a guess from XCR0 and
    size, which names itself. `xcr0`: what the user said with --xcr0. `host`: this
    machine's XCR0 and layout, a fallback for images that carry no XCR0 at all.
    """
    from xcr0tool.profiles import guess_layout

    size = len(data)
    if size == LEGACY_SIZE:
        chosen = layout or guess_layout(LEGACY_BITS, EXTENDED_START, origin)
        return XsaveImage(
            data,
            chosen,
            origin,
            LEGACY_BITS,
            "FXSAVE area: x87 and SSE only",
            tid,
            long_mode,
            FXSAVE,
        )
    if size < EXTENDED_START:
        raise InputError(
            origin,
            f"{size} bytes is too small for an XSAVE image (legacy region and header need 576)"
            if size
            else "empty: no XSAVE image",
        )
    xstate_bv, xcomp_bv = header_fields(data)
    compacted = bool(xcomp_bv & COMPACTED_BIT)
    for field_name, value in (("XSTATE_BV", xstate_bv), ("XCOMP_BV", xcomp_bv & ~COMPACTED_BIT)):
        stray = value & ~CATALOGUE_MASK
        if stray:
            raise InputError(
                origin,
                f"not an XSAVE image: {field_name} {value:#x} sets bits that no state"
                f" component uses ({', '.join(map(str, bits(stray)))})",
            )
    frame = signal_frame_info(data)
    word = None if frame else read_u64(data, SW_BYTES_OFFSET)
    if xcr0 is not None:
        source = xcr0_source or "given"
    elif compacted:
        xcr0, source = xcomp_bv & ~COMPACTED_BIT & ~SUPERVISOR_MASK, "XCOMP_BV"
    elif frame is not None and plausible_xcr0(frame.xfeatures, xstate_bv):
        xcr0, source = frame.xfeatures, "signal frame sw_bytes xfeatures"
    elif word is not None and plausible_xcr0(word, xstate_bv):
        xcr0, source = word, "XCR0 word at byte 464"
    elif host is not None and host.fits(xstate_bv, size):
        xcr0, source = host.xcr0, "this machine's XCR0 (the image has no XCR0 word)"
        layout = layout or host.layout()
    else:
        xcr0, source = xstate_bv | LEGACY_BITS, "XSTATE_BV (the image has no XCR0 word)"
    if not plausible_xcr0(xcr0 | 1, 0) and not compacted:
        raise InputError(origin, f"XCR0 {xcr0:#x} is not a value XCR0 can hold")
    try:
        if layout is None:
            if compacted:
                layout = _guess_compacted(xcomp_bv, origin)
            else:
                layout = guess_layout(xcr0 | LEGACY_BITS, size, origin)
        needed = _needed_size(layout, xcr0, xcomp_bv if compacted else None)
    except LayoutError as exc:
        raise InputError(origin, str(exc).removeprefix(f"{origin}: ")) from None
    if size < needed:
        raise InputError(
            origin,
            f"truncated: {describe_mask(xcomp_bv if compacted else xcr0)} needs {needed} bytes"
            f" in the {'compacted' if compacted else 'standard'} format ({layout.source}),"
            f" the image has {size}",
        )
    notes = []
    if xstate_bv & ~(xcomp_bv if compacted else xcr0) & ~COMPACTED_BIT:
        notes.append(
            f"XSTATE_BV {xstate_bv:#x} has bits outside"
            f" {'XCOMP_BV' if compacted else 'XCR0'}: they are ignored (XRSTOR would fault)"
        )
    return XsaveImage(
        data,
        layout,
        origin,
        xcr0,
        source,
        tid,
        long_mode,
        COMPACTED if compacted else STANDARD,
        tuple(notes),
    )


def _guess_compacted(xcomp_bv: int, origin: str) -> Layout:
    """Compacted images need only sizes and alignment, which every vendor shares for user
    components; take the first profile that knows every component listed."""
    from xcr0tool.profiles import PROFILES, profile_layout

    wanted = xcomp_bv & ~COMPACTED_BIT
    for profile in PROFILES:
        layout = profile_layout(profile.name)
        if wanted & ~layout.known_mask() == 0:
            return layout.with_source(
                f"sizes and alignment of {layout.source} (a compacted image needs no offsets)"
            )
    unknown = [i for i in bits(wanted) if i not in profile_layout("intel").components and i >= 2]
    raise LayoutError(
        f"{origin}: no built-in layout knows components {unknown} of XCOMP_BV {xcomp_bv:#x};"
        " pass --layout FILE"
    )
