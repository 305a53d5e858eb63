"""`xcr0tool layout`: sizes and offsets of a layout, standard and compacted."""

from __future__ import annotations

import sys

import click

from xcr0tool.cli.options import MASK, json_option, layout_option


@click.command(name="layout")
@layout_option
@click.option("--xcr0", type=MASK, help="Show the components of this XCR0 and its standard size.")
@click.option("--xcomp-bv", "xcomp_bv", type=MASK, help="Show compacted offsets for this XCOMP_BV.")
@json_option
def layout_command(
    layout: str | None, xcr0: int | None, xcomp_bv: int | None, as_json: bool
) -> None:
    """Print a layout: sizes, standard and compacted offsets, alignment.

    Without --layout, the layout of this machine (CPUID leaf 0xD). With --xcr0 and
    without --xcomp-bv, compacted offsets are shown for XCOMP_BV = XCR0.
    """
    from xcr0tool.arch.xcr0 import check_xcr0
    from xcr0tool.layouts.files import resolve_layout_option
    from xcr0tool.render import image as render
    from xcr0tool.sources.open import host_layout

    if xcr0 is not None:
        check_xcr0(xcr0)  # the one rule table: refused alike by every command
    chosen = resolve_layout_option(layout) or host_layout()
    if xcr0 is not None and xcomp_bv is None:
        xcomp_bv = xcr0
    if as_json:
        from xcr0tool.files.output import write_json

        data = render.layout_json(chosen)
        if xcr0 is not None:
            data["standard_size"] = chosen.standard_size(xcr0)
        if xcomp_bv is not None:
            data["compacted_offsets"] = {
                str(k): v for k, v in chosen.compacted_offsets(xcomp_bv).items()
            }
            data["compacted_size"] = chosen.compacted_size(xcomp_bv)
        write_json(data)
    elif sys.stdout.isatty():
        render.layout_rich(chosen, xcr0, xcomp_bv)
    else:
        sys.stdout.write(render.layout_text(chosen, xcr0, xcomp_bv))
