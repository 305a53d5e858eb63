"""The engine: run the rules of the stages that apply to a target; a Report, never an
exception for a bad image."""

from __future__ import annotations

from dataclasses import replace

from xcr0tool.model.layout import LEGACY_BITS

# Importing the rule modules registers their rules, in this order.
from xcr0tool.ops.validate import instructions, linux, surprises  # noqa: F401
from xcr0tool.ops.validate.model import (
    FXRSTOR,
    LINUX_PTRACE,
    SIGFRAME,
    SIGRETURN,
    SURPRISE,
    XRSTOR,
    Finding,
    Report,
    Rule,
    Subject,
    Target,
)
from xcr0tool.ops.validate.registry import REGISTERED
from xcr0tool.ops.validate.registry import names as _names

RULES: tuple[Rule, ...] = tuple(REGISTERED)
RULES_BY_ID = {r.id: r for r in RULES}


def run_stage(subject: Subject, target: Target, stage: str) -> list[Finding]:
    return [
        Finding(rule.id, rule.severity, hit.message, hit.offset, hit.value, rule.source)
        for rule in RULES
        if stage in rule.stages
        for hit in rule.check(subject, target)
    ]


def _loaded_by_fxrstor(target: Target) -> Target:
    return replace(target, instruction=FXRSTOR, rfbm=LEGACY_BITS)


def validate(subject: Subject, target: Target) -> Report:
    """Every finding of every stage that applies to `target`."""
    notes: list[str] = []
    findings: list[Finding] = []
    if subject.model_note:
        notes.append(f"components not placed ({subject.model_note}): content checks skipped")
    if subject.fxsave_only:
        target, stage = _loaded_by_fxrstor(target), FXRSTOR
        notes.append("a 512-byte FXSAVE area: checked as FXRSTOR loads it")
    elif target.check == LINUX_PTRACE:
        stage = LINUX_PTRACE
    else:
        if target.check == SIGRETURN:
            findings += run_stage(subject, target, SIGFRAME)
            frame = subject.signal_frame
            if findings or frame is None:
                target = _loaded_by_fxrstor(target)
                notes.append("sw_bytes not valid: rt_sigreturn falls back to FXRSTOR")
            else:
                target = replace(target, instruction=XRSTOR, rfbm=target.rfbm & frame.xfeatures)
                notes.append(
                    f"rt_sigreturn restores with XRSTOR, RFBM = xfeatures"
                    f" {_names(frame.xfeatures)} & XCR0; a fault is a SIGSEGV"
                )
        stage = target.instruction
    for each in (stage, SURPRISE):
        findings += run_stage(subject, target, each)
    return Report(subject.origin, target, tuple(findings), tuple(notes))
