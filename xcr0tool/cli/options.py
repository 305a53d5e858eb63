"""Options and parameter types shared by the commands."""

from __future__ import annotations

import os
from typing import Any

import click


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
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (schema in README).")


def with_thread(source: str, tid: int | None) -> str:
    return source if tid is None else f"{source}@{tid}"


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
