"""`compat` with rr trace directories and CRIU images as MACHINEs, built as rr and CRIU
write them (tests/make_rr_trace.py: capnp's own encoder on rr's schema, CRIU's own `crit
encode`) around the XSAVE state of real kernel cores of tests/progs/regs.c.

Truth comes from outside xcr0tool:
- rr's and CRIU's verdicts from tests/compat_reference.py, their checks written again
  from rr's and CRIU's source (check_xsave_compatibility; cpu_dump_cpuinfo,
  cpu_validate_cpuinfo, img_to_cpuinfo, cpu_validate_features, compel_cpuid);
- this machine's CPUID and XCR0 from the CPU itself, the recording machine's from the
  CPUID records written into the trace, a Zen 4's from its InstLatx64 dump;
- which state is lost or moved from those leaf 0xD values and each frame's own
  XSTATE_BV bytes, compared here.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import compat_reference as ref
import make_rr_trace as mk
import pytest
from clirunner import run_text, text_error
from coremaker import MadeCore
from paths import REPO

from xcr0tool.errors import XcrError
from xcr0tool.model.machine import InUse, Machine
from xcr0tool.ops.compat import compat
from xcr0tool.render.compat import compat_text, state_words
from xcr0tool.sources.machines import resolve_machine, resolve_machines

# One worker runs every test here (pytest-xdist loadgroup): its core, rr traces (capnp)
# and CRIU images (crit) are made once per module, not once per worker.
pytestmark = pytest.mark.xdist_group("compat_sources")

CPUID_CORPUS = Path(os.environ.get("XCR0TOOL_CPUID_CORPUS", REPO.parent / "shared" / "cpuid"))
RAPHAEL = CPUID_CORPUS / "AuthenticAMD0A60F12_K19_Raphael_01_CPUID.txt"
ZEN4_CORE = REPO / "tests" / "fixtures" / "linux-amd-avx512bw-4t.core"  # Zen 4 note, XCR0 0xe7
# rr's messages (src/ReplaySession.cc), as the reference has them
RR_CPUID_DIFFERS = (
    "Trace was recorded on a machine with different CPUID values\n"
    "and CPUID faulting is not enabled; replay will not work."
)

Regs = tuple[int, int, int, int]
Places = dict[int, tuple[int, int, bool]]  # component -> (size, offset, 64-byte aligned)


def tools() -> None:
    try:
        mk.require_capnp()
        mk.rr_schema()
    except mk.Unavailable as exc:
        pytest.skip(str(exc))


def crit() -> None:
    try:
        mk.require_crit()
    except mk.Unavailable as exc:
        pytest.skip(str(exc))


def raphael() -> Path:
    if not RAPHAEL.exists():
        pytest.skip(f"no CPUID dump at {RAPHAEL}")
    return RAPHAEL


# ---- this machine, from the CPU -------------------------------------------------------
# The leaves compel_cpuid and rr read (and all of leaf 0xD).
_LEAVES = [(0, 0), (1, 0), (6, 0), (7, 0), (0xF, 0), (0xF, 1)]
_LEAVES += [(0xD, sub) for sub in range(64)]
_LEAVES += [(leaf, 0) for leaf in (*range(0x80000000, 0x80000009), 0x8000000A)]


def cpu() -> tuple[dict[tuple[int, int], Regs], int]:
    """This machine's CPUID table and XCR0 (XGETBV), straight from the instructions."""
    try:
        from xcr0tool.sources.cpu import cpuid, xgetbv

        return {key: cpuid(*key) for key in _LEAVES}, xgetbv(0)
    except XcrError as exc:
        pytest.skip(f"no CPUID/XGETBV here: {exc}")


def host_faulting() -> bool | None:
    """X86_FEATURE_CPUID_FAULT in /proc/cpuinfo, as compat's `host` reads it."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next((line for line in text.splitlines() if line.startswith("flags")), None)
    return None if flags is None else "cpuid_fault" in flags.split()


def table_of(records: mk.CpuidRecords) -> dict[tuple[int, int], Regs]:
    return {(leaf, sub): regs for leaf, sub, regs in records}


def places(leaf_0d: dict[int, Regs], xcr0: int) -> Places:
    """Where a machine with this leaf 0xD and XCR0 puts each extended user component."""
    return {
        i: (r[0], r[1], bool(r[2] & 2))
        for i, r in leaf_0d.items()
        if 2 <= i < 64 and xcr0 >> i & 1 and r[0] and not r[2] & 1
    }


def fate(in_use: int, source: Places, target: Places) -> tuple[int, int]:
    """(components the target lacks, components it places elsewhere) of a saved state."""
    lacking = elsewhere = 0
    for i in range(2, 64):
        if in_use >> i & 1:
            if i not in target:
                lacking |= 1 << i
            elif target[i] != source.get(i):
                elsewhere |= 1 << i
    return lacking, elsewhere


def xstate_bv(image: bytes) -> int:
    return int.from_bytes(image[512:520], "little")


def expected_rr(
    rec: dict[tuple[int, int], Regs], rec_xcr0: int, rep: dict[tuple[int, int], Regs], rep_xcr0: int
) -> tuple[bool, int | None, str | None, list[str], bool]:
    """rr replaying on this machine a trace recorded with `rec`: (replays, fatal feature,
    message, warnings, whether the CPU type check decides), given what compat knows of
    this machine's CPUID faulting."""
    faulting = host_faulting()
    out = ref.rr_check_xsave_compatibility(rec, rec_xcr0, rep, rep_xcr0)
    compatible = ref.rr_cpuid_compatible(rec, rep)
    if not compatible and faulting is False:
        return False, None, RR_CPUID_DIFFERS, [], True
    return out.fatal is None, out.feature, out.fatal, out.warnings, compatible or bool(faulting)


def check_rr_against_reference(
    result: Any, rec: dict[tuple[int, int], Regs], rec_xcr0: int, host_xcr0: int
) -> None:
    table, _ = cpu()
    replays, feature, message, warnings, decided = expected_rr(rec, rec_xcr0, table, host_xcr0)
    (got,) = [v for v in result.rr if (v.recorded_on, v.replayed_on) == (0, 1)]
    ours = list(got.warnings)
    if not decided:  # nothing says whether this machine has CPUID faulting: said, not decided
        assert ours[0].startswith("CPUID.1:EAX & 0xf0ff0 differs"), ours
        ours = ours[1:]
    assert (got.replays, got.fatal_feature, got.message, ours) == (
        replays,
        feature,
        message,
        warnings,
    )


# ---- what is built ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def state(
    tmp_path_factory: pytest.TempPathFactory, make_kernel_core: Callable[..., MadeCore]
) -> mk.CoreState:
    made = make_kernel_core(tmp_path_factory.mktemp("compat-core"), 0xC0A7, 2)
    return mk.core_state(made)


@pytest.fixture(scope="module")
def host_trace(tmp_path_factory: pytest.TempPathFactory, state: mk.CoreState) -> mk.Trace:
    """A trace recorded here: this machine's CPUID records and XCR0, the core's images."""
    tools()
    return mk.write_trace(
        tmp_path_factory.mktemp("trace") / "here-0", mk.host_cpuid_records(), state.xcr0,
        mk.frames_for(state), block_size=2000,
    )  # fmt: skip


@pytest.fixture(scope="module")
def zen4_trace(tmp_path_factory: pytest.TempPathFactory, state: mk.CoreState) -> mk.Trace:
    """A trace recorded on a Zen 4 (Raphael's CPUID; Windows there ran with XCR0 0xe7,
    whose standard size is its CPUID.(0xD,0).EBX): the core's state at Zen 4's offsets."""
    tools()
    records = mk.dump_cpuid_records(raphael())
    zen4 = mk.offsets_from_leaf(mk.leaf_0d(records))
    size = mk.leaf_0d(records)[0][1]
    images = {
        tid: mk.relocate(image, state.offsets, zen4, 0xE7, size)
        for tid, image in state.xstate.items()
    }
    return mk.write_trace(
        tmp_path_factory.mktemp("trace") / "zen4-0", records, 0xE7, mk.frames_for(state, images)
    )


def host_cpuinfo() -> dict[str, object]:
    """cpuinfo_x86_entry as `criu dump --cpu-cap` writes it here (compel_cpuid of this
    CPU, cpu_dump_cpuinfo)."""
    table, _ = cpu()
    return ref.cpu_dump_cpuinfo(ref.compel_cpuid(table))


def zen4_cpuinfo() -> dict[str, object]:
    """The same on the Zen 4 of the dump, under the XCR0 Linux sets there."""
    _xcr0, view = ref.linux_view(ref.read_aida_dump(raphael()))
    return ref.cpu_dump_cpuinfo(ref.compel_cpuid(view))


@pytest.fixture(scope="module")
def host_criu(tmp_path_factory: pytest.TempPathFactory, state: mk.CoreState) -> Path:
    crit()
    return mk.write_criu_dir(
        tmp_path_factory.mktemp("criu") / "here", state.xstate, state.offsets, state.xcr0,
        None, cpuinfo=host_cpuinfo(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def zen4_criu(tmp_path_factory: pytest.TempPathFactory, state: mk.CoreState) -> Path:
    """A dump made on the Zen 4: its cpuinfo.img, and each thread's state in the fields a
    Zen 4 has (CRIU keeps components, not offsets)."""
    crit()
    entry = zen4_cpuinfo()
    xcr0 = state.xcr0 & 0x2E7
    return mk.write_criu_dir(
        tmp_path_factory.mktemp("criu") / "zen4", state.xstate, state.offsets, xcr0, None,
        cpuinfo=entry,
    )  # fmt: skip


# ---- rr trace directories ---------------------------------------------------------------
def test_a_trace_recorded_here_against_host(host_trace: mk.Trace, state: mk.CoreState) -> None:
    _table, host_xcr0 = cpu()
    assert state.xcr0 == host_xcr0  # the kernel wrote XCR0 into the core's images
    records = table_of(mk.host_cpuid_records())
    result = compat(resolve_machines([str(host_trace.path), "host"]))
    trace = result.machines[0]
    assert (trace.kind, trace.xcr0) == ("rr-trace", state.xcr0)
    assert trace.xcr0_source.endswith("version: Header.x86.xcr0)")
    check_rr_against_reference(result, records, state.xcr0, host_xcr0)
    # every XSAVE frame, by its index in events, with its own XSTATE_BV; nothing moves
    frames = [(i, f) for i, f in enumerate(host_trace.frames) if f.xsave is not None]
    assert [(c.event, c.tid, c.in_use) for c in result.images] == [
        (i, f.tid, xstate_bv(f.xsave)) for i, f in frames if f.xsave is not None
    ]
    assert all(not c.lost and not c.moved for c in result.images)
    assert result.portable and result.portable_xcr0 == host_xcr0
    cli = run_text("compat", "--json", str(host_trace.path), "host")
    assert cli.returncode == 0, cli.stderr
    data = json.loads(cli.stdout)
    assert [(i["machine"], i["tid"], i["event"]) for i in data["images"]] == [
        (0, f.tid, i) for i, f in frames
    ]
    assert all(i["lost_on"] == i["moved_on"] == [] for i in data["images"])


def test_a_zen4_trace_against_host(zen4_trace: mk.Trace) -> None:
    """rr's verdict is rr's own; each frame's AVX-512 state is listed where this machine
    lacks it or places it elsewhere (moved on Intel, lost where XCR0 has no AVX-512)."""
    table, host_xcr0 = cpu()
    records = table_of(mk.dump_cpuid_records(raphael()))
    result = compat(resolve_machines([str(zen4_trace.path), "host"]))
    assert result.machines[0].xcr0 == 0xE7
    check_rr_against_reference(result, records, 0xE7, host_xcr0)
    zen4 = places({s: r for (leaf, s), r in records.items() if leaf == 0xD}, 0xE7)
    here = places({s: r for (leaf, s), r in table.items() if leaf == 0xD}, host_xcr0)
    frames = [(i, f) for i, f in enumerate(zen4_trace.frames) if f.xsave is not None]
    assert len(result.images) == len(frames)
    for check, (index, frame) in zip(result.images, frames, strict=True):
        assert frame.xsave is not None
        lacking, elsewhere = fate(xstate_bv(frame.xsave), zen4, here)
        assert (check.event, check.tid) == (index, frame.tid)
        assert check.lost == (((1, lacking),) if lacking else ())
        assert check.moved == (((1, elsewhere),) if elsewhere else ())
    cli = run_text("compat", str(zen4_trace.path), "host")
    assert cli.returncode == (0 if result.portable else 1), cli.stderr
    assert not result.portable or host_xcr0 == 0xE7
    for index, frame in frames:
        assert frame.xsave is not None
        lacking, elsewhere = fate(xstate_bv(frame.xsave), zen4, here)
        who = f"frame {index} of thread {frame.tid} in [0] zen4-0 holds"
        if lacking:
            assert f"{who} {state_words(lacking)} that [1] host lacks" in cli.stdout
        if elsewhere:
            assert f"{who} {state_words(elsewhere)} that [1] host places elsewhere: " in cli.stdout


def test_trace_frames_against_an_avx_only_profile(host_trace: mk.Trace) -> None:
    frames = [(i, f) for i, f in enumerate(host_trace.frames) if f.xsave is not None]
    assert frames[0][1].xsave is not None
    if not xstate_bv(frames[0][1].xsave) & 0xE0:
        pytest.skip("this CPU saved no AVX-512 state in the core")
    zen3 = resolve_machine("amd-zen3")
    cli = run_text("compat", str(host_trace.path), "amd-zen3")
    assert cli.returncode == 1
    for index, frame in frames:
        assert frame.xsave is not None
        lacking = xstate_bv(frame.xsave) & ~zen3.xcr0
        line = (
            f"frame {index} of thread {frame.tid} in [0] here-0 holds {state_words(lacking)}"
            " that [1] amd-zen3 lacks"
        )
        assert line in cli.stdout
    data = json.loads(run_text("compat", "--json", str(host_trace.path), "amd-zen3").stdout)
    assert [(i["event"], i["lost_on"]) for i in data["images"]] == [(i, [1]) for i, _ in frames]


def test_many_frames_are_said_briefly() -> None:
    zen4 = resolve_machine("amd-zen4")
    frames = tuple(InUse(7, 0xE7, f"frame {i} (thread 7)", i) for i in range(1, 41, 2))
    trace = Machine("t", "t", "rr-trace", 0xE7, "test", zen4.cpuid, "test", images=frames)
    text = compat_text(compat([trace, resolve_machine("amd-zen3")]))
    assert (
        "20 frames (1, 3, 5, 7, 9, 11, ..., 39) of thread 7 in [0] t hold AVX-512 state"
        " (opmask, zmm_hi256, hi16_zmm) that [1] amd-zen3 lacks"
    ) in text


def test_bad_rr_descriptions(host_trace: mk.Trace, tmp_path: Path) -> None:
    no_version = tmp_path / "no-version"
    no_version.mkdir()
    (no_version / "events").write_bytes((host_trace.path / "events").read_bytes())
    assert text_error(run_text("compat", str(no_version), "host")) == (
        f"{no_version}: an rr trace directory without its version file, the header that"
        " holds the recording machine's CPUID and XCR0"
    )
    other = tmp_path / "other-version"
    other.mkdir()
    version = (host_trace.path / "version").read_bytes()
    (other / "version").write_bytes(b"84\n" + version[3:])
    assert text_error(run_text("compat", str(other), "intel")) == (
        f"{other / 'version'}: rr trace version 84: only version 85 (rr 5.x) can be read;"
        " a trace of another rr version needs that rr"
    )
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "version").write_bytes(version[:40])
    assert text_error(run_text("compat", str(cut), "intel")).startswith(
        f"{cut / 'version'}: the Header message after the version line: truncated"
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "version").write_bytes(version)
    events = (host_trace.path / "events").read_bytes()
    (broken / "events").write_bytes(events[:-10])
    message = text_error(run_text("compat", str(broken), "intel"))
    assert message.startswith(f"{broken / 'events'}: frame ")
    assert "truncated" in message


# ---- CRIU -------------------------------------------------------------------------------
def test_cpuinfo_of_this_machine_against_host(host_criu: Path) -> None:
    table, host_xcr0 = cpu()
    rt = ref.compel_cpuid(table)
    entry = host_cpuinfo()
    result = compat(resolve_machines([str(host_criu / "cpuinfo.img"), "host"]))
    image = result.machines[0]
    assert image.kind == "criu" and image.criu is not None
    assert image.criu.caps is not None  # decided from the capability words
    if not host_xcr0 & ~0x602FF:  # what CRIU's mask and xsave_size tell
        assert image.xcr0 == host_xcr0
    for (i, j), want in (
        ((0, 1), ref.cpu_validate_cpuinfo_fpu(entry, rt)),
        ((1, 0), ref.cpu_validate_features_fpu(rt, rt)),
    ):
        (got,) = [v for v in result.criu if (v.dumped_on, v.restored_on) == (i, j)]
        assert (got.restores, got.reason) == (want is None, want)
    # family, model and XSAVEC come from the image too: rr's checks are decided
    (rr,) = [v for v in result.rr if (v.recorded_on, v.replayed_on) == (0, 1)]
    assert not any("0xf0ff0" in w or "CPUID.(0xD,1)" in w for w in rr.warnings), rr.warnings
    assert image.xsavec == bool(table[(0xD, 1)][0] & 2)
    assert image.osxsave == bool(table[(1, 0)][2] >> 27 & 1)


def test_cpuinfo_of_every_dump_against_every_dump(tmp_path: Path) -> None:
    """CRIU's verdict for every ordered pair of 17 CRIU cpuinfo.img (crit-encoded from
    each dump's compel_cpuid) and the 17 dumps themselves, as CRIU's own code decides."""
    crit()
    paths = sorted(CPUID_CORPUS.glob("*.txt"))
    if len(paths) < 17:
        pytest.skip(f"no CPUID corpus at {CPUID_CORPUS}")
    tables = [ref.linux_view(ref.read_aida_dump(p))[1] for p in paths]
    infos = [ref.compel_cpuid(t) for t in tables]
    entries = [ref.cpu_dump_cpuinfo(c) for c in infos]
    images = []
    for path, entry in zip(paths, entries, strict=True):
        image = tmp_path / path.stem / "cpuinfo.img"
        image.parent.mkdir()
        mk.crit_encode({"magic": "CPUINFO", "entries": [{"x86_entry": [entry]}]}, image)
        images.append(str(image))
    machines = resolve_machines(images + [str(p) for p in paths])
    result = compat(machines)
    n = len(paths)
    criu = {(v.dumped_on, v.restored_on): v for v in result.criu}
    rr = {(v.recorded_on, v.replayed_on): v for v in result.rr}
    for i, j in itertools.permutations(range(2 * n), 2):
        if i < n:  # dumped with that cpuinfo.img: img_to_cpuinfo on the restoring machine
            want = ref.cpu_validate_cpuinfo_fpu(entries[i], infos[j % n])
        else:
            want = ref.cpu_validate_features_fpu(infos[i % n], infos[j % n])
        got = criu[(i, j)]
        assert (got.restores, got.reason) == (want is None, want), (i, j)
        # the family and model rebuilt from cpuinfo.img are the dump's, as rr compares them
        differs = any(w.startswith("CPUID.1:EAX & 0xf0ff0") for w in rr[(i, j)].warnings)
        assert differs == (not ref.rr_cpuid_compatible(tables[i % n], tables[j % n])), (i, j)
    for k in range(n):
        assert machines[k].xcr0 == machines[n + k].xcr0, paths[k].name
        assert machines[k].xsavec == machines[n + k].xsavec, paths[k].name


def test_cpuinfo_that_criu_refuses(tmp_path: Path) -> None:
    """img_to_cpuinfo refuses the image on any machine: said as CRIU's verdict."""
    crit()
    good = zen4_cpuinfo()
    rt = ref.compel_cpuid(ref.linux_view(ref.read_aida_dump(raphael()))[1])
    for change, reason in (
        ({"capability": [0] * 8}, "Image carries 8 words while 19 expected"),
        ({"capability_ver": 3}, "Image carries unknown capability version 3"),
        ({"vendor_id": "UNKNOWN"}, "Unknown cpu vendor 0"),
    ):
        entry = {**good, **change}
        image = tmp_path / str(len(list(tmp_path.iterdir()))) / "cpuinfo.img"
        image.parent.mkdir()
        mk.crit_encode({"magic": "CPUINFO", "entries": [{"x86_entry": [entry]}]}, image)
        assert ref.cpu_validate_cpuinfo_fpu(entry, rt) == reason
        result = compat(resolve_machines([str(image), str(raphael())]))
        (got,) = [v for v in result.criu if (v.dumped_on, v.restored_on) == (0, 1)]
        assert (got.restores, got.reason) == (False, reason)
        assert result.machines[0].criu is not None and result.machines[0].criu.caps is None


def test_a_criu_dump_made_here_against_host(host_criu: Path, state: mk.CoreState) -> None:
    _table, host_xcr0 = cpu()
    cli = run_text("compat", "--json", str(host_criu), "host")
    data = json.loads(cli.stdout)
    assert cli.returncode == (0 if data["portable_xcr0"] == hex(host_xcr0) else 1)
    assert data["machines"][0]["xcr0"] == data["machines"][1]["xcr0"] or host_xcr0 & ~0x602FF
    kept = 0x2FF & ~0b1000  # x87, SSE and CRIU's fields (it never saves BNDREGS)
    assert [(i["tid"], i["event"], i["in_use"]) for i in data["images"]] == [
        (tid, None, hex(xstate_bv(image) & kept & state.xcr0))
        for tid, image in state.xstate.items()
    ]
    assert all(i["lost_on"] == i["moved_on"] == [] for i in data["images"])


def test_a_zen4_criu_dump_against_host(zen4_criu: Path, state: mk.CoreState) -> None:
    """The threads' state is checked at the dumping machine's places (the profile that
    fits cpuinfo.img: Zen 4's, as the Raphael dump says) against this machine's."""
    table, host_xcr0 = cpu()
    _xcr0, view = ref.linux_view(ref.read_aida_dump(raphael()))
    result = compat(resolve_machines([str(zen4_criu), "host"]))
    machine = result.machines[0]
    assert machine.xcr0 == 0x2E7
    zen4 = places({s: r for (leaf, s), r in view.items() if leaf == 0xD}, machine.xcr0)
    here = places({s: r for (leaf, s), r in table.items() if leaf == 0xD}, host_xcr0)
    placed = {i: machine.placement(i) for i in zen4}
    assert {i: (p.size, p.offset, p.aligned) for i, p in placed.items() if p} == zen4
    want = ref.cpu_validate_cpuinfo_fpu(zen4_cpuinfo(), ref.compel_cpuid(table))
    (got,) = [v for v in result.criu if (v.dumped_on, v.restored_on) == (0, 1)]
    assert (got.restores, got.reason) == (want is None, want)
    cli = run_text("compat", str(zen4_criu), "host")
    assert cli.returncode == (0 if result.portable else 1)
    for (tid, image), check in zip(state.xstate.items(), result.images, strict=True):
        in_use = xstate_bv(image) & state.xcr0 & 0x2E7
        lacking, elsewhere = fate(in_use, zen4, here)
        assert (check.tid, check.in_use) == (tid, in_use)
        assert check.lost == (((1, lacking),) if lacking else ())
        assert check.moved == (((1, elsewhere),) if elsewhere else ())
        for mask, verb in ((lacking, "lacks"), (elsewhere, "places elsewhere")):
            if mask:
                said = [
                    line.split(" of [0] zen4 ")[0]
                    for line in cli.stdout.splitlines()
                    if f"{state_words(mask)} that [1] host {verb}" in line
                ]
                assert any(str(tid) in who for who in said), (tid, said)


def test_one_core_image_is_a_machine(zen4_criu: Path, state: mk.CoreState, tmp_path: Path) -> None:
    tid = list(state.xstate)[1]
    machine = resolve_machine(str(zen4_criu / f"core-{tid}.img"))
    assert machine.kind == "criu" and [s.tid for s in machine.images] == [tid]
    alone = tmp_path / f"core-{tid}.img"
    alone.write_bytes((zen4_criu / f"core-{tid}.img").read_bytes())
    assert text_error(run_text("compat", str(alone), "intel")) == (
        f"{alone}: a CRIU core image without cpuinfo.img beside it (criu dump writes it only"
        " with --cpu-cap): nothing says the dumping machine's XSAVE features and sizes"
    )


def test_bad_criu_descriptions(zen4_criu: Path, tmp_path: Path) -> None:
    pstree = zen4_criu / "pstree.img"
    wrong = tmp_path / "wrong" / "cpuinfo.img"
    wrong.parent.mkdir()
    wrong.write_bytes(pstree.read_bytes())
    assert text_error(run_text("compat", str(wrong), "intel")) == (
        f"{wrong}: a CRIU PSTREE image: a MACHINE is cpuinfo.img, a core-TID.img or their directory"
    )
    assert text_error(run_text("compat", str(wrong.parent), "intel")) == (
        f"{wrong}: not a CRIU CPUINFO image: magic 0x50273030 (PSTREE) at byte 4,"
        " expected 0x61404013"
    )
    data = (zen4_criu / "cpuinfo.img").read_bytes()
    cut = tmp_path / "cut" / "cpuinfo.img"
    cut.parent.mkdir()
    cut.write_bytes(data[:-20])
    size = int.from_bytes(data[8:12], "little")
    assert text_error(run_text("compat", str(cut), "intel")) == (
        f"{cut}: truncated: the entry at byte 8 claims {size} bytes, {size - 20} are left"
    )
    huge = tmp_path / "huge" / "cpuinfo.img"
    huge.parent.mkdir()
    huge.write_bytes(data[:8] + bytes(70000))
    assert text_error(run_text("compat", str(huge), "intel")) == (
        f"{huge}: over 65536 bytes: too large for a CRIU cpuinfo.img"
    )
    no_cpuinfo = tmp_path / "no-cpuinfo"
    no_cpuinfo.mkdir()
    for image in zen4_criu.glob("core-*.img"):
        (no_cpuinfo / image.name).write_bytes(image.read_bytes())
    assert text_error(run_text("compat", str(no_cpuinfo), "intel")) == (
        f"{no_cpuinfo}: CRIU images without cpuinfo.img (criu dump writes it only with"
        " --cpu-cap): nothing says the dumping machine's XSAVE features and sizes"
    )


# ---- CORE, TRACE and CRIUDIR against host ------------------------------------------------
def _zen4_core_places() -> tuple[Places, dict[int, int]]:
    from coremaker import NT_PRSTATUS, NT_X86_XSAVE_LAYOUT, read_notes, xsave_layout_records

    note: dict[int, tuple[int, int]] = {}
    in_use: dict[int, int] = {}
    tid = 0
    for n in read_notes(ZEN4_CORE):
        if n.type == NT_X86_XSAVE_LAYOUT:
            note = xsave_layout_records(n.desc)
        elif n.name == "CORE" and n.type == NT_PRSTATUS:
            tid = int.from_bytes(n.desc[32:36], "little")
        elif n.name == "LINUX" and n.type == 0x202:  # NT_X86_XSTATE
            in_use[tid] = xstate_bv(n.desc)
    # AVX-512's components are not 64-byte aligned on any CPU (CPUID.(0xD,5..7).ECX[1] 0)
    return {i: (size, offset, False) for i, (size, offset) in note.items()}, in_use


@pytest.mark.parametrize("kind", ["core", "trace", "criu"])
def test_saved_state_against_host_is_listed(
    kind: str, request: pytest.FixtureRequest, state: mk.CoreState
) -> None:
    """`compat CORE host`, `compat TRACE host`, `compat CRIUDIR host` (state saved on a
    Zen 4): every thread or frame whose state this machine lacks or places elsewhere is
    listed, and the exit status is 1 when the XCR0s are not the portable one."""
    table, host_xcr0 = cpu()
    here = places({s: r for (leaf, s), r in table.items() if leaf == 0xD}, host_xcr0)
    zen4_leaf = {s: r for (leaf, s), r in ref.read_aida_dump(raphael()).items() if leaf == 0xD}
    saved: list[tuple[str, int]] = []  # (what names it in the text, its in-use state)
    if kind == "core":
        spec = str(ZEN4_CORE)
        source, by_tid = _zen4_core_places()
        saved = [(str(tid), bv) for tid, bv in by_tid.items()]
    elif kind == "trace":
        trace: mk.Trace = request.getfixturevalue("zen4_trace")
        spec = str(trace.path)
        source = places(zen4_leaf, 0xE7)
        saved = [
            (f"frame {i} of thread {f.tid} in", xstate_bv(f.xsave))
            for i, f in enumerate(trace.frames)
            if f.xsave is not None
        ]
    else:
        folder: Path = request.getfixturevalue("zen4_criu")
        spec = str(folder)
        source = places(zen4_leaf, 0x2E7)
        saved = [(str(t), xstate_bv(i) & state.xcr0 & 0x2E7) for t, i in state.xstate.items()]
    cli = run_text("compat", spec, "host")
    data = json.loads(run_text("compat", "--json", spec, "host").stdout)
    portable = all(m["xcr0"] == data["portable_xcr0"] for m in data["machines"])
    assert cli.returncode == (0 if portable else 1), cli.stderr
    assert not portable or host_xcr0 in (0xE7, 0x2E7)
    assert len(data["images"]) == len(saved)
    listed = 0
    for (needle, in_use), entry in zip(saved, data["images"], strict=True):
        lacking, elsewhere = fate(in_use, source, here)
        assert (entry["lost_on"], entry["moved_on"]) == (
            [1] if lacking else [],
            [1] if elsewhere else [],
        )
        for mask, verb in ((lacking, "lacks"), (elsewhere, "places elsewhere")):
            if mask:
                said = [
                    line.split(" of [0]")[0]
                    for line in cli.stdout.splitlines()
                    if f"{state_words(mask)} that [1] host {verb}" in line
                ]
                assert any(needle in who for who in said), (needle, said)
                listed += 1
    if any(fate(bv, source, here) != (0, 0) for _, bv in saved):
        assert listed


def test_at_selects_one_frame_or_thread(
    host_trace: mk.Trace, zen4_criu: Path, state: mk.CoreState
) -> None:
    """TRACE@EVENT, CRIUDIR@TID and CORE@TID, as every SOURCE takes them."""
    index = max(i for i, f in enumerate(host_trace.frames) if f.xsave is not None)
    frame = host_trace.frames[index]
    assert frame.xsave is not None
    one = resolve_machine(f"{host_trace.path}@{index}")
    assert [(s.event, s.tid, s.in_use) for s in one.images] == [
        (index, frame.tid, xstate_bv(frame.xsave))
    ]
    assert text_error(run_text("compat", f"{host_trace.path}@0", "intel")) == (
        f"{host_trace.path}@0: frame 0 of the events file carries no XSAVE data (or does not exist)"
    )
    tid = list(state.xstate)[-1]
    assert [s.tid for s in resolve_machine(f"{zen4_criu}@{tid}").images] == [tid]
    assert [s.tid for s in resolve_machine(f"{ZEN4_CORE}@6786").images] == [6786]
    assert text_error(run_text("compat", f"{RAPHAEL}@1", "intel")) == (
        f"{RAPHAEL}@1: @N selects a thread of a core or a CRIU image directory, or a frame"
        f" of an rr trace, and {RAPHAEL} is none of them"
    )
