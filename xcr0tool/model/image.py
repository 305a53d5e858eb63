"""The XSAVE image model: which components an image holds, where, and in what state.

An image is bytes plus the layout that places its components. The hot paths (transforms,
diff of many threads) read the header with int.from_bytes at the offsets grammar.py
declares; the grammars are used where whole structures are decoded.

Semantics (SDM vol. 1 §13.6 and §13.8): a component whose XSTATE_BV bit is clear is in
its init state; its bytes mean nothing and its registers read as init values. MXCSR
belongs to both SSE and AVX and follows XRSTOR's own rule (arch/mxcsr.py). Which values
can be an XCR0 is arch/xcr0.py's rule table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import NamedTuple

from xcr0tool.arch import mxcsr
from xcr0tool.arch.components import (
    CATALOGUE_MASK,
    COMPACTED_BIT,
    EXTENDED_START,
    LEGACY_SIZE,
    SUPERVISOR_MASK,
    bits,
    describe_mask,
    is_extended,
)
from xcr0tool.arch.offsets import SW_BYTES as SW_BYTES_OFFSET
from xcr0tool.arch.offsets import XCOMP_BV as XCOMP_BV_OFFSET
from xcr0tool.arch.offsets import XSTATE_BV as XSTATE_BV_OFFSET
from xcr0tool.arch.offsets import read_u64
from xcr0tool.arch.xcr0 import X87, XCR0_RULES, check_xcr0, is_xcr0, least_xcr0, xcr0_reason
from xcr0tool.errors import InputError, LayoutError
from xcr0tool.model.layout import LEGACY_BITS, Layout
from xcr0tool.model.sigframe import (
    SignalFrameInfo,
    frame_area_sizes,
    frame_context,
    signal_frame_info,
)

# The rules of arch/xcr0.py a signal frame's xfeatures keeps too (see _xfeatures_flaw).
_AVX_NEEDS_SSE, _NO_SUPERVISOR, _NO_BIT_63 = XCR0_RULES[1], XCR0_RULES[-2], XCR0_RULES[-1]

FCW_INIT = 0x037F
MXCSR_INIT = mxcsr.MXCSR_INIT
MXCSR_MASK_DEFAULT = mxcsr.MXCSR_MASK_DEFAULT


class ImageFormat(str, Enum):
    """How an image is laid out (its JSON "format")."""

    STANDARD = "standard"
    COMPACTED = "compacted"
    FXSAVE = "fxsave"  # a bare 512-byte legacy region (NT_PRFPREG): no header

    __str__ = str.__str__


STANDARD = ImageFormat.STANDARD
COMPACTED = ImageFormat.COMPACTED
FXSAVE = ImageFormat.FXSAVE

XCR0_WORD = "XCR0 word at byte 464"  # the xcr0_source of the kernel's word


def header_fields(data: bytes) -> tuple[int, int]:
    """(XSTATE_BV, XCOMP_BV) of an XSAVE image."""
    return read_u64(data, XSTATE_BV_OFFSET), read_u64(data, XCOMP_BV_OFFSET)


def xcr0_covers(value: int, xstate_bv: int) -> bool:
    """Could XCR0 = value have saved an image with this XSTATE_BV? It is a value XCR0 can
    hold, and XSTATE_BV names no component outside it."""
    return is_xcr0(value) and not xstate_bv & ~value


@dataclass(frozen=True)
class XsaveImage:
    data: bytes
    layout: Layout
    origin: str  # where the image came from, for messages: "core.123 thread 4242"
    xcr0: int  # the features the image was saved for
    xcr0_source: str  # how xcr0 was learnt
    tid: int | None = None
    long_mode: bool = True  # 64-bit legacy region (FIP/FDP 8 bytes); False for 32-bit cores
    format: ImageFormat = STANDARD
    notes: tuple[str, ...] = field(default=())
    event: int | None = None  # an rr trace's frame: its index in the events file
    # Components the source does not keep (CRIU: AMX, APX): their state is unknown, neither
    # in use nor init, and nothing is compared with them.
    absent: int = 0

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
    def requested(self) -> int:
        """RFBM of the XRSTOR that loads this image as it was saved: XCR0 for the
        standard form, XCOMP_BV for the compacted one, x87 and SSE for FXRSTOR."""
        if self.format == COMPACTED:
            return self.xcomp_bv & ~COMPACTED_BIT
        if self.format == FXSAVE:
            return LEGACY_BITS
        return self.xcr0

    @property
    def mxcsr_loaded(self) -> bool:
        """Does XRSTOR load MXCSR from this image (rather than keep or init it)? The one
        predicate, arch/mxcsr.py: the standard form whenever XCR0 has SSE or AVX, whatever
        XSTATE_BV says; the compacted form only with XSTATE_BV[1]; FXRSTOR always. (gdb
        shows 0x1f80 whenever SSE and AVX are both in init state; the kernel's cores and
        ptrace buffers then hold 0x1f80, so the two agree there.)"""
        return xrstor_loads_mxcsr(self)

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
            if is_extended(i) and not self.in_use(i) and any(self.stored_bytes(i))
        ]


class HostFallback(NamedTuple):  # not a dataclass: cheap to define at every start
    """This machine's XCR0, and its layout read only if the image needs it."""

    xcr0: int
    layout: Callable[[], Layout]

    def fits(self, xstate_bv: int, size: int) -> bool:
        """Could this machine have saved the image? Its XCR0 covers XSTATE_BV and its
        standard size is the image's."""
        return xcr0_covers(self.xcr0, xstate_bv) and self.layout().standard_size(self.xcr0) == size


class Recognised(NamedTuple):  # not a dataclass: cheap to define at every start
    """What an image's own bytes say before any layout is chosen: its format, its XCR0
    and where that came from, the sizes its XSAVE area may have, and notes."""

    data: bytes
    origin: str
    format: ImageFormat
    xstate_bv: int
    xcomp_bv: int
    xcr0: int
    xcr0_source: str
    areas: list[int]  # candidate area sizes: the buffer, or a signal frame's xstate_size
    context: list[str]  # what the signal-frame checks found
    frame: SignalFrameInfo | None
    host_layout: Layout | None = None  # set when the image is this machine's by its size

    def refusal(self, problem: str) -> InputError:
        return _refusal(self.origin, problem, self.context)


def recognise(
    data: bytes,
    *,
    origin: str,
    xcr0: int | None = None,
    xcr0_source: str | None = None,
    host: HostFallback | None = None,
) -> Recognised:
    """Recognise the format of `data` and learn its XCR0 (SDM §13.4: the header; the
    kernel's XCR0 word at byte 464 or a signal frame's sw_bytes). `xcr0`: what the user
    said with --xcr0. `host`: this machine's XCR0 and layout, a fallback for images that
    carry no XCR0 at all.

    The word at byte 464 counts as `--xcr0` would, refused alike when XCR0 cannot hold
    it (arch/xcr0.py), except 0: no XSAVE instruction writes bytes 464-511 (SDM vol. 1
    §13.4.1; tests/oracles/test_cpu_oracle.py test_xsave_writes_only_rfbm), so an image the CPU
    saved into a zeroed buffer has 0 there, which says "no XCR0 word", not XCR0 = 0."""
    if xcr0 is not None:
        # The one rule table, refused alike by every command; a value an input recorded
        # (an rr trace header) names that input.
        check_xcr0(xcr0, f"{origin} ({xcr0_source})" if xcr0_source else "--xcr0")
    size = len(data)
    frame = signal_frame_info(data)
    # What is wrong with a signal frame's sw_bytes (or why a buffer is not one): notes when
    # the image decodes, and the tail of the one-line error when it does not.
    context = frame_context(data, frame)
    if size == LEGACY_SIZE:
        return Recognised(
            data, origin, FXSAVE, LEGACY_BITS, 0, LEGACY_BITS,
            "FXSAVE area: x87 and SSE only", [size], context, frame,
        )  # fmt: skip
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
    xfeatures_flaw = None if frame is None else _xfeatures_flaw(frame.xfeatures, xstate_bv)
    if frame is not None and xfeatures_flaw is not None:
        context.append(
            f"signal frame: xfeatures {frame.xfeatures:#x} cannot be XCR0: {xfeatures_flaw}"
        )
    # A signal frame's XSAVE area ends where magic2 begins, not at the end of the buffer.
    areas = [size] if frame is None else frame_area_sizes(frame, size)
    host_layout = None
    if xcr0 is not None:
        source = xcr0_source or "given"
    elif compacted:
        # XSAVEC writes XCOMP_BV = RFBM & XCR0 | bit 63 (SDM vol. 1 §13.10): with a partial
        # RFBM it is no XCR0 (0x24), so take the least XCR0 that holds it.
        xcr0 = least_xcr0(xcomp_bv)
        source = "XCOMP_BV"
        if xcr0 != xcomp_bv & ~COMPACTED_BIT & ~SUPERVISOR_MASK:
            source = f"XCOMP_BV {xcomp_bv:#x}, grown to the least XCR0 that holds it"
    elif frame is not None and xfeatures_flaw is None:
        xcr0, source = frame.xfeatures, "signal frame sw_bytes xfeatures"
    elif word:
        problem = xcr0_word_problem(word)
        if problem is not None:
            raise _refusal(origin, problem, context)
        xcr0, source = word, XCR0_WORD
    elif host is not None and host.fits(xstate_bv, areas[0]):
        xcr0, source = host.xcr0, "this machine's XCR0 (the image has no XCR0 word)"
        host_layout = host.layout()
    else:
        # The least XCR0 that holds XSTATE_BV's components (x87 always; AVX-512's three
        # together, with AVX and SSE): what saved the image at least.
        xcr0 = least_xcr0(xstate_bv | LEGACY_BITS)
        source = "XSTATE_BV (the image has no XCR0 word)"
    return Recognised(
        data, origin, COMPACTED if compacted else STANDARD, xstate_bv, xcomp_bv, xcr0,
        source, areas, context, frame, host_layout,
    )  # fmt: skip


def assemble(
    found: Recognised, layout: Layout, *, tid: int | None = None, long_mode: bool = True
) -> XsaveImage:
    """The image model, once a layout is chosen: check that the image holds what its
    header promises in that layout."""
    if found.format == FXSAVE:
        return XsaveImage(
            found.data, layout, found.origin, found.xcr0, found.xcr0_source, tid, long_mode,
            FXSAVE, tuple(found.context),
        )  # fmt: skip
    compacted = found.format == COMPACTED
    xcr0, xstate_bv, xcomp_bv = found.xcr0, found.xstate_bv, found.xcomp_bv
    try:
        needed = layout.compacted_size(xcomp_bv) if compacted else layout.standard_size(xcr0)
    except LayoutError as exc:
        raise found.refusal(exc.problem) from None
    size = len(found.data)
    if size < needed:
        raise found.refusal(
            f"truncated: {describe_mask(xcomp_bv if compacted else xcr0)} needs {needed} bytes"
            f" in the {'compacted' if compacted else 'standard'} format ({layout.source}),"
            f" the image has {size}"
        )
    notes = list(found.context)
    frame = found.frame
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
        found.data, layout, found.origin, xcr0, found.xcr0_source, tid, long_mode,
        found.format, tuple(notes),
    )  # fmt: skip


def xcr0_word_problem(word: int) -> str | None:
    """Why the u64 at byte 464 cannot be the XCR0 that saved the image (None if it can,
    and for 0, which means no word): the one reason text of arch/xcr0.py."""
    reason = xcr0_reason(word) if word else None
    if reason is None:
        return None
    return (
        f"the word at byte {SW_BYTES_OFFSET} is not an XCR0: {reason};"
        " pass --xcr0 to say which XCR0 saved the image"
    )


def _xfeatures_flaw(xfeatures: int, xstate_bv: int) -> str | None:
    """Why a signal frame's xfeatures cannot stand for the XCR0 of its image (None if it
    can). Not the XCR0 rule table: xfeatures is the task's user features, the RFBM of the
    kernel's XSAVE into the frame, and on an AMX machine a task without AMX permission
    gets 0x202e7, XTILECFG without XTILEDATA (arch/x86/kernel/fpu/xstate.c,
    fpstate->user_xfeatures; seen in tests/unit/sources/test_sigframe.py's real frames).
    Only what no XSAVE can have written is refused: no x87, AVX without SSE, supervisor
    bits, bit 63, or an XSTATE_BV outside it."""
    if not xfeatures & X87:
        return "bit 0 (x87) is clear"
    for rule in (_AVX_NEEDS_SSE, _NO_SUPERVISOR, _NO_BIT_63):
        if not rule.holds(xfeatures):
            return rule.text
    if xstate_bv & ~xfeatures:
        stray = ", ".join(map(str, bits(xstate_bv & ~xfeatures)))
        return f"XSTATE_BV {xstate_bv:#x} sets bits {stray} outside it"
    return None


def xrstor_loads_mxcsr(image: XsaveImage) -> bool:
    """Would XRSTOR (FXRSTOR for an FXSAVE area) of the image load its MXCSR?"""
    if image.format == FXSAVE:
        return True
    return mxcsr.xrstor_loads_mxcsr(
        compacted=image.format == COMPACTED, rfbm=image.requested, xstate_bv=image.xstate_bv
    )


def _refusal(origin: str, problem: str, context: list[str]) -> InputError:
    """The one-line error, with what the signal-frame checks found appended."""
    return InputError(origin, "; ".join([problem, *context]))
