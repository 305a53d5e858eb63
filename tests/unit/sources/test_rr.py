"""rr trace directories as a SOURCE, built the way rr writes them (tests/make_rr_trace.py:
capnp's own encoder on rr's own schema, 64-word first segments, brotli blocks) around the
XSAVE images of real kernel cores of tests/progs/regs.c.

Truth comes from outside: the frames' registers must equal decoding the core's own
NT_X86_XSTATE (which tests/oracles/test_decode_gdb.py holds against gdb), the program's intent
(coremaker.expected_registers), and gdb's reading of the same core where gdb is here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import make_rr_trace as mk
import pytest
from clirunner import decode_json, json_registers, run_text, text_error
from coremaker import MadeCore
from paths import REPO

# One worker runs every test here (pytest-xdist loadgroup): its core and rr trace
# (capnp) are made once per module, not once per worker.
pytestmark = pytest.mark.xdist_group("rr")

CPUID_CORPUS = Path(os.environ.get("XCR0TOOL_CPUID_CORPUS", REPO.parent / "shared" / "cpuid"))
RAPHAEL = CPUID_CORPUS / "AuthenticAMD0A60F12_K19_Raphael_01_CPUID.txt"


def tools() -> None:
    try:
        mk.require_capnp()
        mk.rr_schema()
    except mk.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def state(
    tmp_path_factory: pytest.TempPathFactory, make_kernel_core: Callable[..., MadeCore]
) -> mk.CoreState:
    made = make_kernel_core(tmp_path_factory.mktemp("rr-core"), 0x5EED, 3)
    return mk.core_state(made)


@pytest.fixture(scope="module")
def host_trace(tmp_path_factory: pytest.TempPathFactory, state: mk.CoreState) -> mk.Trace:
    tools()
    records = mk.host_cpuid_records()
    return mk.write_trace(
        tmp_path_factory.mktemp("trace") / "regs-0", records, state.xcr0, mk.frames_for(state),
        block_size=1500,
    )  # fmt: skip


# --- the trace as written --------------------------------------------------------------------
def test_the_trace_has_several_blocks_and_multi_segment_frames(host_trace: mk.Trace) -> None:
    from xcr0tool.formats.capnp import PackedSource, read_segment_table

    events = (host_trace.path / "events").read_bytes()
    blocks, at = 0, 0
    while at < len(events):
        blocks += 1
        at += 8 + int.from_bytes(events[at : at + 4], "little")
    assert blocks >= 5
    source = PackedSource(host_trace.packed_events)
    counts = []
    while not source.at_end():
        sizes = read_segment_table(source)
        assert sizes[0] <= 64  # capnp --segment-size=64, as rr's on-stack first segment
        counts.append(len(sizes))
        for size in sizes:
            source.unpack(size, None)
    assert len(counts) == len(host_trace.frames)
    assert min(counts) > 1


def test_frames_hold_the_core_images(host_trace: mk.Trace, state: mk.CoreState) -> None:
    from xcr0tool.formats.rr import iter_frames
    from xcr0tool.sources.rrtrace import read_trace_header

    header = read_trace_header(str(host_trace.path))
    assert header.version == 85
    assert header.xcr0 == state.xcr0
    assert header.xcr0_source == "Header.x86.xcr0"
    assert header.leaf_0d() == {
        s: r for s, r in mk.leaf_0d(mk.host_cpuid_records()).items() if any(r)
    }
    frames = list(iter_frames(str(host_trace.path / "events"), xsave_size=header.xsave_size))
    assert [f.index for f in frames] == list(range(len(host_trace.frames)))
    assert [(f.tid, f.xsave) for f in frames] == [(s.tid, s.xsave) for s in host_trace.frames]
    assert {f.event for f in frames} == {"signal", "syscall 59"}
    assert {f.arch for f in frames} == {1}


def test_header_xcr0_zero_means_cpuid_edx_eax(tmp_path: Path) -> None:
    tools()
    records = mk.dump_cpuid_records(RAPHAEL) if RAPHAEL.exists() else mk.host_cpuid_records()
    trace = mk.write_trace(tmp_path / "t", records, 0, [mk.FrameSpec(1)])
    from xcr0tool.sources.rrtrace import read_trace_header

    header = read_trace_header(str(trace.path))
    sub0 = mk.leaf_0d(records)[0]
    assert header.xcr0 == sub0[0] | sub0[3] << 32
    assert header.xcr0_source.startswith("CPUID.(0xD,0) EDX:EAX")


# --- decode, extract, diff, validate ------------------------------------------------------------
def test_decode_trace_equals_decoding_the_raw_images(
    host_trace: mk.Trace, state: mk.CoreState, tmp_path: Path
) -> None:
    out = decode_json(str(host_trace.path))
    assert out["kind"] == "rr-trace"
    assert out["details"]["trace_version"] == "rr trace version 85"
    assert "header's CPUID leaf 0xD" in out["layout"]["source"]
    frames = [i for i, f in enumerate(host_trace.frames) if f.xsave is not None]
    assert [t["event"] for t in out["threads"]] == frames
    for thread in out["threads"]:
        raw = tmp_path / f"t{thread['tid']}.xsave"
        raw.write_bytes(state.xstate[thread["tid"]])
        (alone,) = decode_json(str(raw))["threads"]
        assert json_registers(thread) == json_registers(alone)
        assert thread["xstate_bv"] == alone["xstate_bv"]
        assert thread["xcr0"] == hex(state.xcr0)


def test_decode_trace_equals_the_programs_registers(
    host_trace: mk.Trace, state: mk.CoreState
) -> None:
    out = decode_json(str(host_trace.path))
    for thread in out["threads"]:
        want = state.made.expected[thread["tid"]]
        got = json_registers(thread)
        bad = [f"{n}: want {v:#x}, got {got.get(n)}" for n, v in want.items() if got.get(n) != v]
        assert not bad, bad[:20]


def test_decode_trace_equals_gdb_on_the_core(
    host_trace: mk.Trace, state: mk.CoreState, gdb_available: tuple[int, int]
) -> None:
    from gdb_oracle import gdb_view

    view = gdb_view(state.made.program, state.made.core)
    out = decode_json(str(host_trace.path))
    compared = 0
    for thread in out["threads"]:
        got = json_registers(thread)
        for name, value in view.registers[thread["tid"]].items():
            if name in got:
                assert got[name] == value, f"tid {thread['tid']} {name}"
                compared += 1
    assert compared > 100


def test_trace_at_event_selects_one_frame(
    host_trace: mk.Trace, state: mk.CoreState, tmp_path: Path
) -> None:
    index = next(i for i, f in enumerate(host_trace.frames) if f.xsave is not None and i > 2)
    out = decode_json(f"{host_trace.path}@{index}")
    (thread,) = out["threads"]
    assert thread["event"] == index
    assert thread["tid"] == host_trace.frames[index].tid
    extracted = tmp_path / "frame.xsave"
    result = run_text("extract", f"{host_trace.path}@{index}", "-o", str(extracted))
    assert result.returncode == 0, result.stderr
    assert extracted.read_bytes() == host_trace.frames[index].xsave
    message = text_error(run_text("decode", f"{host_trace.path}@0"))
    assert (
        message
        == f"{host_trace.path}@0: frame 0 of the events file carries no XSAVE data (or does not exist)"
    )


def test_diff_trace_core_is_same(host_trace: mk.Trace, state: mk.CoreState) -> None:
    result = run_text("diff", "--json", str(host_trace.path), str(state.made.core))
    assert result.returncode == 0, result.stdout[-3000:]
    data = json.loads(result.stdout)
    assert data["same"] is True
    assert data["a"]["kind"] == "rr-trace"
    assert [p["a"]["event"] for p in data["pairs"]] == list(range(1, 2 * len(state.xstate), 2))


def test_validate_trace_accepts_kernel_images(host_trace: mk.Trace) -> None:
    result = run_text("validate", "--json", str(host_trace.path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert len(json.loads(result.stdout)["images"]) == 3


def test_text_names_frames(host_trace: mk.Trace) -> None:
    result = run_text("decode", str(host_trace.path), "--reg", "xmm0")
    assert result.returncode == 0, result.stderr
    assert "rr-trace, rr trace version 85, recorded on" in result.stdout
    assert "3 frames" in result.stdout
    assert "frame 1, thread " in result.stdout


# --- a trace recorded on another vendor's CPU ----------------------------------------------------
def test_amd_zen4_trace_decodes_with_its_own_offsets(tmp_path: Path, state: mk.CoreState) -> None:
    tools()
    if not RAPHAEL.exists():
        pytest.skip(f"no CPUID dump at {RAPHAEL}")
    records = mk.dump_cpuid_records(RAPHAEL)
    table = mk.leaf_0d(records)
    zen4 = mk.offsets_from_leaf(table)
    assert zen4[5] == (64, 832) and zen4[9] == (8, 2432)  # AMD packs opmask and PKRU
    # That machine ran Windows: XCR0 0xe7 (EBX 2432 is the size for it, PKRU off).
    xcr0, size = 0xE7, table[0][1]
    images = {
        tid: mk.relocate(image, state.offsets, zen4, xcr0, size)
        for tid, image in state.xstate.items()
    }
    trace = mk.write_trace(tmp_path / "zen4", records, xcr0, mk.frames_for(state, images))
    out = decode_json(str(trace.path))
    offsets = {c["id"]: c["offset"] for c in out["layout"]["components"]}
    assert offsets[5] == 832 and offsets[6] == 896 and offsets[7] == 1408
    raw_layout = tmp_path / "host.json"
    assert run_text("host", "--save", str(raw_layout)).returncode == 0
    for thread in out["threads"]:
        assert thread["size"] == 2432 and thread["xcr0"] == "0xe7"
        raw = tmp_path / "core.xsave"
        raw.write_bytes(state.xstate[thread["tid"]])
        (alone,) = decode_json(str(raw), "--layout", str(raw_layout))["threads"]
        here = json_registers(alone)
        got = json_registers(thread)
        # what both machines keep: x87, SSE, AVX and AVX-512 (where this CPU has them);
        # AVX-512 registers this CPU lacks are in their init state in the moved image
        both = set(got) & set(here)
        assert {n: got[n] for n in both} == {n: here[n] for n in both}
        assert all(got[n] == 0 for n in set(got) - set(here)), set(got) - set(here)
        want = state.made.expected[thread["tid"]]
        assert all(got[n] == v for n, v in want.items() if n in got)


# --- bad input ------------------------------------------------------------------------------
@pytest.fixture
def trace_copy(host_trace: mk.Trace, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    copy.mkdir()
    for entry in host_trace.path.iterdir():
        (copy / entry.name).write_bytes(entry.read_bytes())
    return copy


def first_block(events: bytes) -> tuple[int, int]:
    return int.from_bytes(events[:4], "little"), int.from_bytes(events[4:8], "little")


def test_truncated_block(trace_copy: Path) -> None:
    events = trace_copy / "events"
    data = events.read_bytes()
    events.write_bytes(data[: len(data) - 10])
    message = text_error(run_text("decode", str(trace_copy)))
    assert message.startswith(f"{events}: frame ")
    assert "truncated: claims " in message and "compressed bytes, the file has " in message


def test_a_block_claiming_4_gib_is_refused_in_bounded_memory(trace_copy: Path) -> None:
    events = trace_copy / "events"
    data = bytearray(events.read_bytes())
    data[4:8] = (0xFFFFFFFF).to_bytes(4, "little")
    events.write_bytes(bytes(data))
    message = text_error(run_text("decode", str(trace_copy), limit_mib=1024))
    assert message == (
        f"{events}: frame 0: block 0 at byte 0: claims 4294967295 bytes uncompressed;"
        " rr writes blocks of 1 MiB, and more than 64 MiB is refused"
    )


def test_a_lying_uncompressed_length(trace_copy: Path) -> None:
    events = trace_copy / "events"
    data = bytearray(events.read_bytes())
    _compressed, uncompressed = first_block(bytes(data))
    data[4:8] = (uncompressed - 1).to_bytes(4, "little")
    events.write_bytes(bytes(data))
    message = text_error(run_text("decode", str(trace_copy), limit_mib=1024))
    assert message == (
        f"{events}: frame 0: block 0 at byte 0: claims {uncompressed - 1} bytes uncompressed,"
        f" its brotli data gives more than {uncompressed - 1}"
    )


def test_a_brotli_bomb_costs_only_its_claim(trace_copy: Path) -> None:
    import brotli

    # 60 MiB of zeros in about 100 bytes; quality 9 makes it as small as the default 11
    # does, in a thirtieth of the time.
    bomb = brotli.compress(bytes(60 << 20), quality=9)
    events = trace_copy / "events"
    events.write_bytes(mk.block_header(len(bomb), 100) + bomb)
    message = text_error(run_text("decode", str(trace_copy), limit_mib=1024))
    assert message.endswith("claims 100 bytes uncompressed, its brotli data gives more than 100")


def test_corrupt_brotli(trace_copy: Path) -> None:
    events = trace_copy / "events"
    data = bytearray(events.read_bytes())
    compressed, _ = first_block(bytes(data))
    for at in range(8, 8 + compressed):
        data[at] ^= 0x5A
    events.write_bytes(bytes(data))
    message = text_error(run_text("decode", str(trace_copy)))
    assert message.startswith(f"{events}: frame 0: block 0 at byte 0: ")
    assert "brotli" in message


def test_a_frame_cut_off_by_the_end_of_the_file(tmp_path: Path, state: mk.CoreState) -> None:
    tools()
    trace = mk.write_trace(
        tmp_path / "t", mk.host_cpuid_records(), state.xcr0, mk.frames_for(state)
    )
    packed = trace.packed_events[: len(trace.packed_events) - 100]
    (trace.path / "events").write_bytes(mk.brotli_blocks(packed, 1 << 20))
    message = text_error(run_text("decode", str(trace.path)))
    assert message.startswith(
        f"{trace.path / 'events'}: frame 5: truncated: the packed data ends inside"
    )


def test_a_frame_whose_xsave_is_shorter_than_the_header_says(
    tmp_path: Path, state: mk.CoreState
) -> None:
    tools()
    tid, image = next(iter(state.xstate.items()))
    frames = [mk.FrameSpec(tid), mk.FrameSpec(tid, image[:-64], mk.SIGNAL_EVENT)]
    trace = mk.write_trace(tmp_path / "t", mk.host_cpuid_records(), state.xcr0, frames)
    message = text_error(run_text("decode", str(trace.path)))
    assert message == (
        f"{trace.path / 'events'}: frame 1: its XSAVE data is {len(image) - 64} bytes, shorter"
        f" than the {len(image)} bytes of the recording CPU (CPUID.(0xD,0).EBX in the trace header)"
    )


def test_another_trace_version_is_refused_by_number(trace_copy: Path) -> None:
    version = trace_copy / "version"
    version.write_bytes(b"84\n" + version.read_bytes()[3:])
    message = text_error(run_text("decode", str(trace_copy)))
    assert message == (
        f"{version}: rr trace version 84: only version 85 (rr 5.x) can be read;"
        " a trace of another rr version needs that rr"
    )


def test_a_version_file_that_is_not_a_header(trace_copy: Path) -> None:
    version = trace_copy / "version"
    version.write_bytes(b"\x7fELF garbage")
    message = text_error(run_text("decode", str(trace_copy)))
    assert message.startswith(f"{version}: not an rr trace header: it starts ")


def test_a_header_message_cut_short(trace_copy: Path) -> None:
    version = trace_copy / "version"
    version.write_bytes(version.read_bytes()[:40])
    message = text_error(run_text("decode", str(trace_copy)))
    assert message.startswith(f"{version}: the Header message after the version line: truncated")


def test_a_directory_that_is_neither(tmp_path: Path) -> None:
    message = text_error(run_text("decode", str(tmp_path)))
    assert message == (
        f"{tmp_path}: is a directory, not an rr trace (no version file) or a CRIU image"
        " directory (no core-TID.img)"
    )


def test_a_trace_without_events(trace_copy: Path) -> None:
    (trace_copy / "events").unlink()
    message = text_error(run_text("decode", str(trace_copy)))
    assert message == f"{trace_copy / 'events'}: no such file"
