"""The rule registry, and the helpers the rules share.

Each rule is declared beside its check function with `@rule`, naming the primary source
it encodes (an SDM section or a kernel function). Rules run in the order they are
registered: instructions, then Linux, then surprises (engine.py imports them so)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from xcr0tool.arch import offsets as at
from xcr0tool.arch.components import describe_mask
from xcr0tool.ops.validate.model import Hit, Rule, Severity, Subject, Target

Check = Callable[[Subject, Target], Iterator[Hit]]
C = TypeVar("C", bound=Check)

REGISTERED: list[Rule] = []

XRSTOR_GP = "Intel SDM vol. 2, XRSTOR, #GP(0)"
XRSTORS_GP = "Intel SDM vol. 2, XRSTORS, #GP(0)"
LINUX_FPU = "Linux arch/x86/kernel/fpu"
LINUX_SIGNAL = "Linux arch/x86/kernel/fpu/signal.c check_xstate_in_sigframe()"


def rule(
    id: str, severity: Severity, stages: frozenset[str] | set[str], source: str, summary: str
) -> Callable[[C], C]:
    """Register the decorated check as rule `id`."""

    def register(check: C) -> C:
        if any(r.id == id for r in REGISTERED):
            raise ValueError(f"rule {id} registered twice")
        REGISTERED.append(Rule(id, severity, frozenset(stages), source, summary, check))
        return check

    return register


def hex64(value: int) -> str:
    return f"{value:#018x}"


def names(mask: int) -> str:
    return f"{mask:#x} ({describe_mask(mask)})"


def nonzero_words(data: bytes, start: int, end: int, what: Callable[[int], str]) -> Iterator[Hit]:
    """One hit per 8-byte word of data[start:end] that is not zero, at its first set byte."""
    for word in range(start, end, 8):
        chunk = data[word : word + 8]
        if any(chunk):
            first = word + next(i for i, b in enumerate(chunk) if b)
            value = int.from_bytes(chunk, "little")
            yield Hit(
                f"{what(word)} (bytes {word}-{word + 7}) hold {value:#x}", first, hex64(value)
            )


def header_word(offset: int) -> str:
    if offset == at.XCOMP_BV:
        return "XCOMP_BV"
    in_header = offset - at.XSTATE_BV
    return f"header bytes {in_header}-{in_header + 7}"


def reserved_mxcsr_bits(s: Subject, t: Target) -> int:
    return s.mxcsr & ~t.mxcsr_mask
