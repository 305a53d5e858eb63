"""`xcr0tool decode`: every component and register of every image of a source."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from xcr0tool.cli.options import (
    LANE_CHOICES,
    MASK,
    complete_path,
    layout_option,
    output_options,
    reg_option,
    thread_option,
)

if TYPE_CHECKING:
    from xcr0tool.render.output import View


@click.command()
@click.argument("source", shell_complete=complete_path)
@reg_option
@thread_option
@click.option("--xcr0", type=MASK, help="XCR0 of an image that carries none (raw XSAVE output).")
@click.option(
    "--stale",
    is_flag=True,
    help="Also show the bytes behind init-state components, labelled stale.",
)
@click.option(
    "--lanes",
    type=click.Choice(LANE_CHOICES),
    help="Show xmm/ymm/zmm as lanes, lane 0 first, as gdb's v8_float, v4_int64, ... views"
    " do: floats as gdb prints them, integers in hex.",
)
@click.option(
    "--summary/--all",
    "summary",
    default=None,
    help="One line per thread (tid, XCR0, components in use, how it differs from the"
    " first), or every register of every thread. Default: the summary on a terminal for"
    " more than 16 threads, everything otherwise.",
)
@layout_option
@output_options()
def decode(
    source: str,
    patterns: Sequence[str],
    thread: str | None,
    xcr0: int | None,
    stale: bool,
    lanes: str | None,
    summary: bool | None,
    layout: str | None,
) -> View:
    """Show every component and register of an XSAVE image.

    Components in their init state (XSTATE_BV bit clear) show init values, never the
    stale bytes behind them (--stale shows those too, labelled). Register names and
    values are gdb's; text shows each value in hex zero-padded to the register's width,
    --json as the register's bytes read as one little-endian integer.

    SOURCE is a raw XSAVE image (standard or compacted), `-` for standard input, an ELF
    core (every thread; CORE@TID for one), `pid:N` for a live process, `self` for this
    tool's own thread (self@xsave, self@xsavec), an rr trace directory (every frame with
    XSAVE data, in the recording machine's layout; TRACE@EVENT for one frame), or a CRIU
    image directory (CRIUDIR@TID for one thread) or one core-TID.img.

    \b
    Examples:
      xcr0tool decode core.4242                     every thread (a summary if many)
      xcr0tool decode core.4242@4243 --reg 'zmm*'   one thread, the ZMM registers
      xcr0tool decode --lanes f32 --reg ymm0 core.4242    as gdb's p $ymm0.v8_float
      xcr0tool decode --json pid:4242 | jq '.threads[0].xcr0'
      xcr0tool decode ~/.local/share/rr/latest-trace@1234 --json
      xcr0tool decode checkpoint/ --layout amd-zen4
    """
    from xcr0tool.ops.inspect import decode as decode_source
    from xcr0tool.render.image import decode_view

    decoded = decode_source(
        source,
        thread=thread,
        patterns=patterns,
        stale=stale,
        lanes=lanes,
        layout=layout,
        xcr0=xcr0,
    )
    return decode_view(decoded, summary)
