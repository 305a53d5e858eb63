"""CRIU image directories (and one core-TID.img) as a SOURCE. The images are written by
CRIU's own encoder (`crit encode`, Debian package criu) from real kernel cores' thread
state, the way criu/arch/x86/crtools.c save_task_regs fills core_entry; decoding them must
give the core's registers (x87, SSE, AVX, and AVX-512 where this CPU has it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import make_rr_trace as mk
import pytest
from clirunner import decode_json, json_registers, run_text, text_error
from coremaker import MadeCore

# One worker runs every test here (pytest-xdist loadgroup): its core and CRIU images
# (crit) are made once per module, not once per worker.
pytestmark = pytest.mark.xdist_group("criu")


def crit() -> None:
    try:
        mk.require_crit()
    except mk.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def state(
    tmp_path_factory: pytest.TempPathFactory, make_kernel_core: Callable[..., MadeCore]
) -> mk.CoreState:
    made = make_kernel_core(tmp_path_factory.mktemp("criu-core"), 0xC0FFEE, 2)
    return mk.core_state(made)


def host_sizes() -> tuple[int, int]:
    sub0 = mk.leaf_0d(mk.host_cpuid_records())[0]
    return sub0[1], sub0[2]


@pytest.fixture(scope="module")
def criu_dir(tmp_path_factory: pytest.TempPathFactory, state: mk.CoreState) -> Path:
    crit()
    return mk.write_criu_dir(
        tmp_path_factory.mktemp("criu") / "dump", state.xstate, state.offsets, state.xcr0,
        host_sizes(),
    )  # fmt: skip


def kept(names: dict[str, int]) -> dict[str, int]:
    """Registers a CRIU image can hold: x87, SSE, AVX, AVX-512, PKRU (not AMX, APX, ...)."""
    from coremaker import component_registers

    allowed = set().union(*(component_registers(c) for c in (0, 1, 2, 5, 6, 7, 9)))
    allowed |= {f"xmm{n}" for n in range(16, 32)} | {f"ymm{n}" for n in range(16, 32)}
    return {n: v for n, v in names.items() if n in allowed}


def test_decode_criu_dir_equals_the_core(criu_dir: Path, state: mk.CoreState) -> None:
    out = decode_json(str(criu_dir))
    core = decode_json(str(state.made.core))
    assert out["kind"] == "criu-images"
    assert "cpuinfo.img's" in out["layout"]["source"]
    assert [t["tid"] for t in out["threads"]] == [t["tid"] for t in core["threads"]]
    for thread, theirs in zip(out["threads"], core["threads"], strict=True):
        mine = json_registers(thread)
        want = kept(json_registers(theirs))
        assert {n: mine[n] for n in want} == want
        assert thread["xstate_bv"] == hex(int(theirs["xstate_bv"], 16) & 0x2E7)
        # and the program's own registers
        program = kept(state.made.expected[thread["tid"]])
        assert {n: mine[n] for n in program} == program
        if int(theirs["xcr0"], 16) & 0xE0:
            assert "zmm31" in mine  # AVX-512, where this CPU has it


def test_diff_criu_dir_core_is_same(criu_dir: Path, state: mk.CoreState) -> None:
    result = run_text("diff", "--json", str(criu_dir), str(state.made.core))
    assert result.returncode == 0, result.stdout[-3000:]
    assert json.loads(result.stdout)["same"] is True


def test_amx_is_absent_not_init(criu_dir: Path, state: mk.CoreState) -> None:
    out = decode_json(str(criu_dir))
    components = {c["id"] for c in out["layout"]["components"]}
    for thread in out["threads"]:
        assert "tmm0" not in thread["registers"]
        if {17, 18} & {c["id"] for c in decode_json(str(state.made.core))["layout"]["components"]}:
            assert thread["absent"] == [17, 18]
            assert any("CRIU keeps no state for them" in n for n in thread["notes"])
    assert not {17, 18} & components  # no AMX space in a rebuilt image


def test_criu_dir_at_tid_and_one_core_image(
    criu_dir: Path, state: mk.CoreState, tmp_path: Path
) -> None:
    tid = list(state.xstate)[1]
    by_at = decode_json(f"{criu_dir}@{tid}")
    assert [t["tid"] for t in by_at["threads"]] == [tid]
    # one core-TID.img, with cpuinfo.img beside it
    alone = decode_json(str(criu_dir / f"core-{tid}.img"))
    assert alone["threads"][0]["registers"] == by_at["threads"][0]["registers"]
    # extract gives the rebuilt standard image, which decodes the same
    image = tmp_path / "t.xsave"
    assert run_text("extract", f"{criu_dir}@{tid}", "-o", str(image)).returncode == 0
    assert decode_json(str(image))["threads"][0]["registers"] == alone["threads"][0]["registers"]


def test_validate_criu_dir(criu_dir: Path) -> None:
    result = run_text("validate", "--json", str(criu_dir))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert len(json.loads(result.stdout)["images"]) == 2


def test_pstree_order_is_kept(tmp_path: Path, state: mk.CoreState) -> None:
    crit()
    tids = sorted(state.xstate)
    dump = mk.write_criu_dir(tmp_path / "d", state.xstate, state.offsets, state.xcr0, host_sizes())
    mk.crit_encode(
        {"magic": "PSTREE",
         "entries": [{"pid": tids[0], "ppid": 0, "pgid": 1, "sid": 1, "threads": tids[::-1]}]},
        dump / "pstree.img",
    )  # fmt: skip
    assert [t["tid"] for t in decode_json(str(dump))["threads"]] == tids[::-1]


def test_read_cpuinfo(criu_dir: Path, state: mk.CoreState) -> None:
    from xcr0tool.sources.criu import CriuCpuinfo, read_cpuinfo

    info = read_cpuinfo(str(criu_dir))
    assert isinstance(info, CriuCpuinfo)
    assert (info.xsave_size, info.xsave_size_max) == host_sizes()
    # compel's mask lacks SSE (and BNDREGS): XFEATURE_MASK_SUPERVISOR holds XFEATURE_HDC
    assert info.xfeatures_mask == state.xcr0 & 0x2FF & ~0x10A
    assert info.xcr0 == state.xcr0 & 0x2FF
    assert read_cpuinfo(str(criu_dir / "cpuinfo.img")) == info
    assert info.vendor == "GenuineIntel" and info.model_id == "test CPU"


# --- the layout must be stated -----------------------------------------------------------------
def test_one_core_image_needs_a_layout(tmp_path: Path, state: mk.CoreState) -> None:
    crit()
    tid, image = next(iter(state.xstate.items()))
    dump = mk.write_criu_dir(tmp_path / "d", {tid: image}, state.offsets, state.xcr0, None)
    core = dump / f"core-{tid}.img"
    message = text_error(run_text("decode", str(core)))
    assert message == (
        f"{core}: the dumping machine's layout is unknown: no cpuinfo.img beside the core"
        " images and no --layout; pass --layout NAME|FILE (a profile or a CPUID dump of the"
        " dumping machine)"
    )
    layout = tmp_path / "here.json"
    assert run_text("host", "--save", str(layout)).returncode == 0
    out = decode_json(str(core), "--layout", str(layout))
    assert out["layout"]["source"].startswith(f"layout file {layout}")
    want = kept(state.made.expected[tid])
    got = json_registers(out["threads"][0])
    assert {n: got[n] for n in want} == want


def test_cpuinfo_sizes_of_another_machine_are_refused(tmp_path: Path, state: mk.CoreState) -> None:
    crit()
    size, size_max = host_sizes()
    dump = mk.write_criu_dir(
        tmp_path / "d", state.xstate, state.offsets, state.xcr0, (size + 64, size_max + 64)
    )
    message = text_error(run_text("decode", str(dump)))
    assert message == (
        f"{dump}: the dumping machine's layout is unknown: cpuinfo.img says XSAVE sizes"
        f" {size + 64}/{size_max + 64} (CPUID.(0xD,0) EBX/ECX), this machine's are"
        f" {size}/{size_max}; pass --layout NAME|FILE (a profile or a CPUID dump of the"
        " dumping machine)"
    )


# --- bad input ----------------------------------------------------------------------------------
def test_wrong_magic(criu_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "core-5.img"
    data = bytearray((criu_dir / "pstree.img").read_bytes())
    bad.write_bytes(bytes(data))
    message = text_error(run_text("decode", str(bad)))
    assert message == (
        f"{bad}: not a CRIU CORE image: magic 0x50273030 (PSTREE) at byte 4, expected 0x55053847"
    )


def test_truncated_varint(tmp_path: Path) -> None:
    from xcr0tool.formats.criu import CORE_MAGIC, IMG_COMMON_MAGIC

    entry = b"\x08\x81"  # core_entry.mtype, a varint whose last byte says "more follows"
    bad = tmp_path / "core-7.img"
    head = IMG_COMMON_MAGIC.to_bytes(4, "little") + CORE_MAGIC.to_bytes(4, "little")
    bad.write_bytes(head + len(entry).to_bytes(4, "little") + entry)
    message = text_error(run_text("decode", str(bad)))
    assert message == f"{bad}: truncated varint at byte 13"


def test_an_entry_longer_than_the_file(criu_dir: Path, tmp_path: Path, state: mk.CoreState) -> None:
    tid = next(iter(state.xstate))
    data = bytearray((criu_dir / f"core-{tid}.img").read_bytes())
    data[8:12] = (0xFFFFFF).to_bytes(4, "little")
    bad = tmp_path / f"core-{tid}.img"
    bad.write_bytes(bytes(data))
    message = text_error(run_text("decode", str(bad)))
    assert message == (
        f"{bad}: truncated: the entry at byte 8 claims 16777215 bytes, {len(data) - 12} are left"
    )


def test_a_field_with_the_wrong_count(tmp_path: Path, state: mk.CoreState) -> None:
    crit()
    tid, image = next(iter(state.xstate.items()))
    entry: dict[str, Any] = mk.criu_core_json(image, state.offsets, state.xcr0)
    entry["thread_info"]["fpregs"]["xsave"]["ymmh_space"] = [1, 2, 3]
    mk.crit_encode({"magic": "CORE", "entries": [entry]}, tmp_path / f"core-{tid}.img")
    layout = tmp_path / "here.json"
    assert run_text("host", "--save", str(layout)).returncode == 0
    message = text_error(run_text("decode", str(tmp_path), "--layout", str(layout)))
    assert (
        message
        == f"{tmp_path / f'core-{tid}.img'}: xsave.ymmh_space has 3 values, CRIU writes 64 (256 bytes)"
    )


def test_one_core_image_through_validate_and_a_pipe(criu_dir: Path, state: mk.CoreState) -> None:
    core = criu_dir / f"core-{next(iter(state.xstate))}.img"
    result = run_text("validate", "--json", str(core))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    (image,) = json.loads(result.stdout)["images"]
    assert image["origin"] == str(core) and image["accepted"]
    import subprocess
    import sys

    piped = subprocess.run(
        [sys.executable, "-m", "xcr0tool", "decode", "-"],
        input=core.read_bytes(),
        capture_output=True,
        check=False,
    )
    assert piped.returncode == 2
    assert piped.stderr.decode() == (
        "xcr0tool: <stdin>: a CRIU image: pass its file or directory, not a pipe\n"
    )


def test_the_magic_open_source_looks_for_is_criu_s() -> None:
    from xcr0tool.formats.criu import IMG_COMMON_MAGIC
    from xcr0tool.sources.open import CRIU_HEAD

    assert IMG_COMMON_MAGIC.to_bytes(4, "little") == CRIU_HEAD
