"""Construct grammars for the bytes of an XSAVE image. Grammars declare bytes; image.py
and registers.py give them meaning.

Primary sources: Intel SDM vol. 1 §10.5.1 (FXSAVE area, tables 10-2 and 10-3), §13.4
(XSAVE area: legacy region, header), §13.5 (each component); the kernel's
arch/x86/include/uapi/asm/sigcontext.h (struct _fpx_sw_bytes, FP_XSTATE_MAGIC1/2) and
arch/x86/kernel/fpu/regset.c (the XCR0 word the kernel writes at byte 464 for ptrace and
cores, "sw_reserved" in struct fxregs_state).
"""

from __future__ import annotations

from functools import cache
from itertools import groupby
from typing import Any

from construct import (
    Array,
    Bytes,
    BytesInteger,
    Const,
    FlagsEnum,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Padding,
    Struct,
)

from xcr0tool.arch import legacy, tilecfg
from xcr0tool.arch.components import BY_NAME, CATALOGUE, Component
from xcr0tool.arch.legacy import LegacyField
from xcr0tool.arch.offsets import FP_XSTATE_MAGIC1, FP_XSTATE_MAGIC2
from xcr0tool.arch.offsets import SW_BYTES as SW_BYTES_OFFSET
from xcr0tool.arch.offsets import XCOMP_BV as XCOMP_BV_OFFSET
from xcr0tool.arch.offsets import XSTATE_BV as XSTATE_BV_OFFSET

__all__ = [
    "FP_XSTATE_MAGIC1",
    "FP_XSTATE_MAGIC2",
    "SW_BYTES_OFFSET",
    "XCOMP_BV_OFFSET",
    "XSTATE_BV_OFFSET",
    "component_grammar",
    "feature_flags",
    "legacy_region",
    "ptrace_sw_bytes",
    "signal_sw_bytes",
    "xsave_header",
    "xtilecfg",
]

# XCR0, XSTATE_BV and XCOMP_BV share their bit meanings (SDM table 13-1).
_FEATURE_FLAGS = {c.name: c.bit for c in CATALOGUE} | {"compacted": 1 << 63}


def feature_flags() -> FlagsEnum:
    return FlagsEnum(Int64ul, **_FEATURE_FLAGS)


def _legacy_member(name: str | None, rows: list[LegacyField]) -> Any:
    """One construct member for consecutive rows of the table sharing a grammar name."""
    first = rows[0]
    size = sum(row.size for row in rows)
    if name is None:
        return Padding(size)
    if first.repeat > 1:
        item = _integer(first.size)
        if first.stride > first.size:
            item = Struct("raw" / item, Padding(first.stride - first.size))
        return name / Array(first.repeat, item)
    return name / (Bytes(size) if first.kind == "bytes" else _integer(size))


@cache
def legacy_region(long_mode: bool = True) -> Struct:
    """SDM tables 10-2 (64-bit, REX.W FXSAVE64) and 10-3 (32-bit FXSAVE): 512 bytes,
    built from the one field table (arch/legacy.py).

    XSAVE in 64-bit mode writes the 64-bit form: FIP/FDP are 8 bytes, no selectors.
    Cores of 32-bit processes hold the 32-bit form: FIP, FCS, FDP, FDS.
    """
    members = [
        _legacy_member(name, list(rows))
        for name, rows in groupby(legacy.fields(long_mode), key=lambda row: row.grammar)
    ]
    return Struct(*members)


# SDM §13.4.2: the XSAVE header, bytes 512-575 (arch/legacy.py HEADER).
xsave_header = Struct(
    *(
        row.grammar / (Bytes(row.size) if row.kind == "bytes" else feature_flags())
        for row in legacy.HEADER
        if row.grammar is not None
    )
)

# Bytes 464-511 as the kernel writes them for ptrace and cores (regset.c, xstateregs_get):
# the user XCR0 value, then zeros.
ptrace_sw_bytes = Struct(
    "xcr0" / feature_flags(),
    "reserved" / Bytes(40),
)

# Bytes 464-511 of a signal frame's fpstate: struct _fpx_sw_bytes (sigcontext.h).
signal_sw_bytes = Struct(
    "magic1" / Const(FP_XSTATE_MAGIC1, Int32ul),
    "extended_size" / Int32ul,
    "xfeatures" / feature_flags(),
    "xstate_size" / Int32ul,
    "padding" / Bytes(28),
)

# SDM §13.5.12 and the AMX chapter (§3.2, "TILECFG"): the 64-byte tile configuration,
# at the places arch/tilecfg.py names (which decodes it without construct).
xtilecfg = Struct(
    "palette" / Int8ul,
    "start_row" / Int8ul,
    "reserved" / Bytes(tilecfg.RESERVED[1] - tilecfg.RESERVED[0]),
    "colsb" / Array(tilecfg.SLOTS, Int16ul),
    "rows" / Array(tilecfg.SLOTS, Int8ul),
)

_SPECIAL = {BY_NAME["xtilecfg"].id: xtilecfg}


def _integer(size: int) -> Any:
    sized = {1: Int8ul, 2: Int16ul, 4: Int32ul, 8: Int64ul}
    return sized.get(size) or BytesInteger(size, swapped=True)


@cache
def component_grammar(component: Component, size: int | None = None) -> Struct:
    """The contents of one extended component: its catalogue fields as little-endian
    integers (the way gdb reads registers) and the bytes after them kept raw.

    `size` is the size the layout gives (arch LBR varies); unknown components are all raw.
    """
    total = component.size if size is None else size
    special = _SPECIAL.get(component.id)
    if special is not None:
        tail = ["rest" / Bytes(total - special.sizeof())] if total > special.sizeof() else []
        return Struct(*special.subcons, *tail)
    members: list[Any] = []
    cursor = 0
    for field in component.fields:
        if field.offset + field.size > total:
            break
        if field.offset > cursor:
            members.append(Padding(field.offset - cursor))
        members.append(field.name / _integer(field.size))
        cursor = field.offset + field.size
    if total > cursor:
        members.append("rest" / Bytes(total - cursor))
    return Struct(*members)
