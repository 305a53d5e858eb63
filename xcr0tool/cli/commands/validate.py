"""`xcr0tool validate`: would XRSTOR (or the kernel) take this image, and if not, why."""

from __future__ import annotations

import sys

import click

from xcr0tool.cli.options import MASK, complete_path, json_option, layout_option

CHECK_CHOICES = ("cpu", "linux-ptrace", "sigreturn")  # validate.CHECKS, without importing it


@click.command()
@click.argument("image", shell_complete=complete_path)
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
@json_option
def validate(
    image: str,
    xcr0: int | None,
    xss: int | None,
    instruction: str,
    rfbm: int | None,
    mxcsr_mask: int | None,
    check: str,
    layout: str | None,
    as_json: bool,
) -> None:
    """Would XRSTOR raise #GP on IMAGE, and every reason why (rule, byte offset, value).

    Also reports what loads but surprises: bytes behind components in init state, an
    x87 TOP that disagrees with the tag word, an invalid TILECFG, supervisor components
    under XRSTOR, MXCSR loaded while SSE and AVX are in init state.

    IMAGE is a raw XSAVE image (any header: that is what is checked), `-` for standard
    input, an ELF core (every thread; CORE@TID for one), `pid:N`, an rr trace directory
    (TRACE@EVENT for one frame) or a CRIU image directory.

    Exit status: 0 accepted, 1 would fault or be rejected, 2 trouble.
    """
    from xcr0tool.layouts.files import resolve_layout_option
    from xcr0tool.ops.validate import host_facts, load_subjects, make_target
    from xcr0tool.ops.validate import validate as run_rules
    from xcr0tool.render import validate as render_validate

    explicit = resolve_layout_option(layout)
    host = host_facts()
    items = []
    for subject in load_subjects(image, layout_option=layout, xcr0=xcr0):
        target = make_target(
            subject,
            check=check,
            instruction=instruction,
            xcr0=xcr0,
            xss=xss,
            rfbm=rfbm,
            mxcsr_mask=mxcsr_mask,
            layout=explicit,
            host=host,
        )
        items.append((subject, run_rules(subject, target)))
    if as_json:
        from xcr0tool.files.output import write_json

        write_json(render_validate.validate_json(check, items))
    elif sys.stdout.isatty():
        render_validate.validate_rich(check, items)
    else:
        sys.stdout.write(render_validate.validate_text(check, items))
    if not all(report.accepted for _, report in items):
        raise click.exceptions.Exit(1)
