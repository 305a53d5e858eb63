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
from typing import NamedTuple

from xcr0tool.arch import offsets as at
from xcr0tool.arch.components import CATALOGUE, Component, component
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
    # The bytes grammar.legacy_region declares, read by slicing: decode of a core with
    # hundreds of threads must not pay for a construct parse per thread (a test checks
    # that both readings agree).
    data = image.data
    x87 = image.in_use(0)
    sse = image.in_use(1)
    stack = [_u(data, at.ST0 + at.ST_STRIDE * i, 10) for i in range(8)] if x87 else [0] * 8
    fsw = _u(data, at.FSW, 2) if x87 else 0
    if image.long_mode:
        fip, fdp = _u(data, at.FIP, 8), _u(data, at.FDP, 8)
        fiseg, fioff, foseg, fooff = fip >> 32, fip & 0xFFFFFFFF, fdp >> 32, fdp & 0xFFFFFFFF
    else:
        fiseg, fioff = _u(data, at.FCS_32, 2), _u(data, at.FIP, 4)
        foseg, fooff = _u(data, at.FDS_32, 2), _u(data, at.FDP, 4)
    if x87:
        abridged = data[at.ABRIDGED_FTW]
        x87_values = {
            "fctrl": _u(data, at.FCW, 2),
            "fstat": fsw,
            "ftag": full_tag_word(abridged, fsw, stack),
            "fiseg": fiseg,
            "fioff": fioff,
            "foseg": foseg,
            "fooff": fooff,
            "fop": _u(data, at.FOP, 2) & 0x7FF,
        }
    else:
        x87_values = dict.fromkeys(_X87_CONTROL, 0) | {"fctrl": FCW_INIT, "ftag": 0xFFFF}
    for i, raw in enumerate(stack):
        yield Register(f"st{i}", raw, 10, 0, x87)
    for name, value in x87_values.items():
        yield Register(name, value, _X87_CONTROL[name], 0, x87)
    for i in range(16 if image.long_mode else 8):
        yield Register(f"xmm{i}", _u(data, at.XMM0 + 16 * i, 16) if sse else 0, 16, 1, sse)
    loaded = image.mxcsr_loaded
    in_use = image.in_use(1) or image.in_use(2)
    yield Register("mxcsr", _u(data, at.MXCSR, 4) if loaded else MXCSR_INIT, 4, 1, in_use)


# gdb's x87 control registers and their sizes in bytes.
_X87_CONTROL = {
    "fctrl": 2, "fstat": 2, "ftag": 2, "fiseg": 4, "fioff": 4, "foseg": 4, "fooff": 4, "fop": 2,
}  # fmt: skip


def component_fields(image: XsaveImage, component_id: int) -> dict[str, int]:
    """An extended component's catalogue fields as little-endian integers: the reading
    grammar.component_grammar declares, by slicing (a test checks both agree)."""
    raw = image.component_bytes(component_id)
    return {
        f.name: int.from_bytes(raw[f.offset : f.offset + f.size], "little")
        for f in component(component_id).fields
        if f.offset + f.size <= len(raw)
    }


def registers(image: XsaveImage) -> list[Register]:
    """Every register of the image, in gdb's order where gdb has them."""
    out = list(_legacy(image))
    present = image.offsets
    long_mode = image.long_mode
    # Vector registers are built from pieces: xmmN (SSE), its upper 128 bits (AVX),
    # its upper 256 bits (ZMM_Hi256); zmm16-31 (Hi16_ZMM) hold all three widths.
    vectors = [r.value for r in out if r.component == 1 and r.name != "mxcsr"]
    if 2 in present:
        avx = component_fields(image, 2)
        in_use = image.in_use(2)
        for i in range(len(vectors)):
            vectors[i] |= avx[f"ymm{i}h"] << 128
            out.append(Register(f"ymm{i}", vectors[i], 32, 2, in_use))
    for component_id in sorted(present):
        if component_id >= 3 and component_id not in (6, 7):
            out.extend(_component_registers(image, component_id))
    if 6 in present:
        zmm_hi = component_fields(image, 6)
        in_use = image.in_use(6)
        for i in range(len(vectors)):  # 32-bit code sees zmm0-7 only
            out.append(Register(f"zmm{i}", vectors[i] | zmm_hi[f"zmm{i}h"] << 256, 64, 6, in_use))
    if 7 in present and long_mode:  # zmm16-31 do not exist for 32-bit code
        hi16 = component_fields(image, 7)
        in_use = image.in_use(7)
        for width, size in (("xmm", 16), ("ymm", 32), ("zmm", 64)):
            keep = (1 << (8 * size)) - 1
            for i in range(16, 32):
                out.append(Register(f"{width}{i}", hi16[f"zmm{i}"] & keep, size, 7, in_use))
    return out


def _whole(comp: Component) -> bool:
    """A component shown as one register of all its bytes: one without fields, or
    TILECFG, whose parts descriptions.py shows."""
    return comp.id == 17 or not comp.fields


def _component_registers(image: XsaveImage, component_id: int) -> Iterator[Register]:
    """Registers of one extended component: its catalogue fields, as its grammar reads
    them, or one register of all its bytes (`_whole`)."""
    comp = component(component_id)
    in_use = image.in_use(component_id)
    raw = image.component_bytes(component_id)
    if _whole(comp):
        name = comp.fields[0].name if comp.fields else comp.name
        yield Register(name, int.from_bytes(raw, "little"), len(raw), component_id, in_use)
        return
    values = component_fields(image, component_id)
    for field in comp.fields:
        if field.name in values:
            yield Register(field.name, values[field.name], field.size, component_id, in_use)


def register_names() -> list[str]:
    """Every name `registers` can give (what --reg matches), in its order for a 64-bit
    image that holds every catalogue component."""
    names = [f"st{i}" for i in range(8)] + list(_X87_CONTROL)
    names += [f"xmm{i}" for i in range(16)] + ["mxcsr"] + [f"ymm{i}" for i in range(16)]
    for comp in CATALOGUE:
        if comp.id >= 3 and comp.id not in (6, 7):
            whole = comp.fields[0].name if comp.fields else comp.name
            names += [whole] if _whole(comp) else [f.name for f in comp.fields]
    names += [f"zmm{i}" for i in range(16)]
    names += [f"{width}{i}" for width in ("xmm", "ymm", "zmm") for i in range(16, 32)]
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
