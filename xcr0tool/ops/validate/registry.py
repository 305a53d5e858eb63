"""The rule registry: each rule is declared beside its check function, with `@rule`,
naming the primary source it encodes (an SDM section or a kernel function). Rules run in
the order they are registered: instructions, then Linux, then surprises."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

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
    from xcr0tool.arch.components import describe_mask

    return f"{mask:#x} ({describe_mask(mask)})"
