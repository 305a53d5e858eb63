"""The XSAVE image model: which components an image holds, where, and in what state.

An image is bytes plus the layout that places its components. The hot paths (transforms,
diff of many threads) read the header with int.from_bytes at the offsets grammar.py
declares; the grammars are used where whole structures are decoded.

Semantics (SDM vol. 1 §13.6 and §13.8): a component whose XSTATE_BV bit is clear is in
its init state; its bytes mean nothing and its registers read as init values. MXCSR
belongs to both SSE and AVX and follows XRSTOR's own rule (see mxcsr_loaded).
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
from xcr0tool.offsets import SW_BYTES as SW_BYTES_OFFSET
from xcr0tool.offsets import XCOMP_BV as XCOMP_BV_OFFSET
from xcr0tool.offsets import XSTATE_BV as XSTATE_BV_OFFSET
from xcr0tool.offsets import read_u64
from xcr0tool.sigframe import (
    SignalFrameInfo,
    frame_area_sizes,
    frame_context,
    signal_frame_info,
)

FCW_INIT = 0x037F
MXCSR_INIT = 0x1F80
MXCSR_MASK_DEFAULT = 0xFFBF  # SDM §10.5.1.2: a saved MXCSR_MASK of 0 means this

STANDARD = "standard"
COMPACTED = "compacted"
FXSAVE = "fxsave"  # a bare 512-byte legacy region (NT_PRFPREG): no header, x87 and SSE in use


def header_fields(data: bytes) -> tuple[int, int]:
    """(XSTATE_BV, XCOMP_BV) of an XSAVE image."""
    return read_u64(data, XSTATE_BV_OFFSET), read_u64(data, XCOMP_BV_OFFSET)


def xcr0_flaw(value: int, xstate_bv: int) -> str | None:
    """Why this cannot be an XCR0 that saved an image with this XSTATE_BV; None if it can.
    (SDM §13.3: bit 0 always set, AVX needs SSE; no supervisor bits in XCR0.)"""
    if value & 1 != 1:
        return "bit 0 (x87) is clear"
    if value & SUPERVISOR_MASK:
        return f"it sets supervisor bits {', '.join(map(str, bits(value & SUPERVISOR_MASK)))}"
    if value & COMPACTED_BIT:
        return "it sets bit 63"
    if value & 0b100 and not value & 0b10:
        return "it sets bit 2 (AVX) without bit 1 (SSE)"
    if xstate_bv & ~value:
        stray = ", ".join(map(str, bits(xstate_bv & ~value)))
        return f"XSTATE_BV {xstate_bv:#x} sets bits {stray} outside it"
    return None


def plausible_xcr0(value: int, xstate_bv: int) -> bool:
    """Is this a value XCR0 can hold, covering XSTATE_BV?"""
    return xcr0_flaw(value, xstate_bv) is None


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
    def mxcsr_loaded(self) -> bool:
        """Does XRSTOR load MXCSR from this image (rather than its init value)?

        Measured on the CPU and as the SDM's XRSTOR pseudocode has it: the standard form
        loads MXCSR whenever SSE or AVX is requested, whatever XSTATE_BV says; the
        compacted form only when XSTATE_BV[1] is set. (gdb shows 0x1f80 whenever SSE and
        AVX are both in init state; the kernel's cores and ptrace buffers then hold
        0x1f80, so the two agree there.)"""
        if self.format == COMPACTED:
            return self.in_use(1)
        return True

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
    size = len(data)
    frame = signal_frame_info(data)
    # What is wrong with a signal frame's sw_bytes (or why a buffer is not one): notes when
    # the image decodes, and the tail of the one-line error when it does not.
    context = frame_context(data, frame)
    if size == LEGACY_SIZE:
        from xcr0tool.profiles import guess_layout

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
            tuple(context),
        )
    if size < EXTENDED_START:
        raise _refusal(
            origin,
            f"{size} bytes is too small for an XSAVE image (legacy region and header need 576)"
            if size
            else "empty: no XSAVE image",
            context,
        )
    xstate_bv, xcomp_bv = header_fields(data)
    compacted = bool(xcomp_bv & COMPACTED_BIT)
    for field_name, value in (("XSTATE_BV", xstate_bv), ("XCOMP_BV", xcomp_bv & ~COMPACTED_BIT)):
        stray = value & ~CATALOGUE_MASK
        if stray:
            raise _refusal(
                origin,
                f"not an XSAVE image: {field_name} {value:#x} sets bits that no state"
                f" component uses ({', '.join(map(str, bits(stray)))})",
                context,
            )
    word = None if frame else read_u64(data, SW_BYTES_OFFSET)
    xfeatures_flaw = None if frame is None else xcr0_flaw(frame.xfeatures, xstate_bv)
    if frame is not None and xfeatures_flaw is not None:
        context.append(
            f"signal frame: xfeatures {frame.xfeatures:#x} cannot be XCR0: {xfeatures_flaw}"
        )
    # A signal frame's XSAVE area ends where magic2 begins, not at the end of the buffer.
    areas = [size] if frame is None else frame_area_sizes(frame, size)
    if xcr0 is not None:
        source = xcr0_source or "given"
    elif compacted:
        xcr0, source = xcomp_bv & ~COMPACTED_BIT & ~SUPERVISOR_MASK, "XCOMP_BV"
    elif frame is not None and xfeatures_flaw is None:
        xcr0, source = frame.xfeatures, "signal frame sw_bytes xfeatures"
    elif word is not None and plausible_xcr0(word, xstate_bv):
        xcr0, source = word, "XCR0 word at byte 464"
    elif host is not None and host.fits(xstate_bv, areas[0]):
        xcr0, source = host.xcr0, "this machine's XCR0 (the image has no XCR0 word)"
        layout = layout or host.layout()
    else:
        xcr0, source = xstate_bv | LEGACY_BITS, "XSTATE_BV (the image has no XCR0 word)"
    if not plausible_xcr0(xcr0 | 1, 0) and not compacted:
        raise _refusal(origin, f"XCR0 {xcr0:#x} is not a value XCR0 can hold", context)
    try:
        if layout is None:
            if compacted:
                layout = _guess_compacted(xcomp_bv, origin)
            else:
                layout = _guess_standard(xcr0 | LEGACY_BITS, areas, origin)
        needed = _needed_size(layout, xcr0, xcomp_bv if compacted else None)
    except LayoutError as exc:
        raise _refusal(origin, str(exc).removeprefix(f"{origin}: "), context) from None
    if size < needed:
        raise _refusal(
            origin,
            f"truncated: {describe_mask(xcomp_bv if compacted else xcr0)} needs {needed} bytes"
            f" in the {'compacted' if compacted else 'standard'} format ({layout.source}),"
            f" the image has {size}",
            context,
        )
    notes = context
    if frame is not None and not compacted and frame.xstate_size != needed:
        notes.append(
            f"signal frame: xstate_size {frame.xstate_size}, but the standard format of XCR0"
            f" {xcr0:#x} is {needed} bytes in this layout"
        )
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


def _refusal(origin: str, problem: str, context: list[str]) -> InputError:
    """The one-line error, with what the signal-frame checks found appended."""
    return InputError(origin, "; ".join([problem, *context]))


def _guess_standard(xcr0: int, sizes: list[int], origin: str) -> Layout:
    """The guess for the first of `sizes` that a built-in layout fits; else the error the
    first size gets."""
    from xcr0tool.profiles import guess_layout

    first: LayoutError | None = None
    for size in sizes:
        try:
            return guess_layout(xcr0, size, origin)
        except LayoutError as exc:
            first = first or exc
    assert first is not None  # sizes is never empty
    raise first


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
