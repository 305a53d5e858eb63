"""rr's and CRIU's checks written again, apart from xcr0tool, to test `compat` against.

Each function follows its C/C++ original statement by statement; the comments quote
the original's lines. Sources, read at these commits:
- rr 5c202cd8 (rr-debugger/rr): src/ReplaySession.cc check_xsave_compatibility,
  tracee_xsave_enabled and the x86 checks of ReplaySession::ReplaySession; src/util.cc
  find_cpuid_record, cpuid_compatible, xsave_enabled; src/util.h the flag values.
- CRIU 2cf8f13c (checkpoint-restore/criu): criu/arch/x86/cpu.c cpu_validate_features;
  compel/arch/x86/src/lib/cpu.c compel_cpuid, compel_fpuid, xsave_cpuid_features;
  compel/arch/x86/src/lib/include/uapi/asm/cpu.h and fpu.h the feature numbers and masks.

Inputs are plain CPUID tables {(leaf, sub-leaf): (eax, ebx, ecx, edx)}, read from AIDA64
dumps by `read_aida_dump` here (not by xcr0tool's parser).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

Regs = tuple[int, int, int, int]
Table = Mapping[tuple[int, int], Regs]
UINT32_MAX = 0xFFFFFFFF

# ---- reading a dump -----------------------------------------------------------------
_LINE = re.compile(
    r"^CPUID ([0-9A-F]{8}): ([0-9A-F]{8})-([0-9A-F]{8})-([0-9A-F]{8})-([0-9A-F]{8})"
    r"(?: \[SL ([0-9A-F]{2})\])?"
)


def read_aida_dump(path: Path) -> dict[tuple[int, int], Regs]:
    """The first CPU's CPUID lines of an InstLatx64 dump. The two old dumps without
    [SL nn] labels (Vishera, Sandy Bridge) list leaf 0xD sub-leaves 0 and 2 only."""
    table: dict[tuple[int, int], Regs] = {}
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        leaf = int(match.group(1), 16)
        regs = tuple(int(match.group(k), 16) for k in range(2, 6))
        if match.group(6) is not None:
            sub = int(match.group(6), 16)
        elif leaf == 0xD and (0xD, 0) in table:
            sub = 2
            assert regs[:2] == (0x100, 0x240), (path, line)
        else:
            sub = 0
        if (leaf, sub) in table:
            if leaf == 0:
                break  # the second CPU
            continue
        table[(leaf, sub)] = regs  # type: ignore[assignment]
    return table


def linux_view(table: Table) -> tuple[int, dict[tuple[int, int], Regs]]:
    """Linux on this CPU: XCR0 = CPUID.(0xD,0) EDX:EAX & XFEATURE_MASK_USER_SUPPORTED
    (0xe02ff), and CPUID.(0xD,0).EBX the size XSAVE needs for it."""
    eax, _ebx, ecx, edx = table[(0xD, 0)]
    xcr0 = (edx << 32 | eax) & 0xE02FF
    end = 576
    for i in range(2, 64):
        if xcr0 >> i & 1:
            size, offset = table[(0xD, i)][:2]
            end = max(end, offset + size)
    view = dict(table)
    view[(0xD, 0)] = (eax, end, ecx, edx)
    return xcr0, view


# ---- rr -----------------------------------------------------------------------------
CPUID_GETFEATURES = 1
CPUID_GETXSAVE = 0xD
OSXSAVE_FEATURE_FLAG = 1 << 27
XSAVEC_FEATURE_FLAG = 1 << 1


def find_cpuid_record(records: Table, eax: int, ecx: int) -> Regs | None:
    # for (const auto& rec : records)
    #   if (rec.eax_in == eax && (rec.ecx_in == ecx || rec.ecx_in == UINT32_MAX))
    #     return &rec;
    for (eax_in, ecx_in), out in records.items():
        if eax_in == eax and (ecx_in == ecx or ecx_in == UINT32_MAX):  # noqa: PLR1714, SIM109
            return out
    return None


def live_cpuid(table: Table, eax: int, ecx: int) -> Regs:
    """`cpuid(eax, ecx)` on the replaying CPU: a sub-leaf the dump does not list is one
    the CPU reports as zeros."""
    return table.get((eax, ecx), (0, 0, 0, 0))


@dataclass
class RrOutcome:
    fatal: str | None  # CLEAN_FATAL's text
    feature: int | None
    warnings: list[str]


def rr_check_xsave_compatibility(
    trace_records: Table, trace_xcr0: int, replay_cpuid: Table, replay_xcr0: int
) -> RrOutcome:
    warnings: list[str] = []
    # if (!tracee_xsave_enabled(trace_in)) return;
    record = find_cpuid_record(trace_records, CPUID_GETFEATURES, 0)
    assert record is not None
    if not record[2] & OSXSAVE_FEATURE_FLAG:
        return RrOutcome(None, None, warnings)
    # if (!xsave_enabled()) { fprintf(stderr, "rr: Tracees had XSAVE but ..."); return; }
    if not live_cpuid(replay_cpuid, CPUID_GETFEATURES, 0)[2] & OSXSAVE_FEATURE_FLAG:
        warnings.append(
            "rr: Tracees had XSAVE but XSAVE is not available now; Replay will probably"
            " fail because glibc dynamic loader uses XSAVE"
        )
        return RrOutcome(None, None, warnings)
    tracee_xcr0 = trace_xcr0
    our_xcr0 = replay_xcr0
    record = find_cpuid_record(trace_records, CPUID_GETXSAVE, 1)
    tracee_xsavec = bool(record and record[0] & XSAVEC_FEATURE_FLAG)
    data = live_cpuid(replay_cpuid, CPUID_GETXSAVE, 1)
    our_xsavec = (data[0] & XSAVEC_FEATURE_FLAG) != 0
    if tracee_xsavec and not our_xsavec:
        warnings.append(
            "rr: Tracees had XSAVEC but XSAVEC is not available now; Replay will probably"
            " fail because glibc dynamic loader uses XSAVEC"
        )
    if tracee_xcr0 != our_xcr0:
        # cerr << "Trace XCR0 value " << HEX(tracee_xcr0) << " != our XCR0 " << "value "
        #      << HEX(our_xcr0) << "; Replay will probably fail " << "because glibc ..."
        warnings.append(
            "Trace XCR0 value " + hex(tracee_xcr0) + " != our XCR0 value " + hex(our_xcr0)
            + "; Replay will probably fail because glibc dynamic loader examines XCR0"
        )  # fmt: skip
    check_alignment = tracee_xsavec and our_xsavec
    for feature in range(2, 64):
        if not tracee_xcr0 & our_xcr0 & (1 << feature):
            continue
        record = find_cpuid_record(trace_records, CPUID_GETXSAVE, feature)
        data = live_cpuid(replay_cpuid, CPUID_GETXSAVE, feature)
        if (
            not record
            or record[0] != data[0]
            or record[1] != data[1]
            or (check_alignment and (record[2] & 2) != (data[2] & 2))
        ):
            return RrOutcome(
                "XSAVE offset/size/alignment differs for feature "
                + str(feature)
                + "; H. Peter Anvin said this would never happen!",
                feature,
                warnings,
            )
    return RrOutcome(None, None, warnings)


def rr_cpuid_compatible(trace_records: Table, replay_cpuid: Table) -> bool:
    # unsigned int cpu_type = cpuid_data.eax & 0xF0FF0; ... return cpu_type == trace_cpu_type;
    record = find_cpuid_record(trace_records, CPUID_GETFEATURES, 0)
    assert record is not None
    return live_cpuid(replay_cpuid, CPUID_GETFEATURES, 0)[0] & 0xF0FF0 == record[0] & 0xF0FF0


# ---- CRIU ---------------------------------------------------------------------------
# enum cpuid_leafs (word numbers) and X86_FEATURE_* = word * 32 + bit
CPUID_1_EDX, CPUID_1_ECX, CPUID_7_0_EBX, CPUID_D_1_EAX, CPUID_7_0_ECX, CPUID_6_EAX = (
    0, 4, 9, 10, 11, 14,
)  # fmt: skip
CPUID_7_0_EDX = 18
X86_FEATURE_FPU = 0 * 32 + 0
X86_FEATURE_FXSR = 0 * 32 + 24
X86_FEATURE_XMM = 0 * 32 + 25
X86_FEATURE_XSAVE = 4 * 32 + 26
X86_FEATURE_OSXSAVE = 4 * 32 + 27
X86_FEATURE_AVX = 4 * 32 + 28
X86_FEATURE_MPX = 9 * 32 + 14
X86_FEATURE_AVX512F = 9 * 32 + 16
X86_FEATURE_INTEL_PT = 9 * 32 + 25
X86_FEATURE_XSAVES = 10 * 32 + 3
X86_FEATURE_PKU = 11 * 32 + 3
X86_FEATURE_HDC = 14 * 32 + 13
XSAVE_CPUID_FEATURES = (
    X86_FEATURE_FPU, X86_FEATURE_XMM, X86_FEATURE_AVX, X86_FEATURE_MPX, X86_FEATURE_MPX,
    X86_FEATURE_AVX512F, X86_FEATURE_AVX512F, X86_FEATURE_AVX512F, X86_FEATURE_INTEL_PT,
    X86_FEATURE_PKU, X86_FEATURE_HDC,
)  # fmt: skip
XFEATURE_FP, XFEATURE_SSE, XFEATURE_YMM, XFEATURE_BNDREGS, XFEATURE_BNDCSR = range(5)
XFEATURE_OPMASK, XFEATURE_ZMM_Hi256, XFEATURE_Hi16_ZMM, XFEATURE_PT = range(5, 9)
XFEATURE_PKRU, XFEATURE_HDC = 9, 10
XFEATURE_MASK_PT = 1 << XFEATURE_PT
XFEATURE_MASK_USER = (
    1 << XFEATURE_FP | 1 << XFEATURE_SSE | 1 << XFEATURE_YMM | 1 << XFEATURE_OPMASK
    | 1 << XFEATURE_ZMM_Hi256 | 1 << XFEATURE_Hi16_ZMM | 1 << XFEATURE_PKRU
    | 1 << XFEATURE_BNDREGS | 1 << XFEATURE_BNDCSR
)  # fmt: skip
# #define XFEATURE_MASK_SUPERVISOR (XFEATURE_MASK_PT | XFEATURE_HDC)   -- sic
XFEATURE_MASK_SUPERVISOR = XFEATURE_MASK_PT | XFEATURE_HDC


@dataclass
class CompelCpuinfo:
    x86_capability: list[int]
    xfeatures_mask: int
    xsave_size: int
    xsave_size_max: int


def cap_bit(cap: list[int], feature: int) -> bool:
    return bool(cap[feature // 32] >> (feature % 32) & 1)


def compel_cpuid(cpuid: Table) -> CompelCpuinfo:
    """compel_cpuid then compel_fpuid, on a machine whose CPUID is `cpuid`."""
    cap = [0] * 19
    cpuid_level = live_cpuid(cpuid, 0, 0)[0]
    if cpuid_level >= 0x00000001:
        _eax, _ebx, ecx, edx = live_cpuid(cpuid, 1, 0)
        cap[CPUID_1_EDX] = edx
        cap[CPUID_1_ECX] = ecx
    if cpuid_level >= 0x00000006:
        cap[CPUID_6_EAX] = live_cpuid(cpuid, 6, 0)[0]
    if cpuid_level >= 0x00000007:
        _eax, ebx, ecx, edx = live_cpuid(cpuid, 7, 0)
        cap[CPUID_7_0_EBX] = ebx
        cap[CPUID_7_0_ECX] = ecx
        cap[CPUID_7_0_EDX] = edx
    if cpuid_level >= 0x0000000D:
        cap[CPUID_D_1_EAX] = live_cpuid(cpuid, 0xD, 1)[0]
    # if ((int32_t)c->cpuid_level < (int32_t)0x0000000d) compel_clear_cpu_cap(c, X86_FEATURE_XSAVE);
    if cpuid_level < 0x0000000D:
        cap[X86_FEATURE_XSAVE // 32] &= ~(1 << X86_FEATURE_XSAVE % 32)
    # compel_fpuid
    assert cap_bit(cap, X86_FEATURE_FPU), "fpu: No FPU detected"
    if not cap_bit(cap, X86_FEATURE_XSAVE):
        return CompelCpuinfo(cap, 0, 0, 0)
    eax, ebx, ecx, edx = live_cpuid(cpuid, 0xD, 0)
    xfeatures_mask = eax + (edx << 32)
    assert xfeatures_mask & 3 == 3
    for i, feature in enumerate(XSAVE_CPUID_FEATURES):
        if not cap_bit(cap, feature):
            xfeatures_mask &= ~(1 << i)
    xfeatures_mask &= XFEATURE_MASK_USER
    xfeatures_mask &= ~XFEATURE_MASK_SUPERVISOR
    return CompelCpuinfo(cap, xfeatures_mask, ebx, ecx)


def cpu_validate_features_fpu(image: CompelCpuinfo, host: CompelCpuinfo) -> str | None:
    """cpu_validate_features with opts.cpu_cap & CPU_CAP_FPU: None when it passes, else
    the pr_err text (without its "cpu: " prefix and newline)."""

    def mismatch(bit: int) -> int:
        # test_bit(__bit, cpu_info->x86_capability) && !compel_cpu_has_feature(__bit)
        return int(cap_bit(image.x86_capability, bit) and not cap_bit(host.x86_capability, bit))

    bits = (X86_FEATURE_FPU, X86_FEATURE_FXSR, X86_FEATURE_OSXSAVE, X86_FEATURE_XSAVES)
    if any(mismatch(b) for b in bits):
        text = "FPU feature required by image is not supported on host "
        return text + "(fpu:%d fxsr:%d osxsave:%d xsaves:%d)" % tuple(  # noqa: UP031
            mismatch(b) for b in bits
        )
    m = image.xfeatures_mask & ~host.xfeatures_mask
    if m:
        return "CPU xfeatures has unsupported bits (%#x)" % m  # noqa: UP031
    if image.xsave_size != host.xsave_size:
        return "CPU xsave size mismatch (%u/%u)" % (image.xsave_size, host.xsave_size)  # noqa: UP031
    if image.xsave_size_max != host.xsave_size_max:
        return "CPU xsave max size mismatch (%u/%u)" % (  # noqa: UP031
            image.xsave_size_max,
            host.xsave_size_max,
        )
    return None
