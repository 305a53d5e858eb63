"""`xcr0tool extract`: one thread's raw XSAVE image."""

from __future__ import annotations

import click

from xcr0tool.cli.options import complete_path, layout_option, output_option, with_thread


@click.command()
@click.argument("source", shell_complete=complete_path)
@click.option(
    "--thread", "tid", type=int, metavar="TID", help="The thread to extract (default: the first)."
)
@output_option
@layout_option
def extract(source: str, tid: int | None, output: str | None, layout: str | None) -> None:
    """Write one thread's raw XSAVE image, byte for byte as the source holds it.

    SOURCE is an ELF core (CORE@TID or --thread for one thread; the first otherwise, said
    on stderr), `pid:N`, `self`, a raw image, `-`, an rr trace (TRACE@EVENT for one
    frame) or CRIU images (the image rebuilt in the standard format). Binary data goes
    only to a file or a pipe, never to a terminal.

    \b
    Examples:
      xcr0tool extract core.4242 --thread 4243 -o t4243.xsave
      xcr0tool extract core.4242 | xcr0tool mask --xcr0 0x7 | xcr0tool decode -
    """
    from xcr0tool.files.output import write_binary
    from xcr0tool.sources.open import open_source

    result = open_source(with_thread(source, tid), layout_option=layout)
    first = result.images[0]
    write_binary(first.data, output, mode=result.file_mode)
    if len(result.images) > 1:
        click.echo(
            f"xcr0tool: extracted {first.origin}, the first of {len(result.images)};"
            " pick another with --thread TID",
            err=True,
        )
