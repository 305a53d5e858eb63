"""`validate` as a call: every image of a source checked against one target (what the
CPU or the kernel would do with it), with the source's warnings."""

from __future__ import annotations

from dataclasses import dataclass

from xcr0tool.ops.validate import CPU, XRSTOR, Report, Subject


@dataclass(frozen=True)
class Checked:
    """`validate`: each image with its report."""

    check: str  # cpu | linux-ptrace | sigreturn
    items: tuple[tuple[Subject, Report], ...]
    warnings: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return all(report.accepted for _, report in self.items)


def check_source(
    name: str,
    *,
    thread: str | None = None,
    check: str = CPU,
    instruction: str = XRSTOR,
    xcr0: int | None = None,
    xss: int | None = None,
    rfbm: int | None = None,
    mxcsr_mask: int | None = None,
    layout: str | None = None,
) -> Checked:
    """Would the CPU (check "cpu") or the kernel ("linux-ptrace", "sigreturn") take each
    image of SOURCE; values not given come from the image, else this machine."""
    from xcr0tool.layouts.files import resolve_layout_option
    from xcr0tool.ops.validate import host_facts, load_subjects, make_target, validate
    from xcr0tool.sources.open import with_thread

    explicit = resolve_layout_option(layout)
    host = host_facts()
    warnings: list[str] = []
    subjects = load_subjects(
        with_thread(name, thread), layout_option=layout, xcr0=xcr0, warnings=warnings
    )
    items = []
    for subject in subjects:
        target = make_target(
            subject,
            check=check,
            instruction=instruction,
            xcr0=xcr0,
            xss=xss,
            rfbm=rfbm,
            mxcsr_mask=mxcsr_mask,
            layout=explicit,
            host=host,
        )
        items.append((subject, validate(subject, target)))
    return Checked(check, tuple(items), tuple(warnings))
