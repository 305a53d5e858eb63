"""Options and parameter types shared by the commands, and the one decorator that shows
what a command returns (sqlite-utils' output_options): the command body returns a
render.output.View, the decorator renders it and exits with its status."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from xcr0tool.render.output import View

F = TypeVar("F", bound=Callable[..., Any])


class Mask(click.ParamType):
    """An integer mask, hex (0xe7) or decimal."""

    name = "MASK"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            number = int(str(value), 0)
        except ValueError:
            self.fail(f"{value!r} is not a number (write hex as 0xe7)", param, ctx)
        if not 0 <= number < 1 << 64:
            self.fail(f"{value} does not fit in 64 bits", param, ctx)
        return number


MASK = Mask()
LANE_CHOICES = ("u8", "u16", "u32", "u64", "f32", "f64")  # ops.diff.LANES, without importing it

layout_option = click.option(
    "--layout",
    "layout",
    metavar="NAME|FILE",
    help="Layout when the source has no NT_X86_XSAVE_LAYOUT note: a built-in profile"
    " (intel, intel-client, amd-zen3, amd-zen4, amd-zen5) or a file (CPUID dump in"
    " `cpuid -r` or AIDA64 format, or JSON from `xcr0tool layout --json`)."
    " Default: a guess from XCR0 and the image size, which names itself.",
)
thread_option = click.option(
    "--thread",
    "thread",
    metavar="ID",
    help="Only this thread: a tid of a core, a process or CRIU images, xsave or xsavec of"
    " `self`, an event of an rr trace (the same as SOURCE@ID).",
)
output_option = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write here (default: stdout, if not a terminal).",
)
reg_option = click.option(
    "--reg",
    "patterns",
    multiple=True,
    metavar="GLOB",
    help="Only these registers (repeatable; globs such as 'zmm*').",
)


def output_options(*, json: bool = True, text: bool = True) -> Callable[[F], F]:
    """The command's body returns a View; this shows it (JSON with --json when `json`;
    the terminal view or plain text with --color and --no-pager when `text`), says its
    warnings once, and exits with its status. Commands that write binary output take
    neither (text=False, json=False): only their warnings are shown, on stderr."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def run(
            *args: Any,
            as_json: bool = False,
            color: str = "auto",
            pager: bool = True,
            **kwargs: Any,
        ) -> None:
            from xcr0tool.render.output import OutputOptions, emit

            view: View = command(*args, **kwargs)
            status = emit(view, OutputOptions(as_json, color, pager))
            if status:
                raise click.exceptions.Exit(status)

        wrapped: Any = run
        if text:
            wrapped = click.option(
                "--no-pager",
                "pager",
                flag_value=False,
                default=True,
                help="Never page (default: a pager on a terminal when the output is longer"
                " than the screen: $XCR0TOOL_PAGER, $PAGER or less, with LESS=FRX).",
            )(wrapped)
            wrapped = click.option(
                "--color",
                type=click.Choice(("auto", "always", "never")),
                default="auto",
                show_default=True,
                help="Colour: auto (a terminal, unless NO_COLOR; FORCE_COLOR colours a pipe"
                " too), always, never.",
            )(wrapped)
        if json:
            wrapped = click.option(
                "--json", "as_json", is_flag=True, help="Print JSON (schema in README)."
            )(wrapped)
        return wrapped

    return decorate
