"""`validate`'s verdict against XRSTOR on this CPU, for mutations of real images.

The base images are what this CPU writes: XSAVE (standard) and XSAVEC (compacted) of a
state with every user component in use. Each case mutates one of them (reserved header
bytes, XSTATE_BV and XCOMP_BV bits, MXCSR reserved bits with SSE/AVX in use and in init
state, RFBM) and checks that `validate` says "would fault" exactly when XRSTOR of the
mutated image raises #GP in the oracle's child (tests/cpu_oracle.py: SIGSEGV = #GP).
Where a case names the rule it breaks, that rule must be among the findings.

Cases are built from this CPU's XCR0 and MXCSR_MASK, so they hold on Intel and AMD alike;
the compacted ones skip, saying so, on a CPU without XSAVEC.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import pytest
from images import put, u64

from xcr0tool.arch.components import COMPACTED_BIT
from xcr0tool.arch.offsets import MXCSR, XCOMP_BV, XSTATE_BV
from xcr0tool.ops.validate import (
    FAULT,
    host_facts,
    make_target,
    subject_from_bytes,
    validate,
)

if TYPE_CHECKING:
    from cpu_oracle import CpuOracle

pytestmark = pytest.mark.cpu

PLAIN_COMPONENTS = (2, 5, 6, 7)  # any bytes load; PKRU, MPX, AMX could upset the helper
# Bits XSTATE_BV / XCOMP_BV may be given that are outside every XCR0 we expect to meet
# (supervisor PT and CET, reserved 62 and 63) or outside this one (MPX, PKRU, AMX, APX).
OUTSIDE_CANDIDATES = (3, 4, 8, 9, 11, 12, 17, 18, 19, 62, 63)
HEADER_OFFSETS = (520, 521, 523, 527, 528, 529, 531, 535, 536, 539, 543, 551, 559, 567, 575)


def set_bits(data: bytes, offset: int, mask: int) -> bytes:
    """The image with `mask` ORed into the u64 at `offset`."""
    return put(data, offset, "<Q", u64(data, offset) | mask)


@dataclass(frozen=True)
class Case:
    name: str
    mutate: Callable[[bytes, CpuOracle], bytes]
    rfbm: int | None = None
    rule: str | None = None  # a rule the case must trip when XRSTOR faults
    rule_by_format: tuple[tuple[str, str], ...] = ()  # the same, for one format only


def _outside(o: CpuOracle, slot: int) -> int:
    """The slot-th bit (cycling) that is outside this CPU's XCR0."""
    outside = [b for b in OUTSIDE_CANDIDATES if not o.xcr0 >> b & 1]
    return outside[slot % len(outside)]


def _reserved_mxcsr_bits(o: CpuOracle) -> list[int]:
    reserved = [b for b in range(32) if not o.mxcsr_mask >> b & 1]
    return sorted({reserved[0], reserved[-1]})


def _seeded_state(o: CpuOracle) -> bytes:
    """A standard image with one value on the x87 stack (1.0 in R7, TOP = 7), random
    bytes in the XMM registers and in every plain extended component, all in use."""
    rng = random.Random(0x5EED)
    image = bytearray(o.xsave())
    struct.pack_into("<HHB", image, 0, 0x037F, 7 << 11, 0x80)
    struct.pack_into("<QH", image, 32, 1 << 63, 0x3FFF)
    image[160:416] = rng.randbytes(256)
    in_use = u64(image, XSTATE_BV) | 0b11
    for i in PLAIN_COMPONENTS:
        if o.xcr0 >> i & 1:
            offset, size = o.standard_offset(i), o.component_size(i)
            image[offset : offset + size] = rng.randbytes(size)
            in_use |= 1 << i
    struct.pack_into("<Q", image, XSTATE_BV, in_use)
    return bytes(image)


@pytest.fixture(scope="module")
def base_image(cpu_oracle: CpuOracle) -> Callable[[str], bytes]:
    """The CPU's own image of the seeded state in a format, saved the first time asked."""
    seeded = _seeded_state(cpu_oracle)
    savers = {
        "standard": cpu_oracle.xrstor_then_xsave,
        "compacted": cpu_oracle.xrstor_then_xsavec,  # skips without XSAVEC
    }

    @cache
    def image(fmt: str) -> bytes:
        saved = savers[fmt](seeded)
        assert saved is not None
        return saved

    return image


def _header_rules(offset: int) -> tuple[tuple[str, str], ...]:
    rules = []
    if offset < 536:
        rules.append(("standard", "standard-header-reserved"))
    if offset >= 528:
        rules.append(("compacted", "compacted-header-reserved"))
    return tuple(rules)


def _header_cases() -> list[Case]:
    return [
        Case(
            f"header byte {offset} = 0x01",
            lambda d, o, at=offset: put(d, at, "<B", d[at] | 1),
            rule_by_format=_header_rules(offset),
        )
        for offset in HEADER_OFFSETS
    ] + [
        Case(
            "header byte 547 = 0x80",
            lambda d, o: put(d, 547, "<B", 0x80),
            rule_by_format=_header_rules(547),
        )
    ]


def _bit_cases() -> list[Case]:
    cases = [
        Case(
            f"{name} outside XCR0 #{slot}",
            lambda d, o, k=slot, at=offset: set_bits(d, at, 1 << _outside(o, k)),
        )
        for slot in range(6)
        for name, offset in (("XSTATE_BV", XSTATE_BV), ("XCOMP_BV", XCOMP_BV))
    ]
    for bit in (0, 1, 2, 5, 6, 7):
        cases.append(
            Case(
                f"XCOMP_BV without bit {bit}",
                lambda d, o, b=bit: put(d, XCOMP_BV, "<Q", u64(d, XCOMP_BV) & ~(1 << b)),
            )
        )
    cases += [
        Case("XSTATE_BV bit 63", lambda d, o: set_bits(d, XSTATE_BV, COMPACTED_BIT)),
        Case("XSTATE_BV 0", lambda d, o: put(d, XSTATE_BV, "<Q", 0)),
        Case(
            "XCOMP_BV bit 63 alone, XSTATE_BV 0",
            lambda d, o: put(put(d, XCOMP_BV, "<Q", COMPACTED_BIT), XSTATE_BV, "<Q", 0),
        ),
        Case(
            "XCOMP_BV = XCR0 | bit 63", lambda d, o: put(d, XCOMP_BV, "<Q", o.xcr0 | COMPACTED_BIT)
        ),
        Case("XCOMP_BV = XCR0, no bit 63", lambda d, o: put(d, XCOMP_BV, "<Q", o.xcr0)),
    ]
    return cases


def _mxcsr_cases() -> list[Case]:
    cases = []
    for which in (0, -1):
        for bv_name, change in (
            ("SSE in use", lambda bv: bv | 0b10),
            ("SSE init", lambda bv: bv & ~0b10),
            ("SSE and AVX init", lambda bv: bv & ~0b110),
            ("AVX only", lambda bv: (bv & ~0b10) | 0b100),
        ):
            for rfbm_name, rfbm in (("all", None), ("no SSE", ~0b10 & (1 << 64) - 1), ("x87", 1)):

                def mutate(
                    d: bytes, o: CpuOracle, w: int = which, f: Callable[[int], int] = change
                ) -> bytes:
                    bit = _reserved_mxcsr_bits(o)[w]
                    d = put(d, MXCSR, "<I", 0x1F80 | 1 << bit)
                    return put(d, XSTATE_BV, "<Q", f(u64(d, XSTATE_BV)))

                cases.append(
                    Case(
                        f"MXCSR reserved bit #{which}, {bv_name}, RFBM {rfbm_name}",
                        mutate,
                        rfbm,
                        "mxcsr-reserved",
                    )
                )
    cases.append(Case("MXCSR DAZ|FZ (allowed)", lambda d, o: put(d, MXCSR, "<I", 0x9FC0)))
    return cases


def _control_cases() -> list[Case]:
    return [
        Case("unchanged", lambda d, o: d),
        Case("software-reserved bytes 464-511", lambda d, o: d[:464] + b"\xa5" * 48 + d[512:]),
        Case("legacy reserved bytes 416-463", lambda d, o: d[:416] + b"\x5a" * 48 + d[464:]),
        Case("MXCSR_MASK field garbage", lambda d, o: put(d, 28, "<I", 0xFFFFFFFF)),
    ]


CASES = _header_cases() + _bit_cases() + _mxcsr_cases() + _control_cases()


def _verdict(image: bytes, rfbm: int | None) -> tuple[bool, set[str]]:
    subject = subject_from_bytes(image, "mutated")
    report = validate(subject, make_target(subject, rfbm=rfbm, host=host_facts()))
    return report.verdict == "would fault", {f.rule for f in report.findings if f.severity == FAULT}


def test_enough_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("fmt", ["standard", "compacted"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_verdict_matches_xrstor(
    cpu_oracle: CpuOracle, base_image: Callable[[str], bytes], fmt: str, case: Case
) -> None:
    image = case.mutate(base_image(fmt), cpu_oracle)
    cpu_faults = cpu_oracle.xrstor_faults(image, case.rfbm)
    ours, rules = _verdict(image, case.rfbm)
    assert ours == cpu_faults, (
        f"{fmt} {case.name}: XRSTOR {'faults' if cpu_faults else 'loads'},"
        f" validate says {'would fault' if ours else 'accepted'} ({sorted(rules)})"
    )
    wanted = dict(case.rule_by_format).get(fmt, case.rule)
    if cpu_faults and wanted:
        assert wanted in rules, f"{fmt} {case.name}: {sorted(rules)}"


def test_base_images_are_real_and_accepted(
    cpu_oracle: CpuOracle, base_image: Callable[[str], bytes]
) -> None:
    standard = base_image("standard")
    assert u64(standard, XCOMP_BV) == 0
    assert u64(standard, XSTATE_BV) & 0b11 == 0b11
    assert _verdict(standard, None) == (False, set())
    compacted = base_image("compacted")
    assert u64(compacted, XCOMP_BV) == cpu_oracle.xcr0 | COMPACTED_BIT
    assert _verdict(compacted, None) == (False, set())


def test_standard_form_loads_mxcsr_for_avx_alone(
    cpu_oracle: CpuOracle, base_image: Callable[[str], bytes]
) -> None:
    """The SDM's footnote: RFBM = AVX alone still loads MXCSR in the standard form."""
    if not cpu_oracle.xcr0 & 0b100:
        pytest.skip("XCR0 has no AVX on this CPU")
    bit = _reserved_mxcsr_bits(cpu_oracle)[0]
    image = put(base_image("standard"), MXCSR, "<I", 0x1F80 | 1 << bit)
    image = put(image, XSTATE_BV, "<Q", 0)
    assert cpu_oracle.xrstor_faults(image, 0b100)
    assert _verdict(image, 0b100) == (True, {"mxcsr-reserved"})


def test_compacted_xstate_bv_bit_63_faults(
    cpu_oracle: CpuOracle, base_image: Callable[[str], bytes]
) -> None:
    """Where the SDM's wording (and Bochs) would let it load: XSTATE_BV[63] with
    XCOMP_BV[63] set. The CPU faults, and so does validate."""
    image = base_image("compacted")
    image = set_bits(image, XSTATE_BV, COMPACTED_BIT)
    assert cpu_oracle.xrstor_faults(image)
    assert _verdict(image, None) == (True, {"xstate-bv-outside-xcomp-bv"})


def test_mxcsr_loaded_while_init_is_what_the_cpu_does(
    cpu_oracle: CpuOracle, base_image: Callable[[str], bytes]
) -> None:
    """The warning's claim: the standard form loads MXCSR with SSE and AVX in init
    state, and XSAVE writes it back so."""
    image = put(base_image("standard"), MXCSR, "<I", 0x1FC0)
    image = put(image, XSTATE_BV, "<Q", u64(image, XSTATE_BV) & ~0b110)
    saved = cpu_oracle.xrstor_then_xsave(image)
    assert saved is not None
    assert struct.unpack_from("<I", saved, MXCSR)[0] == 0x1FC0
    subject = subject_from_bytes(image, "mxcsr")
    report = validate(subject, make_target(subject, host=host_facts()))
    assert report.accepted
    assert "mxcsr-loaded-while-init" in {f.rule for f in report.findings}
