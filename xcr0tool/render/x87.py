"""An x87 80-bit register value as text, exactly as gdb prints it (`p $st0`, `info
registers st0`), plus a word for what gdb leaves unsaid.

gdb (gdb/target-float.c, target_float_to_string with no format) prints an i387_ext
value in three ways:

- `<invalid float value>` when libiberty's floatformat_i387_ext_is_valid says no: the
  explicit integer bit (bit 63) must be set exactly when the exponent is not zero. So
  pseudo-denormals, unnormals, pseudo-NaNs and pseudo-infinities all print that way.
- `[-]inf`, and `[-]nan(0x...)` with floatformat_mantissa's hex of all 64 significand
  bits, the integer bit included (the first 32-bit word with %lx, the second with %08lx).
- everything else through the host's long double (the same i387 format on x86 hosts)
  with printf `%.21Lg`: 21 = ceil(1 + 64 * log10(2)) significant digits
  (floatformat_printf_format), in glibc's exact binary-to-decimal conversion, rounded to
  nearest with ties to even (the default rounding mode).

Here the printf conversion is done on the exact binary value with integers (a float only
guesses the decimal exponent, which comparisons then fix): no `decimal`, so no context
to disturb and nothing to import at startup.
"""

from __future__ import annotations

_SIGNIFICAND_MASK = (1 << 64) - 1
_FRACTION_MASK = (1 << 63) - 1
_BIAS = 16383
_LOG10_2 = 0.30102999566398119521  # only to guess a decimal exponent

# printf precision gdb uses for a 64-bit significand: ceil(1 + 64 * log10(2)) = 21
GDB_DIGITS = 21


def _fields(raw: int) -> tuple[bool, int, int]:
    """(negative, biased exponent, 64-bit significand with its explicit integer bit)."""
    return bool(raw >> 79 & 1), raw >> 64 & 0x7FFF, raw & _SIGNIFICAND_MASK


def is_valid(raw: int) -> bool:
    """libiberty floatformat_i387_ext_is_valid: integer bit set iff the exponent is not 0."""
    _negative, exponent, significand = _fields(raw)
    return (exponent == 0) == (significand >> 63 == 0)


def _digits(significand: int, exp2: int, precision: int) -> tuple[str, int]:
    """significand * 2**exp2 (> 0) rounded to `precision` significant decimal digits,
    ties to even: (the digits, the decimal exponent of the first)."""
    num = significand << exp2 if exp2 >= 0 else significand
    den = 1 << -exp2 if exp2 < 0 else 1

    def scaled(power: int) -> tuple[int, int]:  # num / den / 10**power as a fraction
        return (num, den * 10**power) if power >= 0 else (num * 10**-power, den)

    # The decimal exponent of the exact value: a guess from the binary exponent, made
    # exact by comparison (10**exp10 <= value < 10**(exp10+1)).
    exp10 = int((significand.bit_length() - 1 + exp2) * _LOG10_2)
    while True:
        n, d = scaled(exp10)
        if n < d:
            exp10 -= 1
        elif n >= 10 * d:
            exp10 += 1
        else:
            break
    # Round once, to nearest, ties to even; 9.99..95 may round up to the next power.
    n, d = scaled(exp10 - precision + 1)
    q, rem = divmod(n, d)
    if 2 * rem > d or (2 * rem == d and q & 1):
        q += 1
    if q == 10**precision:
        q, exp10 = q // 10, exp10 + 1
    return str(q), exp10


def printf_g(negative: bool, significand: int, exp2: int, precision: int) -> str:
    """C printf `%.{precision}g` of (-1)**negative * significand * 2**exp2, as glibc prints
    it in round-to-nearest: ISO C 7.21.6.1 (style e or f chosen by the exponent after
    rounding, trailing zeros and a bare point dropped, an exponent of two digits at least)."""
    sign = "-" if negative else ""
    precision = precision or 1
    if significand == 0:
        return f"{sign}0"
    digits, exp10 = _digits(significand, exp2, precision)
    if -4 <= exp10 < precision:
        if exp10 >= 0:
            whole, fraction = digits[: exp10 + 1], digits[exp10 + 1 :]
        else:
            whole, fraction = "0", "0" * (-exp10 - 1) + digits
        fraction = fraction.rstrip("0")
        return f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}"
    fraction = digits[1:].rstrip("0")
    mantissa = f"{digits[0]}.{fraction}" if fraction else digits[0]
    return f"{sign}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"


def value_text(raw: int, precision: int = GDB_DIGITS) -> str:
    """printf `%.{precision}Lg` of a valid finite value (zero, denormal, normal); gdb's
    `info float` uses precision 19 (i387-tdep.c print_i387_value)."""
    negative, exponent, significand = _fields(raw)
    return printf_g(negative, significand, max(exponent, 1) - _BIAS - 63, precision)


def x87_text(raw: int) -> str:
    """The 80-bit value `raw` (as gdb's p/x shows the register) as gdb prints it."""
    if not is_valid(raw):
        return "<invalid float value>"
    negative, exponent, significand = _fields(raw)
    if exponent == 0x7FFF:
        sign = "-" if negative else ""
        if significand & _FRACTION_MASK == 0:
            return f"{sign}inf"
        # floatformat_mantissa: "%lx" of the top 32 bits, then "%08lx" of the low 32
        return f"{sign}nan(0x{significand >> 32:x}{significand & 0xFFFFFFFF:08x})"
    return value_text(raw)


def x87_label(raw: int) -> str | None:
    """What kind of encoding this is when gdb's text does not say it: the names of SDM
    vol. 1 8.2.2 (tables 8-3 and 4-3), which gdb's `info float` reports as Denormal,
    Pseudo-denormal, Unsupported, SNaN, QNaN and Real Indefinite (QNaN)."""
    negative, exponent, significand = _fields(raw)
    integer = significand >> 63
    fraction = significand & _FRACTION_MASK
    if exponent == 0:
        if integer:
            return "pseudo-denormal"
        return "denormal" if fraction else None
    if exponent == 0x7FFF:
        if not integer:
            return "pseudo-NaN" if fraction else "pseudo-infinity"
        if not fraction:
            return None
        if negative and fraction == 1 << 62:
            return "real indefinite"
        return "QNaN" if fraction >> 62 else "SNaN"
    return None if integer else "unnormal"


def x87_describe(raw: int) -> str:
    """gdb's text, then the kind of encoding in parentheses where gdb's text hides it."""
    label = x87_label(raw)
    text = x87_text(raw)
    return f"{text} ({label})" if label else text
