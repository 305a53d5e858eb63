"""`xcr0tool compat`: machines from every kind of description, the portable XCR0, and
rr's and CRIU's verdicts checked against their own code (tests/compat_reference.py).

The CPUID dumps are third-party data read in place from XCR0TOOL_CPUID_CORPUS; the
Firecracker files from XCR0TOOL_FIRECRACKER_CORPUS, by default its `firecracker`
sub-directory. Tests that need them skip when they are not there.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import compat_reference as ref
import pytest
from clirunner import one_line_error, run
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import REPO

from xcr0tool.arch.components import bits
from xcr0tool.errors import InputError
from xcr0tool.formats.firecracker import Bitmap, parse_bitmap
from xcr0tool.model.machine import InUse, Machine, criu_facts_from_cpuid
from xcr0tool.ops.compat import (
    compat,
    largest_valid_subset,
    portable_xcr0,
    xcr0_allowed,
)
from xcr0tool.render.compat import compat_json, compat_text, compat_view
from xcr0tool.render.styled import Screen
from xcr0tool.sources.machines import resolve_machine, resolve_machines

FIXTURES = REPO / "tests" / "fixtures"
GOLDEN = REPO / "tests" / "golden"
CORE = FIXTURES / "linux-amd-avx512bw-4t.core"  # AMD Zen 4 layout, XCR0 0xe7, 4 threads

CORPUS = os.environ.get("XCR0TOOL_CPUID_CORPUS")
FIRECRACKER = os.environ.get("XCR0TOOL_FIRECRACKER_CORPUS") or (
    str(Path(CORPUS) / "firecracker") if CORPUS else None
)
needs_corpus = pytest.mark.skipif(
    not CORPUS, reason="XCR0TOOL_CPUID_CORPUS is not set (a directory of real CPUID dumps)"
)
needs_firecracker = pytest.mark.skipif(
    not FIRECRACKER or not Path(FIRECRACKER).is_dir(),
    reason="no Firecracker fingerprints (XCR0TOOL_FIRECRACKER_CORPUS, or XCR0TOOL_CPUID_CORPUS"
    "/firecracker)",
)


def dump(name: str) -> str:
    assert CORPUS
    found = sorted(Path(CORPUS).glob(f"*_{name}*_CPUID.txt"))
    assert len(found) == 1, (name, found)
    return str(found[0])


def corpus_dumps() -> list[Path]:
    return sorted(Path(CORPUS).glob("*.txt")) if CORPUS else []


def firecracker(name: str) -> str:
    assert FIRECRACKER
    return str(Path(FIRECRACKER) / name)


def verdict(result: object, kind: str, i: int, j: int) -> object:
    pairs = result.rr if kind == "rr" else result.criu  # type: ignore[attr-defined]
    key = ("recorded_on", "replayed_on") if kind == "rr" else ("dumped_on", "restored_on")
    (found,) = [v for v in pairs if (getattr(v, key[0]), getattr(v, key[1])) == (i, j)]
    return found


# ---- the acceptance cases --------------------------------------------------------------


@needs_corpus
def test_zen4_trace_does_not_replay_on_skylake_x() -> None:
    """rr #3573: AMD packs opmask at 832, Intel keeps it at 1088."""
    result = compat(resolve_machines([dump("Raphael"), dump("SkylakeX")]))
    rr = verdict(result, "rr", 0, 1)
    assert (rr.replays, rr.fatal_feature) == (False, 5)  # type: ignore[attr-defined]
    assert rr.message == (  # type: ignore[attr-defined]
        "XSAVE offset/size/alignment differs for feature 5; H. Peter Anvin said this would"
        " never happen!"
    )
    assert result.portable_xcr0 == 0x7
    assert not result.portable


@needs_corpus
def test_genoa_and_sapphire_rapids_share_only_avx() -> None:
    result = compat(resolve_machines([dump("Genoa"), dump("SapphireRapids")]))
    assert result.portable_xcr0 == 0x7
    opmask = next(row for row in result.components if row.id == 5)
    assert [p.offset for p in opmask.on if p] == [832, 1088]


@needs_corpus
def test_sapphire_rapids_and_ice_lake_replay_both_ways_criu_refuses() -> None:
    machines = resolve_machines([dump("SapphireRapids"), dump("IceLake")])
    result = compat(machines)
    for i, j in ((0, 1), (1, 0)):
        rr = verdict(result, "rr", i, j)
        assert rr.replays, rr  # type: ignore[attr-defined]
        assert any(w.startswith("Trace XCR0 value") for w in rr.warnings)  # type: ignore[attr-defined]
        criu = verdict(result, "criu", i, j)
        assert criu.restores is False  # type: ignore[attr-defined]
    # Linux 5.16+ enables AMX in XCR0, so CRIU's first failing check is xsave_size; the
    # maximum size differs too.
    assert verdict(result, "criu", 0, 1).reason == "CPU xsave size mismatch (11008/2696)"  # type: ignore[attr-defined]
    assert machines[0].criu and machines[1].criu
    assert machines[0].criu.xsave_size_max == 11008 != machines[1].criu.xsave_size_max == 2696
    assert result.portable_xcr0 == 0x2E7


@needs_corpus
def test_sapphire_rapids_without_amx_in_xcr0_fails_criu_on_max_size() -> None:
    """A kernel that leaves AMX out of XCR0 (before 5.16): same xsave_size, and CRIU then
    refuses on xsave_size_max."""
    spr, icelake = resolve_machines([dump("SapphireRapids"), dump("IceLake")])
    facts = criu_facts_from_cpuid(
        {**spr.cpuid, (0xD, 0): (0x602E7, 2696, 11008, 0)}, "Sapphire Rapids, XCR0 0x2e7"
    )
    old_kernel = Machine(
        spr.source, "spr-0x2e7", spr.kind, 0x2E7, "a kernel without AMX", spr.cpuid,
        spr.cpuid_source, criu=facts,
    )  # fmt: skip
    result = compat([old_kernel, icelake])
    assert verdict(result, "criu", 0, 1).reason == "CPU xsave max size mismatch (11008/2696)"  # type: ignore[attr-defined]
    assert verdict(result, "rr", 0, 1).replays  # type: ignore[attr-defined]


def _reference_machine(path: Path) -> tuple[int, dict[tuple[int, int], ref.Regs]]:
    return ref.linux_view(ref.read_aida_dump(path))


@needs_corpus
def test_every_pair_of_dumps_agrees_with_rr_and_criu_code() -> None:
    """Every ordered pair of the corpus, against rr's check_xsave_compatibility and
    CRIU's cpu_validate_features as written again in compat_reference.py."""
    paths = corpus_dumps()
    assert len(paths) >= 17
    started = time.perf_counter()
    machines = resolve_machines([str(p) for p in paths])
    result = compat(machines)
    elapsed = time.perf_counter() - started
    views = [_reference_machine(p) for p in paths]
    criu = [ref.compel_cpuid(view) for _, view in views]
    checked = agreed = 0
    for i, j in itertools.permutations(range(len(paths)), 2):
        (xcr0_i, cpuid_i), (xcr0_j, cpuid_j) = views[i], views[j]
        assert (machines[i].xcr0, machines[j].xcr0) == (xcr0_i, xcr0_j)
        expected = ref.rr_check_xsave_compatibility(cpuid_i, xcr0_i, cpuid_j, xcr0_j)
        rr = verdict(result, "rr", i, j)
        ours = [w for w in rr.warnings if "has no CPUID.(0xD,1)" not in w]  # type: ignore[attr-defined]
        # With nothing known of CPUID faulting, a family/model difference is said as a
        # warning (rr refuses such a replay without CPUID faulting).
        if not ref.rr_cpuid_compatible(cpuid_i, cpuid_j):
            assert ours[0].startswith("CPUID.1:EAX & 0xf0ff0 differs"), ours
            ours = ours[1:]
        reason = ref.cpu_validate_features_fpu(criu[i], criu[j])
        got = verdict(result, "criu", i, j)
        assert (rr.replays, rr.fatal_feature, rr.message, ours) == (  # type: ignore[attr-defined]
            expected.fatal is None,
            expected.feature,
            expected.fatal,
            expected.warnings,
        ), (paths[i].name, paths[j].name)
        assert (got.restores, got.reason) == (reason is None, reason), (  # type: ignore[attr-defined]
            paths[i].name,
            paths[j].name,
        )
        checked += 1
        agreed += 1
    assert checked == agreed == len(paths) * (len(paths) - 1)
    print(f"\n{checked} ordered pairs, {agreed} agree; compat of {len(paths)} dumps {elapsed:.3f}s")


@needs_corpus
def test_criu_xfeatures_mask_is_compels_own() -> None:
    """CRIU's mask drops SSE and BNDREGS (its XFEATURE_MASK_SUPERVISOR macro ORs in the
    enum value 10), as compel computes it."""
    for path in corpus_dumps():
        machine = resolve_machine(str(path))
        expected = ref.compel_cpuid(_reference_machine(path)[1])
        assert machine.criu is not None
        assert (
            machine.criu.xfeatures_mask,
            machine.criu.xsave_size,
            machine.criu.xsave_size_max,
        ) == (
            expected.xfeatures_mask,
            expected.xsave_size,
            expected.xsave_size_max,
        ), path.name
        assert machine.criu.xfeatures_mask is not None
        assert not machine.criu.xfeatures_mask & 0b1010


# ---- rr: traces' headers ------------------------------------------------------------------


def host_or_skip() -> Machine:
    from xcr0tool.errors import XcrError

    try:
        return resolve_machine("host")
    except XcrError as exc:
        pytest.skip(f"no host machine here: {exc}")


def traceinfo(
    tmp_path: Path, name: str, table: dict[tuple[int, int], ref.Regs], xcr0: int, faulting: bool
) -> Path:
    """JSON as `rr traceinfo` prints it (TraceInfoCommand.cc): the keys in rr's order,
    records [eax_in, ecx_in, eax, ebx, ecx, edx], and the trailing comma rr leaves when
    its replay to the first exec fails."""
    records = ",".join(
        f"\n    [{leaf},{sub},{a},{b},{c},{d}]"
        for (leaf, sub), (a, b, c, d) in sorted(table.items())
    )
    text = (
        '{\n  "uuid":[1,2,3],\n'
        f'  "xcr0":{xcr0},\n  "bindToCpu":-1,\n  "cpuidFaulting":{str(faulting).lower()},\n'
        '  "requiredForwardCompatibilityVersion":1,\n  "ticksSemantics":"rcb",\n'
        f'  "cpuidRecords":[{records}\n  ],\n'
        '  "chaosMode":false,\n}\n'
    )
    path = tmp_path / f"{name}.json"
    path.write_text(text)
    return path


def test_a_trace_header_against_host(tmp_path: Path) -> None:
    """A trace recorded here replays here; a Zen 4 trace's verdict is rr's own."""
    host = host_or_skip()
    here = {k: v for k, v in host.cpuid.items() if k[0] in (1, 0xD)}  # what rr's check reads
    same = traceinfo(tmp_path, "here", here, host.xcr0, bool(host.has_cpuid_faulting))
    result = compat(resolve_machines([str(same), "host"]))
    rr = verdict(result, "rr", 0, 1)
    assert (rr.replays, rr.warnings) == (True, ())  # type: ignore[attr-defined]
    assert result.portable and result.portable_xcr0 == host.xcr0


@needs_corpus
def test_a_zen4_trace_header_against_host(tmp_path: Path) -> None:
    host = host_or_skip()
    xcr0, table = ref.linux_view(ref.read_aida_dump(Path(dump("Raphael"))))
    trace = traceinfo(tmp_path, "zen4", table, xcr0, False)
    result = compat(resolve_machines([str(trace), "host"]))
    expected = ref.rr_check_xsave_compatibility(table, xcr0, host.cpuid, host.xcr0)
    rr = verdict(result, "rr", 0, 1)
    assert (rr.replays, rr.fatal_feature, rr.message) == (  # type: ignore[attr-defined]
        expected.fatal is None,
        expected.feature,
        expected.fatal,
    )
    for warning in expected.warnings:
        assert warning in rr.warnings  # type: ignore[attr-defined]


def test_traceinfo_xcr0_zero_means_cpuid(tmp_path: Path) -> None:
    """TraceReader::xcr0(): 0 in the header means CPUID.(0xD,0) EDX:EAX, unmasked."""
    table = {
        (1, 0): (0x806F8, 0, 1 << 27, 0),
        (0xD, 0): (0x7, 0x340, 0x340, 0x40000000),
        (0xD, 1): (0xF, 0, 0, 0),
        (0xD, 2): (0x100, 0x240, 0, 0),
        (0xD, 62): (0x80, 0x340, 0, 0),
    }
    machine = resolve_machine(str(traceinfo(tmp_path, "t", table, 0, True)))
    assert machine.xcr0 == 0x4000000000000007
    assert machine.uses_cpuid_faulting and machine.has_cpuid_faulting
    assert "rr's rule" in machine.xcr0_source


def test_trace_recorded_with_faulting_needs_it_to_replay(tmp_path: Path) -> None:
    table = {
        (1, 0): (0x806F8, 0, 1 << 27, 0),
        (0xD, 0): (0x7, 0x340, 0x340, 0),
        (0xD, 1): (0xF, 0, 0, 0),
        (0xD, 2): (0x100, 0x240, 0, 0),
    }
    trace = resolve_machine(str(traceinfo(tmp_path, "t", table, 7, True)))
    without = Machine("m", "m", "test", 7, "test", table, "test", has_cpuid_faulting=False)
    rr = verdict(compat([trace, without]), "rr", 0, 1)
    assert (rr.replays, rr.message) == (  # type: ignore[attr-defined]
        False,
        "Trace was recorded with CPUID faulting enabled, but this\n"
        "system does not support CPUID faulting.",
    )
    other = {**table, (1, 0): (0x906A0, 0, 1 << 27, 0)}
    plain = resolve_machine(str(traceinfo(tmp_path, "u", table, 7, False)))
    elsewhere = Machine("m", "m", "test", 7, "test", other, "test", has_cpuid_faulting=False)
    rr = verdict(compat([plain, elsewhere]), "rr", 0, 1)
    assert rr.message == (  # type: ignore[attr-defined]
        "Trace was recorded on a machine with different CPUID values\n"
        "and CPUID faulting is not enabled; replay will not work."
    )


# ---- Firecracker ----------------------------------------------------------------------------


def test_bitmaps_as_firecracker_reads_them() -> None:
    """RegisterValueFilter's deserializer: last character is bit 0, `_` skipped, `x`
    leaves the bit, missing high bits are left too."""
    assert parse_bitmap("0b1000101", "t") == Bitmap(0b1111111, 69)
    assert parse_bitmap("0b1x0_1", "t") == Bitmap(0b1011, 0b1001)
    assert parse_bitmap("10", "t") == Bitmap(0b11, 0b10)
    assert parse_bitmap("0bx1", "t").apply(0xFFFF0000) == 0xFFFF0001
    assert parse_bitmap("0b" + "0" * 32, "t").apply(0xFFFFFFFF) == 0
    with pytest.raises(ValueError, match="longer than 32 bits"):
        parse_bitmap("0b" + "x" * 33, "t")
    with pytest.raises(ValueError, match="has '2'"):
        parse_bitmap("0b012", "t")


@needs_firecracker
def test_firecracker_fingerprints_are_machines() -> None:
    icelake = resolve_machine(firecracker("fingerprint_INTEL_ICELAKE_5.10host.json"))
    milan = resolve_machine(firecracker("fingerprint_AMD_MILAN_6.1host.json"))
    assert (icelake.kind, icelake.xcr0, icelake.xsavec) == ("firecracker", 0x2E7, True)
    assert icelake.placement(5).offset == 1088  # type: ignore[union-attr]
    assert milan.xcr0 == 0x207 and milan.placement(9).offset == 2432  # type: ignore[union-attr]
    # The vCPU had not run: EBX for XCR0 3 and OSXSAVE 0 in the file; a running guest's
    # values are taken, and said.
    assert icelake.cpuid[(0xD, 0)][1] == 2696
    assert icelake.osxsave and any("OSXSAVE" in note for note in icelake.notes)


@needs_firecracker
def test_a_template_applied_to_a_fingerprint_is_a_machine() -> None:
    base = firecracker("fingerprint_INTEL_ICELAKE_5.10host.json")
    guest = resolve_machine(f"{base}+{firecracker('template-T2CL.json')}")
    assert guest.name == "fingerprint_INTEL_ICELAKE_5.10host+template-T2CL"
    # T2CL clears CPUID.(0xD,0).EAX bits 3-7 and 9, and sub-leaf 1's XSAVEC, XGETBV1 and
    # XSAVES; `x` keeps the host's x87, SSE and AVX bits.
    assert guest.xcr0 == 0x7 and guest.xcr0_capable == 0x7
    assert (guest.xsavec, guest.xsaves) == (False, False)
    host = resolve_machine(base)
    result = compat([host, guest])
    assert result.portable_xcr0 == 0x7
    rr = verdict(result, "rr", 0, 1)
    assert rr.replays  # type: ignore[attr-defined]
    assert any(w.startswith("rr: Tracees had XSAVEC") for w in rr.warnings)  # type: ignore[attr-defined]
    # The template leaves the maximum size (ECX) alone: CRIU still refuses.
    assert verdict(result, "criu", 1, 0).reason == "CPU xsave size mismatch (832/2696)"  # type: ignore[attr-defined]


@needs_firecracker
def test_firecracker_cli(tmp_path: Path) -> None:
    template = firecracker("template-T2CL.json")
    assert one_line_error(run("compat", template, "host")) == (
        f"xcr0tool: {template}: a Firecracker CPU template describes no machine by itself:"
        f" name it after a fingerprint, FINGERPRINT+{template}"
    )
    fingerprint = json.loads(Path(firecracker("fingerprint_AMD_MILAN_6.1host.json")).read_text())
    fingerprint["guest_cpu_config"]["cpuid_modifiers"] = [
        m for m in fingerprint["guest_cpu_config"]["cpuid_modifiers"] if m["leaf"] != "0xd"
        or m["subleaf"] != "0x1"
    ]  # fmt: skip
    lacking = tmp_path / "fp.json"
    lacking.write_text(json.dumps(fingerprint))
    assert one_line_error(run("compat", f"{lacking}+{template}", "intel")) == (
        f"xcr0tool: {template}: the template modifies CPUID leaf 0xd sub-leaf 0x1, which the"
        " vCPU does not have"
    )


# ---- cores ----------------------------------------------------------------------------


def test_core_against_an_avx_only_profile_lists_the_threads() -> None:
    result = run("compat", str(CORE), "amd-zen3")
    assert result.returncode == 1
    text = result.stdout.decode()
    assert (
        "threads 6785, 6788, 6786, 6787 of [0] linux-amd-avx512bw-4t.core hold AVX-512 state"
        " (opmask, zmm_hi256, hi16_zmm) that [1] amd-zen3 lacks"
    ) in text
    data = json.loads(run("compat", "--json", str(CORE), "amd-zen3").stdout)
    assert [(i["tid"], i["in_use"], i["lost_on"], i["moved_on"]) for i in data["images"]] == [
        (tid, "0xe7", [1], []) for tid in (6785, 6788, 6786, 6787)
    ]


def test_core_against_intel_says_where_state_moves() -> None:
    text = run("compat", str(CORE), "intel").stdout.decode()
    assert (
        "places elsewhere: opmask 832+64 -> 1088+64, zmm_hi256 896+512 -> 1152+512,"
        " hi16_zmm 1408+1024 -> 1664+1024"
    ) in text


def test_core_against_host() -> None:
    """Whatever this machine is: a thread's AVX-512 components are lost where host XCR0
    lacks them, moved where host CPUID places them elsewhere, kept otherwise."""
    host = host_or_skip()
    result = compat(resolve_machines([str(CORE), "host"]))
    assert len(result.images) == 4
    lacking = elsewhere = 0
    for i in (5, 6, 7):
        here = host.placement(i)
        core = result.machines[0].placement(i)
        if here is None:
            lacking |= 1 << i
        elif here != core:
            elsewhere |= 1 << i
    for check in result.images:
        assert check.lost == (((1, lacking),) if lacking else ())
        assert check.moved == (((1, elsewhere),) if elsewhere else ())


# ---- bad machine descriptions ------------------------------------------------------------------


def test_bad_descriptions_are_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\nworld\n")
    assert one_line_error(run("compat", str(text), "intel")) == (
        f"xcr0tool: {text}: not a machine description (a CPUID dump, a layout, a Firecracker"
        " fingerprint, rr traceinfo JSON, an rr trace, a CRIU cpuinfo.img or an ELF core)"
    )
    no_0d = tmp_path / "no0d.txt"
    no_0d.write_text(
        "CPUID 00000000: 0000000B-756E6547-6C65746E-49656E69\n"
        "CPUID 00000001: 000006F6-00020800-0000E3BD-BFEBFBFF\n"
    )
    assert one_line_error(run("compat", str(no_0d), "intel")) == (
        f"xcr0tool: {no_0d}: a CPUID dump without leaf 0xD: it says nothing of XSAVE"
    )
    empty_dir = tmp_path / "trace"
    empty_dir.mkdir()
    assert one_line_error(run("compat", str(empty_dir), "intel")) == (
        f"xcr0tool: {empty_dir}: a directory, but not an rr trace (no version file) nor a"
        " CRIU image directory (no cpuinfo.img)"
    )
    assert one_line_error(run("compat", "zen9", "intel")) == (
        "xcr0tool: zen9: no such file, and not host or a built-in profile (intel,"
        " intel-client, amd-zen3, amd-zen4, amd-zen5, amd, zen3, zen4, zen5)"
    )
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    assert one_line_error(run("compat", str(other), "intel")) == (
        f"xcr0tool: {other}: JSON, but not a layout file, a Firecracker fingerprint or"
        " `rr traceinfo` output"
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"xcr0": 7, "cpuidRecords": [[1, 2, 3]]}')
    assert one_line_error(run("compat", str(broken), "intel")) == (
        f"xcr0tool: {broken}: cpuidRecords[0] is not six 32-bit numbers [eax_in, ecx_in, ...]"
    )
    holes = tmp_path / "holes.txt"
    holes.write_text(
        "CPUID 0000000D: 000000E7-00000A80-00000A80-00000000 [SL 00]\n"
        "CPUID 0000000D: 00000100-00000240-00000000-00000000 [SL 02]\n"
    )
    assert one_line_error(run("compat", str(holes), "intel")) == (
        f"xcr0tool: {holes}: sub-leaf 0 says component 5 exists, but the dump lacks sub-leaf 5"
        " (0x5) and its place cannot be inferred"
    )
    records = [[1, 0, 0x806F8, 0, 1 << 27, 0], [0xD, 0, 0xE7, 0xA80, 0xA80, 0]]
    unplaced = tmp_path / "unplaced.json"
    unplaced.write_text(json.dumps({"xcr0": 0xE7, "cpuidRecords": records}))
    assert one_line_error(run("compat", str(unplaced), "intel")) == (
        f"xcr0tool: {unplaced}: XCR0 0xe7 has components 2 (ymm), 5 (opmask), 6 (zmm_hi256),"
        f" 7 (hi16_zmm) but the CPUID rr recorded (rr traceinfo {unplaced}) does not place"
        " them (no CPUID leaf 0xD sub-leaf)"
    )
    result = run("compat", "intel")
    assert result.returncode == 2 and b"at least two" in result.stderr


def test_a_huge_description_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with big.open("wb") as handle:
        handle.truncate((4 << 20) + 10)
    line = one_line_error(run("compat", str(big), "intel"))
    assert line == f"xcr0tool: {big}: over {4 << 20} bytes: too large for a machine description"


# ---- output ------------------------------------------------------------------------------------


def test_json_schema() -> None:
    result = run("compat", "--json", "amd-zen4", "intel")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert set(data) == {
        "schema", "machines", "portable_xcr0", "components", "rr", "criu", "images",
        "advice", "warnings",
    }  # fmt: skip
    assert data["schema"] == 1
    assert set(data["machines"][0]) == {
        "source", "name", "xcr0", "xcr0_source", "xcr0_capable", "standard_size", "xsavec",
        "xsaves",
    }  # fmt: skip
    assert data["portable_xcr0"] == "0x7"
    assert data["machines"][0]["xcr0"] == "0x2e7" and data["machines"][1]["xcr0"] == "0x602e7"
    opmask = next(c for c in data["components"] if c["id"] == 5)
    assert opmask == {
        "id": 5,
        "name": "opmask",
        "same": False,
        "on": [
            {"size": 64, "offset": 832, "aligned": False},
            {"size": 64, "offset": 1088, "aligned": False},
        ],
    }
    assert data["rr"][0] == {
        "recorded_on": 0,
        "replayed_on": 1,
        "replays": False,
        "fatal_feature": 5,
        "message": "XSAVE offset/size/alignment differs for feature 5; H. Peter Anvin said"
        " this would never happen!",
        "warnings": [
            "Trace XCR0 value 0x2e7 != our XCR0 value 0x602e7; Replay will probably fail"
            " because glibc dynamic loader examines XCR0"
        ],
    }
    assert data["criu"][0] == {
        "dumped_on": 0,
        "restored_on": 1,
        "restores": False,
        "reason": "CPU xsave size mismatch (2440/11008)",
    }
    assert any("clearcpuid=avx512f,pku" in a for a in data["advice"])


def test_the_same_machine_twice_is_portable() -> None:
    result = run("compat", "intel", "intel")
    assert result.returncode == 0
    assert "portable XCR0: 0x602e7" in result.stdout.decode()


def test_text_is_golden() -> None:
    text = compat_text(compat(resolve_machines(["amd-zen4", "intel-client"])))
    golden = GOLDEN / "compat-zen4-client.txt"
    if os.environ.get("XCR0TOOL_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), "XCR0TOOL_UPDATE_GOLDEN=1 rewrites tests/golden/"


def test_terminal_view() -> None:
    view = compat_view(compat(resolve_machines(["amd-zen4", "intel"])))
    assert view.terminal is not None
    shown = view.terminal(Screen(160, colour=False))
    assert "portable XCR0: 0x7" in shown
    assert "FATAL at feature 5" in shown


def test_json_matches_the_result() -> None:
    result = compat(resolve_machines(["amd-zen3", "amd-zen4", "intel-client"]))
    data = compat_json(result)
    assert len(data["rr"]) == len(data["criu"]) == 6  # type: ignore[arg-type]


# ---- portable XCR0: properties --------------------------------------------------------------

GROUPS = (0b10, 0b100, 0b11000, 0b11100000, 1 << 9, 0b11 << 17, 1 << 19)


@st.composite
def machines(draw: st.DrawFn) -> list[Machine]:
    """2-4 machines with XCR0s XSETBV accepts and random places for their components."""
    out = []
    for index in range(draw(st.integers(2, 4))):
        xcr0 = 1
        for group in GROUPS:
            if draw(st.booleans()):
                xcr0 |= group
        if xcr0 & 0b100:
            xcr0 |= 0b10
        if xcr0 & 0b11100000:
            xcr0 |= 0b110
        table = {}
        for i in bits(xcr0):
            if i >= 2:
                size = draw(st.sampled_from([8, 64, 256]))
                offset = draw(st.sampled_from([576, 832, 1088, 2432]))
                aligned = draw(st.booleans())
                table[(0xD, i)] = (size, offset, 2 if aligned else 0, 0)
        out.append(Machine(f"m{index}", f"m{index}", "test", xcr0, "drawn", table, "drawn"))
    return out


@settings(max_examples=150)
@given(machines())
def test_portable_xcr0_is_valid_common_and_placed_alike(drawn: list[Machine]) -> None:
    portable = portable_xcr0(drawn)
    assert xcr0_allowed(portable)
    for m in drawn:
        assert portable & ~m.xcr0 == 0
    for i in bits(portable):
        assert len({m.placement(i) for m in drawn}) == 1


@settings(max_examples=150)
@given(st.sets(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 18, 19, 62, 63]), max_size=13))
def test_largest_valid_subset_is_the_largest(chosen: set[int]) -> None:
    candidate = sum(1 << b for b in chosen)
    found = largest_valid_subset(candidate)
    subsets = (
        sum(1 << b for b in combo)
        for size in range(len(chosen) + 1)
        for combo in itertools.combinations(sorted(chosen), size)
    )
    valid = [s for s in subsets if xcr0_allowed(s)]
    best = max(valid, key=lambda s: bin(s).count("1"), default=0)
    assert found == best
    assert all(s & ~found == 0 for s in valid)  # the largest holds every valid one


def test_images_on_a_machine() -> None:
    zen4 = resolve_machine("amd-zen4")
    saved = Machine(
        "core", "core", "core", zen4.xcr0, "test", zen4.cpuid, "test",
        images=(InUse(7, 0b111, "thread 7"), InUse(8, 0b11100111, "thread 8")),
    )  # fmt: skip
    result = compat([saved, resolve_machine("amd-zen3"), resolve_machine("intel")])
    first, second = result.images
    assert (first.lost_on, first.moved_on) == ((), ())
    assert (second.lost_on, second.moved_on) == ((1,), (2,))


def test_machine_xcr0_rules_are_enforced() -> None:
    bad = Machine("x", "x", "test", 0b101, "test", {(0xD, 2): (256, 576, 0, 0)}, "test")
    with pytest.raises(InputError, match=r"AVX \(bit 2\) needs SSE"):
        compat([bad, resolve_machine("intel")])


def test_replaying_where_xsavec_is_not_known() -> None:
    """A core says nothing of XSAVEC: rr's XSAVEC warning and its alignment comparison
    are left open, and said so, rather than decided."""
    result = compat(resolve_machines(["amd-zen4", str(CORE)]))
    rr = verdict(result, "rr", 0, 1)
    assert rr.replays  # type: ignore[attr-defined]  # the core has no PKRU in XCR0
    (unknown,) = [w for w in rr.warnings if "XSAVEC" in w]  # type: ignore[attr-defined]
    assert unknown.startswith(
        "linux-amd-avx512bw-4t.core's description has no CPUID.(0xD,1): whether it has"
        " XSAVEC is not known"
    )
    criu = verdict(result, "criu", 1, 0)
    assert criu.restores is False  # type: ignore[attr-defined]
    assert criu.reason == "CPU xsave size mismatch (2432/2440)"  # type: ignore[attr-defined]


def test_unknown_criu_facts_are_named() -> None:
    result = compat(resolve_machines([str(CORE), str(CORE)]))
    criu = verdict(result, "criu", 0, 1)
    assert (criu.restores, criu.reason) == (  # type: ignore[attr-defined]
        None,
        "not known: the fpu/fxsr/osxsave/xsaves bits of linux-amd-avx512bw-4t.core and"
        " linux-amd-avx512bw-4t.core; xsave_size_max of linux-amd-avx512bw-4t.core and"
        " linux-amd-avx512bw-4t.core",
    )
