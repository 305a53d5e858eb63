"""Options and parameter types shared by the commands, and the one decorator that shows
what a command returns (sqlite-utils' output_options): the command body returns a
render.output.View, the decorator renders it and exits with its status."""

from __future__ import annotations

import functools
import os
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

# Shell completion (click's protocol: the generated scripts in completions/ ask the program).
# An item of type "file" makes the shell complete file names itself.
COMPLETION_LIMIT = 500  # items a completion offers at most: a huge directory stays quick


def complete_path(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """SOURCE, A, B, IMAGE: file names, completed by the shell."""
    from click.shell_completion import CompletionItem  # only when completing: startup

    return [CompletionItem(incomplete, type="file")]


def complete_layout(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """--layout NAME|FILE: the built-in profiles that start with what is typed, and the
    files of the current directory that do too; only files once no profile fits."""
    from click.shell_completion import CompletionItem

    from xcr0tool.layouts.profiles import PROFILES

    names = [
        CompletionItem(p.name, help=p.summary) for p in PROFILES if p.name.startswith(incomplete)
    ]
    if not names:
        return [CompletionItem(incomplete, type="file")]
    # A "file" item would make bash drop the names (its script empties the list for it),
    # so the files beside the names are listed here. A profile name has no "/": what is
    # typed is a name in the current directory.
    files: list[str] = []
    try:
        with os.scandir(".") as entries:
            for entry in entries:
                if len(files) >= COMPLETION_LIMIT:
                    break
                hidden = entry.name.startswith(".") and not incomplete.startswith(".")
                if entry.name.startswith(incomplete) and not hidden:
                    files.append(entry.name + ("/" if entry.is_dir() else ""))
    except OSError:
        pass  # an unreadable directory offers no files, and the names still
    return names + [CompletionItem(name) for name in sorted(files)]


def complete_register(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """--reg: register names from the component catalogue."""
    from click.shell_completion import CompletionItem

    from xcr0tool.model.registers import register_names

    return [CompletionItem(name) for name in register_names() if name.startswith(incomplete)]


layout_option = click.option(
    "--layout",
    "layout",
    metavar="NAME|FILE",
    shell_complete=complete_layout,
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
    shell_complete=complete_register,
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
