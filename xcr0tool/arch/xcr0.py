"""XCR0: which values it can hold. The one rule table every command uses.

XSETBV raises #GP when the new XCR0 breaks any of these (Intel SDM vol. 1 §13.3 and
vol. 2 XSETBV, "Protected Mode Exceptions"); KVM's __kvm_set_xcr (arch/x86/kvm/x86.c),
which emulates XSETBV for guests, refuses the same list. XSETBV runs at CPL 0 only, so
no test can ask this CPU; the rules are the SDM's, and every XCR0 a real CPU reports
(tests/unit/arch/test_xcr0.py) keeps them.

A value is an XCR0 of an image (`--xcr0`, the word the kernel writes at byte 464, a
signal frame's xfeatures) only if it keeps every rule: `check_xcr0` gives the one
reason text for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

from xcr0tool.arch.components import BY_NAME, COMPACTED_BIT, SUPERVISOR_MASK, describe_mask
from xcr0tool.errors import UsageError


def _mask(*names: str) -> int:
    return sum(BY_NAME[name].bit for name in names)


X87 = _mask("x87")
SSE = _mask("sse")
AVX = _mask("ymm")
MPX = _mask("bndregs", "bndcsr")
AVX512 = _mask("opmask", "zmm_hi256", "hi16_zmm")
AMX = _mask("xtilecfg", "xtiledata")


class Xcr0Rule(NamedTuple):
    """One condition under which XSETBV raises #GP: `holds(value)` is False then.
    `needs(value)`: the bits that, added, make the value keep the rule."""

    text: str
    holds: Callable[[int], bool]
    needs: Callable[[int], int]


def _together(mask: int, text: str) -> Xcr0Rule:
    return Xcr0Rule(text, lambda v: v & mask in (0, mask), lambda v: mask if v & mask else 0)


def _requires(group: int, needed: int, text: str) -> Xcr0Rule:
    return Xcr0Rule(
        text,
        lambda v: not v & group or v & needed == needed,
        lambda v: needed if v & group else 0,
    )


def _never(mask: int, text: str) -> Xcr0Rule:
    return Xcr0Rule(text, lambda v: not v & mask, lambda v: 0)


XCR0_RULES: tuple[Xcr0Rule, ...] = (
    Xcr0Rule("bit 0 (x87) is always set", lambda v: bool(v & X87), lambda v: X87),
    _requires(AVX, SSE, "AVX (bit 2) needs SSE (bit 1)"),
    _together(MPX, "MPX BNDREGS and BNDCSR (bits 3 and 4) go together"),
    _together(AVX512, "AVX-512 opmask, ZMM_Hi256 and Hi16_ZMM (bits 5, 6 and 7) go together"),
    _requires(AVX512, AVX, "AVX-512 (bits 5-7) needs AVX (bit 2)"),
    _together(AMX, "AMX XTILECFG and XTILEDATA (bits 17 and 18) go together"),
    _never(SUPERVISOR_MASK, "supervisor components belong to IA32_XSS, never to XCR0"),
    _never(COMPACTED_BIT, "bit 63 is XCOMP_BV's compacted-format flag, not an XCR0 bit"),
)


@lru_cache(maxsize=256)
def broken_rule(value: int) -> Xcr0Rule | None:
    """The first rule `value` breaks, None when XCR0 can hold it."""
    return next((rule for rule in XCR0_RULES if not rule.holds(value)), None)


def is_xcr0(value: int) -> bool:
    return broken_rule(value) is None


def xcr0_reason(value: int) -> str | None:
    """The one text that says why XCR0 cannot hold `value` (None if it can)."""
    rule = broken_rule(value)
    if rule is None:
        return None
    return f"XCR0 {value:#x} ({describe_mask(value)}) is not a value XCR0 can hold: {rule.text}"


def check_xcr0(value: int, given: str = "--xcr0") -> None:
    """Raise UsageError with the reason text when XCR0 cannot hold `value`; `given` names
    where the value came from (the option, or the input that recorded it)."""
    reason = xcr0_reason(value)
    if reason is not None:
        raise UsageError(f"{given}: {reason}")


def least_xcr0(mask: int) -> int:
    """The smallest XCR0 that holds every user component of `mask` (x87 always; SSE under
    AVX; AVX-512's, AMX's and MPX's components together): what an image whose XSTATE_BV
    is `mask` was saved under at least. Supervisor bits and bit 63 are dropped."""
    value = mask & ~SUPERVISOR_MASK & ~COMPACTED_BIT
    while True:
        grown = value
        for rule in XCR0_RULES:
            grown |= rule.needs(grown)
        if grown == value:
            return value
        value = grown
