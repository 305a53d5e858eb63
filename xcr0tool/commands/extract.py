"""`xcr0tool extract`: one thread's raw XSAVE image."""

from __future__ import annotations

import click

from xcr0tool.cliopts import layout_option, output_option, with_thread


@click.command()
@click.argument("source")
@click.option(
    "--thread", "tid", type=int, metavar="TID", help="The thread to extract (default: the first)."
)
@output_option
@layout_option
def extract(source: str, tid: int | None, output: str | None, layout: str | None) -> None:
    """Write one thread's raw XSAVE image, byte for byte as the source holds it.

    Binary data goes only to a file or a pipe, never to a terminal.
    """
    from xcr0tool.output import write_binary
    from xcr0tool.sources import open_source

    result = open_source(with_thread(source, tid), layout_option=layout)
    write_binary(result.images[0].data, output)
