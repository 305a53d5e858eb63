"""The construct grammars declare the bytes; the hot paths read them by slicing. Both
readings must agree, on any bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xcr0tool.arch import offsets
from xcr0tool.arch.components import CATALOGUE
from xcr0tool.formats.xsave import (
    FP_XSTATE_MAGIC1,
    component_grammar,
    legacy_region,
    ptrace_sw_bytes,
    signal_sw_bytes,
    xsave_header,
    xtilecfg,
)
from xcr0tool.layouts.profiles import profile_layout
from xcr0tool.model.image import XsaveImage
from xcr0tool.model.layout import ComponentLayout, layout_from_components
from xcr0tool.model.registers import component_fields, register_map
from xcr0tool.model.sigframe import signal_frame_info

EXTENDED = [c for c in CATALOGUE if c.id >= 2]


def image_of(data: bytes, xcr0: int, long_mode: bool = True) -> XsaveImage:
    return XsaveImage(data, profile_layout("intel"), "test", xcr0, "test", long_mode=long_mode)


@settings(max_examples=50)
@given(st.binary(min_size=576, max_size=576), st.booleans())
def test_legacy_registers_equal_the_grammar(data: bytes, long_mode: bool) -> None:
    header = bytearray(data)
    header[512:520] = (0b11).to_bytes(8, "little")  # x87 and SSE in use
    regs = register_map(image_of(bytes(header), 0b11, long_mode))
    parsed = legacy_region(long_mode).parse(bytes(header[:512]))
    assert regs["fctrl"] == parsed.fcw
    assert regs["fstat"] == parsed.fsw
    assert regs["fop"] == parsed.fop & 0x7FF
    assert regs["mxcsr"] == parsed.mxcsr
    assert [regs[f"st{i}"] for i in range(8)] == [slot.raw for slot in parsed.st]
    count = 16 if long_mode else 8
    assert [regs[f"xmm{i}"] for i in range(count)] == list(parsed.xmm[:count])
    if long_mode:
        assert (regs["fiseg"] << 32 | regs["fioff"], regs["foseg"] << 32 | regs["fooff"]) == (
            parsed.fip,
            parsed.fdp,
        )
    else:
        assert (regs["fiseg"], regs["fioff"], regs["foseg"], regs["fooff"]) == (
            parsed.fcs,
            parsed.fip,
            parsed.fds,
            parsed.fdp,
        )


@settings(max_examples=20)
@given(st.data())
def test_component_fields_equal_the_grammar(data: st.DataObject) -> None:
    comp = data.draw(st.sampled_from(EXTENDED))
    # Every catalogue component at its architectural size: compacted images need no more.
    layout = layout_from_components(
        (ComponentLayout(c.id, c.size, None, c.aligned, c.supervisor) for c in EXTENDED),
        "catalogue",
    )
    size = comp.size
    raw = data.draw(st.binary(min_size=size, max_size=size))
    xcomp_bv = 1 << 63 | 1 << comp.id | 0b11
    image_bytes = bytearray(576 + 64 + size)
    image_bytes[512:520] = (1 << comp.id).to_bytes(8, "little")
    image_bytes[520:528] = xcomp_bv.to_bytes(8, "little")
    image = XsaveImage(bytes(image_bytes), layout, "t", 0b11, "t", format="compacted")
    offset = image.offsets[comp.id]
    image_bytes[offset : offset + size] = raw
    image = XsaveImage(bytes(image_bytes), layout, "t", 0b11, "t", format="compacted")
    grammar = component_grammar(comp, size)
    parsed = grammar.parse(raw)
    fields = component_fields(image, comp.id)
    if comp.id == 17:  # TILECFG: one register; its grammar declares palette, rows, colsb
        assert grammar.build(parsed) == raw
        assert fields == {"tilecfg": int.from_bytes(raw, "little")}
        return
    for name, value in fields.items():
        assert parsed[name] == value, name


def test_offsets_are_where_the_grammars_put_them() -> None:
    legacy = legacy_region().subcons
    names = [s.name for s in legacy]
    assert legacy_region().sizeof() == 512 and xsave_header.sizeof() == 64
    assert names.index("mxcsr") and legacy_region().parse(
        bytes(range(256)) * 2
    ).mxcsr == int.from_bytes(bytes(range(256))[offsets.MXCSR : offsets.MXCSR + 4], "little")
    header = bytearray(576)
    header[offsets.XSTATE_BV] = 0x07
    header[offsets.XCOMP_BV + 7] = 0x80
    parsed = xsave_header.parse(bytes(header[512:]))
    assert parsed.xstate_bv.ymm and parsed.xcomp_bv.compacted
    assert ptrace_sw_bytes.sizeof() == signal_sw_bytes.sizeof() == 48 == 512 - offsets.SW_BYTES
    assert xtilecfg.sizeof() == 64


def test_signal_frame_sw_bytes_agree() -> None:
    frame = bytearray(2700)
    sw = signal_sw_bytes.build(
        {"extended_size": 2692, "xfeatures": 0xE7, "xstate_size": 2688, "padding": bytes(28)}
    )
    frame[offsets.SW_BYTES : offsets.SW_BYTES + 48] = sw
    frame[2688:2692] = offsets.FP_XSTATE_MAGIC2.to_bytes(4, "little")
    info = signal_frame_info(bytes(frame))
    assert info is not None and info.magic2_ok
    assert (info.extended_size, info.xfeatures, info.xstate_size) == (2692, 0xE7, 2688)
    assert int.from_bytes(sw[:4], "little") == FP_XSTATE_MAGIC1
