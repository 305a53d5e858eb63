"""The one legacy-region field table (xcr0tool/arch/legacy.py) and everything derived
from it: the offsets, the construct grammar, gdb's register names in registers.py,
diff's byte places and the ranges the transforms copy. Each test would fail if a second
copy of a fact reappeared and disagreed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xcr0tool.arch import legacy, offsets
from xcr0tool.formats.xsave import legacy_region, xsave_header
from xcr0tool.layouts.profiles import profile_layout
from xcr0tool.model.image import XsaveImage
from xcr0tool.model.registers import registers
from xcr0tool.ops import transforms
from xcr0tool.ops.diff import byte_places

PACKAGE = Path(legacy.__file__).resolve().parent.parent
FORMS = [True, False]


@pytest.mark.parametrize("long_mode", FORMS)
def test_the_table_covers_512_bytes_in_order(long_mode: bool) -> None:
    end = 0
    for row in legacy.fields(long_mode):
        assert row.offset == end, row
        end = row.end
    assert end == 512
    assert [row.offset for row in legacy.HEADER] == [512, 520, 528]
    assert legacy.HEADER[-1].end == 576


@pytest.mark.parametrize("long_mode", FORMS)
def test_grammar_members_sit_at_the_table_offsets(long_mode: bool) -> None:
    grammar = legacy_region(long_mode)
    assert grammar.sizeof() == 512
    at = 0
    placed = {}
    for member in grammar.subcons:
        if member.name is not None:
            placed[member.name] = (at, member.sizeof())
        at += member.sizeof()
    for row in legacy.fields(long_mode):
        if row.grammar is None:
            continue
        start, size = placed[row.grammar]
        first = legacy.field(row.grammar, long_mode)
        assert start == first.offset, row.grammar
        assert start <= row.offset and row.end <= start + size, row
    header_at = 512
    for member, row in zip(xsave_header.subcons, legacy.HEADER, strict=True):
        assert (member.name, header_at, member.sizeof()) == (row.grammar, row.offset, row.size)
        header_at += member.sizeof()


def test_offsets_are_the_tables() -> None:
    expected = {
        "FCW": ("fcw", True), "FSW": ("fsw", True), "ABRIDGED_FTW": ("abridged_ftw", True),
        "FOP": ("fop", True), "FIP": ("fip", True), "FDP": ("fdp", True),
        "FCS_32": ("fcs", False), "FDS_32": ("fds", False), "MXCSR": ("mxcsr", True),
        "MXCSR_MASK": ("mxcsr_mask", True), "ST0": ("st", True), "XMM0": ("xmm", True),
        "SW_BYTES": ("sw_reserved", True), "XSTATE_BV": ("xstate_bv", True),
        "XCOMP_BV": ("xcomp_bv", True), "HEADER_RESERVED": ("reserved", True),
    }  # fmt: skip
    for name, (grammar, long_mode) in expected.items():
        rows = legacy.HEADER if name in ("XSTATE_BV", "XCOMP_BV", "HEADER_RESERVED") else None
        row = (
            next(r for r in rows if r.grammar == grammar)
            if rows
            else legacy.field(grammar, long_mode)
        )
        assert getattr(offsets, name) == row.offset, name
    assert legacy.field("st").stride == offsets.ST_STRIDE


def _image(data: bytes, long_mode: bool) -> XsaveImage:
    header = bytearray(data)
    header[512:520] = (0b11).to_bytes(8, "little")  # x87 and SSE in use
    header[520:576] = bytes(56)
    return XsaveImage(bytes(header), profile_layout("intel"), "t", 0b11, "t", long_mode=long_mode)


@settings(max_examples=30)
@given(st.binary(min_size=576, max_size=576), st.booleans())
def test_registers_read_where_the_table_says(data: bytes, long_mode: bool) -> None:
    """Every gdb register the table names reads the table's bytes (ftag and fop as gdb
    computes them from those bytes)."""
    image = _image(data, long_mode)
    regs = {r.name: r for r in registers(image)}
    for row in legacy.fields(long_mode):
        for at, _name, register in row.slots():
            if register is None or register in ("ftag", "fop"):
                continue
            raw = int.from_bytes(image.data[at : at + row.size], "little")
            assert regs[register].value == raw, register
            assert regs[register].size == (row.register_size or row.size), register
    assert regs["fop"].value == int.from_bytes(image.data[6:8], "little") & 0x7FF
    named = {r for row in legacy.fields(long_mode) for _, _, r in row.slots() if r}
    legacy_regs = {r.name for r in registers(image) if r.component in (0, 1)}
    assert named == legacy_regs
    assert set(legacy.X87_CONTROL_ORDER) <= named


@pytest.mark.parametrize("long_mode", FORMS)
def test_diff_places_are_the_tables(long_mode: bool) -> None:
    image = _image(bytes(576), long_mode)
    places = byte_places(image)
    for row in legacy.fields(long_mode):
        for at, name, register in row.slots():
            for byte in range(at, at + row.size):
                assert places[byte].field == name, byte
                assert places[byte].register == register, byte
                assert places[byte].component == row.component, byte
    for row in legacy.HEADER:
        assert places[row.offset].field == row.name


def test_transforms_copy_the_ranges_the_table_gives() -> None:
    x87 = legacy.owned(legacy.X87)
    sse = legacy.owned(legacy.SSE)
    as_ranges = [(s.start, s.stop) for s in (transforms.X87_CONTROL, transforms.X87_REGISTERS)]
    assert as_ranges == list(x87) == [(0, 24), (32, 160)]
    as_ranges = [(s.start, s.stop) for s in (transforms.MXCSR_FIELDS, transforms.XMM_REGISTERS)]
    assert as_ranges == list(sse) == [(24, 32), (160, 416)]


def test_no_second_copy_of_the_gdb_names() -> None:
    """The x87 control register names live in the table; other modules take them from
    it (the renderer describes values by name, which is presentation)."""
    holders = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if '"fioff"' in path.read_text() or '"fiseg"' in path.read_text()
    }
    assert holders == {"arch/legacy.py"}
