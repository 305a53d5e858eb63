"""`xcr0tool diff`: compare the state of two sources, thread by thread."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from xcr0tool.cli.options import (
    LANE_CHOICES,
    complete_path,
    layout_option,
    output_options,
    reg_option,
)

if TYPE_CHECKING:
    from xcr0tool.render.output import View


class ThreadPair(click.ParamType):
    """TID_A:TID_B."""

    name = "TID_A:TID_B"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        left, sep, right = str(value).partition(":")
        if not (sep and left.isdigit() and right.isdigit()):
            self.fail(f"{value!r} is not TID_A:TID_B (two thread ids)", param, ctx)
        return int(left), int(right)


@click.command()
@click.argument("source_a", metavar="A", shell_complete=complete_path)
@click.argument("source_b", metavar="B", shell_complete=complete_path)
@click.option(
    "--lanes",
    type=click.Choice(LANE_CHOICES),
    default="u32",
    show_default=True,
    help="How to split registers into lanes, to mark the ones that differ.",
)
@reg_option
@click.option(
    "--raw",
    is_flag=True,
    help="Compare bytes at the same offsets, naming the component and register of each.",
)
@click.option(
    "--pair",
    "pairs",
    type=ThreadPair(),
    multiple=True,
    help="Compare thread TID_A of A with TID_B of B (repeatable; default: by position).",
)
@click.option(
    "-q",
    "--brief",
    is_flag=True,
    help="Only the exit status and, when A and B differ, one line saying so (diff -q).",
)
@layout_option
@output_options()
def diff(
    source_a: str,
    source_b: str,
    lanes: str,
    patterns: Sequence[str],
    raw: bool,
    pairs: Sequence[tuple[int, int]],
    brief: bool,
    layout: str | None,
) -> View:
    """Compare the XSAVE state of A and B, register by register.

    A component in init state counts as its init values, so an image and its
    compacted conversion are the same; images in different layouts or formats compare
    by register. The header differences (format, XCR0, XSTATE_BV, XCOMP_BV, layout)
    are shown but do not make two images differ.

    A and B are raw images, `-` (standard input, for one of them), ELF cores (every
    thread; CORE@TID for one), `pid:N`, rr trace directories (every frame with XSAVE
    data; TRACE@EVENT for one) or CRIU image directories. Threads pair by position
    unless --pair says otherwise; a thread on one side only is a difference.

    Exit status: 0 same, 1 different, 2 trouble.

    \b
    Examples:
      xcr0tool diff core.4242 core.4242.masked        thread by thread, register by register
      xcr0tool diff -q image.bin image.xsavec && echo same
      xcr0tool diff --pair 4242:5151 --reg 'ymm*' --lanes f32 a.core b.core
      xcr0tool diff --raw a.bin b.bin                  bytes, each named by its register
      xcr0tool diff --json a.core@4242 pid:5151@5151
    """
    from xcr0tool.ops.inspect import compare
    from xcr0tool.render.diff import diff_view

    compared = compare(
        source_a, source_b, lanes=lanes, patterns=patterns, raw=raw, pairs=pairs, layout=layout
    )
    return diff_view(compared, brief)
