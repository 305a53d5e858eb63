"""man/xcr0tool.1, generated from the click app itself: the top-level help, then every
command's help, arguments and options, as `--help` shows them. Nothing in it is written
twice, so it cannot drift (tests/cli/test_cli.py regenerates it and compares).

    python3 -m xcr0tool.cli.manpage > man/xcr0tool.1
"""

from __future__ import annotations

import sys

import click

ENVIRONMENT = (
    ("NO_COLOR", "Set and not empty: no colour, on a terminal too (no-color.org)."),
    (
        "FORCE_COLOR",
        "Set and not empty: colour, and the terminal view, in a pipe too (force-color.org)."
        " --color overrides both.",
    ),
    (
        "XCR0TOOL_PAGER, PAGER",
        "The pager for output longer than the screen, on a terminal (default: less;"
        ' "" or cat: none).',
    ),
    ("LESS", "Default FRX when unset: quit at the end of one screen, keep colours."),
    ("COLUMNS", "The width of the terminal view when the terminal does not say."),
    ("XCR0TOOL_TRACEBACK", "Set: a Python traceback instead of the one-line error."),
)


def roff_text(text: str) -> str:
    """Text safe in roff: backslashes doubled, no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(f"\\&{line}" if line[:1] in (".", "'") else line for line in text.split("\n"))


def roff_help(text: str) -> list[str]:
    """click help text as roff: paragraphs filled, \\b blocks kept line for line."""
    out: list[str] = []
    for block in click.unstyle(text).strip().split("\n\n"):
        lines = block.split("\n")
        if lines[0].strip() == "\b":
            out += [".PP", ".nf", *(roff_text(line) for line in lines[1:]), ".fi"]
        else:
            out += [".PP", roff_text(" ".join(line.strip() for line in lines))]
    return out


def _cleaned(text: str) -> str:
    """A docstring as click shows it: dedented, each paragraph's lines as written."""
    import inspect

    return inspect.cleandoc(text)


def command_section(name: str, command: click.Command, parent: click.Context) -> list[str]:
    ctx = click.Context(command, info_name=name, parent=parent)
    usage = " ".join(command.collect_usage_pieces(ctx))
    out = [f".SS {roff_text(f'xcr0tool {name}')}", f".B xcr0tool {name}", roff_text(usage)]
    out += roff_help(_cleaned(command.help or ""))
    for param in command.get_params(ctx):
        if isinstance(param, click.Argument):
            continue  # the usage line names them; the help says what they are
        record = param.get_help_record(ctx)
        if record is None:
            continue
        options, help_text = record
        out += [".TP", f"\\fB{roff_text(options)}\\fR", roff_text(click.unstyle(help_text))]
    return out


def manpage(app: click.Group) -> str:
    from importlib.metadata import version

    ctx = click.Context(app, info_name="xcr0tool", **app.context_settings)
    summary, _, rest = _cleaned(app.help or "").partition("\n\n")
    lines = [
        '.\\" Generated from the click app by python3 -m xcr0tool.cli.manpage; do not edit.',
        f'.TH XCR0TOOL 1 "" "xcr0tool {version("xcr0tool")}" "User Commands"',
        ".SH NAME",
        f"xcr0tool \\- {roff_text(summary.rstrip('.'))}",
        ".SH SYNOPSIS",
        ".B xcr0tool",
        "[\\fB\\-\\-version\\fR] [\\fB\\-h\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR]",
        ".SH DESCRIPTION",
        *roff_help(rest),
        ".SH COMMANDS",
    ]
    for name in app.list_commands(ctx):
        command = app.get_command(ctx, name)
        if command is not None and not command.hidden:
            lines += command_section(name, command, ctx)
    lines.append(".SH ENVIRONMENT")
    for variable, meaning in ENVIRONMENT:
        lines += [".TP", f"\\fB{roff_text(variable)}\\fR", roff_text(meaning)]
    lines += [".SH SEE ALSO", "\\fBgdb\\fR(1), \\fBeu\\-readelf\\fR(1), \\fBcoredumpctl\\fR(1)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    from xcr0tool.cli.main import cli

    sys.stdout.write(manpage(cli))


if __name__ == "__main__":
    main()
