"""`xcr0tool diff`: compare the state of two sources, thread by thread."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from xcr0tool.cli.options import complete_path, json_option, layout_option, reg_option

LANE_CHOICES = ("u8", "u16", "u32", "u64", "f32", "f64")  # diff.LANES, without importing it


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
@layout_option
@json_option
def diff(
    source_a: str,
    source_b: str,
    lanes: str,
    patterns: Sequence[str],
    raw: bool,
    pairs: Sequence[tuple[int, int]],
    layout: str | None,
    as_json: bool,
) -> None:
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
    """
    from xcr0tool.errors import UsageError
    from xcr0tool.ops.diff import diff_sources
    from xcr0tool.render import diff as render_diff
    from xcr0tool.sources.open import open_source

    if source_a == "-" and source_b == "-":
        raise UsageError("A and B cannot both be standard input")
    result = diff_sources(
        open_source(source_a, layout_option=layout),
        open_source(source_b, layout_option=layout),
        lanes=lanes,
        patterns=patterns,
        raw=raw,
        pairs=pairs,
    )
    if as_json:
        from xcr0tool.files.output import write_json

        write_json(render_diff.diff_json(result))
    elif sys.stdout.isatty():
        render_diff.diff_rich(result)
    else:
        for source in (result.a, result.b):
            for warning in source.warnings:
                click.echo(f"xcr0tool: warning: {source.name}: {warning}", err=True)
        sys.stdout.write(render_diff.diff_text(result))
    if not result.same:
        raise click.exceptions.Exit(1)
