"""Layouts against real CPUs: every size we compute must equal what CPUID itself reports.

The CPUID dumps are third-party data (InstLatx64), read from the directory named by
XCR0TOOL_CPUID_CORPUS; .ci/run points it at the shared corpus.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from xcr0tool.arch.components import bits
from xcr0tool.errors import InputError, LayoutError
from xcr0tool.formats.cpuid_dump import missing_subleaves, parse_cpuid_dump
from xcr0tool.layouts.files import load_layout_file
from xcr0tool.layouts.profiles import PROFILES, guess_layout, profile_layout
from xcr0tool.model.layout import (
    layout_from_cpuid,
    layout_from_json,
    layout_from_note,
    note_from_layout,
)

CORPUS = os.environ.get("XCR0TOOL_CPUID_CORPUS")
needs_corpus = pytest.mark.skipif(
    not CORPUS, reason="XCR0TOOL_CPUID_CORPUS is not set (a directory of real CPUID dumps)"
)


def corpus_dumps() -> list[Path]:
    return sorted(Path(CORPUS).glob("*.txt")) if CORPUS else []


def user_subsets(capable: int) -> list[int]:
    """Plausible enabled XCR0 values: the capable user bits, less any optional group."""
    groups = [0b100, 0b11000, 0b11100000, 1 << 9, 0b11 << 17, 1 << 19, 1 << 62]
    present = [g for g in groups if capable & g]
    out = []
    for drop in itertools.product((False, True), repeat=len(present)):
        value = capable
        for group, dropped in zip(present, drop, strict=True):
            if dropped:
                value &= ~group
        out.append(value)
    return out


@needs_corpus
def test_sizes_equal_cpuid_for_real_cpus() -> None:
    checked = []
    for dump in corpus_dumps():
        leaves = parse_cpuid_dump(dump.read_text(errors="replace"), dump.name)
        if missing_subleaves(leaves):
            continue  # e.g. Vishera: LWP's sub-leaf 62 is not in the dump
        layout = layout_from_cpuid(leaves, dump.name)
        eax, ebx, ecx, edx = leaves[0]
        capable = eax | edx << 32
        # ECX: the size for every XCR0-capable feature.
        assert layout.standard_size(capable) == ecx, dump.name
        # EBX: the size for the XCR0 enabled when dumped (not in the dump: find it).
        enabled = [x for x in user_subsets(capable) if layout.standard_size(x) == ebx]
        assert enabled, f"{dump.name}: no enabled XCR0 gives EBX {ebx}"
        sub1 = leaves.get(1)
        if sub1 and sub1[0] & 0b10 and sub1[1]:
            # Sub-leaf 1 EBX: compacted size of XCR0 | IA32_XSS as enabled when dumped.
            xss_capable = sub1[2] | sub1[3] << 32
            xss_known = [i for i in bits(xss_capable) if i in layout.ids]
            sizes = {
                layout.compacted_size(xcr0 | sum(1 << i for i in chosen))
                for xcr0 in enabled
                for n in range(len(xss_known) + 1)
                for chosen in itertools.combinations(xss_known, n)
            }
            assert sub1[1] in sizes, f"{dump.name}: compacted size {sub1[1]} not reproduced"
        checked.append(dump.name)
    assert len(checked) >= 10, checked
    assert any("AMD" in n for n in checked) and any("SapphireRapids" in n for n in checked)


@needs_corpus
@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_profiles_are_copied_from_the_dumps_they_name(profile: object) -> None:
    for dump_name, lines in profile.dumps:  # type: ignore[attr-defined]
        real = parse_cpuid_dump((Path(CORPUS) / dump_name).read_text(errors="replace"), dump_name)  # type: ignore[arg-type]
        ours = parse_cpuid_dump(lines, "profile")
        for subleaf, regs in ours.items():
            assert real[subleaf] == regs, (dump_name, subleaf)


def test_intel_profile_keeps_the_holes() -> None:
    intel = profile_layout("intel")
    assert intel.standard_offsets(0x2FF) == {
        0: 0, 1: 160, 2: 576, 3: 960, 4: 1024, 5: 1088, 6: 1152, 7: 1664, 9: 2688,
    }  # fmt: skip
    assert intel.standard_size(0x602E7) == 11008
    # On Intel the compacted offsets of opmask, ZMM and PKRU equal AMD's standard ones.
    amd = profile_layout("amd-zen4")
    compacted = intel.compacted_offsets(0x2E7)
    assert [compacted[i] for i in (5, 6, 7, 9)] == [
        amd.require(i).standard_offset for i in (5, 6, 7, 9)
    ]
    assert intel.compacted_offsets(0x602E7)[17] == 2496  # rounded up to 64
    assert intel.compacted_size(0x602E7) == 2496 + 64 + 8192


def test_aida64_dump_without_sub_leaf_labels() -> None:
    text = (
        "CPUID 0000000D: 00000007-00000340-00000340-00000000\n"
        "CPUID 0000000D: 00000100-00000240-00000000-00000000\n"
        "CPUID 0000000D: 00000007-00000340-00000340-00000000\n"
    )
    leaves = parse_cpuid_dump(text, "sandy.txt")
    assert sorted(leaves) == [0, 2]
    assert layout_from_cpuid(leaves, "x").standard_size(0x7) == 0x340


def test_unlabelled_unknown_line_is_refused() -> None:
    text = "CPUID 0000000D: 00000007-00000340-00000340-00000000\nCPUID 0000000D: 00000123-00000456-00000000-00000000\n"
    with pytest.raises(LayoutError, match=r"^x.txt: line 2: a leaf 0xD line without \[SL nn\]"):
        parse_cpuid_dump(text, "x.txt")


def test_cpuid_r_format_first_cpu_only(tmp_path: Path) -> None:
    text = """CPU 0:
   0x0000000d 0x00: eax=0x000000e7 ebx=0x00000980 ecx=0x00000980 edx=0x00000000
   0x0000000d 0x01: eax=0x0000000f ebx=0x000009a8 ecx=0x00001800 edx=0x00000000
   0x0000000d 0x02: eax=0x00000100 ebx=0x00000240 ecx=0x00000000 edx=0x00000000
   0x0000000d 0x05: eax=0x00000040 ebx=0x00000340 ecx=0x00000000 edx=0x00000000
   0x0000000d 0x06: eax=0x00000200 ebx=0x00000380 ecx=0x00000000 edx=0x00000000
   0x0000000d 0x07: eax=0x00000400 ebx=0x00000580 ecx=0x00000000 edx=0x00000000
   0x0000000d 0x0b: eax=0x00000010 ebx=0x00000000 ecx=0x00000001 edx=0x00000000
CPU 1:
   0x0000000d 0x00: eax=0x00000007 ebx=0x00000340 ecx=0x00000340 edx=0x00000000
"""
    path = tmp_path / "cpuid-r.txt"
    path.write_text(text)
    layout = load_layout_file(str(path))
    assert layout.source == f"CPUID dump {path}"
    assert layout.standard_size(0xE7) == 2432
    assert layout.compacted_size(0xE7 | 1 << 11) == 0x9A8 - 24  # XSS here: CET_U only
    assert layout.require(11).supervisor and layout.require(11).standard_offset is None


def test_json_layout_round_trip(tmp_path: Path) -> None:
    for profile in PROFILES:
        layout = profile_layout(profile.name)
        path = tmp_path / f"{profile.name}.json"
        path.write_text(json.dumps(layout.to_json()))
        again = load_layout_file(str(path))
        assert again.components == layout.components
        assert again.source == f"layout file {path} ({layout.source})"


def test_layout_file_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{ nope")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(InputError, match=r"bad.json: not valid JSON"):
        load_layout_file(str(tmp_path / "bad.json"))
    with pytest.raises(InputError, match=r"notes.txt: no CPUID leaf 0xD sub-leaf 0 found"):
        load_layout_file(str(tmp_path / "notes.txt"))
    with pytest.raises(InputError, match=r"missing.txt: no such file"):
        load_layout_file(str(tmp_path / "missing.txt"))
    with pytest.raises(InputError, match=r"is a directory"):
        load_layout_file(str(tmp_path))


def test_note_round_trip_and_refusals() -> None:
    intel = profile_layout("intel")
    note = note_from_layout(intel, 0x602E7)
    assert len(note) == 16 * 7  # components 2, 5, 6, 7, 9, 17, 18
    back = layout_from_note(note, "note")
    assert back.standard_offsets(0x602E7) == intel.standard_offsets(0x602E7)
    assert back.compacted_offsets(0x602E7) == intel.compacted_offsets(0x602E7)
    with pytest.raises(LayoutError, match="not a whole number of 16-byte records"):
        layout_from_note(note[:-1], "note")
    with pytest.raises(LayoutError, match=r"record 0 is not a user component \(type 1"):
        layout_from_note((1).to_bytes(4, "little") + bytes(12), "note")


def test_guess_names_itself_and_refuses_ambiguity() -> None:
    amd = guess_layout(0xE7, 2432, "img")
    assert amd.source.startswith("guess from XCR0 0xe7 and 2432 bytes: built-in profile amd-zen4")
    intel = guess_layout(0x2E7, 2696, "img")
    assert intel.name == "intel"
    with pytest.raises(LayoutError, match=r"img: no built-in layout has 2500 bytes for XCR0 0xe7"):
        guess_layout(0xE7, 2500, "img")
    # Two layouts that fit the size but place opmask differently: refuse to choose.
    twisted = layout_from_json(
        {
            "components": [
                {"id": 2, "size": 256, "offset": 576},
                {"id": 5, "size": 64, "offset": 2368},
                {"id": 6, "size": 512, "offset": 832},
                {"id": 7, "size": 1024, "offset": 1344},
            ]
        },
        "twisted",
    )
    with pytest.raises(LayoutError, match=r"img: two layouts fit XCR0 0xe7 and 2432 bytes"):
        guess_layout(0xE7, 2432, "img", [profile_layout("amd-zen4"), twisted])


def test_guess_reads_an_image_in_the_buffer_of_a_larger_xcr0() -> None:
    """An image's size may be the standard size of a larger XCR0 (the kernel's user size,
    `mask --keep-size`): 2696 bytes of XCR0 0xe7 is Intel's buffer with room for PKRU
    (AMD's is 2440), so Intel's offsets, and the source says which XCR0's buffer it is.
    A machine's size (buffer=False, CRIU's xsave_size) stays exact."""
    intel = guess_layout(0xE7, 2696, "img", buffer=True)
    assert intel.name == "intel"
    assert intel.source.startswith(
        "guess from XCR0 0xe7 and 2696 bytes, the standard size of XCR0 0x2e7 there (a buffer"
        " for more components: the last 8 bytes are not read): built-in profile intel"
    ), intel.source
    amd = guess_layout(0xE7, 2440, "img", buffer=True)
    assert amd.name == "amd-zen4" and "XCR0 0x2e7" in amd.source and "amd-zen5 agree" in amd.source
    # AMX: Sapphire Rapids' 11008 bytes (XCR0 0x602e7), masked to AVX-512.
    assert guess_layout(0xE7, 11008, "img", buffer=True).name == "intel"
    with pytest.raises(LayoutError, match=r"img: no built-in layout has 2696 bytes for XCR0 0xe7"):
        guess_layout(0xE7, 2696, "img")
    with pytest.raises(LayoutError, match=r"img: no built-in layout has 2500 bytes for XCR0 0xe7"):
        guess_layout(0xE7, 2500, "img", buffer=True)
    # An exact fit wins over a buffer: 2688 bytes of XCR0 0xe7 is Intel's own size.
    assert "standard size of XCR0" not in guess_layout(0xE7, 2688, "img", buffer=True).source
    # Two buffers of the same size that place the image's components differently.
    twisted = layout_from_json(
        {
            "components": [
                {"id": 2, "size": 256, "offset": 576},
                {"id": 5, "size": 64, "offset": 2368},
                {"id": 6, "size": 512, "offset": 832},
                {"id": 7, "size": 1024, "offset": 1344},
                {"id": 9, "size": 8, "offset": 2432},
            ]
        },
        "twisted",
    )
    with pytest.raises(LayoutError, match=r"img: two layouts fit XCR0 0xe7 and 2440 bytes"):
        guess_layout(0xE7, 2440, "img", [profile_layout("amd-zen4"), twisted], buffer=True)


def test_supervisor_has_no_standard_offset() -> None:
    intel = profile_layout("intel")
    with pytest.raises(LayoutError, match=r"component 11 \(cet_u\) is a supervisor component"):
        intel.standard_size(0x7 | 1 << 11)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[]", 'expected {"components": [...]}'),
        ('{"components": [{"id": 2}]}', "component 0 needs integer 'id' and 'size'"),
        (
            '{"components": [{"id": 70, "size": 8}]}',
            "component 0: component 70 is not an extended state component (2-62)",
        ),
        ('{"components": [], "xcr0_capable": "lots"}', "xcr0_capable 'lots' is not a 64-bit mask"),
        # Found by fuzzing: a user component with no offset was refused later, by whatever
        # asked for its offset, in words that named no file.
        (
            '{"components": [{"id": 2, "size": 256, "offset": null}]}',
            "component 0: component 2 (ymm): no standard offset, which only a supervisor"
            " component lacks",
        ),
    ],
)
def test_bad_layout_files(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(LayoutError) as caught:
        load_layout_file(str(path))
    assert str(caught.value) == f"layout file {path}: not a layout file: {problem}"
