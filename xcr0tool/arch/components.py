"""The XSAVE state-component catalogue: one row per component, iterated by everything else.

Sources: Intel SDM vol. 1 ch. 13 (table 13-1 and §13.5), the kernel's
arch/x86/include/asm/fpu/types.h (xfeature numbers and struct layouts), gdb's
i386/amd64 target descriptions (register names). Sizes are architectural defaults;
a layout taken from CPUID (or a core note) overrides them where they vary (arch LBR).
"""

from __future__ import annotations

from typing import NamedTuple

LEGACY_SIZE = 512
HEADER_SIZE = 64
EXTENDED_START = LEGACY_SIZE + HEADER_SIZE  # 576: where the first extended component may go
COMPACTED_BIT = 1 << 63


# NamedTuples, not dataclasses: every start defines them, and a frozen dataclass costs
# about a millisecond to define (startup is measured: bench/bench_decode.py).
class Field(NamedTuple):
    """A named run of bytes inside a component, as the component's own grammar declares it.

    `register` is the gdb register the bytes show in (None: the field's own name), and
    `shift` the bit where they sit in it: ymm3h is bits 255:128 of ymm3 (gdb's
    i387_supply_xsave assembles ymm and zmm from these pieces)."""

    name: str
    offset: int
    size: int
    register: str | None = None
    shift: int = 0

    @property
    def register_name(self) -> str:
        return self.register or self.name


class Component(NamedTuple):
    id: int
    name: str  # short, as the kernel names xfeatures
    title: str  # what a person calls it
    supervisor: bool
    size: int  # architectural size; CPUID may say otherwise (arch LBR depth)
    aligned: bool  # 64-byte aligned in the compacted format, as CPUID reports on real CPUs
    fields: tuple[Field, ...] = ()
    # x87 and SSE live in the legacy region (bytes 0-511, SDM §13.4.1), at fixed places
    # that arch/legacy.py declares; every other component lives in the extended region.
    legacy: bool = False
    # Its fields are pieces of wider vector registers (ymm, zmm), which registers.py
    # assembles with the XMM registers, rather than registers of their own.
    vector_piece: bool = False
    fixed_size: bool = True  # False where CPUID may report another size (arch LBR depth)

    @property
    def bit(self) -> int:
        return 1 << self.id


def _array(
    prefix: str, count: int, size: int, first: int = 0, suffix: str = "", shift: int = 0
) -> tuple[Field, ...]:
    """`count` fields of `size` bytes; with a suffix, each is the piece of register
    prefix+number that starts at bit `shift`."""
    return tuple(
        Field(
            f"{prefix}{first + i}{suffix}",
            i * size,
            size,
            f"{prefix}{first + i}" if suffix else None,
            shift,
        )
        for i in range(count)
    )


def _qwords(*names: str) -> tuple[Field, ...]:
    return tuple(Field(name, 8 * i, 8) for i, name in enumerate(names))


# x87 and SSE live in the legacy region; their "offset" is where their bytes start in it.
CATALOGUE: tuple[Component, ...] = (
    Component(0, "x87", "x87 FPU", False, 160, False, legacy=True),
    Component(1, "sse", "SSE (XMM0-15, MXCSR)", False, 256, False, legacy=True),
    Component(
        2,
        "ymm",
        "AVX (YMM_Hi128)",
        False,
        256,
        False,
        _array("ymm", 16, 16, suffix="h", shift=128),
        vector_piece=True,
    ),
    Component(
        3, "bndregs", "MPX bounds (BNDREGS)", False, 64, False, _array("bnd", 4, 16, suffix="raw")
    ),
    Component(
        4,
        "bndcsr",
        "MPX config (BNDCSR)",
        False,
        64,
        False,
        (Field("bndcfgu", 0, 8), Field("bndstatus", 8, 8)),
    ),
    Component(5, "opmask", "AVX-512 opmask (k0-k7)", False, 64, False, _array("k", 8, 8)),
    Component(
        6,
        "zmm_hi256",
        "AVX-512 ZMM_Hi256",
        False,
        512,
        False,
        _array("zmm", 16, 32, suffix="h", shift=256),
        vector_piece=True,
    ),
    Component(
        7,
        "hi16_zmm",
        "AVX-512 Hi16_ZMM",
        False,
        1024,
        False,
        _array("zmm", 16, 64, first=16),
        vector_piece=True,
    ),
    # Intel SDM §13.5.6 and §36.3.5.1 (IA32_RTIT_* MSRs in XSAVE order).
    Component(
        8,
        "pt",
        "Processor Trace",
        True,
        128,
        False,
        _qwords(
            "rtit_ctl",
            "rtit_output_base",
            "rtit_output_mask_ptrs",
            "rtit_status",
            "rtit_cr3_match",
            "rtit_addr0_a",
            "rtit_addr0_b",
            "rtit_addr1_a",
            "rtit_addr1_b",
        ),
    ),
    Component(9, "pkru", "Protection keys (PKRU)", False, 8, False, (Field("pkru", 0, 4),)),
    Component(10, "pasid", "PASID", True, 8, False, (Field("ia32_pasid", 0, 8),)),
    Component(
        11, "cet_u", "CET user (U_CET, PL3_SSP)", True, 16, False, _qwords("u_cet", "pl3_ssp")
    ),
    Component(
        12,
        "cet_s",
        "CET supervisor (PL0-2_SSP)",
        True,
        24,
        False,
        _qwords("pl0_ssp", "pl1_ssp", "pl2_ssp"),
    ),
    Component(13, "hdc", "Hardware duty cycling", True, 8, False, (Field("ia32_pm_ctl1", 0, 8),)),
    # Intel SDM §13.5.11: the user-interrupt state.
    Component(
        14,
        "uintr",
        "User interrupts (UINTR)",
        True,
        48,
        False,
        _qwords(
            "uintr_handler", "uintr_stackadjust", "uintr_misc", "uintr_pd", "uintr_rr", "uintr_tt"
        ),
    ),
    # Kernel struct arch_lbr_state: ctl, depth, ler_from, ler_to, ler_info, then
    # depth entries of {from, to, info}; 808 bytes is a depth of 32.
    Component(
        15,
        "lbr",
        "Architectural LBR",
        True,
        808,
        False,
        _qwords(
            "lbr_ctl",
            "lbr_depth",
            "ler_from",
            "ler_to",
            "ler_info",
            *(f"lbr_{part}{n}" for n in range(32) for part in ("from", "to", "info")),
        ),
        fixed_size=False,
    ),
    Component(
        16, "hwp", "Hardware P-states (HWP)", True, 8, False, (Field("ia32_hwp_request", 0, 8),)
    ),
    # Intel SDM §13.5.12 / §3.2 of the AMX chapter: palette, start_row, colsb[16], rows[16].
    Component(17, "xtilecfg", "AMX TILECFG", False, 64, True, (Field("tilecfg", 0, 64),)),
    Component(18, "xtiledata", "AMX TILEDATA (tmm0-7)", False, 8192, True, _array("tmm", 8, 1024)),
    # Intel APX specification §3.1: R16-R31 in the space MPX left behind.
    Component(19, "apx", "APX (R16-R31)", False, 128, False, _array("r", 16, 8, first=16)),
    # AMD APM vol. 2 §13.4.2: the LWP state; its inner layout is kept raw.
    Component(62, "lwp", "AMD Lightweight Profiling", False, 128, False, (Field("lwp", 0, 128),)),
)

BY_ID: dict[int, Component] = {c.id: c for c in CATALOGUE}
BY_NAME: dict[str, Component] = {c.name: c for c in CATALOGUE}

SUPERVISOR_MASK = sum(c.bit for c in CATALOGUE if c.supervisor)
CATALOGUE_MASK = sum(c.bit for c in CATALOGUE)
LEGACY_MASK = sum(c.bit for c in CATALOGUE if c.legacy)  # 0b11: x87 and SSE


def is_extended(component_id: int) -> bool:
    """Does the component live in the extended region (not x87 or SSE)?"""
    return not LEGACY_MASK >> component_id & 1


def extended_bits(mask: int) -> int:
    """The extended components of a mask, without the legacy ones and bit 63."""
    return mask & ~LEGACY_MASK & ~COMPACTED_BIT


def component(component_id: int) -> Component:
    """The catalogue row, or a stand-in that keeps an unknown component's bytes raw."""
    known = BY_ID.get(component_id)
    if known is not None:
        return known
    return Component(
        component_id,
        f"xfeature{component_id}",
        f"unknown component {component_id}",
        False,
        0,
        False,
    )


def bits(mask: int) -> list[int]:
    """The set bit numbers of a mask, ascending (bit 63 of XCOMP_BV included if set)."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def describe_mask(mask: int) -> str:
    """0xe7 -> 'x87|sse|ymm|opmask|zmm_hi256|hi16_zmm'."""
    names = [component(i).name if i != 63 else "compacted" for i in bits(mask)]
    return "|".join(names) if names else "none"
