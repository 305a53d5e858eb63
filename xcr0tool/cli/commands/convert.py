"""`xcr0tool convert`: standard <-> compacted, and from one vendor's layout to another."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from xcr0tool.cli.options import MASK, complete_layout, complete_path, output_option

if TYPE_CHECKING:
    from xcr0tool.model.image import XsaveImage
    from xcr0tool.model.layout import Layout


@click.command()
@click.argument("source", default="-", required=False, shell_complete=complete_path)
@click.option(
    "--to",
    "form",
    type=click.Choice(["standard", "compacted"]),
    default="standard",
    show_default=True,
    help="The format to write.",
)
@click.option(
    "--xcomp-bv",
    "xcomp_bv",
    type=MASK,
    metavar="MASK",
    help="With --to compacted: the requested-feature bitmap XSAVEC is given (default: the"
    " image's XCR0). XCOMP_BV becomes MASK & XCR0 | bit 63.",
)
@click.option(
    "--from-layout",
    "from_layout",
    metavar="NAME|FILE",
    shell_complete=complete_layout,
    help="Read SOURCE with this layout when it has no NT_X86_XSAVE_LAYOUT note (profile name"
    " or file, as --layout of `decode`). Default: a guess from XCR0 and size.",
)
@click.option(
    "--layout",
    "layout",
    metavar="NAME|FILE",
    shell_complete=complete_layout,
    help="Write with this layout (intel, intel-client, amd-zen3, amd-zen4, amd-zen5, or a"
    " file). Default: the source's layout.",
)
@click.option("--xcr0", type=MASK, help="XCR0 of a raw image that carries none.")
@click.option(
    "--keep-sw-bytes",
    is_flag=True,
    help="With --to standard: leave bytes 464-511 as they are instead of writing the XCR0"
    " word there as the kernel does.",
)
@click.option(
    "--drop-supervisor",
    is_flag=True,
    help="With --to standard: leave out supervisor components (XSAVES images), which the"
    " standard format cannot hold; each one dropped is reported on stderr.",
)
@output_option
def convert(
    source: str,
    form: str,
    xcomp_bv: int | None,
    from_layout: str | None,
    layout: str | None,
    xcr0: int | None,
    keep_sw_bytes: bool,
    drop_supervisor: bool,
    output: str | None,
) -> None:
    """Rewrite an XSAVE image in the standard or compacted format, or in another layout.

    --to compacted writes what XSAVEC writes: XCOMP_BV = MASK | bit 63, components
    packed in ascending order (64-byte aligned where the layout says), nothing stored
    for components in their init state.

    --to standard writes what the kernel gives ptrace and cores: every component at the
    layout's standard offset, init-state components as init values, XCR0 at byte 464.
    With --layout it moves components between vendors' offsets (AMD Zen puts opmask,
    ZMM and PKRU at 832, 896/1408 and 2432, Intel at 1088, 1152/1664 and 2688).

    SOURCE is a raw image, `-` for standard input (the default), or an ELF core: a core
    gives a core in which every thread's NT_X86_XSTATE (and the NT_X86_XSAVE_LAYOUT note)
    is rewritten;
    CORE@TID gives that thread's raw image.

    \b
    Examples:
      xcr0tool convert --to compacted image.bin -o image.xsavec
      xcr0tool convert --to compacted --xcomp-bv 0x7 image.bin | xcr0tool decode -
      xcr0tool convert image.xsavec -o image.bin           compacted -> standard
      xcr0tool convert --from-layout amd-zen4 --layout intel zen4.bin -o skylake.bin
      xcr0tool convert --layout intel core.4242 -o core.intel   gdb 13 reads it
    """
    from xcr0tool.arch.components import COMPACTED_BIT, describe_mask
    from xcr0tool.errors import UsageError
    from xcr0tool.layouts.files import resolve_layout_option
    from xcr0tool.ops import corewrite, transforms

    if form == "standard" and xcomp_bv is not None:
        raise UsageError("--xcomp-bv applies to --to compacted")
    if form == "compacted" and (keep_sw_bytes or drop_supervisor):
        flag = "--keep-sw-bytes" if keep_sw_bytes else "--drop-supervisor"
        raise UsageError(f"{flag} applies to --to standard")
    corewrite.refuse_terminal(output)
    target = resolve_layout_option(layout)
    dropped: dict[int, None] = {}

    def to_standard(image: XsaveImage) -> XsaveImage:
        converted, gone = transforms.to_standard(image, target, keep_sw_bytes, drop_supervisor)
        dropped.update(dict.fromkeys(gone))
        return converted

    def to_compacted(image: XsaveImage) -> XsaveImage:
        return transforms.to_compacted(image, xcomp_bv, target)

    transform = to_standard if form == "standard" else to_compacted
    with corewrite.open_input(source, layout_option=from_layout, xcr0=xcr0) as opened:
        result = opened.result
        for warning in result.warnings:
            click.echo(f"xcr0tool: warning: {warning}", err=True)
        originals = result.images
        if form == "standard" and target is None and from_layout is None:
            target = _standard_layout_for_compacted(originals)
        if opened.core is not None and form == "compacted":
            raise UsageError(
                f"{result.name}: a core's NT_X86_XSTATE is always in the standard format"
                " (the kernel and gdb read no other); convert one thread (CORE@TID)"
            )
        converted = corewrite.transform_images(opened, transform)
        corewrite.write_result(opened, converted, output)
    # Reported once the output is written: these lines describe what it holds.
    if xcomp_bv is not None:
        ignored = xcomp_bv & ~COMPACTED_BIT & ~converted[0].xcomp_bv
        if ignored:
            click.echo(
                f"xcr0tool: note: --xcomp-bv {describe_mask(ignored)} left out: the image"
                " has no such components (XSAVEC saves XCR0 & MASK)",
                err=True,
            )
    for line in corewrite.component_lines("dropped supervisor component", originals, dropped):
        click.echo(f"xcr0tool: {line}", err=True)


def _standard_layout_for_compacted(images: Sequence[XsaveImage]) -> Layout | None:
    """A compacted image says nothing of standard offsets (its layout gives sizes only):
    without --layout, write this machine's, and say so; never a vendor's by guess."""
    from xcr0tool.errors import HostUnavailable, LayoutError, UsageError
    from xcr0tool.model.image import COMPACTED
    from xcr0tool.sources.open import host_layout

    if not any(image.format == COMPACTED for image in images):
        return None
    try:
        layout = host_layout()
        for image in images:
            layout.standard_offsets(image.xcr0)
    except (HostUnavailable, LayoutError):
        raise UsageError(
            "a compacted image has no standard offsets and this machine's CPUID does not"
            " place all its components: pass --layout"
        ) from None
    click.echo(
        f"xcr0tool: note: standard offsets from {layout.source} (--layout to choose)", err=True
    )
    return layout
