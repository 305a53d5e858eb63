"""Options and parameter types shared by the commands."""

from __future__ import annotations

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

layout_option = click.option(
    "--layout",
    "layout",
    metavar="NAME|FILE",
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
    help="Only these registers (repeatable; globs such as 'zmm*').",
)
