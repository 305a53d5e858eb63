"""`decode --lanes` against gdb's own vector views of the same real core: every lane of
xmm0-7, ymm0-7 and zmm0-7 (those this CPU and gdb have) in every view, floats compared
as text (gdb's %g digits, inf and nan(0x...) spelling), integers by value."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from clirunner import ok, run
from paths import FIXTURES

from xcr0tool.render.lanes import braced, float_lane, gdb_mantissa

if TYPE_CHECKING:
    from collections.abc import Callable

    from coremaker import MadeCore

# decode --lanes KIND -> gdb's view of a register of N bytes: v{N / lane}_{type}
GDB_TYPES = {"f32": "float", "f64": "double", "u8": "int8", "u16": "int16", "u32": "int32",
             "u64": "int64"}  # fmt: skip
LANE_BYTES = {"f32": 4, "f64": 8, "u8": 1, "u16": 2, "u32": 4, "u64": 8}
SIZES = {"xmm": 16, "ymm": 32, "zmm": 64}


@pytest.fixture(scope="module")
def core(
    make_kernel_core: Callable[..., MadeCore], tmp_path_factory: pytest.TempPathFactory
) -> MadeCore:
    return make_kernel_core(tmp_path_factory.mktemp("lanes"), 0x1A7E5, 1)


def gdb_prints(program: Path, core: Path, expressions: list[str]) -> list[str | None]:
    """What gdb prints for each expression (None for an error or <unavailable>)."""
    from coremaker import gdb_binary

    settings = ["set width 0", "set print repeats unlimited", "set print elements unlimited"]
    command = [gdb_binary(), "-batch", "-nx", "-q", "-iex", "set debuginfod enabled off"]
    for line in settings:
        command += ["-ex", line]
    for index, expression in enumerate(expressions):
        command += ["-ex", f"echo @{index}@\\n", "-ex", f"p {expression}"]
    out = subprocess.run(
        [*command, str(program), "-c", str(core)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={"TERM": "dumb", "PATH": "/usr/bin:/bin"},
    ).stdout
    answers: list[str | None] = [None] * len(expressions)
    for index, body in re.findall(r"@(\d+)@\n(.*?)(?=\n@\d+@|\Z)", out, re.S):
        match = re.match(r"\$\d+ = \{(.*)\}\s*$", body.strip(), re.S)
        if match and "<unavailable>" not in body:
            answers[int(index)] = match.group(1)
    return answers


@pytest.mark.gdb
def test_lanes_equal_gdbs_vector_views(core: MadeCore, gdb_available: tuple[int, int]) -> None:
    names = [f"{width}{i}" for width in SIZES for i in range(8)]
    wanted: list[tuple[str, str]] = [(name, kind) for name in names for kind in GDB_TYPES]
    expressions = []
    for name, kind in wanted:
        count = SIZES[name[:3]] // LANE_BYTES[kind]
        fmt = "" if kind in ("f32", "f64") else "/x"
        expressions.append(f"{fmt} ${name}.v{count}_{GDB_TYPES[kind]}")
    shown = gdb_prints(core.program, core.core, expressions)
    compared: dict[str, int] = {}
    for kind in GDB_TYPES:
        decoded = json.loads(ok(run("decode", "--json", "--lanes", kind, str(core.core))))
        (thread,) = decoded["threads"]
        ours: dict[str, list[str]] = thread["register_lanes"]
        for (name, wanted_kind), theirs in zip(wanted, shown, strict=True):
            if wanted_kind != kind or theirs is None or name not in ours:
                continue
            gdb_lanes = [lane.strip() for lane in theirs.split(",")]
            if kind in ("f32", "f64"):
                assert ours[name] == gdb_lanes, (name, kind)
            else:
                assert [int(x, 16) for x in ours[name]] == [int(x, 16) for x in gdb_lanes]
            compared[kind] = compared.get(kind, 0) + 1
    # xmm0-7 are in every x86-64 core and gdb always shows them.
    assert all(compared.get(kind, 0) >= 8 for kind in GDB_TYPES), compared


def test_text_shows_lanes_lane_0_first() -> None:
    value = 0x40000000_3F800000_7FC00000_FF800000  # 2.0, 1.0, nan, -inf (lane 0 last)
    assert braced(value, 16, "f32") == "{-inf, nan(0x400000), 1, 2}"
    assert braced(value, 16, "u32") == "{0xff800000, 0x7fc00000, 0x3f800000, 0x40000000}"
    assert braced(1, 16, "u64") == "{0x0000000000000001, 0x0000000000000000}"


@pytest.mark.parametrize(
    ("raw", "kind", "text"),
    [
        (0x3DCCCCCD, "f32", "0.100000001"),  # gdb: %.9g for single
        (0x3FB999999999999A, "f64", "0.10000000000000001"),  # %.17g for double
        (0x80000000, "f32", "-0"),
        (0x00000001, "f32", "1.40129846e-45"),
        (0xFFC00001, "f32", "-nan(0x400001)"),
        (0x7FF0000000000001, "f64", "nan(0x000000001)"),  # floatformat_mantissa's groups
        (0x7FF8000000000000, "f64", "nan(0x8000000000000)"),
        (0xFFF0000000000000, "f64", "-inf"),
    ],
)
def test_float_lanes_as_gdb_writes_them(raw: int, kind: str, text: str) -> None:
    assert float_lane(raw, kind) == text


def test_mantissa_groups() -> None:
    assert gdb_mantissa(1, 52) == "000000001"
    assert gdb_mantissa(0x400000, 23) == "400000"


def test_decode_text_with_lanes(tmp_path: Path) -> None:
    fixture = FIXTURES / "linux-amd-avx512bw-1t.core"
    text = ok(run("decode", "--lanes", "u64", "--reg", "xmm0", "--reg", "k0", str(fixture)))
    lines = text.decode().splitlines()
    xmm0 = next(line for line in lines if line.lstrip().startswith("xmm0 "))
    data: Any = json.loads(ok(run("decode", "--json", "--reg", "xmm0", str(fixture))))
    value = int(data["threads"][0]["registers"]["xmm0"], 16)
    assert xmm0.split(None, 1)[1] == braced(value, 16, "u64")
    k0 = next(line for line in lines if line.lstrip().startswith("k0 "))
    assert re.fullmatch(r"\s*k0\s+0x[0-9a-f]{16}", k0)  # not a vector: hex, padded
