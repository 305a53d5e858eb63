"""`xcr0tool layout`: sizes and offsets of a layout, standard and compacted."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from xcr0tool.cli.options import MASK, layout_option, output_options

if TYPE_CHECKING:
    from xcr0tool.render.output import View


@click.command(name="layout")
@layout_option
@click.option("--xcr0", type=MASK, help="Show the components of this XCR0 and its standard size.")
@click.option("--xcomp-bv", "xcomp_bv", type=MASK, help="Show compacted offsets for this XCOMP_BV.")
@output_options()
def layout_command(layout: str | None, xcr0: int | None, xcomp_bv: int | None) -> View:
    """Print a layout: sizes, standard and compacted offsets, alignment.

    Without --layout, the layout of this machine (CPUID leaf 0xD). With --xcr0 and
    without --xcomp-bv, compacted offsets are shown for XCOMP_BV = XCR0. --json writes
    a layout file that `--layout FILE` reads.

    \b
    Examples:
      xcr0tool layout                                this machine's CPUID leaf 0xD
      xcr0tool layout --layout amd-zen4 --xcr0 0x2e7
      xcr0tool layout --layout cpuid-dump.txt --xcomp-bv 0x80000000000600e7
      xcr0tool layout --json > this-machine.json     for --layout elsewhere
    """
    from xcr0tool.ops.inspect import describe_layout
    from xcr0tool.render.image import layout_view

    return layout_view(describe_layout(layout, xcr0, xcomp_bv))
