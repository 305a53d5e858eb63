"""The commands that write images, as calls: extract one thread's image, convert between
formats and layouts, mask to a smaller XCR0. Each writes its output (a file, or stdout
when it is not a terminal) and returns what the user must be told about it, once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xcr0tool.errors import HostUnavailable, InputError, UsageError
from xcr0tool.model.image import COMPACTED, XsaveImage
from xcr0tool.model.layout import Layout

SHOWN_IDS = 8  # thread ids listed in a message before "..."


@dataclass(frozen=True)
class Rewritten:
    """What a rewriting command tells the user beside its output."""

    warnings: tuple[str, ...] = ()


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOWN_IDS])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > SHOWN_IDS else "")


def extract(
    name: str, *, thread: str | None = None, output: str | None = None, layout: str | None = None
) -> Rewritten:
    """One image of SOURCE, byte for byte: the thread named, else the first."""
    from xcr0tool.files.output import write_binary
    from xcr0tool.sources.open import open_source, parse_source, with_thread

    result = open_source(with_thread(name, thread), layout_option=layout)
    first = result.images[0]
    write_binary(first.data, output, mode=result.file_mode)
    warnings = list(result.warnings)
    if len(result.images) > 1:
        ids = result.thread_ids() or [image.origin for image in result.images]
        unit = "images" if result.kind == "self" else "threads"
        base = parse_source(result.name)[0]
        warnings.append(
            f"{result.name} has {len(result.images)} {unit} ({_ids(ids)}); extracted the"
            f" first, {ids[0]}: choose with --thread ID or {base}@ID"
        )
    return Rewritten(tuple(warnings))


def component_warnings(
    verb: str, originals: Sequence[XsaveImage], component_ids: Sequence[int]
) -> list[str]:
    from xcr0tool.ops.corewrite import component_lines

    return component_lines(verb, originals, component_ids)


def convert(
    name: str,
    *,
    form: str = "standard",
    thread: str | None = None,
    xcomp_bv: int | None = None,
    from_layout: str | None = None,
    layout: str | None = None,
    xcr0: int | None = None,
    keep_sw_bytes: bool = False,
    drop_supervisor: bool = False,
    output: str | None = None,
) -> Rewritten:
    """SOURCE rewritten in the standard or compacted format, or in another layout: an
    image gives an image, a whole core a core."""
    from xcr0tool.arch.components import COMPACTED_BIT, bits, describe_mask
    from xcr0tool.layouts.files import resolve_layout_option
    from xcr0tool.ops import corewrite, transforms
    from xcr0tool.sources.open import with_thread

    if form == "standard" and xcomp_bv is not None:
        raise UsageError("--xcomp-bv applies to --to compacted")
    if form == "compacted" and (keep_sw_bytes or drop_supervisor):
        flag = "--keep-sw-bytes" if keep_sw_bytes else "--drop-supervisor"
        raise UsageError(f"{flag} applies to --to standard")
    corewrite.refuse_terminal(output)
    target = resolve_layout_option(layout)
    warnings: list[str] = []
    dropped: dict[int, None] = {}

    def to_standard(image: XsaveImage) -> XsaveImage:
        converted, gone = transforms.to_standard(image, target, keep_sw_bytes, drop_supervisor)
        dropped.update(dict.fromkeys(gone))
        return converted

    def to_compacted(image: XsaveImage) -> XsaveImage:
        return transforms.to_compacted(image, xcomp_bv, target)

    source = with_thread(name, thread)
    with corewrite.open_input(source, layout_option=from_layout, xcr0=xcr0) as opened:
        result = opened.result
        warnings += result.warnings
        originals = result.images
        if form == "standard" and target is None and from_layout is None:
            target = _standard_layout_for_compacted(originals, warnings)
        if opened.core is not None and form == "compacted":
            raise UsageError(
                f"{result.name}: a core's NT_X86_XSTATE is always in the standard format"
                " (the kernel and gdb read no other); convert one thread (CORE@TID)"
            )
        transform = to_standard if form == "standard" else to_compacted
        converted = corewrite.transform_images(opened, transform)
        corewrite.write_result(opened, converted, output)
    if xcomp_bv is not None:
        ignored = xcomp_bv & ~COMPACTED_BIT & ~converted[0].xcomp_bv
        if ignored:
            warnings.append(
                f"--xcomp-bv {describe_mask(ignored)} left out: the image has no such"
                " components (XSAVEC saves XCR0 & MASK)"
            )
        # XSAVEC saves XCR0 & RFBM: components in use outside MASK are not saved at all.
        lost = 0
        for before, after in zip(originals, converted, strict=True):
            lost |= before.xstate_bv & ~after.xstate_bv
        warnings += component_warnings("left out by --xcomp-bv", originals, bits(lost))
    warnings += component_warnings("dropped supervisor component", originals, list(dropped))
    return Rewritten(tuple(warnings))


def _standard_layout_for_compacted(
    images: Sequence[XsaveImage], warnings: list[str]
) -> Layout | None:
    """A compacted image says nothing of standard offsets (its layout gives sizes only):
    without --layout, write this machine's, and say so; never a vendor's by guess. The
    refusal names the image that needs offsets (its origin begins with the source as the
    user named it) and the components this machine does not place."""
    from xcr0tool.arch.components import describe_mask
    from xcr0tool.sources.open import host_layout

    compacted = [image for image in images if image.format == COMPACTED]
    if not compacted:
        return None
    need = "a compacted image has no standard offsets"
    try:
        layout = host_layout()
    except HostUnavailable as exc:
        raise InputError(
            compacted[0].origin, f"{need}, and this machine cannot be asked ({exc}): pass --layout"
        ) from None
    for image in compacted:
        missing = image.xcr0 & ~layout.user_mask()
        if missing:
            raise InputError(
                image.origin,
                f"{need}, and this machine's CPUID does not place {describe_mask(missing)}"
                f" (XCR0 {image.xcr0:#x}): pass --layout",
            )
    warnings.append(f"standard offsets from {layout.source} (--layout to choose)")
    return layout


def mask(
    name: str,
    mask_value: int,
    *,
    thread: str | None = None,
    keep_size: bool = False,
    keep_sw_bytes: bool = False,
    from_xcr0: int | None = None,
    layout: str | None = None,
    output: str | None = None,
) -> Rewritten:
    """SOURCE as if saved with XCR0 & MASK: an image gives an image, a core a core."""
    from xcr0tool.arch.components import CATALOGUE_MASK, SUPERVISOR_MASK, bits, describe_mask
    from xcr0tool.ops import corewrite, transforms
    from xcr0tool.sources.open import with_thread

    corewrite.refuse_terminal(output)
    reports: list[transforms.MaskReport] = []

    def apply(image: XsaveImage) -> XsaveImage:
        masked, report = transforms.mask(image, mask_value, keep_size, keep_sw_bytes)
        reports.append(report)
        return masked

    source = with_thread(name, thread)
    with corewrite.open_input(source, layout_option=layout, xcr0=from_xcr0) as opened:
        result = opened.result
        masked = corewrite.transform_images(opened, apply)
        corewrite.write_result(opened, masked, output)
    warnings = list(result.warnings)
    first = reports[0]
    # Only user components the catalogue names: an all-ones MASK asks for every bit, and
    # supervisor bits are never XCR0's.
    absent = first.absent & CATALOGUE_MASK & ~SUPERVISOR_MASK
    if absent:
        warnings.append(
            f"the image has no {describe_mask(absent)} (XCR0 {first.xcr0_before:#x}):"
            " masking never adds a feature"
        )
    removed = 0
    for report in reports:
        removed |= report.removed
    warnings += component_warnings("removed", result.images, bits(removed))
    return Rewritten(tuple(warnings))
