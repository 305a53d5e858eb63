"""Each fact once: the Layout (immutable, hashable, one meaning of "same"), one size
algorithm, one host layout, one TILECFG decoder, one signal-frame check, one MXCSR
predicate, kinds as str enums, errors with fields. Each test fails if a second copy of
the fact reappears or the copies disagree."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import xcr0tool
from xcr0tool.arch import tilecfg
from xcr0tool.errors import HostUnavailable, LayoutError, XcrError
from xcr0tool.formats.cpuid_dump import parse_cpuid_dump
from xcr0tool.formats.xsave import xtilecfg
from xcr0tool.layouts.profiles import PROFILES, profile_layout
from xcr0tool.model.image import ImageFormat
from xcr0tool.model.layout import ComponentLayout, Layout, layout_from_cpuid
from xcr0tool.ops import transforms
from xcr0tool.ops.diff import DiffStatus
from xcr0tool.ops.validate import Severity
from xcr0tool.render.host import ComponentState
from xcr0tool.render.values import describe
from xcr0tool.sources import cpu
from xcr0tool.sources.open import SourceKind

PACKAGE = Path(xcr0tool.__file__).resolve().parent


def holders(pattern: str) -> set[str]:
    """The modules whose source matches the regular expression."""
    found = re.compile(pattern)
    return {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if found.search(path.read_text())
    }


# Layout ----------------------------------------------------------------------------------
def test_a_cached_profile_cannot_be_changed_by_a_caller() -> None:
    intel = profile_layout("intel")
    assert profile_layout("intel") is intel
    with pytest.raises(dataclasses.FrozenInstanceError):
        intel.source = "mine"  # type: ignore[misc]
    assert isinstance(intel.components, tuple)
    with pytest.raises(TypeError):
        intel.components[0] = intel.components[1]  # type: ignore[index]
    with pytest.raises(TypeError):
        intel._index[5] = intel.components[0]  # type: ignore[index]
    with pytest.raises(AttributeError):  # a NamedTuple (FrozenInstanceError is one too)
        intel.components[0].size = 1  # type: ignore[misc]


def test_equal_means_same_places_and_sizes() -> None:
    intel = profile_layout("intel")
    renamed = intel.with_source("elsewhere")
    assert renamed == intel and hash(renamed) == hash(intel)
    assert {intel: 1}[renamed] == 1
    zen4 = profile_layout("amd-zen4")
    assert zen4 != intel
    moved = Layout("x", tuple(e._replace(size=e.size) for e in zen4.components))
    assert moved == zen4
    shifted = Layout(
        "x",
        tuple(
            e._replace(standard_offset=e.standard_offset + 64)
            if e.id == 9 and e.standard_offset is not None
            else e
            for e in zen4.components
        ),
    )
    assert shifted != zen4


def test_plans_are_shared_by_equal_layouts_and_no_key_workaround_is_left() -> None:
    assert not holders(r"_LayoutKey")
    intel = profile_layout("intel")
    transforms._plan.cache_clear()
    transforms._plan(intel, False, 0xE7, intel, True, 0xE7)
    transforms._plan(intel.with_source("copy"), False, 0xE7, intel, True, 0xE7)
    assert transforms._plan.cache_info().hits == 1


def test_layout_lists_extended_components_only() -> None:
    with pytest.raises(ValueError, match="extended components only"):
        Layout("x", (ComponentLayout(1, 256, 160, False, False),))


# One size algorithm, one host layout --------------------------------------------------------
def test_one_size_algorithm() -> None:
    """sources/cpu.py's sizes are Layout's, for every profile's CPUID lines; the alignment
    step of the compacted format is written once."""
    for profile in PROFILES:
        leaves: dict[int, tuple[int, int, int, int]] = {}
        for dump, lines in reversed(profile.dumps):
            leaves.update(parse_cpuid_dump(lines, dump))
        layout = layout_from_cpuid(leaves, "t")
        capable = layout.xcr0_capable
        assert capable is not None
        assert cpu.standard_size(leaves, capable) == layout.standard_size(capable)
        known = layout.known_mask()
        assert cpu.compacted_size(leaves, known) == layout.compacted_size(known)
    assert holders(r"(cursor|offset) = \((cursor|offset) \+ 63\) & ~63") == {"model/layout.py"}


def test_one_host_layout() -> None:
    from xcr0tool.sources import hostinfo, open

    try:
        here = hostinfo.host_layout()
    except HostUnavailable as exc:
        pytest.skip(f"this machine cannot be asked: {exc}")
    assert open.host_layout() is here
    info = hostinfo.gather_host_info()
    assert info.layout == here and info.layout.source.startswith("CPUID leaf 0xD of ")
    assert holders(r"layout_from_cpuid\((cpu\.)?leaf_0d\(\)|layout_from_cpuid\(info\.") == set()


def test_host_unavailable_is_what_no_host_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "is_x86_64_linux", lambda: False)
    with pytest.raises(HostUnavailable):
        cpu.cpuid(0)
    assert issubclass(HostUnavailable, XcrError)
    # "except XcrError" meaning "no host" is gone; only the CLI's last net catches it all
    assert holders(r"except XcrError") == {"cli/main.py"}


def test_layout_error_has_fields() -> None:
    error = LayoutError("a.json", "not a layout file: x")
    assert (error.source, error.problem, str(error)) == (
        "a.json",
        "not a layout file: x",
        "a.json: not a layout file: x",
    )
    assert str(LayoutError(None, "p")) == "p"
    assert not holders(r"str\(exc\)\.(removeprefix|split)")


# TILECFG, signal frames, MXCSR ---------------------------------------------------------------
@given(st.binary(min_size=64, max_size=64))
def test_one_tilecfg_decoder(raw: bytes) -> None:
    parsed = xtilecfg.parse(raw)
    decoded = tilecfg.decode(raw)
    assert (decoded.palette, decoded.start_row, decoded.reserved) == (
        parsed.palette,
        parsed.start_row,
        parsed.reserved,
    )
    assert decoded.colsb == tuple(parsed.colsb) and decoded.rows == tuple(parsed.rows)


def test_tilecfg_is_decoded_in_one_place() -> None:
    assert not holders(r"xtilecfg\.parse")
    assert holders(r"def problems\(cfg") == {"arch/tilecfg.py"}
    assert not holders(r"component_id == 17|== 17\b")


def test_one_signal_frame_check() -> None:
    assert holders(r"is below \{EXTENDED_START\}") == {"model/sigframe.py"}
    assert holders(r"magic2 at byte") == {"model/sigframe.py"}


def test_one_mxcsr_predicate() -> None:
    assert holders(r"MXCSR_INIT = 0x") == {"arch/mxcsr.py"}
    assert holders(r"0b110\b|SSE_AVX =|MXCSR_OWNERS") == set()


def test_no_scattered_component_literals() -> None:
    assert not holders(r"\bi >= 2\b|\bi < 2\b|id >= 2|id < 2|\(6, 7\)")


# Kinds, descriptions ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "member",
    [*ImageFormat, *SourceKind, *Severity, *DiffStatus, *ComponentState],
)
def test_kinds_are_str_enums_whose_json_is_unchanged(member: str) -> None:
    assert isinstance(member, str)
    value = member.value  # type: ignore[attr-defined]
    assert json.dumps({"k": member}) == json.dumps({"k": value})
    assert f"{member}" == str(member) == value


def test_describe_dispatches_on_table_names_not_prefixes() -> None:
    assert describe("st0", 0) == "0"
    assert describe("stale", 0) == describe("st8", 0) == ""
    assert describe("fstat", 3 << 11) == "TOP=3"
    assert describe("tilecfg", 0) == "palette 0 (tiles not configured)"
    cfg = bytes([1, 0]) + bytes(14) + (64).to_bytes(2, "little") + bytes(30) + bytes([16])
    assert describe("tilecfg", int.from_bytes(cfg.ljust(64, b"\0"), "little")).startswith(
        "palette 1, start_row 0, tmm0:16x64B"
    )


# validate as a package -----------------------------------------------------------------------
def test_validate_rules_are_registered_beside_their_checks_citing_a_source() -> None:
    from xcr0tool.ops.validate import RULES

    assert len({r.id for r in RULES}) == len(RULES) == 22
    for r in RULES:
        assert r.check.__module__.rsplit(".", 1)[-1] in ("instructions", "linux", "surprises")
        assert "SDM" in r.source or "Linux" in r.source, r.id
    package = PACKAGE / "ops" / "validate"
    assert all(len(p.read_text().splitlines()) <= 600 for p in package.glob("*.py"))
    # its input reading is the one source reader's
    assert not holders(r"sys\.stdin\.buffer") - {"sources/open.py"}
