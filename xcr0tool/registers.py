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

from collections.abc import Iterator
from dataclasses import dataclass

from xcr0tool.components import component
from xcr0tool.grammar import component_grammar, legacy_region
from xcr0tool.image import FCW_INIT, MXCSR_INIT, XsaveImage

TAG_VALID, TAG_ZERO, TAG_SPECIAL, TAG_EMPTY = 0, 1, 2, 3


@dataclass(frozen=True)
class Register:
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


def _legacy(image: XsaveImage) -> Iterator[Register]:
    legacy = legacy_region(image.long_mode).parse(image.data[:512])
    x87 = image.in_use(0)
    sse = image.in_use(1)
    stack = [slot.raw for slot in legacy.st] if x87 else [0] * 8
    fsw = legacy.fsw if x87 else 0
    if image.long_mode:
        fiseg, fioff = legacy.fip >> 32, legacy.fip & 0xFFFFFFFF
        foseg, fooff = legacy.fdp >> 32, legacy.fdp & 0xFFFFFFFF
    else:
        fiseg, fioff, foseg, fooff = legacy.fcs, legacy.fip, legacy.fds, legacy.fdp
    x87_values = {
        "fctrl": legacy.fcw if x87 else FCW_INIT,
        "fstat": fsw,
        "ftag": full_tag_word(legacy.abridged_ftw, fsw, stack) if x87 else 0xFFFF,
        "fiseg": fiseg if x87 else 0,
        "fioff": fioff if x87 else 0,
        "foseg": foseg if x87 else 0,
        "fooff": fooff if x87 else 0,
        "fop": legacy.fop & 0x7FF if x87 else 0,
    }
    for i, raw in enumerate(stack):
        yield Register(f"st{i}", raw, 10, 0, x87)
    for name, value in x87_values.items():
        yield Register(name, value, 2 if name in ("fctrl", "fstat", "ftag", "fop") else 4, 0, x87)
    xmm_count = 16 if image.long_mode else 8
    for i in range(xmm_count):
        yield Register(f"xmm{i}", legacy.xmm[i] if sse else 0, 16, 1, sse)
    mxcsr_live = image.mxcsr_in_use
    yield Register("mxcsr", legacy.mxcsr if mxcsr_live else MXCSR_INIT, 4, 1, mxcsr_live)


def _fields(image: XsaveImage, component_id: int) -> dict[str, int | bytes]:
    grammar = component_grammar(component(component_id), image.size_of(component_id))
    parsed = grammar.parse(image.component_bytes(component_id))
    return {k: v for k, v in parsed.items() if not k.startswith("_")}


def registers(image: XsaveImage) -> list[Register]:
    """Every register of the image, in gdb's order where gdb has them."""
    out = list(_legacy(image))
    xmm = {r.name: r.value for r in out if r.name.startswith("xmm")}
    present = set(image.component_ids)
    long_mode = image.long_mode
    vector_count = 16 if long_mode else 8
    if 2 in present:
        avx = _fields(image, 2)
        for i in range(vector_count):
            value = xmm[f"xmm{i}"] | int(avx[f"ymm{i}h"]) << 128
            out.append(Register(f"ymm{i}", value, 32, 2, image.in_use(2)))
    for component_id in sorted(present):
        if component_id >= 3 and component_id not in (6, 7):
            out.extend(_component_registers(image, component_id))
    if 6 in present and long_mode:
        zmm_hi = _fields(image, 6)
        lower = {r.name: r.value for r in out if r.name.startswith("ymm")}
        for i in range(16):
            value = lower.get(f"ymm{i}", xmm[f"xmm{i}"]) | int(zmm_hi[f"zmm{i}h"]) << 256
            out.append(Register(f"zmm{i}", value, 64, 6, image.in_use(6)))
    if 7 in present and long_mode:
        hi16 = _fields(image, 7)
        in_use = image.in_use(7)
        for width, bits_ in (("xmm", 128), ("ymm", 256), ("zmm", 512)):
            for i in range(16, 32):
                value = int(hi16[f"zmm{i}"]) & ((1 << bits_) - 1)
                out.append(Register(f"{width}{i}", value, bits_ // 8, 7, in_use))
    return out


def _component_registers(image: XsaveImage, component_id: int) -> Iterator[Register]:
    """Registers of one extended component: its catalogue fields, as its grammar reads
    them; a component without fields (or TILECFG, whose parts descriptions.py shows) is
    one register of all its bytes."""
    comp = component(component_id)
    in_use = image.in_use(component_id)
    raw = image.component_bytes(component_id)
    if component_id == 17 or not comp.fields:
        name = comp.fields[0].name if comp.fields else comp.name
        yield Register(name, int.from_bytes(raw, "little"), len(raw), component_id, in_use)
        return
    parsed = _fields(image, component_id)
    for field in comp.fields:
        if field.name in parsed:
            yield Register(field.name, int(parsed[field.name]), field.size, component_id, in_use)


def register_map(image: XsaveImage) -> dict[str, int]:
    return {r.name: r.value for r in registers(image)}
