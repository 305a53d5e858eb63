"""The construct grammars declare the bytes; the hot paths read them by slicing. Both
readings must agree, on any bytes."""

from __future__ import annotations

from dataclasses import replace

from construct import Container
from hypothesis import given, settings
from hypothesis import strategies as st

from xcr0tool.arch import offsets
from xcr0tool.arch.components import CATALOGUE, COMPACTED_BIT, LEGACY_MASK, component
from xcr0tool.formats.xsave import (
    FP_XSTATE_MAGIC1,
    component_grammar,
    legacy_region,
    ptrace_sw_bytes,
    signal_sw_bytes,
    xsave_header,
    xtilecfg,
)
from xcr0tool.layouts.profiles import PROFILES, profile_layout
from xcr0tool.model.image import COMPACTED, FXSAVE, STANDARD, XsaveImage
from xcr0tool.model.layout import ComponentLayout, Layout, layout_from_components
from xcr0tool.model.registers import (
    component_fields,
    full_tag_word,
    register_map,
    register_values,
    registers,
)
from xcr0tool.model.sigframe import signal_frame_info

EXTENDED = [c for c in CATALOGUE if c.id >= 2]
PROFILE_NAMES = [p.name for p in PROFILES]


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
    # The standard offsets are never used (the image is compacted); a user component must
    # have one all the same, as on every CPU.
    standard = {c.id: None if c.supervisor else 576 for c in EXTENDED}
    layout = layout_from_components(
        (ComponentLayout(c.id, c.size, standard[c.id], c.aligned, c.supervisor) for c in EXTENDED),
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


# Every register of an image, as the grammars read it -------------------------------------
# registers.py plans which bytes make each register once per (layout, format, masks, mode,
# size) and reads them by slicing (the fast path of a many-thread core). Here the same
# registers are read by parsing the image with the construct grammars and assembled as
# gdb's i387_supply_xsave does; both must agree on any bytes, in any format and state,
# including a plan reused for a second image with the same header.
UNKNOWN = 21  # a component the catalogue does not know: one register of all its bytes
LBR = next(c for c in CATALOGUE if c.name == "lbr")


def _synthetic_layout(lbr_size: int, unknown_size: int) -> Layout:
    """Every catalogue component and an unknown one, the user ones placed in turn for
    the standard format; arch LBR at a depth the catalogue does not assume."""
    entries = []
    cursor = 576
    sizes = {c.id: c.size for c in EXTENDED} | {LBR.id: lbr_size, UNKNOWN: unknown_size}
    for comp in [*EXTENDED, component(UNKNOWN)]:
        size = sizes[comp.id]
        offset = None
        if not comp.supervisor:
            cursor = (cursor + 63) & ~63 if comp.aligned else cursor
            offset, cursor = cursor, cursor + size
        entries.append(ComponentLayout(comp.id, size, offset, comp.aligned, comp.supervisor))
    return layout_from_components(entries, "synthetic")


@st.composite
def two_images(draw: st.DrawFn) -> tuple[XsaveImage, XsaveImage]:
    """Two images with one header (so one plan) and their own random bytes."""
    layout = draw(
        st.one_of(
            st.sampled_from([profile_layout(name) for name in PROFILE_NAMES]),
            st.builds(_synthetic_layout, st.integers(8, LBR.size + 16), st.integers(1, 100)),
        )
    )
    form = draw(st.sampled_from([STANDARD, COMPACTED, FXSAVE]))
    long_mode = draw(st.booleans())
    user = layout.user_mask()
    xcr0 = draw(st.integers(0, user)) & user | LEGACY_MASK
    xcomp_bv = 0
    if form == COMPACTED:
        xcomp_bv = COMPACTED_BIT | draw(st.integers(0, layout.known_mask())) & layout.known_mask()
        size = layout.compacted_size(xcomp_bv)
    elif form == STANDARD:
        size = layout.standard_size(xcr0)
    else:
        size = 512
    # XSTATE_BV: any components, also outside XCR0 or XCOMP_BV (XRSTOR would fault; the
    # registers are still shown as the bytes say).
    xstate_bv = draw(st.integers(0, layout.known_mask()))
    images = []
    for _ in range(2):
        data = bytearray(draw(st.randoms(use_true_random=False)).randbytes(size))
        if form != FXSAVE:
            data[512:520] = xstate_bv.to_bytes(8, "little")
            data[520:528] = xcomp_bv.to_bytes(8, "little")
        images.append(
            XsaveImage(bytes(data), layout, "t", xcr0, "t", long_mode=long_mode, format=form)
        )
    return images[0], images[1]


def registers_by_grammar(image: XsaveImage) -> list[tuple[str, int, int, int, bool]]:
    """(name, value, size, component, in use) of every register, read by the grammars."""
    legacy = legacy_region(image.long_mode).parse(image.data[:512])
    x87, sse, long_mode = image.in_use(0), image.in_use(1), image.long_mode
    stack = [slot.raw for slot in legacy.st] if x87 else [0] * 8
    out = [(f"st{i}", value, 10, 0, x87) for i, value in enumerate(stack)]
    names = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")
    if not x87:  # init values (SDM §13.6): FCW 0x37F, every register empty
        control: tuple[int, ...] = (0x37F, 0, 0xFFFF, 0, 0, 0, 0, 0)
    else:
        ftag = full_tag_word(legacy.abridged_ftw, legacy.fsw, stack)
        if long_mode:  # gdb: the halves of the 64-bit FIP and FDP
            low = 0xFFFFFFFF
            pointers = (legacy.fip >> 32, legacy.fip & low, legacy.fdp >> 32, legacy.fdp & low)
        else:  # the selectors and offsets
            pointers = (legacy.fcs, legacy.fip, legacy.fds, legacy.fdp)
        control = (legacy.fcw, legacy.fsw, ftag, *pointers, legacy.fop & 0x7FF)
    sizes = (2, 2, 2, 4, 4, 4, 4, 2)
    out += [(n, v, b, 0, x87) for n, v, b in zip(names, control, sizes, strict=True)]
    count = 16 if long_mode else 8
    vectors = [value if sse else 0 for value in legacy.xmm[:count]]
    out += [(f"xmm{i}", value, 16, 1, sse) for i, value in enumerate(vectors)]
    mxcsr = legacy.mxcsr if image.mxcsr_loaded else 0x1F80
    out.append(("mxcsr", mxcsr, 4, 1, sse or image.in_use(2)))

    def fields(component_id: int) -> Container:
        size = image.size_of(component_id)
        raw = image.stored_bytes(component_id) if image.in_use(component_id) else bytes(size)
        return component_grammar(component(component_id), size).parse(raw)

    def widen(component_id: int, shift: int, prefix: str) -> None:
        parsed = fields(component_id)
        in_use = image.in_use(component_id)
        for i in range(count):
            vectors[i] |= parsed[f"{prefix}{i}h"] << shift
            out.append((f"{prefix}{i}", vectors[i], shift // 4, component_id, in_use))

    present = image.offsets
    if 2 in present:
        widen(2, 128, "ymm")
    for i in sorted(present):
        comp = component(i)
        if i < 2 or comp.vector_piece:
            continue
        parsed = fields(i)
        in_use = image.in_use(i)
        if comp.name == "xtilecfg":  # one register of its 64 bytes, whose parts it declares
            raw = component_grammar(comp, image.size_of(i)).build(parsed)
            out.append(("tilecfg", int.from_bytes(raw[:64], "little"), 64, i, in_use))
        elif not comp.fields:
            value = int.from_bytes(parsed.rest, "little")
            out.append((comp.name, value, len(parsed.rest), i, in_use))
        else:
            out += [
                (f.name, parsed[f.name], f.size, i, in_use) for f in comp.fields if f.name in parsed
            ]
    if 6 in present:
        widen(6, 256, "zmm")
    if 7 in present and long_mode:  # zmm16-31, shown at three widths
        parsed = fields(7)
        for width, size in (("xmm", 16), ("ymm", 32), ("zmm", 64)):
            for n in range(16, 32):
                value = parsed[f"zmm{n}"] & ((1 << 8 * size) - 1)
                out.append((f"{width}{n}", value, size, 7, image.in_use(7)))
    return out


@settings(max_examples=150)
@given(two_images())
def test_registers_equal_the_grammars_reading(pair: tuple[XsaveImage, XsaveImage]) -> None:
    # The same bytes in the other mode next: a plan is never reused across modes.
    for image in (*pair, replace(pair[0], long_mode=not pair[0].long_mode)):
        expected = registers_by_grammar(image)
        assert [tuple(r) for r in registers(image)] == expected
        names, values = register_values(image)
        assert list(zip(names, values, strict=True)) == [r[:2] for r in expected]
