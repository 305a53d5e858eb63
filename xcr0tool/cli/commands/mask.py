"""`xcr0tool mask`: an image as if it had been saved under a smaller XCR0."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from xcr0tool.cli.options import (
    MASK,
    complete_path,
    layout_option,
    output_option,
    output_options,
    thread_option,
)

if TYPE_CHECKING:
    from xcr0tool.render.output import View


@click.command()
@click.argument("source", default="-", required=False, shell_complete=complete_path)
@thread_option
@click.option(
    "--xcr0",
    "mask_value",
    type=MASK,
    required=True,
    metavar="MASK",
    help="Keep the components in XCR0 & MASK (0x7: x87, SSE and AVX).",
)
@click.option(
    "--keep-size",
    is_flag=True,
    help="Keep the image's size (zeros where removed components were) instead of cutting it"
    " to the standard size of the new XCR0.",
)
@click.option(
    "--keep-sw-bytes",
    is_flag=True,
    help="Leave bytes 464-511 of standard images as they are instead of writing the new XCR0"
    " there.",
)
@click.option("--from-xcr0", "from_xcr0", type=MASK, help="XCR0 of a raw image that carries none.")
@layout_option
@output_option
@output_options(json=False, text=False)
def mask(
    source: str,
    thread: str | None,
    mask_value: int,
    keep_size: bool,
    keep_sw_bytes: bool,
    from_xcr0: int | None,
    layout: str | None,
    output: str | None,
) -> View:
    """Write the image as if saved with XCR0' = XCR0 & MASK.

    XCR0' must be a value XCR0 can hold (x87 always; AVX needs SSE; AVX-512's three
    components together and with AVX; AMX's two together; MPX's two together). Removed
    components are reported on stderr, one line each. Masking never adds a feature:
    bits of MASK the image lacks are reported, not invented.

    A standard image keeps its layout: XSTATE_BV loses the removed bits, their bytes are
    zeroed, the size becomes the standard size of XCR0' and byte 464 holds XCR0'. In a
    compacted image later components move down to close the gap, and XCOMP_BV loses the
    removed bits.

    SOURCE is a raw image, `-` for standard input (the default), or an ELF core: a core
    gives a core in which every thread's NT_X86_XSTATE (and the NT_X86_XSAVE_LAYOUT note)
    is masked;
    CORE@TID (or --thread TID) gives that thread's raw image.

    \b
    Examples:
      xcr0tool mask --xcr0 0x7 core.4242 -o core.avx      gdb shows no ZMM, same YMM
      xcr0tool extract core.4242 | xcr0tool mask --xcr0 0x7 | xcr0tool decode -
      xcr0tool mask --xcr0 0x3 --keep-size image.bin -o sse-only.bin
    """
    from xcr0tool.ops.rewrite import mask as mask_source
    from xcr0tool.render.output import View

    done = mask_source(
        source,
        mask_value,
        thread=thread,
        keep_size=keep_size,
        keep_sw_bytes=keep_sw_bytes,
        from_xcr0=from_xcr0,
        layout=layout,
        output=output,
    )
    return View(warnings=done.warnings)
