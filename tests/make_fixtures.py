"""Make the shipped core fixtures in tests/fixtures/ (rerun it to remake them).

    python tests/make_fixtures.py [--out DIR]

Each fixture is a real core of tests/progs/regs.c, run with a fixed seed from an
empty environment (`env -i`) in a fresh temporary directory: two kernel cores
(1 and 4 threads) and one written by gdb's gcore (2 threads). Each is then
rewritten by xcr0tool.sources.corewriter.write_core with every memory segment's bytes
dropped, NT_FILE left out and NT_PRPSINFO scrubbed, so it carries no path, user
name or environment of the machine that made it; the script checks that with
a `strings`-like scan and fails if anything slipped through.

Beside each NAME.core goes NAME.gdb.json: gdb's view of the fixture's
registers, taken when the fixture is made, so that tests can compare the
decoder with gdb on machines without gdb. tests/fixtures/README.md lists
them all. The program binary is not shipped.

Needs gcc, gdb, bash, a core_pattern that writes files, and xcr0tool itself
(for write_core).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import pwd
import re
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from coremaker import (  # noqa: E402 - after the path set-up above
    NT_AUXV,
    NT_FILE,
    NT_PRPSINFO,
    NT_PRSTATUS,
    NT_SIGINFO,
    NT_X86_XSAVE_LAYOUT,
    NT_X86_XSTATE,
    MadeCore,
    compile_regs,
    component_registers,
    gdb_version,
    make_gcore,
    make_kernel_core,
    probe_host,
    read_notes,
)
from gdb_oracle import GdbView, gdb_view, misplaced_components  # noqa: E402

MAX_FIXTURE = 100 * 1024
# NT_FILE names every mapped file by its absolute path; nothing in it is about
# registers.
DROP_NOTES = (("CORE", NT_FILE),)


@dataclass(frozen=True)
class Spec:
    kind: str  # "linux" or "gcore"
    threads: int
    seed: int


SPECS = (
    Spec("linux", 1, 0x0C0FFEE1),
    Spec("linux", 4, 0x0C0FFEE4),
    Spec("gcore", 2, 0x0C0FFEE2),
)

NOTE_NAMES = {
    NT_PRSTATUS: "NT_PRSTATUS",
    2: "NT_PRFPREG",
    NT_PRPSINFO: "NT_PRPSINFO",
    NT_AUXV: "NT_AUXV",
    NT_FILE: "NT_FILE",
    NT_SIGINFO: "NT_SIGINFO",
    NT_X86_XSTATE: "NT_X86_XSTATE",
    0x204: "NT_X86_SHSTK",
    NT_X86_XSAVE_LAYOUT: "NT_X86_XSAVE_LAYOUT",
}


def printable_runs(data: bytes, minimum: int = 4) -> list[str]:
    """What `strings -a` prints: runs of at least `minimum` printable ASCII bytes."""
    return [m.group().decode() for m in re.finditer(rb"[\x20-\x7e\t]{%d,}" % minimum, data)]


def forbidden_words(workdirs: list[Path]) -> list[str]:
    """Words that would tell where, by whom and how a fixture was made."""
    words = {"PATH=", "HOME=", "USER=", "LOGNAME=", "PWD=", "SHELL=", "HOSTNAME=", "/tmp/"}
    words.add(pwd.getpwuid(os.getuid()).pw_name)
    words.add(socket.gethostname())
    for var in ("USER", "LOGNAME", "HOME", "HOSTNAME"):
        if os.environ.get(var):
            words.add(os.environ[var])
    for d in workdirs:
        words.add(str(d))
        words.add(d.name)
    words.add(str(HERE.parent))
    words.add(str(Path.home()))
    # too short to mean anything in random register bytes
    return sorted(w for w in words if len(w) >= 4)


def check_scrubbed(path: Path, words: list[str]) -> None:
    runs = printable_runs(path.read_bytes())
    leaks = sorted({w for w in words for run in runs if w in run})
    if leaks:
        raise SystemExit(f"{path.name}: still holds {leaks}")


def fixture_name(spec: Spec, made: MadeCore) -> str:
    vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(made.run.host.vendor, "cpu")
    writer = "linux" if spec.kind == "linux" else made.writer.replace(" ", "").split(".")[0]
    return f"{writer}-{vendor}-{made.run.isa}-{spec.threads}t"


def gdb_json(
    name: str, spec: Spec, made: MadeCore, view: GdbView, gdb: tuple[int, int]
) -> dict[str, object]:
    host = made.run.host
    differs: list[str] = []
    if spec.kind == "gcore":
        # gdb 13 and older read these at Intel's offsets, so the gcore holds its
        # misreading, not what the program loaded (tests/gdb_oracle.py)
        comps = misplaced_components(host)
        differs = sorted(set().union(*(component_registers(c) for c in comps)))
    return {
        "fixture": f"{name}.core",
        "made_by": {
            "kind": spec.kind,
            "writer": made.writer,
            "program": "tests/progs/regs.c",
            "seed": spec.seed,
            "threads": spec.threads,
            "isa": made.run.isa,
            "pku": made.run.host.pku,
            "tids": made.run.tids,
            "vendor": host.vendor,
            "cpu_isa": host.cpu_isa,
            "xcr0": hex(host.xcr0),
            "cpuid_layout": {str(c): {"size": s, "offset": o} for c, (s, o) in host.layout.items()},
            "kernel": platform.release().split("-")[0],
            "gdb": f"{gdb[0]}.{gdb[1]}",
        },
        "gdb": {
            "version": view.version,
            "registers": {
                str(tid): {n: hex(v) for n, v in sorted(regs.items())}
                for tid, regs in view.registers.items()
            },
            "unavailable": {str(tid): names for tid, names in view.unavailable.items()},
        },
        "differs_from_program": differs,
    }


def describe_notes(path: Path) -> str:
    counts: dict[str, list[int]] = {}
    for note in read_notes(path):
        label = NOTE_NAMES.get(note.type, f"{note.name}:{note.type:#x}")
        counts.setdefault(label, []).append(len(note.desc))
    parts = []
    for label, sizes in counts.items():
        size = sizes[0] if len(set(sizes)) == 1 else "/".join(map(str, sorted(set(sizes))))
        parts.append(f"{label} ×{len(sizes)} ({size} B)")
    return ", ".join(parts)


def make_one(
    spec: Spec, tmp: Path, program: Path, out: Path, gdb: tuple[int, int]
) -> dict[str, str]:
    from xcr0tool.sources.corewriter import write_core
    from xcr0tool.sources.elfcore import read_core

    work = tmp / f"{spec.kind}-{spec.threads}"
    if spec.kind == "linux":
        made = make_kernel_core(work, spec.seed, spec.threads, program=program)
    else:
        made = make_gcore(work, spec.seed, spec.threads, program=program)
    name = fixture_name(spec, made)
    dest = out / f"{name}.core"
    write_core(
        read_core(str(made.core)),
        str(dest),
        drop_memory=True,
        drop_note_types=DROP_NOTES,
        scrub_prpsinfo=True,
    )
    size = dest.stat().st_size
    if size >= MAX_FIXTURE:
        raise SystemExit(f"{dest.name}: {size} bytes, over the {MAX_FIXTURE}-byte budget")
    check_scrubbed(dest, forbidden_words([tmp, made.core.parent]))

    # gdb must see the same registers in the fixture as in the core it came from
    before = gdb_view(made.program, made.core)
    after = gdb_view(None, dest)
    if before.registers != after.registers:
        raise SystemExit(f"{dest.name}: gdb shows other registers than in the original core")
    (out / f"{name}.gdb.json").write_text(
        json.dumps(gdb_json(name, spec, made, after, gdb), indent=1) + "\n"
    )
    return {
        "name": name,
        "kind": spec.kind,
        "writer": made.writer,
        "threads": str(spec.threads),
        "seed": f"{spec.seed:#x}",
        "isa": made.run.isa,
        "size": str(size),
        "original": str(made.core.stat().st_size),
        "notes": describe_notes(dest),
    }


README_HEAD = """\
# Core fixtures

Real ELF cores of `tests/progs/regs.c`, made by `tests/make_fixtures.py` (rerun it
to remake them; it needs gcc, gdb, bash and a `core_pattern` that writes files).
Each run of the program loads seeded values into every x87, SSE, AVX and AVX-512
register of every thread (`tests/coremaker.py` computes the same values from the
seed and thread index) and then either sends itself SIGABRT (a kernel core) or
sleeps while gdb's `gcore` writes one.

The program ran from an empty environment (`env -i`) in a fresh temporary
directory. The cores were then rewritten by `xcr0tool.sources.corewriter.write_core` with
`drop_memory=True` (every PT_LOAD header kept, none of its bytes),
`drop_note_types={("CORE", NT_FILE)}` (mapped file paths) and
`scrub_prpsinfo=True` (no command name, arguments, uid or gid), and checked with
a `strings`-like scan for paths, user and host names and environment variables.
Every other note keeps its bytes.

`NAME.gdb.json` holds gdb's view of `NAME.core`, taken when the fixture was
made: for each thread (by LWP) every register gdb showed in full, as the
register's bytes read as one little-endian integer in hex, and the registers it
showed as `<unavailable>`. `made_by` records the seed, thread ids in thread-index
order and the ISA the program loaded, so the program's values can be recomputed
with `coremaker.expected_registers(seed, index, isa)`.
`differs_from_program` names registers whose value in the core is not what the
program loaded (see below).

Known gaps of gdb on an AMD CPU (XCR0 0xe7, opmask at 832 rather than Intel's
1088), which the JSON files reflect:
- gdb 13 rejects a kernel core's 2432-byte NT_X86_XSTATE ("section too small")
  and shows only the x87/SSE registers from NT_PRFPREG; YMM, ZMM and opmask
  registers are `<unavailable>`.
- gdb 13 reads a live process's opmask and ZMM state at Intel's offsets and its
  `gcore` writes those misread values in Intel's layout (a 2688-byte note, no
  NT_X86_XSAVE_LAYOUT). gdb reads the gcore back consistently, so decoding must
  match gdb there, but k0–k7 and the ZMM upper halves and zmm16–31 are not the
  program's values.

"""


def write_readme(out: Path, rows: list[dict[str, str]], host_line: str) -> None:
    lines = [README_HEAD, f"Made on: {host_line}.\n"]
    lines.append("| fixture | made by | threads | seed | ISA loaded | size (original) | notes |")
    lines.append("|---|---|---|---|---|---|---|")
    for row in rows:
        how = "kernel (SIGABRT)" if row["kind"] == "linux" else f"`gcore` of {row['writer']}"
        lines.append(
            f"| `{row['name']}.core` | {how} | {row['threads']} | `{row['seed']}` | {row['isa']} "
            f"| {row['size']} B ({row['original']} B) | {row['notes']} |"
        )
    lines.append("")
    (out / "README.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "fixtures")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    gdb = gdb_version()
    with tempfile.TemporaryDirectory(prefix="fixtures-") as tmp_name:
        tmp = Path(tmp_name)
        program = compile_regs(tmp / "build")
        host = probe_host(program)
        rows = [make_one(spec, tmp, program, out, gdb) for spec in SPECS]
    layout = ", ".join(f"{c}@{o}" for c, (_s, o) in sorted(host.layout.items()))
    host_line = (
        f"{host.vendor}, {host.cpu_isa}, XCR0 {host.xcr0:#x}, CPUID 0xD offsets {layout}; "
        f"Linux {platform.release().split('-')[0]}; gdb {gdb[0]}.{gdb[1]}; "
        f"{datetime.date.today().isoformat()}"
    )
    write_readme(out, rows, host_line)
    for row in rows:
        print(f"{row['name']}.core: {row['size']} bytes; {row['notes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
