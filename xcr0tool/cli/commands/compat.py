"""`xcr0tool compat`: will XSAVE state survive the move between these machines?"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from xcr0tool.cli.options import output_options

if TYPE_CHECKING:
    from xcr0tool.render.output import View


@click.command()
@click.argument("machines", nargs=-1, required=True, metavar="MACHINE MACHINE [MACHINE...]")
@output_options()
def compat(machines: tuple[str, ...]) -> View:
    """Will XSAVE state move between these machines, and which XCR0 makes it portable?

    Shows every component of any machine's XCR0 with its size, offset and alignment on
    each machine; the portable XCR0 (the largest every machine allows, that XSETBV
    accepts, whose components sit alike everywhere); for every ordered pair the verdict
    of rr's replay check (check_xsave_compatibility) and of CRIU's restore check
    (cpu_validate_features, --cpu-cap=fpu) in their own words; the threads of a core or
    a CRIU dump, and the frames of an rr trace, whose state a target lacks or places
    elsewhere; and what to do about it.

    \b
    A MACHINE is:
      host                    this machine (CPUID, XGETBV)
      intel, amd-zen4, ...    a built-in profile (see `layout --help`)
      FILE                    a CPUID dump (`cpuid -r`, AIDA64/InstLatx64), a layout
                              file (`layout --json`, `host --save`), an ELF core, a
                              Firecracker CPU fingerprint, `rr traceinfo` JSON, a
                              CRIU cpuinfo.img, or a CRIU core-TID.img
      DIR                     an rr trace directory, or a CRIU image directory
      FINGERPRINT+TEMPLATE    a Firecracker fingerprint with a custom CPU template applied

    A machine's XCR0 is the recorded one where the source has it, else what Linux
    would set (CPUID.(0xD,0) EDX:EAX & 0xe02ff); the output says which.

    Exit status: 0 when every machine's XCR0 is the portable one (nothing to lose),
    1 when not, 2 trouble.

    \b
    Examples:
      xcr0tool compat host amd-zen4               can this machine's state go to a Zen 4?
      xcr0tool compat zen4.txt skylake-x.txt      rr trace from one, replay on the other
      xcr0tool compat core.4242 host              which threads' state would not fit here
      xcr0tool compat rr-trace/ host              replay here? which frames' state moves
      xcr0tool compat fp.json fp.json+T2CL.json   a Firecracker host with and without a template
      xcr0tool compat --json a.txt b.txt c.txt    the schema is in README
    """
    if len(machines) < 2:
        raise click.UsageError("compat needs at least two MACHINEs")
    from xcr0tool.ops.compat import compat as run
    from xcr0tool.render.compat import compat_view
    from xcr0tool.sources.machines import resolve_machines

    return compat_view(run(resolve_machines(list(machines))))
