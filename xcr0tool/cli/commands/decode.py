"""`xcr0tool decode`: every component and register of every image of a source."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from xcr0tool.cli.options import (
    MASK,
    complete_path,
    json_option,
    layout_option,
    reg_option,
    with_thread,
)


@click.command()
@click.argument("source", shell_complete=complete_path)
@reg_option
@click.option("--thread", "tid", type=int, metavar="TID", help="Only this thread of a core.")
@click.option("--xcr0", type=MASK, help="XCR0 of an image that carries none (raw XSAVE output).")
@click.option(
    "--stale",
    is_flag=True,
    help="Also show the bytes behind init-state components, labelled stale.",
)
@layout_option
@json_option
def decode(
    source: str,
    patterns: Sequence[str],
    tid: int | None,
    xcr0: int | None,
    stale: bool,
    layout: str | None,
    as_json: bool,
) -> None:
    """Show every component and register of an XSAVE image.

    Components in their init state (XSTATE_BV bit clear) show init values, never the
    stale bytes behind them (--stale shows those too, labelled). Register names and
    values are gdb's; --json gives each as the register's bytes read as one
    little-endian integer.

    SOURCE is a raw XSAVE image (standard or compacted), `-` for standard input, an ELF
    core (every thread; CORE@TID for one), `pid:N` for a live process, `self` for this
    tool's own thread, an rr trace directory (every frame with XSAVE data, in the
    recording machine's layout; TRACE@EVENT for one frame), or a CRIU image directory
    (CRIUDIR@TID for one thread) or one core-TID.img.

    \b
    Examples:
      xcr0tool decode core.4242 --reg 'zmm*'
      xcr0tool decode ~/.local/share/rr/latest-trace@1234 --json
      xcr0tool decode checkpoint/ --layout amd-zen4
    """
    from xcr0tool.render import image as render
    from xcr0tool.sources.open import open_source

    result = open_source(with_thread(source, tid), layout_option=layout, xcr0=xcr0)
    if as_json:
        from xcr0tool.files.output import write_json

        write_json(render.decode_json(result, patterns, stale))
    elif sys.stdout.isatty():
        render.decode_rich(result, patterns, stale)
    else:
        for warning in result.warnings:
            click.echo(f"xcr0tool: warning: {warning}", err=True)
        sys.stdout.write(render.decode_text(result, patterns, stale))
