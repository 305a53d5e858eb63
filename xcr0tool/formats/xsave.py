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

from xcr0tool.arch.components import CATALOGUE, Component
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


def legacy_region(long_mode: bool = True) -> Struct:
    """SDM tables 10-2 (64-bit, REX.W FXSAVE64) and 10-3 (32-bit FXSAVE): 512 bytes.

    XSAVE in 64-bit mode writes the 64-bit form: FIP/FDP are 8 bytes, no selectors.
    Cores of 32-bit processes hold the 32-bit form: FIP, FCS, FDP, FDS.
    """
    pointers = (
        ("fip" / Int64ul, "fdp" / Int64ul)
        if long_mode
        else (
            "fip" / Int32ul,
            "fcs" / Int16ul,
            Padding(2),
            "fdp" / Int32ul,
            "fds" / Int16ul,
            Padding(2),
        )
    )
    return Struct(
        "fcw" / Int16ul,
        "fsw" / Int16ul,
        "abridged_ftw" / Int8ul,
        Padding(1),
        "fop" / Int16ul,
        *pointers,
        "mxcsr" / Int32ul,
        "mxcsr_mask" / Int32ul,
        "st" / Array(8, Struct("raw" / BytesInteger(10, swapped=True), Padding(6))),
        "xmm" / Array(16, BytesInteger(16, swapped=True)),
        "reserved" / Bytes(48),
        "sw_reserved" / Bytes(48),
    )


# SDM §13.4.2: the XSAVE header, bytes 512-575.
xsave_header = Struct(
    "xstate_bv" / feature_flags(),
    "xcomp_bv" / feature_flags(),
    "reserved" / Bytes(48),
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

# SDM §13.5.12 and the AMX chapter (§3.2, "TILECFG"): the 64-byte tile configuration.
xtilecfg = Struct(
    "palette" / Int8ul,
    "start_row" / Int8ul,
    "reserved" / Bytes(14),
    "colsb" / Array(16, Int16ul),
    "rows" / Array(16, Int8ul),
)

_SPECIAL = {17: xtilecfg}


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
