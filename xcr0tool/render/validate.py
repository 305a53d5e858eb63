"""Rendering of `xcr0tool validate` reports: JSON, plain text for pipes, rich on a terminal.

JSON schema (`xcr0tool validate --json`):

    {
      "check": "cpu" | "linux-ptrace" | "sigreturn",     # what --as asked
      "accepted": bool,                                  # exit status 0 exactly when true
      "images": [
        {
          "origin": str, "tid": int | null, "size": int,
          "format": "standard" | "compacted" | "fxsave",
          "verdict": "accepted" | "would fault" | "rejected",
          "accepted": bool,
          "instruction": "xrstor" | "xrstors" | "fxrstor",   # what finally loads it
          "xcr0": "0x...", "xcr0_source": str,
          "xss": "0x...", "xss_source": str,
          "rfbm": "0x...",                                # EDX:EAX as used
          "mxcsr_mask": "0x...", "mxcsr_mask_source": str,
          "user_size": int | null, "user_size_source": str,
          "notes": [str, ...],
          "findings": [
            {"rule": str, "severity": "fault" | "reject" | "warning",
             "offset": int | null,                        # byte offset in the image
             "value": str | null,                         # what is there
             "message": str, "source": str}              # source: SDM section / kernel function
          ]
        }
      ]
    }
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from xcr0tool.arch.components import describe_mask
from xcr0tool.model.image import COMPACTED, FXSAVE, STANDARD
from xcr0tool.ops.check import Checked, accepted_flags
from xcr0tool.ops.validate import (
    ALL_ONES,
    CPU,
    FAULT,
    LINUX_PTRACE,
    REJECT,
    SIGRETURN,
    WARNING,
    XRSTORS,
    Finding,
    Report,
    Subject,
)
from xcr0tool.render.output import Streamed, View
from xcr0tool.render.styled import Page, Screen

SEVERITY_STYLE = {FAULT: "bold red", REJECT: "bold red", WARNING: "yellow"}


def _format(subject: Subject) -> str:
    if subject.fxsave_only:
        return FXSAVE
    return COMPACTED if subject.compacted else STANDARD


def _all_accepted(items: Sequence[tuple[Subject, Report]]) -> bool:
    return all(accepted_flags(items))


def validate_json(check: str, items: Sequence[tuple[Subject, Report]]) -> dict[str, object]:
    streamed = validate_json_stream(check, items)
    return {**streamed.fields, streamed.key: list(streamed.items)}


def validate_json_stream(check: str, items: Sequence[tuple[Subject, Report]]) -> Streamed:
    """validate's JSON with its images made one by one (an rr trace's frames are checked
    again as they are written, not held)."""
    fields: dict[str, object] = {"check": check, "accepted": _all_accepted(items)}
    return Streamed(fields, "images", (_image_json(s, r) for s, r in items))


def _image_json(subject: Subject, report: Report) -> dict[str, object]:
    return {
        "origin": report.origin,
        "tid": None if subject.image is None else subject.image.tid,
        "size": len(subject.data),
        "format": _format(subject),
        "verdict": report.verdict,
        "accepted": report.accepted,
        "instruction": report.target.instruction,
        "xcr0": hex(report.target.xcr0),
        "xcr0_source": report.target.xcr0_source,
        "xss": hex(report.target.xss),
        "xss_source": report.target.xss_source,
        "rfbm": hex(report.target.rfbm),
        "mxcsr_mask": hex(report.target.mxcsr_mask),
        "mxcsr_mask_source": report.target.mxcsr_mask_source,
        "user_size": report.target.user_size,
        "user_size_source": report.target.user_size_source,
        "notes": list(report.notes),
        "findings": [
            {
                "rule": f.rule,
                "severity": f.severity,
                "offset": f.offset,
                "value": f.value,
                "message": f.message,
                "source": f.source,
            }
            for f in report.findings
        ],
    }


def _context(subject: Subject, report: Report) -> list[str]:
    t = report.target
    by = {
        LINUX_PTRACE: "taken by PTRACE_SETREGSET (NT_X86_XSTATE)",
        SIGRETURN: f"taken by rt_sigreturn, loaded by {t.instruction.upper()}",
    }.get(t.check, f"loaded by {t.instruction.upper()}")
    lines = [
        f"{_format(subject)}, {len(subject.data)} bytes; {by}",
        f"XCR0 {t.xcr0:#x} ({describe_mask(t.xcr0)}): {t.xcr0_source}",
        f"MXCSR_MASK {t.mxcsr_mask:#x}: {t.mxcsr_mask_source}",
    ]
    if t.rfbm != ALL_ONES:
        lines.append(f"RFBM {t.rfbm:#x}")
    if t.instruction == XRSTORS:
        lines.append(f"IA32_XSS {t.xss:#x}: {t.xss_source}")
    if t.check != CPU and t.user_size is not None:
        lines.append(f"user xstate size {t.user_size}: {t.user_size_source}")
    return lines + list(report.notes)


def _where(finding: Finding) -> str:
    """A finding's place for its heading: ' (byte N, value V)', each part when known."""
    parts = []
    if finding.offset is not None:
        parts.append(f"byte {finding.offset}")
    if finding.value is not None:
        parts.append(f"value {finding.value}")
    return f" ({', '.join(parts)})" if parts else ""


def _summary(check: str, items: Sequence[tuple[Subject, Report]]) -> str:
    bad = sum(1 for accepted in accepted_flags(items) if not accepted)
    if not bad:
        return "accepted"
    return f"{bad} of {len(items)} image{'s' if len(items) != 1 else ''} not accepted ({check})"


def validate_text(check: str, items: Sequence[tuple[Subject, Report]]) -> str:
    return "".join(validate_text_chunks(check, items))


def validate_text_chunks(check: str, items: Sequence[tuple[Subject, Report]]) -> Iterator[str]:
    """validate's plain text, image by image as each is checked, then the verdict."""
    for subject, report in items:
        lines = [f"{report.origin}: {report.verdict}"]
        lines += [f"  {line}" for line in _context(subject, report)]
        for f in report.findings:
            lines.append(f"  {f.severity} {f.rule}{_where(f)}: {f.message}")
            lines.append(f"    rule: {f.source}")
        yield "\n".join(lines) + "\n\n"
    yield _summary(check, items) + "\n"


def validate_terminal(check: str, items: Sequence[tuple[Subject, Report]], screen: Screen) -> str:
    page = Page(screen)
    for subject, report in items:
        style = "bold green" if report.accepted else "bold red"
        page.rule(f"{report.origin}: {report.verdict}", style)
        for line in _context(subject, report):
            page.add((f"  {line}", "dim"))
        for f in report.findings:
            page.add(
                "  ",
                (f.severity, SEVERITY_STYLE.get(f.severity, "")),
                (f" {f.rule}", "bold"),
                _where(f),
            )
            page.add(f"    {f.message}")
            page.add((f"    rule: {f.source}", "dim"))
        page.blank()
    style = "bold green" if _all_accepted(items) else "bold red"
    page.add((_summary(check, items), style))
    return page.render()


def validate_view(checked: Checked) -> View:
    check, items = checked.check, checked.items
    return View(
        json=lambda: validate_json(check, items),
        text=lambda: validate_text(check, items),
        text_chunks=lambda: validate_text_chunks(check, items),
        json_stream=lambda: validate_json_stream(check, items),
        terminal=lambda screen: validate_terminal(check, items, screen),
        warnings=checked.warnings,
        status=0 if checked.accepted else 1,
    )
