"""`xcr0tool decode --json` against gdb, on real cores of tests/progs/regs.c.

Three views of the same registers are compared:
- the program's intent (coremaker.expected_registers: what regs.c loaded),
- gdb reading the core (gdb_oracle),
- xcr0tool decode reading the core.

gdb is trusted only where it can be: registers it shows as <unavailable> are
not compared, and neither are registers of components that gdb 13 and older
place at Intel's offsets on a CPU whose layout differs (see gdb_oracle). In a
gcore written by such a gdb those registers hold gdb's misreading, not the
program's values, so they are not compared with the intent either; that
misreading itself is pinned down by test_old_gdb_reads_intel_offsets.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from clirunner import run
from coremaker import (
    NT_PRSTATUS,
    NT_X86_XSAVE_LAYOUT,
    NT_X86_XSTATE,
    Unavailable,
    component_registers,
    live_regs,
    read_notes,
    xsave_layout_records,
)
from gdb_oracle import (
    CONTRACT,
    GdbView,
    decoded_registers,
    gdb_view,
    misplaced_components,
    missing_registers,
    register_diff,
)
from paths import FIXTURES

if TYPE_CHECKING:
    from collections.abc import Callable

    from coremaker import Host, MadeCore

# One worker runs every test here (pytest-xdist loadgroup): its cores, and gdb's view of
# each, are made once per module (a gcore and a gdb run: about a second each), not once
# per worker.
pytestmark = [pytest.mark.gdb, pytest.mark.xdist_group("decode_gdb")]


# (seed, threads, isa): several seeds, 1, 3 and 8 threads, with all this CPU has;
# then runs that leave the wider registers alone (their components may then be
# in their init state, or hold what glibc left there)
CASES = [
    (0x5EED0001, 1, "auto"),
    (0xDEADBEEF, 3, "auto"),
    (7, 8, "auto"),
    (11, 2, "sse"),
    (12, 2, "avx"),
]
KINDS = ["gcore", "kernel"]

# What gdb shows in full on every x86-64 target, from the legacy region alone.
ALWAYS_SHOWN = (
    {f"st{i}" for i in range(8)}
    | {"fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop", "mxcsr"}
    | {f"xmm{n}" for n in range(16)}
)


def _case_id(case: tuple[int, int, str]) -> str:
    seed, threads, isa = case
    return f"seed{seed:#x}-{threads}t-{isa}"


@pytest.fixture(scope="module")
def made_cores(
    tmp_path_factory: pytest.TempPathFactory,
    make_gcore: Callable[..., MadeCore],
    make_kernel_core: Callable[..., MadeCore],
    regs_host: Host,
) -> Callable[[str, int, int, str], tuple[MadeCore, GdbView]]:
    """(kind, seed, threads, isa) -> the core and gdb's view of it, made once per module."""
    cache: dict[tuple[str, int, int, str], tuple[MadeCore, GdbView]] = {}

    def get(kind: str, seed: int, threads: int, isa: str) -> tuple[MadeCore, GdbView]:
        if isa != "auto" and not regs_host.has(isa):
            pytest.skip(f"this CPU or OS has no {isa} (only {regs_host.cpu_isa})")
        key = (kind, seed, threads, isa)
        if key not in cache:
            tmp = tmp_path_factory.mktemp(f"{kind}-{threads}t")
            factory = make_gcore if kind == "gcore" else make_kernel_core
            made = factory(tmp, seed, threads, isa=isa)
            cache[key] = (made, gdb_view(made.program, made.core))
        return cache[key]

    return get


def _untrusted(made: MadeCore) -> set[str]:
    """Registers whose value in this core is not the program's (see module doc)."""
    if made.writer == "linux":
        return set()
    return set().union(*(component_registers(c) for c in misplaced_components(made.run.host)))


def _decode(core: Path) -> dict[str, object]:
    proc = run("decode", str(core), "--json")
    assert proc.returncode == 0, (
        f"xcr0tool decode failed ({proc.returncode}): {proc.stderr.decode()[-3000:]}"
    )
    data: dict[str, object] = json.loads(proc.stdout)
    return data


def _xstate_by_tid(core: Path) -> dict[int, bytes]:
    """Each thread's NT_X86_XSTATE: the one after its NT_PRSTATUS (pr_pid at 32)."""
    out: dict[int, bytes] = {}
    tid = None
    for note in read_notes(core):
        if note.name == "CORE" and note.type == NT_PRSTATUS:
            tid = int.from_bytes(note.desc[32:36], "little")
        elif note.name == "LINUX" and note.type == NT_X86_XSTATE and tid is not None:
            out[tid] = note.desc
    return out


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("kind", KINDS)
def test_gdb_oracle_matches_program_intent(
    made_cores: Callable[[str, int, int, str], tuple[MadeCore, GdbView]],
    kind: str,
    case: tuple[int, int, str],
) -> None:
    made, view = made_cores(kind, *case)
    assert set(view.registers) == set(made.expected), "gdb's threads are not the program's"
    for tid, regs in view.registers.items():
        missing = ALWAYS_SHOWN - set(regs)
        assert not missing, f"gdb shows no {sorted(missing)} for tid {tid}"
    skip = _untrusted(made)
    # the x87 and SSE registers at least are compared: gdb always shows them
    # and no layout question touches them
    bad = register_diff(made.expected, view.registers, skip)
    assert not bad, f"{len(bad)} registers differ:\n" + "\n".join(bad[:40])


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("kind", KINDS)
def test_decode_matches_gdb(
    made_cores: Callable[[str, int, int, str], tuple[MadeCore, GdbView]],
    kind: str,
    case: tuple[int, int, str],
) -> None:
    made, view = made_cores(kind, *case)
    out = _decode(made.core)
    assert out["kind"] == "elf-core"
    ours = decoded_registers(out)
    assert set(ours) == set(view.registers), "decode's threads are not gdb's"

    # the image facts, against the notes as read here
    notes = _xstate_by_tid(made.core)
    threads = out["threads"]
    assert isinstance(threads, list)
    for thread in threads:
        desc = notes[thread["tid"]]
        assert thread["format"] == "standard"
        assert thread["size"] == len(desc)
        assert thread["xcr0"] == hex(int.from_bytes(desc[464:472], "little"))
        assert thread["xstate_bv"] == hex(int.from_bytes(desc[512:520], "little"))

    # every register gdb shows in full that the contract names is there, and equal
    absent = [
        f"tid {tid} {name}"
        for tid, regs in view.registers.items()
        for name in regs
        if CONTRACT.match(name) and name not in ours[tid]
    ]
    assert not absent, "decode leaves out registers gdb shows: " + ", ".join(absent[:40])
    bad = register_diff(view.registers, ours)
    assert not bad, f"{len(bad)} registers differ from gdb:\n" + "\n".join(bad[:40])

    # and what the program loaded, where this core holds it
    skip = _untrusted(made)
    trusted = {
        tid: {n: v for n, v in regs.items() if n not in skip} for tid, regs in made.expected.items()
    }
    missing = missing_registers(trusted, ours)
    assert not missing, "decode leaves out registers the program set: " + ", ".join(missing[:40])
    bad = register_diff(trusted, ours)
    assert not bad, f"{len(bad)} registers differ from the program's:\n" + "\n".join(bad[:40])


def test_gdb_live_matches_program_intent(
    tmp_path: Path, regs_program: Path, gdb_available: tuple[int, int]
) -> None:
    """gdb -p on the running program: the oracle's live path."""
    with live_regs(tmp_path, 0x1234, 3, program=regs_program) as live:
        view = gdb_view(pid=live.pid)
        skip = set().union(*(component_registers(c) for c in misplaced_components(live.run.host)))
        assert set(view.registers) == set(live.expected)
        assert not missing_registers(live.expected, view.registers)
        bad = register_diff(live.expected, view.registers, skip)
        assert not bad, "\n".join(bad[:40])


def _standard_image(regs: dict[str, int], layout: dict[int, tuple[int, int]]) -> bytes:
    """The extended region of a standard-format image holding `regs`, as far as needed."""
    end = max(offset + size for size, offset in layout.values())
    img = bytearray(end)
    for n in range(16):
        if 2 in layout and f"ymm{n}" in regs:
            off = layout[2][1] + 16 * n
            img[off : off + 16] = regs[f"ymm{n}"].to_bytes(32, "little")[16:]
        if 6 in layout and f"zmm{n}" in regs:
            off = layout[6][1] + 32 * n
            img[off : off + 32] = regs[f"zmm{n}"].to_bytes(64, "little")[32:]
    for n in range(8):
        if 5 in layout and f"k{n}" in regs:
            off = layout[5][1] + 8 * n
            img[off : off + 8] = regs[f"k{n}"].to_bytes(8, "little")
    for n in range(16, 32):
        if 7 in layout and f"zmm{n}" in regs:
            off = layout[7][1] + 64 * (n - 16)
            img[off : off + 64] = regs[f"zmm{n}"].to_bytes(64, "little")
    return bytes(img)


def test_old_gdb_reads_intel_offsets(
    tmp_path: Path, regs_program: Path, regs_host: Host, gdb_available: tuple[int, int]
) -> None:
    """Why the tests above distrust some registers: show gdb's misreading exactly."""
    if gdb_available[0] >= 14:
        pytest.skip(f"gdb {gdb_available[0]} takes the XSAVE layout from CPUID")
    if not regs_host.has("avx512f"):
        pytest.skip(f"this CPU has no AVX-512 (only {regs_host.cpu_isa})")
    if regs_host.layout.get(5, (0, 1088))[1] == 1088:
        pytest.skip("this CPU uses Intel's standard offsets: gdb reads it right")
    with live_regs(tmp_path, 0xABCD, 1, program=regs_program) as live:
        view = gdb_view(pid=live.pid)
        tid = live.run.pid
        want = live.expected[tid]
        image = _standard_image(want, regs_host.layout)
        got = view.registers[tid]
        for n in range(8):
            at = 1088 + 8 * n  # Intel's opmask offset, which gdb 13 always uses
            assert got[f"k{n}"] == int.from_bytes(image[at : at + 8], "little"), f"k{n}"
        for n in range(16):
            low = want[f"ymm{n}"]
            at = 1152 + 32 * n  # Intel's ZMM_Hi256 offset
            high = int.from_bytes(image[at : at + 32], "little")
            assert got[f"zmm{n}"] == low | (high << 256), f"zmm{n}"


@pytest.mark.parametrize("threads", [1, 3])
def test_kernel_core_notes(
    tmp_path: Path, make_kernel_core: Callable[..., MadeCore], regs_host: Host, threads: int
) -> None:
    """Facts about the kernel's cores that the decoder relies on, seen without it."""
    made = make_kernel_core(tmp_path, 99, threads)
    notes = read_notes(made.core)
    prstatus = [n for n in notes if n.type == NT_PRSTATUS and n.name == "CORE"]
    xstate = [n for n in notes if n.type == NT_X86_XSTATE and n.name == "LINUX"]
    assert len(prstatus) == threads
    if regs_host.xcr0 == 0x3:
        pytest.skip("the OS has not enabled XSAVE: no NT_X86_XSTATE")
    assert len(xstate) == threads
    # pr_pid of each NT_PRSTATUS (offset 32) is a thread of the program
    tids = [int.from_bytes(n.desc[32:36], "little") for n in prstatus]
    assert sorted(tids) == sorted(made.expected)
    size = max([576] + [offset + size for size, offset in regs_host.layout.values()])
    for note in xstate:
        assert len(note.desc) == size
        # the kernel puts XCR0 at 464 and writes the standard format
        assert int.from_bytes(note.desc[464:472], "little") == regs_host.xcr0
        assert int.from_bytes(note.desc[520:528], "little") == 0
    layout_notes = [n for n in notes if n.type == NT_X86_XSAVE_LAYOUT]
    if not layout_notes:
        pytest.skip("this kernel writes no NT_X86_XSAVE_LAYOUT (it came in Linux 6.12)")
    assert len(layout_notes) == 1
    assert xsave_layout_records(layout_notes[0].desc) == regs_host.layout


# ---- shipped fixtures: gdb's view recorded at fixture time (tests/make_fixtures.py) ----

RECORDED = sorted(FIXTURES.glob("*.gdb.json"))


@pytest.mark.parametrize("recorded", RECORDED, ids=lambda p: p.name.removesuffix(".gdb.json"))
def test_shipped_fixture_matches_recorded_gdb(recorded: Path) -> None:
    """Runs without gdb: the decoder against gdb's view of the fixture, and the program's."""
    from coremaker import expected_registers

    data = json.loads(recorded.read_text())
    core = FIXTURES / data["fixture"]
    made_by = data["made_by"]
    gdb = {
        int(tid): {n: int(v, 16) for n, v in regs.items()}
        for tid, regs in data["gdb"]["registers"].items()
    }
    out = _decode(core)
    ours = decoded_registers(out)
    assert set(ours) == set(gdb) == set(made_by["tids"])
    absent = [
        f"tid {tid} {name}"
        for tid, regs in gdb.items()
        for name in regs
        if CONTRACT.match(name) and name not in ours[tid]
    ]
    assert not absent, "decode leaves out registers gdb showed: " + ", ".join(absent[:40])
    bad = register_diff(gdb, ours)
    assert not bad, f"{len(bad)} registers differ from gdb:\n" + "\n".join(bad[:40])

    skip = set(data["differs_from_program"])
    program = {
        tid: {
            n: v
            for n, v in expected_registers(
                made_by["seed"], index, made_by["isa"], made_by.get("pku", False)
            ).items()
            if n not in skip
        }
        for index, tid in enumerate(made_by["tids"])
    }
    missing = missing_registers(program, ours)
    assert not missing, "decode leaves out registers the program set: " + ", ".join(missing[:40])
    bad = register_diff(program, ours)
    assert not bad, f"{len(bad)} registers differ from the program's:\n" + "\n".join(bad[:40])


LEGACY_REGISTER = re.compile(
    r"st[0-7]|xmm([0-9]|1[0-5])|mxcsr|f(ctrl|stat|tag|iseg|ioff|oseg|ooff|op)"
)


def _sections_without_notes(core: Path) -> list[tuple[str, ...]]:
    """(name, type, address, size) of every section but the notes', as readelf shows them."""
    shown = subprocess.run(
        ["readelf", "-SW", str(core)], capture_output=True, text=True, check=True
    )
    rows = re.findall(r"^\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+(\S+)\s+\S+\s+(\S+)", shown.stdout, re.M)
    return [row for row in rows if row[1] != "NOTE"]


@pytest.mark.parametrize("recorded", RECORDED, ids=lambda p: p.name.removesuffix(".gdb.json"))
def test_masked_fixture_reads_in_gdb_as_before(recorded: Path, tmp_path: Path) -> None:
    """A rewritten core keeps what gdb reads: masked to x87|SSE, gdb shows the x87 and SSE
    registers it showed before, and sections of no file bytes (the fixture's NOBITS, whatever
    offset they carry, a note segment's among them) stay as they were."""
    data = json.loads(recorded.read_text())
    core, masked = FIXTURES / data["fixture"], tmp_path / "masked.core"
    proc = run("mask", "--xcr0", "0x3", str(core), "-o", str(masked))
    assert proc.returncode == 0, proc.stderr.decode()
    if shutil.which("readelf"):
        assert _sections_without_notes(masked) == _sections_without_notes(core)
    try:
        after = gdb_view(core=masked).registers
    except Unavailable as why:
        pytest.skip(str(why))
    before = {
        int(tid): {n: int(v, 16) for n, v in regs.items() if LEGACY_REGISTER.fullmatch(n)}
        for tid, regs in data["gdb"]["registers"].items()
    }
    assert {
        tid: {n: v for n, v in regs.items() if LEGACY_REGISTER.fullmatch(n)}
        for tid, regs in after.items()
    } == before


@pytest.mark.parametrize("recorded", RECORDED, ids=lambda p: p.name.removesuffix(".gdb.json"))
def test_shipped_fixture_is_small_and_scrubbed(recorded: Path) -> None:
    core = FIXTURES / json.loads(recorded.read_text())["fixture"]
    data = core.read_bytes()
    assert len(data) < 100 * 1024
    text = b"\n".join(re.findall(rb"[\x20-\x7e\t]{4,}", data))
    for word in (b"PATH=", b"HOME=", b"USER=", b"PWD=", b"/tmp/", b"/root", b"/home/", b"regs"):
        assert word not in text, f"{core.name} holds {word!r}"
