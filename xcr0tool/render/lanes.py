"""A vector register as lanes, the way gdb prints its views (`p $ymm0.v8_float`,
`p/x $ymm0.v8_int32`): lane 0 first, in braces.

Floats are gdb's text (gdb/target-float.c, host_float_ops::to_string): "%g" with
DECIMAL_DIG digits of the format (ceil(1 + p * log10 2): 9 for single, 17 for double),
"inf"/"-inf", and NaNs as nan(0xMANTISSA) with the mantissa written as
floatformat_mantissa does (the top man_len % 32 bits in "%lx", then 32-bit groups in
"%08lx"). Integer lanes are hex, zero-padded to the lane's width, as p/z shows them.
"""

from __future__ import annotations

import struct

from xcr0tool.model.registers import LANES, lane_widths, lanes_of

# kind: (struct code, mantissa bits, exponent bits, printf digits)
_FLOATS = {"f32": ("<f", 23, 8, 9), "f64": ("<d", 52, 11, 17)}


def gdb_mantissa(mantissa: int, bits: int) -> str:
    """libiberty's floatformat_mantissa: the mantissa in hex, top group first."""
    first = bits % 32 or 32
    left = bits - first
    text = f"{mantissa >> left:x}"
    while left > 0:
        left -= 32
        text += f"{mantissa >> left & 0xFFFFFFFF:08x}"
    return text


def float_lane(raw: int, kind: str) -> str:
    """An IEEE single or double lane as gdb prints it."""
    code, man_bits, exp_bits, digits = _FLOATS[kind]
    width = struct.calcsize(code)
    exponent = raw >> man_bits & ((1 << exp_bits) - 1)
    mantissa = raw & ((1 << man_bits) - 1)
    sign = "-" if raw >> (8 * width - 1) & 1 else ""
    if exponent == (1 << exp_bits) - 1:
        return f"{sign}nan(0x{gdb_mantissa(mantissa, man_bits)})" if mantissa else f"{sign}inf"
    (number,) = struct.unpack(code, raw.to_bytes(width, "little"))
    return f"%.{digits}g" % number


def lane_texts(value: int, size: int, kind: str) -> list[str]:
    """The register's lanes as text, lane 0 first."""
    texts = []
    for lane, width in zip(lanes_of(value, size, kind), lane_widths(size, kind), strict=True):
        if kind in _FLOATS and width == LANES[kind]:
            texts.append(float_lane(lane, kind))
        else:
            texts.append(f"0x{lane:0{2 * width}x}")
    return texts


def braced(value: int, size: int, kind: str) -> str:
    """'{1.5, -2, inf, nan(0x400000)}' as gdb shows a vector view."""
    return "{" + ", ".join(lane_texts(value, size, kind)) + "}"
