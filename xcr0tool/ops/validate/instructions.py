"""Rules: what the XRSTOR, XRSTORS and FXRSTOR instructions refuse (Intel SDM vol. 2,
XRSTOR and XRSTORS, "Protected Mode Exceptions"), checked on this CPU by
tests/oracles/test_validate_cpu.py."""

from __future__ import annotations

from collections.abc import Iterator

from xcr0tool.arch import mxcsr
from xcr0tool.arch import offsets as at
from xcr0tool.arch.components import COMPACTED_BIT, EXTENDED_START
from xcr0tool.ops.validate.model import (
    FAULT,
    FXRSTOR,
    XRSTOR,
    XRSTORS,
    Hit,
    Subject,
    Target,
)
from xcr0tool.ops.validate.registry import XRSTOR_GP as _XRSTOR_GP
from xcr0tool.ops.validate.registry import XRSTORS_GP as _XRSTORS_GP
from xcr0tool.ops.validate.registry import header_word as _header_word
from xcr0tool.ops.validate.registry import hex64 as _hex64
from xcr0tool.ops.validate.registry import names as _names
from xcr0tool.ops.validate.registry import nonzero_words as _nonzero_words
from xcr0tool.ops.validate.registry import reserved_mxcsr_bits as _reserved_mxcsr_bits
from xcr0tool.ops.validate.registry import rule

_INSTRUCTIONS = frozenset({XRSTOR, XRSTORS})


def mxcsr_loaded(subject: Subject, target: Target) -> bool:
    """Does the instruction load MXCSR from byte 24? The one predicate, arch/mxcsr.py:
    the standard form whenever RFBM[1] or RFBM[2] is set, the compacted form only with
    RFBM[1] and XSTATE_BV[1] (and XCOMP_BV[1], without which XRSTOR faults)."""
    if target.instruction == FXRSTOR:
        return True
    rfbm = target.requested
    if subject.compacted:
        rfbm &= subject.xcomp_bv
    return mxcsr.xrstor_loads_mxcsr(
        compacted=subject.compacted, rfbm=rfbm, xstate_bv=subject.xstate_bv
    )


@rule(
    "compacted-without-xsavec",
    FAULT,
    {XRSTOR},
    f"{_XRSTOR_GP}: XCOMP_BV[63] = 1 and CPUID.(EAX=0DH,ECX=1):EAX.XSAVEC[bit 1] = 0",
    "the compacted form needs XSAVEC",
)
def _compacted_without_xsavec(s: Subject, t: Target) -> Iterator[Hit]:
    if s.compacted and t.xsavec is False:
        yield Hit(
            "XCOMP_BV[63] selects the compacted form, which this CPU lacks (no XSAVEC)",
            at.XCOMP_BV,
            _hex64(s.xcomp_bv),
        )


@rule(
    "xrstors-standard-form",
    FAULT,
    {XRSTORS},
    f"{_XRSTORS_GP}: bit 63 of XCOMP_BV is 0",
    "XRSTORS takes only the compacted format",
)
def _standard_under_xrstors(s: Subject, t: Target) -> Iterator[Hit]:
    if not s.compacted:
        yield Hit(
            "XCOMP_BV[63] is 0: XRSTORS takes only the compacted format",
            at.XCOMP_BV,
            _hex64(s.xcomp_bv),
        )


@rule(
    "xstate-bv-outside-xcr0",
    FAULT,
    {XRSTOR},
    f"{_XRSTOR_GP}: standard form and a bit in XCR0 is 0 and the corresponding bit in"
    " XSTATE_BV is 1",
    "standard form: XSTATE_BV within XCR0",
)
def _xstate_bv_outside_xcr0(s: Subject, t: Target) -> Iterator[Hit]:
    extra = s.xstate_bv & ~t.xcr0
    if not s.compacted and extra:
        yield Hit(
            f"XSTATE_BV has {_names(extra)} set, outside XCR0 {_names(t.xcr0)}",
            at.XSTATE_BV,
            _hex64(s.xstate_bv),
        )


@rule(
    "standard-header-reserved",
    FAULT,
    {XRSTOR},
    f"{_XRSTOR_GP}: standard form and bytes 23:8 of the XSAVE header are not all zero",
    "standard form: header bytes 8-23 (image bytes 520-535) zero",
)
def _standard_header_reserved(s: Subject, t: Target) -> Iterator[Hit]:
    if not s.compacted:
        yield from _nonzero_words(s.data, at.XCOMP_BV, at.XCOMP_BV + 16, _header_word)


@rule(
    "xcomp-bv-outside-xcr0",
    FAULT,
    _INSTRUCTIONS,
    f"{_XRSTOR_GP} and {_XRSTORS_GP}: compacted form and a bit in XCR0 (XCR0 | IA32_XSS"
    " for XRSTORS, SDM vol. 1 §13.12) is 0 and the corresponding bit in XCOMP_BV is 1",
    "compacted form: XCOMP_BV[62:0] within XCR0 (| IA32_XSS)",
)
def _xcomp_bv_outside_enabled(s: Subject, t: Target) -> Iterator[Hit]:
    extra = s.xcomp_bv & ~COMPACTED_BIT & ~t.enabled
    if s.compacted and extra:
        what = "XCR0 | IA32_XSS" if t.instruction == XRSTORS else "XCR0"
        yield Hit(
            f"XCOMP_BV has {_names(extra)} set, outside {what} {_names(t.enabled)}",
            at.XCOMP_BV,
            _hex64(s.xcomp_bv),
        )


@rule(
    "xstate-bv-outside-xcomp-bv",
    FAULT,
    _INSTRUCTIONS,
    f"{_XRSTOR_GP}: compacted form and a bit in XCOMP_BV is 0 and the corresponding bit"
    " in XSTATE_BV is 1 (bit 63 included: this CPU faults on it)",
    "compacted form: XSTATE_BV within XCOMP_BV[62:0]",
)
def _xstate_bv_outside_xcomp_bv(s: Subject, t: Target) -> Iterator[Hit]:
    # Bit 63 of XSTATE_BV counts as outside: the CPU faults on it (module docstring).
    extra = s.xstate_bv & ~(s.xcomp_bv & ~COMPACTED_BIT)
    if s.compacted and extra:
        yield Hit(
            f"XSTATE_BV has {_names(extra)} set, outside XCOMP_BV[62:0]"
            f" {_names(s.xcomp_bv & ~COMPACTED_BIT)}",
            at.XSTATE_BV,
            _hex64(s.xstate_bv),
        )


@rule(
    "compacted-header-reserved",
    FAULT,
    _INSTRUCTIONS,
    f"{_XRSTOR_GP}: compacted form and bytes 63:16 of the XSAVE header are not all zero",
    "compacted form: header bytes 16-63 (image bytes 528-575) zero",
)
def _compacted_header_reserved(s: Subject, t: Target) -> Iterator[Hit]:
    if s.compacted:
        yield from _nonzero_words(s.data, at.HEADER_RESERVED, EXTENDED_START, _header_word)


@rule(
    "mxcsr-reserved",
    FAULT,
    {XRSTOR, XRSTORS, FXRSTOR},
    f"{_XRSTOR_GP}: attempting to write any reserved bits of MXCSR with 1; when MXCSR"
    " loads: SDM vol. 1 §13.8 (standard form: RFBM[1] or RFBM[2]; compacted: RFBM[1] and"
    " XSTATE_BV[1]); FXRSTOR always",
    "MXCSR within MXCSR_MASK when it loads",
)
def _mxcsr_reserved(s: Subject, t: Target) -> Iterator[Hit]:
    reserved = _reserved_mxcsr_bits(s, t)
    if reserved and mxcsr_loaded(s, t):
        yield Hit(
            f"MXCSR {s.mxcsr:#x} sets reserved bits {reserved:#x}"
            f" (MXCSR_MASK {t.mxcsr_mask:#x}, {t.mxcsr_mask_source})",
            at.MXCSR,
            f"{s.mxcsr:#010x}",
        )
