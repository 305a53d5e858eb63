"""A 32-bit process's kernel core, decoded and read by gdb: same registers, and the values
the program loaded (tests/progs/regs32.c). 32-bit code sees xmm0-7, ymm0-7, zmm0-7 and
k0-7; the legacy region is read with 32-bit FIP/FCS and FDP/FDS, as gdb's i386 target
reads it."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from clirunner import ok, run
from coremaker import _clean_env, _core_globs, _core_pattern, _find_core
from gdb_oracle import gdb_registers
from paths import PROGS

# One worker runs every test here (pytest-xdist loadgroup): its 32-bit program (gcc
# -m32) and core are made once per module, not once per worker.
pytestmark = pytest.mark.xdist_group("decode_i386")

PROGRAM = PROGS / "regs32.c"
SEED = 7


def expected_vectors(seed: int) -> list[int]:
    """The 64-byte blocks regs32.c loads into zmm0-7 (xmm and ymm are their low parts)."""
    data = bytearray()
    for _ in range(8 * 64):
        seed = (seed * 1103515245 + 12345) & 0xFFFFFFFF
        data.append(seed >> 16 & 0xFF)
    return [int.from_bytes(data[i * 64 : (i + 1) * 64], "little") for i in range(8)]


@pytest.fixture(scope="module")
def core32(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    if shutil.which("gcc") is None:
        pytest.skip("no gcc to build the 32-bit test program")
    build = tmp_path_factory.mktemp("build32")
    program = build / "regs32"
    compiled = subprocess.run(
        ["gcc", "-m32", "-O1", "-o", str(program), str(PROGRAM)],
        capture_output=True,
        text=True,
        check=False,
    )
    if compiled.returncode != 0:
        error = next((x for x in compiled.stderr.splitlines() if "error" in x), "")
        pytest.skip(f"gcc -m32 cannot build here (gcc-multilib missing?): {error.strip()[:200]}")
    pattern, uses_pid = _core_pattern()
    if pattern.startswith("|"):
        pytest.skip(f"core_pattern pipes cores to {pattern.split()[0]}, not to a file")
    workdir = tmp_path_factory.mktemp("core32")
    run = subprocess.run(
        ["bash", "-c", f'ulimit -c unlimited; exec "{program}" {SEED}'],
        cwd=workdir,
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == -signal.SIGABRT, run.stderr
    pid, _tid, isa = run.stdout.split()
    core = _find_core(_core_globs(pattern, uses_pid, int(pid), workdir))
    if core is None:
        pytest.skip(f"the kernel wrote no core (core_pattern {pattern!r})")
    return core, program, isa


def decode(core: Path) -> dict[str, object]:
    return json.loads(ok(run("decode", "--json", str(core))))


def test_i386_core_registers_are_the_programs(core32: tuple[Path, Path, str]) -> None:
    core, _program, isa = core32
    decoded = decode(core)
    assert decoded["details"] == {"machine": "i386", "os": "linux", "class": "ELF32"}  # type: ignore[index]
    (thread,) = decoded["threads"]  # type: ignore[misc]
    regs = {name: int(value, 16) for name, value in thread["registers"].items()}
    vectors = expected_vectors(SEED)
    assert [regs[f"xmm{i}"] for i in range(8)] == [v & (1 << 128) - 1 for v in vectors]
    assert "xmm8" not in regs and "zmm8" not in regs and "zmm16" not in regs
    if isa in ("avx", "avx512f"):
        assert [regs[f"ymm{i}"] for i in range(8)] == [v & (1 << 256) - 1 for v in vectors]
    if isa == "avx512f":
        assert [regs[f"zmm{i}"] for i in range(8)] == vectors
    assert regs["fstat"] >> 11 & 7 == 5  # three values pushed
    assert [regs[f"st{i}"] != 0 for i in range(4)] == [True, True, True, False]


@pytest.mark.gdb
def test_i386_core_equals_gdb(core32: tuple[Path, Path, str], tmp_path: Path) -> None:
    core, program, _isa = core32
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed")
    (thread,) = decode(core)["threads"]  # type: ignore[misc]
    ours = {name: int(value, 16) for name, value in thread["registers"].items()}
    theirs = gdb_registers(program, core)[thread["tid"]]
    if "st0" not in theirs:
        # gdb 13 and older refuse an XSTATE note in AMD's layout ("section too small")
        # and show no floating-point register at all of an i386 core; the same state in
        # Intel's layout is one they read.
        intel = tmp_path / "core.intel"
        convert = ["convert", "--to", "standard", "--layout", "intel", str(core), "-o", str(intel)]
        ok(run(*convert))
        theirs = gdb_registers(program, intel)[thread["tid"]]
    compared = sorted(set(theirs) & set(ours))
    assert {"st0", "fctrl", "ftag", "fioff", "fiseg", "mxcsr", "xmm7"} <= set(compared)
    assert {name: ours[name] for name in compared} == {name: theirs[name] for name in compared}
