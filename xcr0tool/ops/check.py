"""`validate` as a call: every image of a source checked against one target (what the
CPU or the kernel would do with it), with the source's warnings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xcr0tool.model.reread import Mapped
from xcr0tool.ops.validate import CPU, XRSTOR, Report, Subject

Item = tuple[Subject, Report]


@dataclass(frozen=True)
class Checked:
    """`validate`: each image with its report."""

    check: str  # cpu | linux-ptrace | sigreturn
    items: Sequence[Item]  # a tuple, or StreamedChecks for an rr trace's frames
    warnings: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return all(accepted_flags(self.items))


def accepted_flags(items: Sequence[Item]) -> list[bool]:
    """Whether each image was accepted, without checking any again."""
    if isinstance(items, StreamedChecks):
        return items.accepted()
    return [report.accepted for _, report in items]


class StreamedChecks(Mapped[Item]):
    """The subjects of an rr trace's frames with their reports: checked once for whether
    each is accepted (all that is held: a byte a frame), checked again as iterated, so
    that no frame's image or report is held."""

    def __init__(self, subjects: Sequence[Subject], check: Callable[[Subject], Report]) -> None:
        super().__init__(subjects, lambda subject: (subject, check(subject)))
        self._accepted = bytearray(check(s).accepted for s in subjects)

    def accepted(self) -> list[bool]:
        return [bool(flag) for flag in self._accepted]


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

    def check_one(subject: Subject) -> Report:
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
        return validate(subject, target)

    if not isinstance(subjects, list):
        return Checked(check, StreamedChecks(subjects, check_one), tuple(warnings))
    items = tuple((subject, check_one(subject)) for subject in subjects)
    return Checked(check, items, tuple(warnings))
