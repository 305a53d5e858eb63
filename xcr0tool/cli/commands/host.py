"""`xcr0tool host`: this machine's XSAVE features, CPUID leaf 0xD and the kernel's view."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from xcr0tool.cli.options import output_options

if TYPE_CHECKING:
    from xcr0tool.render.output import View


@click.command()
@click.option(
    "--save",
    "save",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Also write this machine's layout here, a file `--layout FILE` reads anywhere.",
)
@output_options()
def host(save: str | None) -> View:
    """Show this machine's XSAVE features: vendor and model, XCR0, XINUSE, the whole
    CPUID leaf 0xD table, XSAVEOPT/XSAVEC/XSAVES, and the kernel's view (/proc/cpuinfo,
    arch_prctl ARCH_GET_XCOMP_SUPP and ARCH_GET_XCOMP_PERM), with every inconsistency
    flagged. CPUID and XGETBV run in this process: no root, no helper.

    --save FILE writes the layout as `layout --json` does, its source naming this
    machine, so that a core or image can travel with the layout of the machine that
    made it: `xcr0tool decode --layout FILE IMAGE` elsewhere.

    \b
    --json schema (stable; new keys may be added, none removed or changed):
    {"schema": 1,
     "cpu": {"vendor": str, "family": int, "model": int, "stepping": int,
             "brand": str},
     "xcr0": "0x..",                    XGETBV 0
     "xinuse": "0x.." | null,           XGETBV 1 of this tool's thread; null without it
     "xcr0_capable": "0x..",            CPUID.(0xD,0) EDX:EAX
     "xss_capable": "0x..",             CPUID.(0xD,1) EDX:ECX
     "xss": "0x.." | null,              IA32_XSS, when one value alone fits
     "xss_candidates": ["0x..", ...],   the IA32_XSS values that fit CPUID.(0xD,1).EBX
     "instructions": {"xsaveopt": bool, "xsavec": bool, "xgetbv1": bool,
                      "xsaves": bool, "xfd": bool},          CPUID.(0xD,1).EAX
     "sizes": {"standard_xcr0": int,    CPUID.(0xD,0).EBX
               "standard_max": int,     CPUID.(0xD,0).ECX
               "compacted_xcr0_xss": int,  CPUID.(0xD,1).EBX
               "compacted_xcr0": int},  an XSAVEC image of XCR0, computed
     "mxcsr_mask": "0x..",              from an XSAVE of this thread
     "leaf_0d": [{"subleaf": int, "eax": "0x..", "ebx": "0x..", "ecx": "0x..",
                  "edx": "0x.."}, ...], every non-zero sub-leaf 0-63, in order
     "components": [{"id": int, "name": str, "size": int,
                     "offset": int | null,            standard; null: supervisor
                     "compacted_offset": int | null,  in an XSAVEC image of XCR0
                     "aligned": bool, "supervisor": bool, "xfd": bool,
                     "state": "xcr0" | "ia32_xss" | "off" | "unknown" | "unlisted"},
                    ...],
     "kernel": {"cpuinfo_flags": {"xsave": bool, ...} | null,  cpu0's XSAVE flags
                "xcomp_supp": "0x.." | null,   arch_prctl; null before Linux 5.16
                "xcomp_perm": "0x.." | null},
     "inconsistencies": [str, ...],
     "warnings": [str, ...]}

    \b
    Examples:
      xcr0tool host                              the table, and what does not add up
      xcr0tool host --json | jq .xcr0
      xcr0tool host --save this-machine.json     then elsewhere:
      xcr0tool decode --layout this-machine.json image.bin
    """
    from xcr0tool.render import host as render_host
    from xcr0tool.sources.hostinfo import gather_host_info

    info = gather_host_info()
    if save is not None:
        render_host.save_layout(info, save)
    return render_host.host_output(info)
