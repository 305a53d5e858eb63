"""`xcr0tool diff`: state, not bytes.

- Lanes, raw byte attribution and the JSON contract on images made here.
- An image and its converted and masked forms, made by xcr0tool.ops.transforms and by this
  CPU (XSAVEC of the state; XSAVE with a narrower RFBM): the same where the state is the
  same, different exactly in the registers of the components taken away.
- Real cores of tests/progs/regs.c: threads by position and by --pair, a thread on one
  side only, and every register gdb says differs between two cores of different seeds.
- Bad input: exit 2 and one line.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from clirunner import one_line_error, run
from coremaker import component_registers
from images import LAYOUT, XCR0, make_image, write

from xcr0tool.arch.offsets import MXCSR, XMM0, XSTATE_BV
from xcr0tool.cli.options import LANE_CHOICES
from xcr0tool.layouts.choose import build_image
from xcr0tool.layouts.profiles import profile_layout
from xcr0tool.model.image import XsaveImage
from xcr0tool.model.registers import register_map
from xcr0tool.ops.diff import (
    LANES,
    ONLY_A,
    SAME,
    compare_bytes,
    diff_images,
    lane_changes,
    lane_widths,
    lanes_of,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from coremaker import MadeCore
    from cpu_oracle import CpuOracle

# Registers that hold where the last x87 instruction was: they change from run to run
# (ASLR) on CPUs that save them, so two runs of one program may differ there only.
X87_POINTERS = {"fiseg", "fioff", "foseg", "fooff", "fop"}


def run_json(*args: str) -> tuple[int, dict[str, Any]]:
    proc = run(*args, "--json")
    assert proc.returncode in (0, 1), proc.stderr.decode()
    return proc.returncode, json.loads(proc.stdout)


def model(data: bytes, origin: str = "image") -> XsaveImage:
    return build_image(bytes(data), origin=origin, layout=profile_layout(LAYOUT))


# Lanes ---------------------------------------------------------------------------------
def test_lane_choices_are_the_models() -> None:
    assert tuple(LANES) == LANE_CHOICES


def test_lanes_split_low_first_and_end_narrow() -> None:
    assert lane_widths(16, "u32") == [4, 4, 4, 4]
    assert lane_widths(10, "u64") == [8, 2]  # an x87 register
    assert lane_widths(2, "u32") == [2]
    assert lanes_of(0x11223344_55667788, 8, "u16") == [0x7788, 0x5566, 0x3344, 0x1122]


def test_lane_changes_in_every_view() -> None:
    one, two = (
        struct.unpack("<I", struct.pack("<f", 1.0))[0],
        struct.unpack("<I", struct.pack("<f", 2.0))[0],
    )
    a, b = one << 32, two << 32  # lane 1 of an xmm register
    assert [c.index for c in lane_changes(a, b, 16, "u32")] == [1]
    assert [c.index for c in lane_changes(a, b, 16, "u64")] == [0]
    assert [(c.index, c.a, c.b) for c in lane_changes(a, b, 16, "f32")] == [(1, "1", "2")]
    changed = [c.index for c in lane_changes(a, b, 16, "u8")]
    assert changed and set(changed) <= {4, 5, 6, 7}
    nan = 0x7FC00001
    assert lane_changes(nan, 0, 4, "f32")[0].a == "nan(0x7fc00001)"


# State ---------------------------------------------------------------------------------
def test_same_file_is_same(tmp_path: Path) -> None:
    path = write(tmp_path, "a.bin", make_image())
    proc = run("diff", path, path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines()[-1] == "same"


def test_init_state_counts_as_init_values(tmp_path: Path) -> None:
    """A component in init state with stale bytes equals one holding zeros in use."""
    stale = make_image(xstate_bv=XCR0 & ~1 & ~(1 << 5))
    zeros = bytearray(stale)
    zeros[832 : 832 + 64] = bytes(64)  # opmask, zero and marked in use
    struct.pack_into("<Q", zeros, XSTATE_BV, XCR0 & ~1)
    diff = diff_images(model(stale), model(zeros))
    assert diff.status == SAME
    assert [h.field for h in diff.header] == ["xstate_bv"]


def test_register_difference_marks_its_lanes(tmp_path: Path) -> None:
    a = make_image()
    b = bytearray(a)
    b[XMM0 + 5] ^= 0xFF  # xmm0, byte 5: lane 1 of u32, lane 5 of u8
    pa, pb = write(tmp_path, "a.bin", a), write(tmp_path, "b.bin", b)
    code, out = run_json("diff", pa, pb)
    assert code == 1
    assert out["same"] is False
    (pair,) = out["pairs"]
    assert pair["status"] == "different"
    # xmm0 is part of ymm0 and zmm0 as well
    assert [r["name"] for r in pair["registers"]] == ["xmm0", "ymm0", "zmm0"]
    assert all([lane["index"] for lane in r["lanes"]] == [1] for r in pair["registers"])
    _, out8 = run_json("diff", pa, pb, "--lanes", "u8", "--reg", "xmm0")
    (reg,) = out8["pairs"][0]["registers"]
    assert [lane["index"] for lane in reg["lanes"]] == [5]
    assert reg["a"] == hex(int.from_bytes(a[XMM0 : XMM0 + 16], "little"))
    text = run("diff", pa, pb, "--reg", "xmm0").stdout.decode()
    row_a = next(line for line in text.splitlines() if line.strip().startswith("xmm0"))
    cells = row_a.split(" A ")[1].split()
    assert [i for i, c in enumerate(cells) if c.startswith("[")] == [2]  # lane 1 of 4, high first


def test_mask_leaves_registers_only_in_a() -> None:
    from xcr0tool.ops.transforms import mask

    image = model(make_image())
    masked, _report = mask(image, 0x7)
    diff = diff_images(image, masked)
    removed = set().union(*(component_registers(c) for c in (5, 6, 7)))
    assert diff.status == "different"
    assert {r.status for r in diff.registers} == {ONLY_A}
    assert {r.name for r in diff.registers} == removed & set(register_map(image))


def test_converted_forms_are_the_same() -> None:
    from xcr0tool.ops.transforms import to_compacted, to_standard

    image = model(make_image())
    compacted = to_compacted(image)
    back, _dropped = to_standard(compacted)
    for other in (compacted, back):
        diff = diff_images(image, other)
        assert diff.status == SAME, [r.name for r in diff.registers]
    assert "format" in {h.field for h in diff_images(image, compacted).header}


def _cpu_state(o: CpuOracle) -> bytes:
    """This CPU's XSAVE of a state with random XMM registers and plain components."""
    rng = random.Random(0xD1FF)
    image = bytearray(o.xsave())
    image[XMM0 : XMM0 + 256] = rng.randbytes(256)
    in_use = int.from_bytes(image[XSTATE_BV : XSTATE_BV + 8], "little") | 0b10
    for i in (2, 5, 6, 7):
        if o.xcr0 >> i & 1:
            offset, size = o.standard_offset(i), o.component_size(i)
            image[offset : offset + size] = rng.randbytes(size)
            in_use |= 1 << i
    struct.pack_into("<Q", image, XSTATE_BV, in_use)
    saved = o.xrstor_then_xsave(bytes(image))
    assert saved is not None
    return saved


@pytest.mark.cpu
def test_cpu_compacted_form_is_the_same(cpu_oracle: CpuOracle, tmp_path: Path) -> None:
    state = _cpu_state(cpu_oracle)
    compacted = cpu_oracle.xrstor_then_xsavec(state)
    assert compacted is not None
    proc = run("diff", write(tmp_path, "s.bin", state), write(tmp_path, "c.bin", compacted))
    assert proc.returncode == 0, proc.stdout.decode()


@pytest.mark.cpu
@pytest.mark.parametrize("rfbm", [0x3, 0x7, 0x23])
def test_cpu_masked_form_differs_in_the_removed_registers(
    cpu_oracle: CpuOracle, tmp_path: Path, rfbm: int
) -> None:
    """XSAVE with RFBM M leaves the other components unwritten (XSTATE_BV 0, zeros):
    their registers read as init values, so exactly those that were not differ."""
    state = _cpu_state(cpu_oracle)
    masked = cpu_oracle.xrstor_then_xsave(state, save_rfbm=rfbm)
    assert masked is not None
    removed = cpu_oracle.xcr0 & ~rfbm
    init = bytearray(state)
    init[XSTATE_BV : XSTATE_BV + 8] = bytes(8)  # every component in its init state
    source = write(tmp_path, "state.bin", state)
    regs = register_map(build_image(state, origin="state", layout=None, xcr0=cpu_oracle.xcr0))
    init_regs = register_map(
        build_image(bytes(init), origin="init", layout=None, xcr0=cpu_oracle.xcr0)
    )
    touched = set().union(*(component_registers(c) for c in range(64) if removed >> c & 1))
    want = {n for n in touched & set(regs) if regs[n] != init_regs[n]}
    code, out = run_json("diff", source, write(tmp_path, "masked.bin", masked))
    got = {r["name"] for r in out["pairs"][0]["registers"]}
    assert got == want
    assert code == (1 if want else 0)


@pytest.mark.cpu
def test_cpu_mxcsr_with_sse_and_avx_init(cpu_oracle: CpuOracle) -> None:
    state = bytearray(_cpu_state(cpu_oracle))
    struct.pack_into("<I", state, MXCSR, 0x1FC0)
    in_use = int.from_bytes(state[XSTATE_BV : XSTATE_BV + 8], "little")
    struct.pack_into("<Q", state, XSTATE_BV, in_use & ~0b110)
    compacted = cpu_oracle.xrstor_then_xsavec(bytes(state))
    assert compacted is not None
    a = build_image(bytes(state), origin="a", layout=None, xcr0=cpu_oracle.xcr0)
    b = build_image(compacted, origin="b", layout=a.layout)
    assert diff_images(a, b).status == SAME


# Raw -------------------------------------------------------------------------------------
def test_raw_names_component_field_and_register(tmp_path: Path) -> None:
    a = make_image()
    b = bytearray(a)
    b[576 + 3 * 16 + 2] ^= 1  # YMM_Hi128, ymm3's upper half
    b[29] ^= 1  # MXCSR_MASK
    b[32 + 12] ^= 1  # padding after st0
    b[512] ^= 0x20  # XSTATE_BV: opmask
    b[540] = 7  # reserved header
    code, out = run_json("diff", write(tmp_path, "a", a), write(tmp_path, "b", b), "--raw")
    assert code == 1
    runs = out["pairs"][0]["bytes"]
    places = [(r["offset"], r["length"], r["a_place"]) for r in runs]
    assert places == [
        (29, 1, {"component": 1, "component_name": "sse", "field": "MXCSR_MASK", "register": None}),
        (44, 1, {"component": 0, "component_name": "x87", "field": "st0 padding", "register": None}),
        (512, 1, {"component": None, "component_name": None, "field": "XSTATE_BV", "register": None}),
        (540, 1, {"component": None, "component_name": None, "field": "reserved header", "register": None}),
        (626, 1, {"component": 2, "component_name": "ymm", "field": "ymm3h", "register": "ymm3"}),
    ]  # fmt: skip
    assert all(r["a_place"] == r["b_place"] for r in runs)
    assert runs[-1]["a"] == f"{a[626]:02x}" and runs[-1]["b"] == f"{b[626]:02x}"
    text = run("diff", write(tmp_path, "a", a), write(tmp_path, "b", b), "--raw").stdout.decode()
    assert "bytes 626-626 (1): ymm ymm3h (ymm3)" in text
    # --reg keeps the runs of the registers named
    _, only = run_json(
        "diff", write(tmp_path, "a", a), write(tmp_path, "b", b), "--raw", "--reg", "ymm*"
    )
    assert [r["offset"] for r in only["pairs"][0]["bytes"]] == [626]


def test_raw_places_differ_between_formats() -> None:
    from xcr0tool.ops.transforms import mask

    image = model(make_image())
    masked, _ = mask(image, 0x7)  # 832 bytes: YMM ends the image
    runs = compare_bytes(image, masked)
    tail = runs[-1]
    assert tail.b == b"" and tail.b_place.field == "past the end"
    assert tail.a_place.component == 7  # Hi16_ZMM ends the AMD layout


# Cores -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cores(
    tmp_path_factory: pytest.TempPathFactory, make_kernel_core: Callable[..., MadeCore]
) -> dict[str, MadeCore]:
    """Kernel cores of regs.c: seed 7 with 3 and with 2 threads (thread i loads the same
    values in both), and seed 8 with 2 threads."""
    tmp = tmp_path_factory.mktemp("diff-cores")
    return {
        "7x3": make_kernel_core(tmp, 7, 3),
        "7x2": make_kernel_core(tmp, 7, 2),
        "8x2": make_kernel_core(tmp, 8, 2),
    }


def _differing(pair: dict[str, Any]) -> set[str]:
    return {r["name"] for r in pair["registers"]}


def test_cores_pair_by_position_and_report_one_sided(cores: dict[str, MadeCore]) -> None:
    """Threads pair in the order the cores list them (not the program's thread order:
    the kernel lists the dumping thread first). Thread i of both runs loads the same
    values: such pairs are the same, others differ in the vector registers."""
    a, b = cores["7x3"], cores["7x2"]
    code, out = run_json("diff", str(a.core), str(b.core))
    assert code == 1
    pairs = out["pairs"]
    assert [p["status"] for p in pairs][2] == "only-a"
    assert pairs[2]["b"] is None
    assert {p["a"]["tid"] for p in pairs} == set(a.expected)
    for pair in pairs[:2]:
        index_a = a.run.tids.index(pair["a"]["tid"])
        index_b = b.run.tids.index(pair["b"]["tid"])
        if index_a == index_b:
            assert _differing(pair) <= X87_POINTERS, _differing(pair)
        else:
            assert "xmm0" in _differing(pair)
    text = run("diff", str(a.core), str(b.core)).stdout.decode()
    assert f"thread {pairs[2]['a']['tid']} | -: only in A" in text


def test_cores_pair_as_asked(cores: dict[str, MadeCore]) -> None:
    a, b = cores["7x3"], cores["7x2"]
    tids_a, tids_b = list(a.expected), list(b.expected)
    code, out = run_json("diff", str(a.core), str(b.core), "--pair", f"{tids_a[1]}:{tids_b[1]}")
    assert [p["status"] for p in out["pairs"]] in (["same"], ["different"])
    assert _differing(out["pairs"][0]) <= X87_POINTERS
    code, out = run_json("diff", str(a.core), str(b.core), "--pair", f"{tids_a[2]}:{tids_b[0]}")
    assert code == 1
    assert "xmm0" in _differing(out["pairs"][0])
    # one thread of a core against the same thread
    one = f"{a.core}@{tids_a[0]}"
    assert run("diff", one, one).returncode == 0


@pytest.mark.gdb
@pytest.mark.parametrize("kind", ["kernel", "gcore"])
def test_diff_names_every_register_gdb_says_differs(
    tmp_path: Path,
    make_kernel_core: Callable[..., MadeCore],
    make_gcore: Callable[..., MadeCore],
    kind: str,
) -> None:
    from gdb_oracle import gdb_view, misplaced_components

    factory = make_kernel_core if kind == "kernel" else make_gcore
    a, b = factory(tmp_path / "a", 0x5EED, 2), factory(tmp_path / "b", 0xBEEF, 2)
    view_a, view_b = gdb_view(a.program, a.core), gdb_view(b.program, b.core)
    untrusted: set[str] = set()
    if kind == "gcore":  # gdb 13 wrote these components at Intel's offsets
        untrusted = set().union(*(component_registers(c) for c in misplaced_components(a.run.host)))
    code, out = run_json("diff", str(a.core), str(b.core))
    assert code == 1
    compared = 0
    for pair in out["pairs"]:
        gdb_a = view_a.registers[pair["a"]["tid"]]
        gdb_b = view_b.registers[pair["b"]["tid"]]
        shown = (set(gdb_a) & set(gdb_b)) - untrusted
        gdb_says = {n for n in shown if gdb_a[n] != gdb_b[n]}
        ours = _differing(pair)
        assert gdb_says - ours == set(), f"gdb says these differ, diff does not: {gdb_says - ours}"
        assert (ours & shown) - gdb_says == set(), f"only diff says: {(ours & shown) - gdb_says}"
        compared += len(gdb_says)
    assert compared > 0


# JSON and errors ----------------------------------------------------------------------------
def test_json_schema(tmp_path: Path) -> None:
    a = make_image()
    b = make_image(seed=2)
    _, out = run_json("diff", write(tmp_path, "a", a), write(tmp_path, "b", b), "--lanes", "u64")
    assert set(out) == {
        "schema", "a", "b", "mode", "lanes", "registers_filter", "same", "pairs", "warnings"
    }  # fmt: skip
    assert (out["schema"], out["warnings"]) == (1, [])
    assert out["a"] == {"source": str(tmp_path / "a"), "kind": "raw", "threads": 1}
    assert (out["mode"], out["lanes"], out["registers_filter"]) == ("state", "u64", [])
    (pair,) = out["pairs"]
    assert set(pair) == {"status", "a", "b", "header", "registers", "bytes"}
    assert set(pair["a"]) == {
        "origin", "tid", "format", "size", "xcr0", "xstate_bv", "xcomp_bv", "layout"
    }  # fmt: skip
    register = pair["registers"][0]
    assert set(register) == {"name", "component", "size", "status", "a", "b", "lanes"}
    assert set(register["lanes"][0]) == {"index", "a", "b"}
    assert pair["bytes"] == []


def test_missing_file(tmp_path: Path) -> None:
    line = one_line_error(run("diff", str(tmp_path / "nope"), str(tmp_path / "nope")))
    assert line == f"xcr0tool: {tmp_path / 'nope'}: no such file"


def test_both_stdin() -> None:
    line = one_line_error(run("diff", "-", "-", stdin=b""))
    assert line == "xcr0tool: A and B cannot both be standard input"


def test_not_an_image(tmp_path: Path) -> None:
    good = write(tmp_path, "a", make_image())
    line = one_line_error(run("diff", good, write(tmp_path, "small", b"\1" * 100)))
    assert "100 bytes is too small for an XSAVE image" in line


def test_pair_on_raw_images(tmp_path: Path) -> None:
    path = write(tmp_path, "a", make_image())
    line = one_line_error(run("diff", path, path, "--pair", "1:2"))
    assert line == f"xcr0tool: {path}: --pair names thread 1, but this source has no threads"


def test_pair_with_unknown_thread(cores: dict[str, MadeCore]) -> None:
    a = cores["7x2"]
    line = one_line_error(run("diff", str(a.core), str(a.core), "--pair", "1:1"))
    assert line.startswith(f"xcr0tool: {a.core}: no thread 1 (threads: ")


@pytest.mark.parametrize(
    "args", [["--pair", "12"], ["--pair", "a:b"], ["--lanes", "u128"]], ids=str
)
def test_bad_options(tmp_path: Path, args: list[str]) -> None:
    path = write(tmp_path, "a", make_image())
    proc = run("diff", path, path, *args)
    assert proc.returncode == 2
    assert b"Traceback" not in proc.stderr
