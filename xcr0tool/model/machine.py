"""A machine, as far as XSAVE state moving to or from it is concerned: its XCR0 (and
where that came from), its CPUID as far as known (leaf 0xD, and leaves 0, 1, 6, 7 when
the description has them), and what rr and CRIU would record about it.

Everything here is data; `ops.compat` decides. Descriptions differ in what they know
(a CPUID dump knows everything but XCR0, a core's layout note knows only the enabled
components), so every fact that may be missing is Optional and its absence is said.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from xcr0tool.arch.components import EXTENDED_START, bits, is_extended
from xcr0tool.model.layout import LEGACY_COMPONENTS, Layout

Regs = tuple[int, int, int, int]
CpuidTable = Mapping[tuple[int, int], Regs]  # (leaf, sub-leaf) -> (eax, ebx, ecx, edx)

XSAVE_LEAF = 0xD
NO_SUBLEAF = 0xFFFFFFFF  # rr's ecx_in for a leaf without sub-leaves (CPUIDRecord)

# The user components Linux can enable: XFEATURE_MASK_USER_SUPPORTED in
# arch/x86/include/asm/fpu/xstate.h (x87, SSE, AVX, MPX, AVX-512, PKRU, AMX, APX):
# bits 0-7, 9, 17-19. fpu__init_system_xstate writes XCR0 = CPUID.(0xD,0) EDX:EAX & this
# (less components whose CPU feature is off), so it is the XCR0 of a machine whose
# description records none.
LINUX_USER_XCR0 = 0xE02FF

LEAF1_ECX_XSAVE = 1 << 26  # CPUID.1:ECX.XSAVE
LEAF1_ECX_OSXSAVE = 1 << 27  # CPUID.1:ECX.OSXSAVE (CR4.OSXSAVE as the OS set it)
SUB1_XSAVEC = 1 << 1  # CPUID.(0xD,1):EAX
SUB1_XSAVES = 1 << 3
_SUPERVISOR = 1  # CPUID.(0xD,i):ECX bit 0
_ALIGNED = 2  # ECX bit 1: 64-byte aligned when compacted
_XFD = 4  # ECX bit 2


def linux_xcr0(capable: int) -> int:
    return capable & LINUX_USER_XCR0


def cpuid_record(table: CpuidTable, leaf: int, subleaf: int) -> Regs | None:
    """The way rr's find_cpuid_record looks a record up (src/util.cc): the leaf with this
    sub-leaf, or the leaf recorded without sub-leaves."""
    found = table.get((leaf, subleaf))
    return found if found is not None else table.get((leaf, NO_SUBLEAF))


def leaf_0d_from_layout(layout: Layout) -> dict[tuple[int, int], Regs]:
    """CPUID.(0xD,i) as a machine with this layout would report it, for each component
    extended component i the layout lists (EAX size, EBX standard offset, ECX flags)."""
    table: dict[tuple[int, int], Regs] = {}
    for entry in layout.components:
        flags = (
            (_SUPERVISOR if entry.supervisor else 0)
            | (_ALIGNED if entry.aligned else 0)
            | (_XFD if entry.xfd else 0)
        )
        table[(XSAVE_LEAF, entry.id)] = (entry.size, entry.standard_offset or 0, flags, 0)
    return table


@dataclass(frozen=True)
class Placement:
    """Where a component sits in the standard format on one machine."""

    size: int
    offset: int
    aligned: bool  # 64-byte aligned when compacted (CPUID.(0xD,i).ECX[1])


@dataclass(frozen=True)
class CriuFacts:
    """What CRIU's cpuinfo.img holds for the machine (compel_cpuid / compel_fpuid in
    compel/arch/x86/src/lib/cpu.c), each None where the description does not tell."""

    xfeatures_mask: int | None
    xsave_size: int | None  # CPUID.(0xD,0).EBX under the machine's XCR0
    xsave_size_max: int | None  # CPUID.(0xD,0).ECX
    # The x86_capability bits cpu_validate_features compares first: fpu, fxsr, osxsave,
    # xsaves. None when the description has no CPUID leaf 1 or sub-leaf 1.
    caps: Mapping[str, bool] | None
    source: str
    # Why CRIU refuses an image dumped here before comparing anything (cpu_validate_cpuinfo
    # and img_to_cpuinfo: an unknown vendor, capability words of an unknown version or
    # count), in CRIU's words; None when it reads the image.
    refusal: str | None = None


@dataclass(frozen=True)
class InUse:
    """One saved state of a machine (a core's thread, a trace's frame): which components
    hold state (XSTATE_BV)."""

    tid: int | None
    in_use: int
    label: str  # "thread 4242", "frame 17 (thread 4242)"
    event: int | None = None  # an rr trace's frame: its index in the events file


@dataclass(frozen=True)
class Machine:
    source: str  # as the user named it
    name: str  # short, for tables
    kind: str  # "cpuid-dump", "profile", "host", "layout", "core", "firecracker", ...
    xcr0: int
    xcr0_source: str
    cpuid: CpuidTable  # leaf 0xD sub-leaves, and leaves 0, 1, 6, 7 where known
    cpuid_source: str
    xcr0_capable: int | None = None  # CPUID.(0xD,0) EDX:EAX
    osxsave: bool | None = None  # rr's xsave_enabled(): CPUID.1:ECX.OSXSAVE
    has_cpuid_faulting: bool | None = None
    uses_cpuid_faulting: bool | None = None  # as rr recording here would (or did)
    criu: CriuFacts | None = None
    images: tuple[InUse, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def subleaf(self, index: int) -> Regs | None:
        return cpuid_record(self.cpuid, XSAVE_LEAF, index)

    def placement(self, component: int) -> Placement | None:
        """The component's standard-format place, None when it is not in XCR0 (or the
        description does not place it)."""
        if not self.xcr0 >> component & 1:
            return None
        if component < 2:
            legacy = LEGACY_COMPONENTS[component]
            return Placement(legacy.size, legacy.standard_offset or 0, False)
        regs = self.subleaf(component)
        if regs is None or regs[0] == 0:
            return None
        return Placement(regs[0], regs[1], bool(regs[2] & _ALIGNED))

    def unplaced(self) -> list[int]:
        """Components of XCR0 the description gives no size and offset for."""
        return [i for i in bits(self.xcr0) if is_extended(i) and self.placement(i) is None]

    @property
    def standard_size(self) -> int:
        """What XSAVE writes under this XCR0: CPUID.(0xD,0).EBX on the machine."""
        ends = [EXTENDED_START]
        for i in bits(self.xcr0):
            place = self.placement(i)
            if is_extended(i) and place is not None:
                ends.append(place.offset + place.size)
        return max(ends)

    def _sub1_flag(self, flag: int) -> bool | None:
        regs = self.subleaf(1)
        return None if regs is None else bool(regs[0] & flag)

    @property
    def xsavec(self) -> bool | None:
        return self._sub1_flag(SUB1_XSAVEC)

    @property
    def xsaves(self) -> bool | None:
        return self._sub1_flag(SUB1_XSAVES)

    @property
    def signature(self) -> int | None:
        """CPUID.1:EAX, when known."""
        regs = cpuid_record(self.cpuid, 1, 0)
        return None if regs is None else regs[0]


# CRIU ------------------------------------------------------------------------------
# compel's x86_capability words and bits (compel/arch/x86/src/lib/include/uapi/asm/cpu.h)
# that compel_fpuid and cpu_validate_features read, as (leaf, sub-leaf, register, bit).
_FEATURE_BITS = {
    "fpu": (1, 0, 3, 0),  # X86_FEATURE_FPU, CPUID_1_EDX
    "xmm": (1, 0, 3, 25),  # X86_FEATURE_XMM
    "fxsr": (1, 0, 3, 24),  # X86_FEATURE_FXSR
    "xsave": (1, 0, 2, 26),  # X86_FEATURE_XSAVE, CPUID_1_ECX
    "osxsave": (1, 0, 2, 27),  # X86_FEATURE_OSXSAVE
    "avx": (1, 0, 2, 28),  # X86_FEATURE_AVX
    "hdc": (6, 0, 0, 13),  # X86_FEATURE_HDC, CPUID_6_EAX
    "mpx": (7, 0, 1, 14),  # X86_FEATURE_MPX, CPUID_7_0_EBX
    "avx512f": (7, 0, 1, 16),  # X86_FEATURE_AVX512F
    "intel_pt": (7, 0, 1, 25),  # X86_FEATURE_INTEL_PT
    "pku": (7, 0, 2, 3),  # X86_FEATURE_PKU, CPUID_7_0_ECX
    "xsaves": (0xD, 1, 0, 3),  # X86_FEATURE_XSAVES, CPUID_D_1_EAX
}
# compel's xsave_cpuid_features[]: XCR0 bit i is cleared when feature i is absent.
_CRIU_XSAVE_FEATURES = (
    "fpu", "xmm", "avx", "mpx", "mpx", "avx512f", "avx512f", "avx512f", "intel_pt", "pku", "hdc",
)  # fmt: skip
# XFEATURE_MASK_USER (compel .../uapi/asm/fpu.h): FP, SSE, YMM, BNDREGS, BNDCSR, the
# three AVX-512 components and PKRU.
_CRIU_USER = 0x2FF
# XFEATURE_MASK_SUPERVISOR there is (XFEATURE_MASK_PT | XFEATURE_HDC): the second term is
# the enum value 10, not a mask, so the macro is 0x10a and `&= ~` clears bits 1 (SSE) and
# 3 (BNDREGS) as well as 8. CRIU's recorded xfeatures_mask never has SSE or BNDREGS.
_CRIU_SUPERVISOR = (1 << 8) | 10
CRIU_FPU_CAPS = ("fpu", "fxsr", "osxsave", "xsaves")
# The same four as (capability word, bit) of compel's x86_capability, which cpuinfo.img
# stores: X86_FEATURE_FPU 0*32+0 and X86_FEATURE_FXSR 0*32+24 (word CPUID_1_EDX = 0),
# X86_FEATURE_OSXSAVE 4*32+27 (CPUID_1_ECX = 4), X86_FEATURE_XSAVES 10*32+3
# (CPUID_D_1_EAX = 10): compel's uapi/asm/cpu.h.
CRIU_CAPABILITY_BITS = {"fpu": (0, 0), "fxsr": (0, 24), "osxsave": (4, 27), "xsaves": (10, 3)}
CRIU_WORD_LEAF1_EDX, CRIU_WORD_LEAF1_ECX, CRIU_WORD_SUB1_EAX = 0, 4, 10


def criu_caps_from_words(words: tuple[int, ...]) -> dict[str, bool] | None:
    """cpu_validate_features' four bits from cpuinfo.img's capability words; None when
    the words do not reach them."""
    if len(words) <= max(word for word, _ in CRIU_CAPABILITY_BITS.values()):
        return None
    return {
        name: bool(words[word] >> bit & 1) for name, (word, bit) in CRIU_CAPABILITY_BITS.items()
    }


def _capability(table: CpuidTable, name: str) -> bool | None:
    """compel_test_cpu_cap for one feature, None when the leaf is not known. compel reads
    leaf 6, 7 and 0xD only when CPUID.0:EAX reaches them (compel_cpuid)."""
    leaf, subleaf, register, bit = _FEATURE_BITS[name]
    level = cpuid_record(table, 0, 0)
    if leaf > 1 and level is not None and level[0] < leaf:
        return False
    regs = cpuid_record(table, leaf, subleaf)
    if regs is None:
        return None
    if name == "xsave" and level is not None and level[0] < XSAVE_LEAF:
        return False  # compel_cpuid: "See filter_cpuid_features in kernel"
    return bool(regs[register] >> bit & 1)


def criu_facts_from_cpuid(table: CpuidTable, source: str) -> CriuFacts:
    """What `criu dump --cpu-cap` writes to cpuinfo.img on a machine with this CPUID
    (compel_cpuid and compel_fpuid): xfeatures_mask, xsave_size, xsave_size_max and the
    capability bits. Where a leaf is missing the result says None, or (for the feature
    bits that clear xfeatures_mask) keeps the bit, as a CPU with the feature would."""
    caps: dict[str, bool] | None = {}
    for name in CRIU_FPU_CAPS:
        known = _capability(table, name)
        if known is None:
            caps = None
            break
        assert caps is not None
        caps[name] = known
    sub0 = cpuid_record(table, XSAVE_LEAF, 0)
    xsave = _capability(table, "xsave")
    if xsave is False or sub0 is None:
        # compel_fpuid returns before reading leaf 0xD: the fields stay zero.
        empty = 0 if xsave is False else None
        return CriuFacts(empty, empty, empty, caps, source)
    eax, ebx, ecx, edx = sub0
    mask = eax | edx << 32
    for bit, name in enumerate(_CRIU_XSAVE_FEATURES):
        if _capability(table, name) is False:
            mask &= ~(1 << bit)
    mask &= _CRIU_USER
    mask &= ~_CRIU_SUPERVISOR
    return CriuFacts(mask, ebx, ecx, caps, source)


def criu_mask_from_xcr0(xcr0: int) -> int:
    """CRIU's xfeatures_mask for a machine known only by its XCR0: the XCR0 Linux set
    already lacks components whose CPU feature is off, as compel's mask does."""
    return xcr0 & _CRIU_USER & ~_CRIU_SUPERVISOR
