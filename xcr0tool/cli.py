"""The command line: a thin click layer. Commands parse options, call the model, and hand
a result to a renderer. Every XcrError becomes one line on stderr and exit status 2;
1 is kept for "differs" (diff) and "would fault" (validate)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from xcr0tool import __version__
from xcr0tool.errors import XcrError


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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="xcr0tool")
@click.option("--traceback", is_flag=True, hidden=True, help="Show the stack on errors.")
@click.pass_context
def cli(ctx: click.Context, traceback: bool) -> None:
    """Look at, compare and transform x86 XSAVE images.

    \b
    Examples:
      xcr0tool decode core.1234                  every thread's registers
      xcr0tool decode core.1234@1235 --reg 'zmm*'
      xcr0tool extract core.1234 | xcr0tool decode -
      xcr0tool layout --layout amd-zen4 --xcr0 0x2e7
    """
    ctx.obj = {"traceback": traceback}


@cli.command()
@click.argument("source")
@click.option(
    "--reg",
    "patterns",
    multiple=True,
    metavar="GLOB",
    help="Only these registers (repeatable; globs such as 'zmm*').",
)
@click.option("--thread", "tid", type=int, metavar="TID", help="Only this thread of a core.")
@click.option("--xcr0", type=MASK, help="XCR0 of an image that carries none (raw XSAVE output).")
@layout_option
@json_option
def decode(
    source: str,
    patterns: Sequence[str],
    tid: int | None,
    xcr0: int | None,
    layout: str | None,
    as_json: bool,
) -> None:
    """Show every component and register of an XSAVE image.

    Components in their init state (XSTATE_BV bit clear) show init values, never the
    stale bytes behind them. Register names and values are gdb's.

    SOURCE is a raw XSAVE image (standard or compacted), `-` for standard input, an ELF
    core (every thread; CORE@TID for one), `pid:N` for a live process, or `self` for
    this tool's own thread.
    """
    from xcr0tool import render
    from xcr0tool.sources import open_source

    result = open_source(_with_thread(source, tid), layout_option=layout, xcr0=xcr0)
    if as_json:
        from xcr0tool.output import write_json

        write_json(render.decode_json(result, patterns))
    elif sys.stdout.isatty():
        render.decode_rich(result, patterns)
    else:
        for warning in result.warnings:
            click.echo(f"xcr0tool: warning: {warning}", err=True)
        sys.stdout.write(render.decode_text(result, patterns))


@cli.command()
@click.argument("source")
@click.option(
    "--thread", "tid", type=int, metavar="TID", help="The thread to extract (default: the first)."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write here (default: stdout, if not a terminal).",
)
@layout_option
def extract(source: str, tid: int | None, output: str | None, layout: str | None) -> None:
    """Write one thread's raw XSAVE image, byte for byte as the source holds it.

    Binary data goes only to a file or a pipe, never to a terminal.
    """
    from xcr0tool.output import write_binary
    from xcr0tool.sources import open_source

    result = open_source(_with_thread(source, tid), layout_option=layout)
    write_binary(result.images[0].data, output)


@cli.command(name="layout")
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
    from xcr0tool import render
    from xcr0tool.sources import host_layout, resolve_layout_option

    chosen = resolve_layout_option(layout) or host_layout()
    if xcr0 is not None and xcomp_bv is None:
        xcomp_bv = xcr0
    if as_json:
        from xcr0tool.output import write_json

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


def _with_thread(source: str, tid: int | None) -> str:
    return source if tid is None else f"{source}@{tid}"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the click app and turn our errors into one line and exit 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in args or bool(os.environ.get("XCR0TOOL_TRACEBACK"))
    try:
        cli.main(args=args, prog_name="xcr0tool", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as usage:
        usage.show()
        sys.exit(usage.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except XcrError as error:
        if show_traceback:
            raise
        click.echo(f"xcr0tool: {error}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`| head`): end quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
