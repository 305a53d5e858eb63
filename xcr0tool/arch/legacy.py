"""The legacy region (bytes 0-511) and the XSAVE header (512-575), as one field table.

Intel SDM vol. 1 §10.5.1, tables 10-2 (64-bit, FXSAVE64/XSAVE64: FIP and FDP are 8
bytes) and 10-3 (32-bit: FIP, FCS, FDP, FDS), and §13.4.2 (the header); gdb's register
names from i387-tdep.c (i387_supply_fxsave: fiseg/fioff, foseg/fooff are the halves of
FIP/FDP in 64-bit images, the selectors and offsets in 32-bit ones).

Everything else is derived from `fields()`: the offsets in offsets.py, the construct
grammar (formats/xsave.py legacy_region), gdb's x87 control registers (registers.py),
what diff names each byte (ops/diff.py) and the byte ranges x87 and SSE own
(ops/transforms.py). tests/unit/arch/test_legacy_table.py ties them together.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

X87, SSE = 0, 1  # the components the legacy region holds


class LegacyField(NamedTuple):  # not a dataclass: defined at every start, cheaply
    """A run of bytes of the legacy region or header.

    `name`: the SDM's (diff shows it); `grammar`: the construct field it belongs to
    (consecutive rows with one grammar name make one field; None for padding); `kind`:
    "int" (little-endian) or "bytes"; `component`: 0 x87, 1 SSE, None for bytes no
    component owns; `register` and `register_size`: gdb's register the bytes show in.
    An array (`repeat` > 1) repeats every `stride` bytes, "{i}" in the names numbering
    the slots; the bytes of a slot past `size` are padding."""

    name: str
    grammar: str | None
    offset: int
    size: int
    component: int | None
    register: str | None
    meaning: str
    kind: str = "int"
    register_size: int | None = None
    repeat: int = 1
    stride: int = 0

    @property
    def end(self) -> int:
        return self.offset + (self.stride * self.repeat if self.repeat > 1 else self.size)

    def slots(self) -> list[tuple[int, str, str | None]]:
        """(offset, name, register) of each slot: one for a plain field."""
        if self.repeat == 1:
            return [(self.offset, self.name, self.register)]
        return [
            (
                self.offset + i * self.stride,
                self.name.format(i=i),
                None if self.register is None else self.register.format(i=i),
            )
            for i in range(self.repeat)
        ]


_F = LegacyField

_X87_HEAD = (
    _F("FCW", "fcw", 0, 2, X87, "fctrl", "x87 control word"),
    _F("FSW", "fsw", 2, 2, X87, "fstat", "x87 status word; TOP is bits 13:11"),
    _F("abridged FTW", "abridged_ftw", 4, 1, X87, "ftag",
       "one bit per physical register, 1 = valid; gdb shows the full 16-bit tag word",
       register_size=2),
    _F("reserved", None, 5, 1, X87, None, "reserved"),
    _F("FOP", "fop", 6, 2, X87, "fop", "last x87 opcode, 11 bits"),
)  # fmt: skip

# 64-bit form: FIP and FDP are 8-byte offsets; gdb shows their halves.
_POINTERS_64 = (
    _F("FIP", "fip", 8, 4, X87, "fioff", "last instruction pointer, bits 31:0"),
    _F("FIP", "fip", 12, 4, X87, "fiseg", "last instruction pointer, bits 63:32"),
    _F("FDP", "fdp", 16, 4, X87, "fooff", "last data pointer, bits 31:0"),
    _F("FDP", "fdp", 20, 4, X87, "foseg", "last data pointer, bits 63:32"),
)

# 32-bit form: offsets and selectors.
_POINTERS_32 = (
    _F("FIP", "fip", 8, 4, X87, "fioff", "last instruction offset"),
    _F("FCS", "fcs", 12, 2, X87, "fiseg", "last instruction selector", register_size=4),
    _F("reserved", None, 14, 2, X87, None, "reserved"),
    _F("FDP", "fdp", 16, 4, X87, "fooff", "last data offset"),
    _F("FDS", "fds", 20, 2, X87, "foseg", "last data selector", register_size=4),
    _F("reserved", None, 22, 2, X87, None, "reserved"),
)

_MIDDLE = (
    _F("MXCSR", "mxcsr", 24, 4, SSE, "mxcsr", "SSE control and status"),
    _F("MXCSR_MASK", "mxcsr_mask", 28, 4, SSE, None, "MXCSR bits the CPU supports; 0: 0xFFBF"),
    _F("st{i}", "st", 32, 10, X87, "st{i}", "x87 register ST(i) / MMi, 80 bits",
       repeat=8, stride=16),
)  # fmt: skip

_TAIL = (
    _F("reserved", "reserved", 416, 48, None, None, "reserved", kind="bytes"),
    _F("software-reserved", "sw_reserved", 464, 48, None, None,
       "no XSAVE instruction writes these; the kernel's XCR0 word or a signal frame's"
       " sw_bytes", kind="bytes"),
)  # fmt: skip

_XMM_64 = (_F("xmm{i}", "xmm", 160, 16, SSE, "xmm{i}", "XMM register i", repeat=16, stride=16),)
# 32-bit code has XMM0-7; the space of XMM8-15 is reserved (SDM table 10-3).
_XMM_32 = (
    _F("xmm{i}", "xmm", 160, 16, SSE, "xmm{i}", "XMM register i", repeat=8, stride=16),
    _F("reserved", "xmm_reserved", 288, 128, SSE, None, "reserved in 32-bit mode", kind="bytes"),
)

# The XSAVE header (SDM §13.4.2).
HEADER: tuple[LegacyField, ...] = (
    _F("XSTATE_BV", "xstate_bv", 512, 8, None, None, "components not in their init state"),
    _F("XCOMP_BV", "xcomp_bv", 520, 8, None, None, "compacted: bit 63 and the components"),
    _F("reserved header", "reserved", 528, 48, None, None, "must be zero", kind="bytes"),
)


@cache
def fields(long_mode: bool = True) -> tuple[LegacyField, ...]:
    """The legacy region's 512 bytes, in order, for 64-bit or 32-bit images."""
    pointers, xmm = (_POINTERS_64, _XMM_64) if long_mode else (_POINTERS_32, _XMM_32)
    return (*_X87_HEAD, *pointers, *_MIDDLE, *xmm, *_TAIL)


def field(grammar: str, long_mode: bool = True) -> LegacyField:
    """The first row of a grammar field: field("mxcsr").offset == 24."""
    for row in (*fields(long_mode), *HEADER):
        if row.grammar == grammar:
            return row
    raise KeyError(grammar)


def owned(component: int) -> tuple[tuple[int, int], ...]:
    """The byte ranges (start, end) a component owns in the legacy region, merged: x87
    (0, 24) and (32, 160); SSE (24, 32) and (160, 416). Identical in both forms."""
    runs: list[tuple[int, int]] = []
    for row in fields(True):
        if row.component != component:
            continue
        if runs and runs[-1][1] == row.offset:
            runs[-1] = (runs[-1][0], row.end)
        else:
            runs.append((row.offset, row.end))
    return tuple(runs)


# gdb's order of the x87 control registers (i386-tdep.h, I387_FCTRL_REGNUM onwards).
X87_CONTROL_ORDER = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")
