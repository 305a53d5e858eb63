"""Registers as gdb shows them, assembled from an image's components.

Names and assembly follow gdb's i387-tdep.c (i387_supply_xsave, i387_tag) and
amd64-tdep.c (amd64_supply_xsave): st0-st7 are the FXSAVE slots in stack order, ftag is
the full tag word computed from the abridged tag and the register contents, fiseg/foseg
are the 32 bits above FIP/FDP in 64-bit images and the 16-bit selectors in 32-bit ones,
fop keeps its 11 bits, ymmN/zmmN are built from xmmN and the upper halves. Each value is
the register's bytes read as one little-endian integer, as in `decode --json`.
Registers gdb does not know get plain names of their own (tmm0-7, r16-r31, u_cet, ...).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import cache
from typing import NamedTuple

from xcr0tool.arch import legacy
from xcr0tool.arch import offsets as at
from xcr0tool.arch.components import BY_NAME, CATALOGUE, component, is_extended
from xcr0tool.model.image import FCW_INIT, MXCSR_INIT, XsaveImage

TAG_VALID, TAG_ZERO, TAG_SPECIAL, TAG_EMPTY = 0, 1, 2, 3


class Register(NamedTuple):
    # A NamedTuple, not a dataclass: decode of a big core builds hundreds of thousands.
    name: str
    value: int
    size: int  # bytes
    component: int
    in_use: bool  # its component's XSTATE_BV bit (for MXCSR: SSE or AVX)


def st_tag(raw: int) -> int:
    """gdb's i387_tag: classify an 80-bit register for the full tag word."""
    exponent = raw >> 64 & 0x7FFF
    integer = raw >> 63 & 1
    fraction = raw & ((1 << 63) - 1)
    if exponent == 0x7FFF:
        return TAG_SPECIAL
    if exponent == 0:
        return TAG_ZERO if fraction == 0 and not integer else TAG_SPECIAL
    return TAG_VALID if integer else TAG_SPECIAL


def full_tag_word(abridged: int, fsw: int, stack: list[int]) -> int:
    """The 16-bit tag word from FXSAVE's abridged byte; `stack` is st0..st7."""
    top = fsw >> 11 & 7
    word = 0
    for physical in range(8):
        tag = st_tag(stack[(physical - top) % 8]) if abridged >> physical & 1 else TAG_EMPTY
        word |= tag << (2 * physical)
    return word


def _u(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset : offset + size], "little")


def _legacy(image: XsaveImage) -> Iterator[Register]:
    # The bytes and gdb names of the one legacy-region table (arch/legacy.py), read by
    # slicing: decode of a core with hundreds of threads must not pay for a construct
    # parse per thread (tests/unit/arch/test_legacy_table.py checks both readings agree).
    data = image.data
    x87 = image.in_use(legacy.X87)
    sse = image.in_use(legacy.SSE)
    long_mode = image.long_mode
    st = legacy.field("st", long_mode)
    stack = [_u(data, slot, st.size) for slot, _, _ in st.slots()] if x87 else [0] * len(st.slots())
    control = _x87_control(long_mode)
    if x87:
        values = {name: _u(data, offset, size) for name, (offset, size, _) in control.items()}
        # gdb (i387_supply_fxsave): ftag is the full tag word computed from the abridged
        # one and the registers' contents (i387_tag); fop keeps its 11 bits.
        values["ftag"] = full_tag_word(values["ftag"], values["fstat"], stack)
        values["fop"] &= 0x7FF
    else:
        values = dict.fromkeys(control, 0) | {"fctrl": FCW_INIT, "ftag": 0xFFFF}
    for (_, name, _), raw in zip(st.slots(), stack, strict=True):
        yield Register(name, raw, st.size, legacy.X87, x87)
    for name in legacy.X87_CONTROL_ORDER:
        yield Register(name, values[name], control[name][2], legacy.X87, x87)
    xmm = legacy.field("xmm", long_mode)
    for slot, name, _ in xmm.slots():
        yield Register(name, _u(data, slot, xmm.size) if sse else 0, xmm.size, legacy.SSE, sse)
    row = legacy.field("mxcsr", long_mode)
    loaded = image.mxcsr_loaded
    in_use = image.in_use(legacy.SSE) or image.in_use(YMM)
    value = _u(data, row.offset, row.size) if loaded else MXCSR_INIT
    yield Register("mxcsr", value, row.size, legacy.SSE, in_use)


@cache
def _x87_control(long_mode: bool) -> dict[str, tuple[int, int, int]]:
    """gdb's x87 control registers: name -> (offset, bytes read, register size)."""
    return {
        row.register: (row.offset, row.size, row.register_size or row.size)
        for row in legacy.fields(long_mode)
        if row.component == legacy.X87 and row.repeat == 1 and row.register is not None
    }


def component_fields(image: XsaveImage, component_id: int) -> dict[str, int]:
    """An extended component's catalogue fields as little-endian integers: the reading
    grammar.component_grammar declares, by slicing (a test checks both agree)."""
    raw = image.component_bytes(component_id)
    return {
        f.name: int.from_bytes(raw[f.offset : f.offset + f.size], "little")
        for f in component(component_id).fields
        if f.offset + f.size <= len(raw)
    }


# The components whose fields are pieces of vector registers (catalogue rows with
# vector_piece), assembled the way gdb's i387_supply_xsave does.
YMM, ZMM_HI256, HI16_ZMM = (BY_NAME[name].id for name in ("ymm", "zmm_hi256", "hi16_zmm"))
# gdb shows each of zmm16-31 (Hi16_ZMM) at three widths too.
_HI16_VIEWS = (("xmm", 16), ("ymm", 32), ("zmm", 64))


def _widened(image: XsaveImage, component_id: int, vectors: list[int]) -> Iterator[Register]:
    """The wider registers one piece component makes of `vectors` (the XMM registers, or
    what AVX made of them), which it widens in place: ymmN = xmmN | ymmNh << 128."""
    comp = component(component_id)
    values = component_fields(image, component_id)
    in_use = image.in_use(component_id)
    for i, field in enumerate(comp.fields[: len(vectors)]):  # 32-bit code: 8 of 16
        vectors[i] |= values[field.name] << field.shift
        size = field.shift // 8 + field.size
        yield Register(field.register_name, vectors[i], size, component_id, in_use)


def registers(image: XsaveImage) -> list[Register]:
    """Every register of the image, in gdb's order where gdb has them."""
    out = list(_legacy(image))
    present = image.offsets
    # Vector registers are built from pieces: xmmN (SSE), its upper 128 bits (AVX),
    # its upper 256 bits (ZMM_Hi256); zmm16-31 (Hi16_ZMM) hold all three widths.
    vectors = [r.value for r in out if r.component == legacy.SSE and r.name != "mxcsr"]
    if YMM in present:
        out.extend(_widened(image, YMM, vectors))
    for component_id in sorted(present):
        comp = component(component_id)
        if is_extended(component_id) and not comp.vector_piece:
            out.extend(_component_registers(image, component_id))
    if ZMM_HI256 in present:
        out.extend(_widened(image, ZMM_HI256, vectors))
    if HI16_ZMM in present and image.long_mode:  # zmm16-31 do not exist for 32-bit code
        hi16 = component_fields(image, HI16_ZMM)
        in_use = image.in_use(HI16_ZMM)
        fields = component(HI16_ZMM).fields
        for width, size in _HI16_VIEWS:
            keep = (1 << (8 * size)) - 1
            for field in fields:
                name = width + field.register_name.removeprefix("zmm")
                out.append(Register(name, hi16[field.name] & keep, size, HI16_ZMM, in_use))
    return out


def _component_registers(image: XsaveImage, component_id: int) -> Iterator[Register]:
    """Registers of one extended component: its catalogue fields, as its grammar reads
    them (TILECFG is one field, whose parts render/values.py shows); a component without
    fields is one register of all its bytes."""
    comp = component(component_id)
    in_use = image.in_use(component_id)
    raw = image.component_bytes(component_id)
    if not comp.fields:
        yield Register(comp.name, int.from_bytes(raw, "little"), len(raw), component_id, in_use)
        return
    values = component_fields(image, component_id)
    for field in comp.fields:
        if field.name in values:
            yield Register(field.name, values[field.name], field.size, component_id, in_use)


def register_names() -> list[str]:
    """Every name `registers` can give (what --reg matches), in its order for a 64-bit
    image that holds every catalogue component."""
    names = [name for _, name, _ in legacy.field("st").slots()]
    names += list(legacy.X87_CONTROL_ORDER)
    names += [name for _, name, _ in legacy.field("xmm").slots()] + ["mxcsr"]
    names += [f.register_name for f in component(YMM).fields]
    for comp in CATALOGUE:
        if is_extended(comp.id) and not comp.vector_piece:
            names += [f.name for f in comp.fields] if comp.fields else [comp.name]
    names += [f.register_name for f in component(ZMM_HI256).fields]
    hi16 = component(HI16_ZMM).fields
    names += [width + f.register_name.removeprefix("zmm") for width, _ in _HI16_VIEWS for f in hi16]
    return names


def stale_registers(image: XsaveImage) -> list[Register]:
    """What the bytes behind init-state components would read as, were they in use.
    XRSTOR ignores them; they are shown only when asked for, and labelled stale."""
    stale = image.stale_components()
    if not stale:
        return []
    data = bytearray(image.data)
    forced = image.xstate_bv | sum(1 << i for i in stale)
    data[at.XSTATE_BV : at.XSTATE_BV + 8] = forced.to_bytes(8, "little")
    as_if_in_use = replace(image, data=bytes(data))
    return [r for r in registers(as_if_in_use) if r.component in stale]


def select(regs: Sequence[Register], patterns: Sequence[str]) -> list[Register]:
    """The registers whose names match any of the globs (--reg 'zmm*'); all without any."""
    if not patterns:
        return list(regs)
    return [r for r in regs if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]


def register_map(image: XsaveImage) -> dict[str, int]:
    return {r.name: r.value for r in registers(image)}
