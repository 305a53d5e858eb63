"""`xcr0tool convert`: standard <-> compacted, and from one vendor's layout to another."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from xcr0tool.cli.options import (
    MASK,
    complete_layout,
    complete_path,
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
    "--to",
    "form",
    type=click.Choice(["standard", "compacted"]),
    default="standard",
    show_default=True,
    help="The format to write.",
)
@click.option(
    "--xcomp-bv",
    "xcomp_bv",
    type=MASK,
    metavar="MASK",
    help="With --to compacted: the requested-feature bitmap XSAVEC is given (default: the"
    " image's XCR0). XCOMP_BV becomes MASK & XCR0 | bit 63.",
)
@click.option(
    "--from-layout",
    "from_layout",
    metavar="NAME|FILE",
    shell_complete=complete_layout,
    help="Read SOURCE with this layout when it has no NT_X86_XSAVE_LAYOUT note (profile name"
    " or file, as --layout of `decode`). Default: a guess from XCR0 and size.",
)
@click.option(
    "--layout",
    "layout",
    metavar="NAME|FILE",
    shell_complete=complete_layout,
    help="Write with this layout (intel, intel-client, amd-zen3, amd-zen4, amd-zen5, or a"
    " file). Default: the source's layout.",
)
@click.option("--xcr0", type=MASK, help="XCR0 of a raw image that carries none.")
@click.option(
    "--keep-sw-bytes",
    is_flag=True,
    help="With --to standard: leave bytes 464-511 as they are instead of writing the XCR0"
    " word there as the kernel does.",
)
@click.option(
    "--drop-supervisor",
    is_flag=True,
    help="With --to standard: leave out supervisor components (XSAVES images), which the"
    " standard format cannot hold; each one dropped is reported on stderr.",
)
@output_option
@output_options(json=False, text=False)
def convert(
    source: str,
    thread: str | None,
    form: str,
    xcomp_bv: int | None,
    from_layout: str | None,
    layout: str | None,
    xcr0: int | None,
    keep_sw_bytes: bool,
    drop_supervisor: bool,
    output: str | None,
) -> View:
    """Rewrite an XSAVE image in the standard or compacted format, or in another layout.

    --to compacted writes what XSAVEC writes: XCOMP_BV = MASK | bit 63, components
    packed in ascending order (64-byte aligned where the layout says), nothing stored
    for components in their init state.

    --to standard writes what the kernel gives ptrace and cores: every component at the
    layout's standard offset, init-state components as init values, XCR0 at byte 464.
    With --layout it moves components between vendors' offsets (AMD Zen puts opmask,
    ZMM and PKRU at 832, 896/1408 and 2432, Intel at 1088, 1152/1664 and 2688).

    SOURCE is a raw image, `-` for standard input (the default), or an ELF core: a core
    gives a core in which every thread's NT_X86_XSTATE (and the NT_X86_XSAVE_LAYOUT note)
    is rewritten;
    CORE@TID (or --thread TID) gives that thread's raw image. What is lost on the way
    (components left out by --xcomp-bv, supervisor components dropped) is said on
    stderr, once.

    \b
    Examples:
      xcr0tool convert --to compacted image.bin -o image.xsavec
      xcr0tool convert --to compacted --xcomp-bv 0x7 image.bin | xcr0tool decode -
      xcr0tool convert image.xsavec -o image.bin           compacted -> standard
      xcr0tool convert --from-layout amd-zen4 --layout intel zen4.bin -o skylake.bin
      xcr0tool convert --layout intel core.4242 -o core.intel   gdb 13 reads it
    """
    from xcr0tool.ops.rewrite import convert as convert_source
    from xcr0tool.render.output import View

    done = convert_source(
        source,
        form=form,
        thread=thread,
        xcomp_bv=xcomp_bv,
        from_layout=from_layout,
        layout=layout,
        xcr0=xcr0,
        keep_sw_bytes=keep_sw_bytes,
        drop_supervisor=drop_supervisor,
        output=output,
    )
    return View(warnings=done.warnings)
