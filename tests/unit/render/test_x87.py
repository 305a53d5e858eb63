"""x87 80-bit values as gdb prints them (xcr0tool.render.x87), checked against gdb itself:
the values loaded into st0..st7 of a real process by the FPU (`p $stN`, `info registers`,
`info float`), and batches of random encodings printed by gdb as long doubles. printf_g,
the glibc `%g` the texts rest on, is also checked against Python's own correctly rounded
`%g` of doubles, which needs no gdb."""

from __future__ import annotations

import decimal
import math
import random
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from bare_python import run_bare
from clirunner import ok, run
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import FIXTURES

from xcr0tool.render.x87 import printf_g, value_text, x87_describe, x87_label, x87_text

# One worker runs every test here (pytest-xdist loadgroup): its x87 program is built
# (gcc) and read by gdb once per module, not once per worker.
pytestmark = pytest.mark.xdist_group("x87")

TOP = 1 << 63


def ext(negative: int, exponent: int, significand: int) -> int:
    return negative << 79 | exponent << 64 | significand


def nearest(num: int, den: int, negative: int = 0) -> int:
    """The normal 80-bit value nearest num/den (> 0), ties to even: what FLD of a decimal
    constant would give. For building test values only."""
    exp2 = num.bit_length() - den.bit_length() - 64
    while True:
        n, d = (num, den << exp2) if exp2 >= 0 else (num << -exp2, den)
        q, rem = divmod(n, d)
        if q >= 1 << 64:
            exp2 += 1
        elif q < TOP:
            exp2 -= 1
        else:
            break
    if 2 * rem > d or (2 * rem == d and q & 1):
        q += 1
        if q == 1 << 64:
            q, exp2 = TOP, exp2 + 1
    return ext(negative, exp2 + 63 + 16383, q)


def ties() -> Iterator[int]:
    """Values whose exact decimal has 22 significant digits ending in 5: %.21g must round
    them half to even. m/8 with m odd and 64 bits long is such a value; both parities of
    the 21st digit occur."""
    seen = {0: 0, 1: 0}
    m = TOP + 1
    while min(seen.values()) < 3:
        digits = str(m * 125)
        assert len(digits) == 22 and digits[-1] == "5"
        parity = int(digits[-2]) & 1
        if seen[parity] < 3:
            seen[parity] += 1
            yield ext(0, 16383 + 63 - 3, m)
            yield ext(1, 16383 + 63 - 3, m)
            yield ext(0, 16383 + 63 - 3, m + 1)  # even: no tie, one ulp beside
        m += 2


# The texts gdb 13 printed for the issue's examples (`p $st0` of each loaded by FLD).
ISSUE = {
    0x4000C000000000000000: "3",
    0xC0009000000000000000: "-2.25",
    0x4002A000000000000000: "10",
    0x3FFBCCCCCCCCCCCCCCCD: "0.100000000000000000001",
    0x7FFFC000000000000001: "nan(0xc000000000000001)",
    0xFFFFF3962C4CBB453DF0: "-nan(0xf3962c4cbb453df0)",
    0x00008000000000000000: "<invalid float value>",  # pseudo-denormal
    0x3FFF4000000000000000: "<invalid float value>",  # unnormal
    0x8000191592E2A45EE6B3: "-6.58874309035573486462e-4933",  # denormal
}


def curated() -> list[int]:
    values = list(ISSUE)
    values += [
        ext(0, 0, 0),
        ext(1, 0, 0),
        ext(0, 0x7FFF, TOP),  # inf
        ext(1, 0x7FFF, TOP),
        ext(0, 1, TOP),  # smallest normal
        ext(1, 1, TOP),
        ext(0, 0x7FFE, (1 << 64) - 1),  # largest normal
        ext(1, 0x7FFE, (1 << 64) - 1),
        ext(0, 0, 1),  # smallest denormal
        ext(1, 0, 1),
        ext(0, 0, TOP - 1),  # largest denormal
        ext(0, 0, 0x191592E2A45EE6B3),
        ext(0, 0, 1 << 40),
        ext(1, 0, TOP),  # pseudo-denormals
        ext(0, 0, (1 << 64) - 1),
        ext(0, 0, TOP | 1),
        ext(0, 1, 0),  # unnormals, the pseudo-zero among them
        ext(0, 1, TOP - 1),
        ext(0, 0x3FFF, 0),
        ext(1, 0x4000, 0x4000000000000000),
        ext(0, 0x7FFE, TOP - 1),
        ext(0, 0x7FFF, 0),  # pseudo-infinity
        ext(1, 0x7FFF, 0),
        ext(0, 0x7FFF, 1),  # pseudo-NaN
        ext(1, 0x7FFF, 0x4000000000000000),
        ext(0, 0x7FFF, TOP - 1),
        ext(0, 0x7FFF, 0xC000000000000000),  # QNaN
        ext(1, 0x7FFF, 0xC000000000000000),  # real indefinite
        ext(1, 0x7FFF, 0xC000000000000001),
        ext(0, 0x7FFF, 0xFFFFFFFFFFFFFFFF),
        ext(0, 0x7FFF, 0xC0000000FFFFFFFF),
        ext(0, 0x7FFF, TOP | 1),  # SNaN
        ext(1, 0x7FFF, TOP | 1 << 32),
        ext(0, 0x7FFF, 0xBFFFFFFFFFFFFFFF),
        nearest(1, 3),
        nearest(2, 3, 1),
        nearest(3, 10),
        nearest(123456, 1000),
        nearest(10**4932, 1),
        nearest(10**4931 * 11, 1),
        nearest(1, 10**4931),
        ext(0, 16383 + 63, (1 << 64) - 1),  # 2**64 - 1: twenty digits, exact
        ext(0, 16383 + 64, TOP),  # 2**64
        nearest(10**21, 1),  # exact: style e starts at 21 digits
        nearest(10**21 - 64, 1),  # the value below it: 21 digits in style f
        nearest(10**21 - 1, 1),
        nearest(99999999999999999999995, 100000000000000000000000000),  # rounds to 1e-4
        nearest(99999999999999999999, 10**24),  # 9.9999..e-5: style e
        nearest(1, 10**5),
        nearest(1, 10**4),
        *ties(),
    ]
    values += [nearest(10**k, 1) for k in range(28)]
    values += [nearest(1, 10**k) for k in range(1, 28)]
    values += [nearest(10**k, 1) for k in range(4900, 4933, 8)]
    return values


def expected_info_float(raw: int) -> str:
    """`info float`'s text after the raw bits, spaces collapsed, built from our pieces:
    i387-tdep.c print_i387_ext prints values with " %-+27.19g" and names the rest."""
    label = x87_label(raw)
    negative = raw >> 79 & 1
    words = {
        "unnormal": "Unsupported",
        "pseudo-NaN": "Unsupported",
        "pseudo-infinity": "Unsupported",
        "QNaN": "QNaN",
        "SNaN": "SNaN",
        "real indefinite": "Real Indefinite (QNaN)",
    }
    if label in words:
        return words[label]
    if raw >> 64 & 0x7FFF == 0x7FFF:
        return "-Inf" if negative else "+Inf"
    if label == "pseudo-denormal":
        # glibc's printf (sysdeps/i386/ldbl2mpn.c) clears the integer bit of a
        # pseudo-denormal and reads the rest as a denormal, unless nothing is left: then
        # 2**-16382. (The FPU reads it as J.fraction * 2**-16382, SDM vol. 1 8.2.2.)
        fraction = raw & (TOP - 1)
        value = printf_g(bool(negative), fraction or TOP, -16382 - 63, 19)
    else:
        value = value_text(raw, 19)
    value = value if value.startswith("-") else "+" + value
    extra = {"denormal": " Denormal", "pseudo-denormal": " Pseudo-denormal"}
    return value + extra.get(label or "", "")


def gdb_or_skip() -> None:
    from coremaker import Unavailable, gdb_version

    try:
        gdb_version()
    except Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def x87load(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import x87_oracle
    from coremaker import Unavailable

    gdb_or_skip()
    try:
        return x87_oracle.compile_x87load(tmp_path_factory.mktemp("x87load"))
    except Unavailable as exc:
        pytest.skip(str(exc))


def differences(pairs: list[tuple[int, str, str]]) -> list[str]:
    return [
        f"{raw:#022x}: gdb {theirs!r}, ours {ours!r}"
        for raw, theirs, ours in pairs
        if theirs != ours
    ]


def test_the_issues_examples() -> None:
    assert {raw: x87_text(raw) for raw in ISSUE} == ISSUE


@pytest.mark.gdb
def test_registers_as_gdb_prints_them(x87load: Path) -> None:
    """Each value loaded into a register by FLD: `p $stN`, `info registers stN` and
    `info float` against ours; the long-double route of the random test against $stN."""
    import x87_oracle
    from coremaker import Unavailable

    values = curated()
    rng = random.Random(8087)
    values += [rng.getrandbits(80) for _ in range(96)]
    try:
        views = x87_oracle.gdb_register_view(values, x87load)
    except Unavailable as exc:
        pytest.skip(str(exc))
    # FLD m80fp copies every encoding unchanged: gdb reads back what was loaded.
    assert [hex(v.raw) for v in views] == [hex(v) for v in values]
    assert differences([(v.raw, v.p, x87_text(v.raw)) for v in views]) == []
    assert all(v.info_registers == v.p for v in views)
    assert differences([(v.raw, v.info_float, expected_info_float(v.raw)) for v in views]) == []
    same_route = x87_oracle.gdb_value_texts(values)
    assert differences([(v.raw, v.p, t) for v, t in zip(views, same_route, strict=True)]) == []


_EXPONENTS = (0, 1, 2, 0x3FFE, 0x3FFF, 0x4000, 0x7FFD, 0x7FFE, 0x7FFF)
_FRACTIONS = (0, 1, TOP - 1, 1 << 62, (1 << 62) | 1, 0x5555555555555555)


def shaped(bits: int) -> int:
    """An 80-bit pattern from 96 random bits: the top 16 steer the exponent and the
    fraction so that every class (zero, denormal, pseudo-denormal, normal, unnormal, inf,
    NaN, pseudo-NaN/-infinity) comes often, which a uniform draw would not give (almost
    all normals and unnormals). Plain integers: hypothesis draws them fast."""
    value = bits & ((1 << 80) - 1)
    steer_exponent, steer_fraction = bits >> 80 & 0xFF, bits >> 88 & 0xFF
    exponent = value >> 64 & 0x7FFF
    if steer_exponent < 64:
        exponent = _EXPONENTS[steer_exponent % len(_EXPONENTS)]
    elif steer_exponent < 128:
        exponent = 0x3FFF - 80 + exponent % 161
    fraction = value & (TOP - 1)
    if steer_fraction >= 208:
        fraction = (1 << fraction % 63) - 1
    elif steer_fraction >= 160:
        fraction = _FRACTIONS[steer_fraction % len(_FRACTIONS)]
    # the integer bit as a valid encoding has it, but for one draw in four
    integer = (exponent != 0) ^ (steer_fraction & 3 == 0)
    return ext(value >> 79, exponent, integer << 63 | fraction)


@pytest.mark.gdb
@settings(max_examples=3)
@given(st.lists(st.integers(0, (1 << 96) - 1), min_size=1000, max_size=1000))
def test_random_encodings_as_gdb_prints_them(draws: list[int]) -> None:
    """Batches of 1000 random encodings, one gdb run each: gdb's start (0.1 to 0.7 s on
    a busy machine) is nearly all of the time, so few runs of many values."""
    import x87_oracle

    gdb_or_skip()
    values = [shaped(bits) for bits in draws]
    theirs = x87_oracle.gdb_value_texts(values)
    assert differences([(v, t, x87_text(v)) for v, t in zip(values, theirs, strict=True)]) == []


@given(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(0, 40),
)
def test_printf_g_matches_python_for_doubles(number: float, precision: int) -> None:
    """Python's `%.Ng` is correctly rounded, ties to even, as glibc's is: an outside truth
    for printf_g that needs no gdb."""
    numerator, denominator = abs(number).as_integer_ratio()  # denominator: a power of two
    negative = math.copysign(1.0, number) < 0
    ours = printf_g(negative, numerator, 1 - denominator.bit_length(), precision)
    assert ours == f"%.{precision}g" % number


def test_describe_adds_the_kind_after_gdbs_text() -> None:
    assert x87_describe(0x4000C000000000000000) == "3"
    assert x87_describe(0x00008000000000000000) == "<invalid float value> (pseudo-denormal)"
    assert x87_describe(0x3FFF4000000000000000) == "<invalid float value> (unnormal)"
    assert x87_describe(0x7FFF0000000000000000) == "<invalid float value> (pseudo-infinity)"
    assert x87_describe(0x7FFF0000000000000001) == "<invalid float value> (pseudo-NaN)"
    assert x87_describe(0xFFFFC000000000000000) == "-nan(0xc000000000000000) (real indefinite)"
    assert x87_describe(0x7FFF8000000000000001) == "nan(0x8000000000000001) (SNaN)"
    assert x87_describe(0x7FFFC000000000000001) == "nan(0xc000000000000001) (QNaN)"
    assert x87_describe(0x00000000000000000001).endswith("e-4951 (denormal)")


def decimal_state() -> tuple[object, ...]:
    context = decimal.getcontext()
    flags = {name: context.flags[name] for name in context.flags}
    traps = {name: context.traps[name] for name in context.traps}
    return (id(context), context.prec, context.rounding, context.Emax, context.Emin,
            context.capitals, context.clamp, flags, traps)  # fmt: skip


def test_decoding_leaves_the_decimal_context_alone() -> None:
    from xcr0tool.render.values import describe

    before = decimal_state()
    for raw in [*curated(), *(random.Random(3).getrandbits(80) for _ in range(300))]:
        describe("st0", raw)
    assert decimal_state() == before


def test_no_decimal_import_for_x87_values() -> None:
    """Startup time is measured: showing x87 values imports no decimal module."""
    code = (
        "import sys\n"
        "from xcr0tool.render.values import describe\n"
        "describe('st0', 0x3FFBCCCCCCCCCCCCCCCD)\n"
        "print(sorted(m for m in ('decimal', '_decimal', '_pydecimal') if m in sys.modules))\n"
    )
    assert run_bare(code).strip() == "[]"


GDB_THREAD = re.compile(r"^Thread \d+ \(LWP (\d+)\):$")
REG_LINE = re.compile(r"^(st[0-7])\s+(.*?)\s+\(raw 0x[0-9a-f]+\)$")
OURS_LINE = re.compile(r"^  (st[0-7]) 0x[0-9a-f]+  (.*)$")


@pytest.mark.gdb
@pytest.mark.parametrize(
    "core", sorted(p.name for p in FIXTURES.glob("*.core")), ids=lambda name: name
)
def test_decode_of_a_core_begins_with_gdbs_text(core: str) -> None:
    """`xcr0tool decode CORE` (plain text) against gdb's `info registers stN` of the same
    core, every thread: each description is gdb's text, maybe followed by a label."""
    from coremaker import gdb_binary

    gdb_or_skip()
    registers = " ".join(f"st{i}" for i in range(8))
    gdb_out = subprocess.run(
        [gdb_binary(), "-batch", "-nx", "-q", "-iex", "set debuginfod enabled off",
         "-c", str(FIXTURES / core), "-ex", f"thread apply all info registers {registers}"],
        capture_output=True, text=True, check=False, timeout=300,
    ).stdout  # fmt: skip
    theirs: dict[tuple[str, str], str] = {}
    tid = ""
    for line in gdb_out.splitlines():
        if m := GDB_THREAD.match(line):
            tid = m.group(1)
        elif (m := REG_LINE.match(line)) and tid:
            theirs[tid, m.group(1)] = m.group(2)
    ours: dict[tuple[str, str], str] = {}
    decoded = ok(run("decode", str(FIXTURES / core), "--reg", "st*")).decode()
    for line in decoded.splitlines():
        if line.startswith("thread "):
            tid = line.split()[1].rstrip(":")
        elif m := OURS_LINE.match(line):
            ours[tid, m.group(1)] = m.group(2)
    assert len(theirs) >= 8 and theirs.keys() == ours.keys()
    for key, text in theirs.items():
        assert ours[key] == text or re.fullmatch(re.escape(text) + r" \([a-zA-Z -]+\)", ours[key])
