"""`xcr0tool extract`: one thread's raw XSAVE image."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from xcr0tool.cli.options import (
    complete_path,
    layout_option,
    output_option,
    output_options,
    thread_option,
)

if TYPE_CHECKING:
    from xcr0tool.render.output import View


@click.command()
@click.argument("source", shell_complete=complete_path)
@thread_option
@output_option
@layout_option
@output_options(json=False, text=False)
def extract(source: str, thread: str | None, output: str | None, layout: str | None) -> View:
    """Write one thread's raw XSAVE image, byte for byte as the source holds it.

    SOURCE is an ELF core (CORE@TID or --thread for one thread; the first otherwise, said
    on stderr), `pid:N`, `self` (self@xsave, self@xsavec), a raw image, `-`, an rr
    trace (TRACE@EVENT for one frame) or CRIU images (the image rebuilt in the standard
    format). Binary data goes only to a file or a pipe, never to a terminal.

    \b
    Examples:
      xcr0tool extract core.4242 --thread 4243 -o t4243.xsave
      xcr0tool extract core.4242 | xcr0tool mask --xcr0 0x7 | xcr0tool decode -
      xcr0tool extract self@xsavec -o mine.xsavec
    """
    from xcr0tool.ops.rewrite import extract as extract_image
    from xcr0tool.render.output import View

    return View(
        warnings=extract_image(source, thread=thread, output=output, layout=layout).warnings
    )
