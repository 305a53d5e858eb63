"""Transforms of XSAVE images: standard <-> compacted, vendor re-layout, XCR0 masking.

Pure functions: each takes an `XsaveImage` and returns a new one; nothing is changed in
place. The work is a handful of slice copies planned once per (layout, format, mask):
`_plan` is cached, and the per-image path touches only bytes, memoryview slices and
int.from_bytes (no construct), so that tens of thousands of images a second go through.

What each output holds, and why:

Compacted output is what XSAVEC with requested-feature bitmap RFBM writes into a zeroed
buffer (SDM vol. 2 XSAVEC, "Operation"; measured on an AMD Zen 4 with tests/cpu_oracle.py,
see tests/oracles/test_transforms.py):
- XCOMP_BV = RFBM | bit 63; XSTATE_BV = XSTATE_BV & RFBM, plus bit 1 when RFBM[1] = 1 and
  MXCSR is not 0x1F80 (XSAVEC then saves SSE state, XMM registers included, even if they
  are in their init state).
- Components whose XSTATE_BV bit is clear are not written: their space, x87's bytes 0-23
  and 32-159, and SSE's bytes 24-31 (MXCSR, MXCSR_MASK) and 160-415 stay zero. MXCSR goes
  with SSE only: XSAVEC with RFBM = AVX alone does not write it.
- No XSAVE instruction writes bytes 416-511 or 528-575: they are zero.

Standard output is what the kernel hands to ptrace and writes to cores
(arch/x86/kernel/fpu/xstate.c, __copy_xstate_to_uabi_buf; regset.c, xstateregs_get):
- XSTATE_BV = XSTATE_BV & XCR0; XCOMP_BV and bytes 528-575 zero.
- Components in their init state are written as their init values, not left stale:
  x87 as FCW 0x037F and zeros (copy_feature from init_fpstate), XMM registers and every
  extended component as zeros (the kernel's "gap" zeroing).
- MXCSR and MXCSR_MASK: the kernel copies them when SSE or AVX is in XSTATE_BV and writes
  the init value otherwise. We write the MXCSR that XRSTOR would load from the source
  whenever XCR0 has SSE or AVX: for kernel images that is the same value, and for the
  CPU's own XSAVE output (which keeps a non-default MXCSR with SSE and AVX in init state)
  it is the value the CPU holds. MXCSR_MASK comes from the source when the source holds
  it (XSAVEC leaves it unwritten when it does not save SSE); otherwise 0, which the SDM
  (vol. 1 §10.5.1.2) reads as the default mask.
- Bytes 416-463 zero (the kernel's membuf_zero of the padding); bytes 464-471 the XCR0
  value, 472-511 zero (xstate_fx_sw_bytes, which update_regset_xstate_info fills with the
  user XCR0); `keep_sw_bytes` keeps the source's bytes 464-511 instead.

Where XRSTOR and the kernel read an image differently, `canonical_state` follows XRSTOR
(SDM vol. 1 §13.8 and the CPU): in the standard form MXCSR is loaded whenever XCR0 has SSE
or AVX, whatever XSTATE_BV says; in the compacted form only when XSTATE_BV[1] = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from xcr0tool.arch import legacy, mxcsr
from xcr0tool.arch.components import (
    COMPACTED_BIT,
    EXTENDED_START,
    SUPERVISOR_MASK,
    bits,
    component,
    extended_bits,
)
from xcr0tool.arch.xcr0 import SSE as SSE_BIT
from xcr0tool.arch.xcr0 import X87 as X87_BIT
from xcr0tool.arch.xcr0 import check_xcr0  # the one XCR0 rule table (arch/xcr0.py)
from xcr0tool.errors import InputError, LayoutError
from xcr0tool.model.image import (
    COMPACTED,
    FCW_INIT,
    FXSAVE,
    MXCSR_INIT,
    STANDARD,
    ImageFormat,
    XsaveImage,
)
from xcr0tool.model.layout import LEGACY_BITS, Layout


def _span(*grammar: str) -> slice:
    """The bytes of consecutive legacy fields, from the one table (arch/legacy.py)."""
    rows = [legacy.field(name) for name in grammar]
    return slice(rows[0].offset, rows[-1].end)


# The legacy region (SDM vol. 1 table 10-2): x87 owns bytes 0-23 and 32-159, SSE owns
# MXCSR and MXCSR_MASK (24-31) and the XMM registers (160-415).
(X87_CONTROL, X87_REGISTERS), (MXCSR_FIELDS, XMM_REGISTERS) = (
    tuple(slice(start, end) for start, end in legacy.owned(owner))
    for owner in (legacy.X87, legacy.SSE)
)
FCW = _span("fcw")
SW_BYTES = _span("sw_reserved")
XSTATE_BV = _span("xstate_bv")
XCOMP_BV = _span("xcomp_bv")

MXCSR_INIT_BYTES = MXCSR_INIT.to_bytes(4, "little")
FCW_INIT_BYTES = FCW_INIT.to_bytes(2, "little")
# x87 in its init state, as canonical_state gives it (control words, then registers):
# FCW 0x037F, every other field and register zero (SDM vol. 1 §13.6, FNINIT state with
# FTW empty).
_X87_STATE_SIZE = X87_CONTROL.stop - X87_CONTROL.start + X87_REGISTERS.stop - X87_REGISTERS.start
X87_INIT_BYTES = FCW_INIT_BYTES + bytes(_X87_STATE_SIZE - len(FCW_INIT_BYTES))
# MXCSR and MXCSR_MASK when the image holds no MXCSR: a saved MXCSR_MASK of 0 is read as
# the default mask (SDM vol. 1 §10.5.1.2)
_MXCSR_FIELDS_INIT = MXCSR_INIT_BYTES + bytes(4)
# The sw bytes after the XCR0 word, which the kernel zeroes.
_ZERO_SW_TAIL = bytes(SW_BYTES.stop - SW_BYTES.start - 8)


# Plans ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    size: int  # bytes of the target image
    source_end: int  # the source must hold at least this many bytes
    # Extended components to copy: (XSTATE_BV bit, source offset, target offset, size)
    moves: tuple[tuple[int, int, int, int], ...]


_extended = extended_bits


def _offsets(layout: Layout, compacted: bool, space: int) -> dict[int, int]:
    if compacted:
        return layout.compacted_offsets(_extended(space))
    return layout.standard_offsets(_extended(space))


@lru_cache(maxsize=512)
def _plan(
    source: Layout,
    source_compacted: bool,
    source_space: int,
    target: Layout,
    target_compacted: bool,
    target_space: int,
) -> _Plan:
    """Where each extended component goes, from one format and layout to another. Keyed
    by layout equality: layouts that place every component alike share a plan."""
    source_offsets = _offsets(source, source_compacted, source_space)
    target_offsets = _offsets(target, target_compacted, target_space)
    moves = []
    for i, target_offset in target_offsets.items():
        if i not in source_offsets:
            continue  # no space in the source: the target holds its init value
        size = target.require(i).size
        source_size = source.require(i).size
        if source_size != size:
            raise LayoutError(
                None,
                f"component {i} ({component(i).name}) is {source_size} bytes in"
                f" {source.source} and {size} in {target.source}",
            )
        moves.append((1 << i, source_offsets[i], target_offset, size))
    source_end = max([EXTENDED_START] + [offset + size for _bit, offset, _to, size in moves])
    if target_compacted:
        target_size = target.compacted_size(_extended(target_space))
    else:
        target_size = target.standard_size(_extended(target_space))
    return _Plan(target_size, source_end, tuple(moves))


def _plan_for(image: XsaveImage, target: Layout, compacted: bool, space: int) -> _Plan:
    try:
        plan = _plan(
            image.layout, image.format == COMPACTED, _space(image), target, compacted, space
        )
    except LayoutError as exc:
        raise InputError(image.origin, exc.problem) from None
    if len(image.data) < plan.source_end:
        raise InputError(
            image.origin,
            f"truncated: {len(image.data)} bytes, its components need {plan.source_end}",
        )
    return plan


# Reading the source -----------------------------------------------------------------


def _space(image: XsaveImage) -> int:
    """The components the image has space for (XCOMP_BV in the compacted form)."""
    if image.format == COMPACTED:
        return image.xcomp_bv & ~COMPACTED_BIT
    if image.format == FXSAVE:
        return LEGACY_BITS
    return image.xcr0 | X87_BIT


def _mxcsr_fields(image: XsaveImage) -> bytes:
    """MXCSR as XRSTOR would load it, then the image's MXCSR_MASK (0 when the image holds
    no MXCSR): the one predicate, image.mxcsr_loaded (arch/mxcsr.py)."""
    return image.data[MXCSR_FIELDS] if image.mxcsr_loaded else _MXCSR_FIELDS_INIT


# Writing ----------------------------------------------------------------------------


def _copy_in_use(
    image: XsaveImage, target: Layout, compacted: bool, space: int, size: int | None
) -> tuple[bytearray, int]:
    """The image's in-use components of `space` (x87, the XMM registers, extended
    components) copied into a zeroed image of `target`'s layout, compacted or standard,
    with space for `space` and at least `size` bytes; and the image's in-use components."""
    plan = _plan_for(image, target, compacted, space)
    in_use = image.xstate_bv & _space(image)
    copied = in_use & space
    source = memoryview(image.data)
    out = bytearray(plan.size if size is None else max(size, plan.size))
    if copied & X87_BIT:
        out[X87_CONTROL] = source[X87_CONTROL]
        out[X87_REGISTERS] = source[X87_REGISTERS]
    if copied & SSE_BIT:
        out[XMM_REGISTERS] = source[XMM_REGISTERS]
    for bit, source_offset, target_offset, length in plan.moves:
        if copied & bit:
            out[target_offset : target_offset + length] = source[
                source_offset : source_offset + length
            ]
    return out, in_use


def _new_image(
    image: XsaveImage,
    data: bytearray,
    target: Layout,
    xcr0: int,
    form: ImageFormat,
    xcr0_source: str | None,
) -> XsaveImage:
    return XsaveImage(
        bytes(data),
        target,
        image.origin,
        xcr0,
        xcr0_source or image.xcr0_source,
        image.tid,
        image.long_mode,
        form,
    )


def _write_compacted(
    image: XsaveImage,
    rfbm: int,
    target: Layout,
    xcr0: int,
    size: int | None = None,
    xcr0_source: str | None = None,
) -> XsaveImage:
    out, in_use = _copy_in_use(image, target, True, rfbm, size)
    saved = in_use & rfbm
    mxcsr_fields = _mxcsr_fields(image)
    value = int.from_bytes(mxcsr_fields[:4], "little")
    if mxcsr.xsavec_saves_sse(rfbm, xmm_in_use=bool(in_use & SSE_BIT), mxcsr=value):
        # XSAVEC saves SSE for a non-default MXCSR even in SSE's init state; the XMM
        # registers then stay zero
        saved |= SSE_BIT
    if saved & SSE_BIT:
        out[MXCSR_FIELDS] = mxcsr_fields
    out[XSTATE_BV] = saved.to_bytes(8, "little")
    out[XCOMP_BV] = (rfbm | COMPACTED_BIT).to_bytes(8, "little")
    return _new_image(image, out, target, xcr0, COMPACTED, xcr0_source)


def _write_standard(
    image: XsaveImage,
    xcr0: int,
    target: Layout,
    keep_sw_bytes: bool,
    size: int | None = None,
    xcr0_source: str | None = None,
) -> XsaveImage:
    out, in_use = _copy_in_use(image, target, False, xcr0, size)
    written = in_use & xcr0
    if not written & X87_BIT:
        out[FCW] = FCW_INIT_BYTES
    if mxcsr.xsave_stores_mxcsr(xcr0):
        out[MXCSR_FIELDS] = _mxcsr_fields(image)
    if keep_sw_bytes:
        out[SW_BYTES] = image.data[SW_BYTES]
    else:
        out[SW_BYTES] = xcr0.to_bytes(8, "little") + _ZERO_SW_TAIL
    out[XSTATE_BV] = written.to_bytes(8, "little")
    return _new_image(image, out, target, xcr0, STANDARD, xcr0_source)


# The transforms ---------------------------------------------------------------------


def to_compacted(
    image: XsaveImage, xcomp_bv: int | None = None, layout: Layout | None = None
) -> XsaveImage:
    """The image as XSAVEC (XSAVES for supervisor components) writes it with RFBM =
    `xcomp_bv` (default: the image's XCR0 and the supervisor components it holds).

    Like the CPU, which saves XCR0 & RFBM, requested components the image has no space
    for are left out: compare XCOMP_BV with what you asked for. `layout` gives the sizes
    and alignment (default: the image's layout).
    """
    allowed = _space(image) & SUPERVISOR_MASK | image.xcr0
    rfbm = allowed if xcomp_bv is None else xcomp_bv & allowed
    return _write_compacted(image, rfbm, layout or image.layout, rfbm & ~SUPERVISOR_MASK)


def supervisor_components(image: XsaveImage) -> list[int]:
    """Components with space in the image that the standard format cannot hold."""
    layout = image.layout
    return [
        i
        for i in bits(_space(image) & ~LEGACY_BITS)
        if (entry := layout.get(i)) is not None
        and (entry.supervisor or entry.standard_offset is None)
    ]


def to_standard(
    image: XsaveImage,
    layout: Layout | None = None,
    keep_sw_bytes: bool = False,
    drop_supervisor: bool = False,
) -> tuple[XsaveImage, tuple[int, ...]]:
    """The image in the standard format, as the kernel gives it to ptrace and cores, at
    `layout`'s standard offsets (default: the image's layout); a standard image is thereby
    re-laid out. Returns (image, supervisor components dropped).

    Supervisor components have no standard offset: an image holding any (XSAVES output)
    is refused unless `drop_supervisor`.
    """
    supervisor = supervisor_components(image)
    if supervisor and not drop_supervisor:
        names = ", ".join(
            f"{component(i).name} (component {i}, {'in use' if image.in_use(i) else 'init'})"
            for i in supervisor
        )
        raise InputError(
            image.origin,
            f"supervisor components {names} cannot go into the standard format: it has no"
            " place for them (CPUID.(0xD,i).EBX = 0; only XSAVES and XRSTORS, at CPL 0,"
            " read and write them); pass --drop-supervisor to leave them out",
        )
    xcr0 = image.xcr0 & ~SUPERVISOR_MASK
    converted = _write_standard(image, xcr0, layout or image.layout, keep_sw_bytes)
    return converted, tuple(supervisor)


def relayout(image: XsaveImage, target_layout: Layout) -> XsaveImage:
    """The same state at another layout's offsets: a standard image moves its components
    to `target_layout`'s standard offsets (AMD Zen <-> Intel: opmask, ZMM, PKRU); bytes
    464-511 stay as they are, since XCR0 does not change. A compacted image is re-packed
    with `target_layout`'s sizes and alignment."""
    if image.format == COMPACTED:
        return _write_compacted(image, _space(image), target_layout, image.xcr0)
    return _write_standard(image, image.xcr0, target_layout, keep_sw_bytes=True)


@dataclass(frozen=True)
class MaskReport:
    xcr0_before: int
    xcr0_after: int
    removed: int  # components the image had and the mask took away
    removed_in_use: int  # of those, the ones not in their init state
    absent: int  # requested bits the image does not have: reported, never added
    size_before: int
    size_after: int


def mask(
    image: XsaveImage, mask: int, keep_size: bool = False, keep_sw_bytes: bool = False
) -> tuple[XsaveImage, MaskReport]:
    """The image as if saved with XCR0' = XCR0 & `mask` (raises UsageError if XCR0' is not
    a value XCR0 can hold).

    Standard images: XSTATE_BV &= XCR0', removed components zeroed, size cut to the
    standard size of XCR0' (`keep_size` keeps it), the XCR0 word at 464 set to XCR0'
    (`keep_sw_bytes` leaves bytes 464-511 alone). Compacted images: removed components
    leave no hole, XCOMP_BV loses their bits; supervisor components stay (IA32_XSS is not
    XCR0).
    """
    xcr0 = image.xcr0 & mask
    # Named as every command names --xcr0; when the image's XCR0 made it smaller, say so.
    check_xcr0(xcr0, "--xcr0" if xcr0 == mask else f"--xcr0 {mask:#x} on {image.origin}")
    space = _space(image)
    removed = space & ~SUPERVISOR_MASK & ~mask
    size = len(image.data) if keep_size else None
    source = f"{image.xcr0_source}, masked with {mask:#x}"
    if image.format == COMPACTED:
        rfbm = space & (mask | SUPERVISOR_MASK)
        masked = _write_compacted(image, rfbm, image.layout, xcr0, size, source)
    else:
        masked = _write_standard(image, xcr0, image.layout, keep_sw_bytes, size, source)
    report = MaskReport(
        xcr0_before=image.xcr0,
        xcr0_after=xcr0,
        removed=removed,
        removed_in_use=removed & image.xstate_bv,
        absent=mask & ~image.xcr0 & ~COMPACTED_BIT,
        size_before=len(image.data),
        size_after=len(masked.data),
    )
    return masked, report


# State ------------------------------------------------------------------------------


def canonical_state(image: XsaveImage) -> dict[int, bytes]:
    """What XRSTOR would load from the image, for each component it has space for:
    0 -> the x87 fields and registers (152 bytes), 1 -> MXCSR then the XMM registers
    (260 bytes, when the image has SSE or AVX), extended i -> the component's bytes.
    Components in their init state give their init values, so two images that differ
    only in stale bytes, or in the XSTATE_BV bits of components that hold their init
    values, have the same state."""
    data = image.data
    space = _space(image)
    in_use = image.xstate_bv & space
    state: dict[int, bytes] = {}
    if in_use & X87_BIT:
        state[0] = data[X87_CONTROL] + data[X87_REGISTERS]
    elif space & X87_BIT:
        state[0] = X87_INIT_BYTES
    if space & mxcsr.OWNERS:
        loaded = _mxcsr_fields(image)[:4]
        state[1] = loaded + (data[XMM_REGISTERS] if in_use & SSE_BIT else bytes(256))
    for i in bits(extended_bits(space)):
        state[i] = image.component_bytes(i)
    return state
