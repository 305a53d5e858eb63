"""`xcr0tool validate`: would XRSTOR (or the kernel) take this image, and if not, why."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from xcr0tool.cli.options import MASK, complete_path, layout_option, output_options, thread_option

if TYPE_CHECKING:
    from xcr0tool.render.output import View

CHECK_CHOICES = ("cpu", "linux-ptrace", "sigreturn")  # validate.CHECKS, without importing it


@click.command()
@click.argument("image", shell_complete=complete_path)
@thread_option
@click.option(
    "--xcr0", type=MASK, help="XCR0 to check against (default: the image's, else this machine's)."
)
@click.option(
    "--xss", type=MASK, help="IA32_XSS for --instruction xrstors (default: inferred from CPUID)."
)
@click.option(
    "--instruction",
    type=click.Choice(("xrstor", "xrstors")),
    default="xrstor",
    show_default=True,
    help="The instruction that loads the image.",
)
@click.option("--rfbm", type=MASK, help="EDX:EAX of the instruction (default: all ones).")
@click.option(
    "--mxcsr-mask",
    "mxcsr_mask",
    type=MASK,
    help="MXCSR_MASK of the CPU (default: the image's field, else this machine's).",
)
@click.option(
    "--as",
    "check",
    type=click.Choice(CHECK_CHOICES),
    default="cpu",
    show_default=True,
    help="cpu: the instruction itself; linux-ptrace: what PTRACE_SETREGSET accepts;"
    " sigreturn: a signal frame's fpstate as rt_sigreturn takes it.",
)
@layout_option
@output_options()
def validate(
    image: str,
    thread: str | None,
    xcr0: int | None,
    xss: int | None,
    instruction: str,
    rfbm: int | None,
    mxcsr_mask: int | None,
    check: str,
    layout: str | None,
) -> View:
    """Would XRSTOR raise #GP on IMAGE, and every reason why (rule, byte offset, value).

    Also reports what loads but surprises: bytes behind components in init state, an
    x87 TOP that disagrees with the tag word, an invalid TILECFG, supervisor components
    under XRSTOR, MXCSR loaded while SSE and AVX are in init state.

    IMAGE is a raw XSAVE image (any header: that is what is checked), `-` for standard
    input, an ELF core (every thread; CORE@TID for one), `pid:N`, an rr trace directory
    (TRACE@EVENT for one frame) or a CRIU image directory.

    Exit status: 0 accepted, 1 would fault or be rejected, 2 trouble.

    \b
    Examples:
      xcr0tool validate image.bin                     would XRSTOR take it here
      xcr0tool validate --xcr0 0x7 --layout amd-zen3 image.bin
      xcr0tool validate --as linux-ptrace core.4242   would PTRACE_SETREGSET take each thread
      xcr0tool validate --as sigreturn --json frame.bin
    """
    from xcr0tool.ops.check import check_source
    from xcr0tool.render.validate import validate_view

    checked = check_source(
        image,
        thread=thread,
        check=check,
        instruction=instruction,
        xcr0=xcr0,
        xss=xss,
        rfbm=rfbm,
        mxcsr_mask=mxcsr_mask,
        layout=layout,
    )
    return validate_view(checked)
