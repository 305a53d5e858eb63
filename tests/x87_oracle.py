"""gdb's text for 80-bit x87 values, by running gdb (tests/gdb_x87.py inside it).

- ``gdb_value_texts(values)``: one gdb run, no program: each value printed as a long
  double (the i387_ext format, like $st0..$st7). Cheap: about 0.1 s for thousands.
- ``gdb_register_view(values, program)``: one gdb run of tests/progs/x87load, which
  loads the values into st0..st7 eight at a time; per value: the raw bits gdb read from
  the register, `p $stN`, `info registers stN` and `info float`'s text.

Both raise coremaker.Unavailable (tests skip with its reason) when there is no gdb or
no C compiler, or gdb cannot run a program here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from coremaker import Unavailable, gdb_binary, gdb_version

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "gdb_x87.py"
SOURCE = HERE / "progs" / "x87load.c"


@dataclass(frozen=True)
class RegisterView:
    loaded: int  # the value x87load put in the register
    raw: int  # the register's bits as gdb read them
    p: str  # `p $stN`
    info_registers: str  # the natural column of `info registers stN`
    info_float_tag: str  # `info float`: Valid, Zero, Special, Empty
    info_float: str  # `info float`'s text after the raw bits, spaces collapsed


def compile_x87load(dest_dir: Path, cc: str | None = None) -> Path:
    cc = cc or os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise Unavailable(f"no C compiler: {cc!r} is not on PATH")
    out = dest_dir / "x87load"
    proc = subprocess.run(
        [cc, "-O1", "-Wall", "-o", str(out), str(SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise Unavailable(f"{cc} could not build x87load.c: {proc.stderr.strip()[:500]}")
    return out


def _run_gdb(mode: str, values: list[int], args: list[str], tmp: Path) -> object:
    gdb = gdb_binary()
    gdb_version(gdb)  # raises Unavailable when there is no gdb
    (tmp / "in.json").write_text(json.dumps([f"{v:x}" for v in values]))
    env = dict(os.environ)
    env.pop("DEBUGINFOD_URLS", None)
    env.update(
        TERM="dumb",
        GDB_X87_MODE=mode,
        GDB_X87_IN=str(tmp / "in.json"),
        GDB_X87_OUT=str(tmp / "out.json"),
    )
    cmd = [gdb, "-batch", "-nx", "-q", "-iex", "set debuginfod enabled off", "-x", str(SCRIPT)]
    proc = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, check=False, timeout=300, env=env
    )
    out = tmp / "out.json"
    if not out.exists():
        text = (proc.stdout + proc.stderr).strip()
        if "ptrace" in text or "Operation not permitted" in text:
            raise Unavailable(f"gdb cannot run a program here: {text[-400:]}")
        raise RuntimeError(f"gdb wrote no x87 texts (exit {proc.returncode}): {text[-3000:]}")
    return json.loads(out.read_text())["result"]


def gdb_value_texts(values: list[int]) -> list[str]:
    """gdb's text for each value printed as a long double."""
    with tempfile.TemporaryDirectory(prefix="gdbx87-") as tmp:
        texts = _run_gdb("values", values, [], Path(tmp))
    assert isinstance(texts, list) and len(texts) == len(values)
    return [str(t) for t in texts]


def gdb_register_view(values: list[int], program: Path) -> list[RegisterView]:
    """gdb's view of each value loaded into an x87 register by x87load."""
    with tempfile.TemporaryDirectory(prefix="gdbx87-") as tmp:
        patterns = Path(tmp) / "patterns.bin"
        patterns.write_bytes(b"".join(v.to_bytes(16, "little") for v in values))
        stops = _run_gdb("registers", values, ["--args", str(program), str(patterns)], Path(tmp))
    assert isinstance(stops, list)
    views = []
    for index, value in enumerate(values):
        reg = stops[index // 8]["registers"][index % 8]
        fl = reg["info_float"]
        assert int(fl["raw"], 16) == int(reg["raw"], 16), (fl, reg)
        views.append(
            RegisterView(
                value,
                int(reg["raw"], 16),
                reg["p"],
                reg["info_registers"],
                fl["tag"],
                " ".join(fl["text"].split()),
            )
        )
    return views
