"""gdb's view of an ELF core or a live process: {tid: {register: int}}.

Runs ``gdb -batch -nx -q`` with tests/gdb_dump_regs.py on (program, core) or
on ``-p PID``. Register names are gdb's; each value is the register's bytes
read as one little-endian integer, as the xcr0tool decode JSON has them.

Known limits of the oracle, so that no test trusts it past them:

- gdb up to 13 knows only Intel's standard XSAVE offsets. On CPUs with another
  layout (AMD Zen: opmask at 832, ZMM_Hi256 at 896, Hi16_ZMM at 1408) it reads
  a live process's opmask and ZMM state from the wrong bytes, and its gcore
  writes those wrong values out (in Intel's layout, 2688 bytes for XCR0 0xe7).
  ``misplaced_components`` names the components concerned.
- gdb (13 and 18 alike) only accepts a core's NT_X86_XSTATE whose size it
  recognises; for any other (AMD without PKRU: 2432 bytes) it shows the YMM,
  opmask and ZMM registers as <unavailable>, which this module leaves out.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from coremaker import Host, Unavailable, gdb_binary, gdb_version, misplaced_by_old_gdb

DUMP_SCRIPT = Path(__file__).resolve().parent / "gdb_dump_regs.py"


@dataclass(frozen=True)
class GdbView:
    version: str
    registers: dict[int, dict[str, int]]  # {tid: {name: value}}
    unavailable: dict[int, list[str]]  # {tid: names gdb showed as <unavailable>}
    groups: dict[str, list[str]]  # {name: gdb register groups that list it}
    types: dict[str, str]  # {name: gdb type name}


def gdb_view(
    program: Path | None = None,
    core: Path | None = None,
    *,
    pid: int | None = None,
    gdb: str | None = None,
    timeout: float = 600.0,
) -> GdbView:
    """Everything gdb shows of the XSAVE registers of every thread."""
    gdb = gdb or gdb_binary()
    gdb_version(gdb)  # raises Unavailable when there is no gdb
    if (core is None) == (pid is None):
        raise ValueError("give a core or a pid")
    # no debuginfod: nothing is to be fetched, and its notice clutters errors
    cmd = [gdb, "-batch", "-nx", "-q", "-iex", "set debuginfod enabled off"]
    if pid is not None:
        cmd += ["-p", str(pid)]
    else:
        assert core is not None
        if program is not None:
            cmd.append(str(program))
        cmd += ["-c", str(core)]
    with tempfile.TemporaryDirectory(prefix="gdbview-") as tmp:
        out = Path(tmp) / "regs.json"
        env = dict(os.environ)
        env["GDB_DUMP_REGS_OUT"] = str(out)
        env.pop("DEBUGINFOD_URLS", None)
        env["TERM"] = "dumb"
        proc = subprocess.run(
            [*cmd, "-x", str(DUMP_SCRIPT)],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=env,
        )
        if not out.exists():
            text = (proc.stdout + proc.stderr).strip()
            if pid is not None and ("ptrace" in text or "Operation not permitted" in text):
                raise Unavailable(f"gdb cannot attach to a process here: {text[-400:]}")
            raise RuntimeError(
                f"gdb wrote no register dump (exit {proc.returncode}): {text[-3000:]}"
            )
        data = json.loads(out.read_text())
    if data["mismatches"]:
        raise RuntimeError(
            "gdb's values and `maint print cooked-registers` disagree: "
            + "; ".join(data["mismatches"][:10])
        )
    registers: dict[int, dict[str, int]] = {}
    unavailable: dict[int, list[str]] = {}
    for thread in data["threads"]:
        tid = int(thread["tid"])
        registers[tid] = {name: int(v, 16) for name, v in thread["registers"].items()}
        unavailable[tid] = list(thread["unavailable"])
    return GdbView(
        data["gdb_version"], registers, unavailable, data.get("groups", {}), data.get("types", {})
    )


def gdb_registers(
    program: Path | None = None,
    core: Path | None = None,
    *,
    pid: int | None = None,
    gdb: str | None = None,
) -> dict[int, dict[str, int]]:
    """{tid: {register: value}} for every register gdb shows in full."""
    return gdb_view(program, core, pid=pid, gdb=gdb).registers


def misplaced_components(host: Host, gdb: str | None = None) -> set[int]:
    """XSAVE components this gdb reads live / writes in gcore at the wrong offsets here."""
    major, _minor = gdb_version(gdb)
    return misplaced_by_old_gdb(host) if major < 14 else set()


# ---- comparing xcr0tool's registers with gdb's (or the program's intent)

HEX = re.compile(r"^0x[0-9a-f]+$")
# gdb registers the decode JSON must carry whenever gdb shows them.
CONTRACT = re.compile(
    r"^(st[0-7]|f(ctrl|stat|tag|iseg|ioff|oseg|ooff|op)|mxcsr|[xyz]mm\d+|k[0-7]|pkru)$"
)


def decoded_registers(out: dict[str, object]) -> dict[int, dict[str, int]]:
    """{tid: {register: value}} of `xcr0tool decode --json`, every value lowercase 0x hex."""
    threads = out["threads"]
    assert isinstance(threads, list)
    result: dict[int, dict[str, int]] = {}
    for thread in threads:
        regs = {}
        for name, text in thread["registers"].items():
            assert HEX.match(text), f"tid {thread['tid']} {name}: {text!r} is not lowercase 0x hex"
            regs[name] = int(text, 16)
        result[thread["tid"]] = regs
    return result


def register_diff(
    want: dict[int, dict[str, int]], got: dict[int, dict[str, int]], skip: set[str] | None = None
) -> list[str]:
    """Where got differs from want, over the registers both have."""
    skip = skip or set()
    bad = []
    for tid, regs in want.items():
        for name, value in regs.items():
            if name in skip or name not in got.get(tid, {}):
                continue
            if got[tid][name] != value:
                bad.append(f"tid {tid} {name}: want {value:#x}, got {got[tid][name]:#x}")
    return bad


def missing_registers(want: dict[int, dict[str, int]], got: dict[int, dict[str, int]]) -> list[str]:
    """The registers `want` has that `got` lacks."""
    return [
        f"tid {tid} {name}"
        for tid, regs in want.items()
        for name in regs
        if name not in got.get(tid, {})
    ]
