"""rr's and CRIU's checks written again, apart from xcr0tool, to test `compat` against.

Each function follows its C/C++ original statement by statement; the comments quote
the original's lines. Sources, read at these commits:
- rr 5c202cd8 (rr-debugger/rr): src/ReplaySession.cc check_xsave_compatibility,
  tracee_xsave_enabled and the x86 checks of ReplaySession::ReplaySession; src/util.cc
  find_cpuid_record, cpuid_compatible, xsave_enabled; src/util.h the flag values.
- CRIU 2cf8f13c (checkpoint-restore/criu): criu/arch/x86/cpu.c cpu_dump_cpuinfo,
  cpu_validate_cpuinfo, img_to_cpuinfo and cpu_validate_features; compel/arch/x86/src/lib/
  cpu.c compel_cpuid, compel_fpuid, xsave_cpuid_features; compel/arch/x86/src/lib/include/
  uapi/asm/cpu.h and fpu.h the feature numbers and masks; images/cpuinfo.proto.

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


CPUID_8000_0001_EDX, CPUID_LNX_1, CPUID_8000_0001_ECX = 1, 3, 6
CPUID_F_1_EDX, CPUID_8000_0008_EBX, CPUID_8000_000A_EDX, CPUID_F_0_EDX = 12, 13, 15, 16
CPUID_8000_0007_EBX = 17
NCAPINTS = 19
X86_FEATURE_REP_GOOD = 3 * 32 + 16
X86_FEATURE_NOPL = 3 * 32 + 20
X86_FEATURE_CPUID = 3 * 32 + 25
X86_FEATURE_ERMS = 9 * 32 + 9
X86_FEATURE_CQM_LLC = 16 * 32 + 1
X86_VENDOR_INTEL, X86_VENDOR_AMD = 0, 1  # compel uapi/asm/cpu.h
# images/cpuinfo.proto: enum vendor { UNKNOWN = 0; INTEL = 1; AMD = 2; }, as crit spells it
VENDOR_ENUM = {"UNKNOWN": 0, "INTEL": 1, "AMD": 2}
# ncapints[] of cpu.c: { capability_ver, NCAPINTS_V1 = 12 / NCAPINTS_V2 = 19 }
NCAPINTS_BY_VERSION = ((1, 12), (2, 19))


@dataclass
class CompelCpuinfo:
    x86_capability: list[int]
    xfeatures_mask: int
    xsave_size: int
    xsave_size_max: int
    x86_vendor: int = X86_VENDOR_INTEL
    x86_family: int = 0
    x86_model: int = 0
    x86_mask: int = 0
    x86_model_id: str = ""


def cap_bit(cap: list[int], feature: int) -> bool:
    return bool(cap[feature // 32] >> (feature % 32) & 1)


def _set(cap: list[int], feature: int) -> None:
    cap[feature // 32] |= 1 << feature % 32


def _clear(cap: list[int], feature: int) -> None:
    cap[feature // 32] &= ~(1 << feature % 32)


def _text(*regs: int) -> str:
    return b"".join(r.to_bytes(4, "little") for r in regs).split(b"\0", 1)[0].decode("latin-1")


def compel_cpuid(cpuid: Table) -> CompelCpuinfo:
    """compel_cpuid then compel_fpuid, on a machine whose CPUID is `cpuid`."""
    cap = [0] * NCAPINTS
    # cpuid(0x00000000, &c->cpuid_level, &vendor_id[0], &vendor_id[8], &vendor_id[4])
    cpuid_level, ebx, ecx, edx = live_cpuid(cpuid, 0, 0)
    vendor_id = _text(ebx, edx, ecx)
    if vendor_id == "GenuineIntel":
        vendor = X86_VENDOR_INTEL
    elif vendor_id in ("AuthenticAMD", "HygonGenuine"):
        vendor = X86_VENDOR_AMD
    else:
        raise AssertionError(f"Unsupported CPU vendor {vendor_id}")
    family, model, mask = 4, 0, 0
    if cpuid_level >= 0x00000001:
        eax, _ebx, ecx, edx = live_cpuid(cpuid, 1, 0)
        family = (eax >> 8) & 0xF
        model = (eax >> 4) & 0xF
        mask = eax & 0xF
        if family == 0xF:
            family += (eax >> 20) & 0xFF
        if family >= 0x6:
            model += ((eax >> 16) & 0xF) << 4
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
    if cpuid_level >= 0x0000000F:
        cap[CPUID_F_0_EDX] = live_cpuid(cpuid, 0xF, 0)[3]
        if cap_bit(cap, X86_FEATURE_CQM_LLC):
            cap[CPUID_F_1_EDX] = live_cpuid(cpuid, 0xF, 1)[3]
    extended_level = live_cpuid(cpuid, 0x80000000, 0)[0]
    if (extended_level & 0xFFFF0000) == 0x80000000 and extended_level >= 0x80000001:
        _eax, _ebx, ecx, edx = live_cpuid(cpuid, 0x80000001, 0)
        cap[CPUID_8000_0001_ECX] = ecx
        cap[CPUID_8000_0001_EDX] = edx
    model_id = ""
    if extended_level >= 0x80000004:
        regs = [
            r for leaf in (0x80000002, 0x80000003, 0x80000004) for r in live_cpuid(cpuid, leaf, 0)
        ]
        model_id = _text(*regs).lstrip(" ")  # "Intel chips right-justify this string"
    if extended_level >= 0x80000007:
        cap[CPUID_8000_0007_EBX] = live_cpuid(cpuid, 0x80000007, 0)[1]
    if extended_level >= 0x8000000A:
        cap[CPUID_8000_000A_EDX] = live_cpuid(cpuid, 0x8000000A, 0)[3]
    if extended_level >= 0x80000008:
        cap[CPUID_8000_0008_EBX] = live_cpuid(cpuid, 0x80000008, 0)[1]
    _set(cap, X86_FEATURE_CPUID)
    _set(cap, X86_FEATURE_NOPL)
    # if ((int32_t)c->cpuid_level < (int32_t)0x0000000d) compel_clear_cpu_cap(c, X86_FEATURE_XSAVE);
    if cpuid_level < 0x0000000D:
        _clear(cap, X86_FEATURE_XSAVE)
    if vendor == X86_VENDOR_INTEL:
        if family == 15:
            _clear(cap, X86_FEATURE_REP_GOOD)
            _clear(cap, X86_FEATURE_ERMS)
        elif family == 6:
            _set(cap, X86_FEATURE_REP_GOOD)
    else:
        _clear(cap, 0 * 32 + 31)
        if family >= 0x10:
            _set(cap, X86_FEATURE_REP_GOOD)
        if family == 0xF:
            level = live_cpuid(cpuid, 1, 0)[0]
            if (0x0F48 <= level < 0x0F50) or level >= 0x0F58:
                _set(cap, X86_FEATURE_REP_GOOD)
    # compel_fpuid
    info = CompelCpuinfo(cap, 0, 0, 0, vendor, family, model, mask, model_id)
    assert cap_bit(cap, X86_FEATURE_FPU), "fpu: No FPU detected"
    if not cap_bit(cap, X86_FEATURE_XSAVE):
        return info
    eax, ebx, ecx, edx = live_cpuid(cpuid, 0xD, 0)
    xfeatures_mask = eax + (edx << 32)
    assert xfeatures_mask & 3 == 3
    for i, feature in enumerate(XSAVE_CPUID_FEATURES):
        if not cap_bit(cap, feature):
            xfeatures_mask &= ~(1 << i)
    xfeatures_mask &= XFEATURE_MASK_USER
    xfeatures_mask &= ~XFEATURE_MASK_SUPERVISOR
    info.xfeatures_mask, info.xsave_size, info.xsave_size_max = xfeatures_mask, ebx, ecx
    return info


def cpu_dump_cpuinfo(c: CompelCpuinfo) -> dict[str, object]:
    """The cpuinfo_x86_entry cpu_dump_cpuinfo writes for this machine, as `crit decode`
    prints it (and `crit encode` reads it)."""
    entry: dict[str, object] = {
        # (rt_cpu_info.x86_vendor == X86_VENDOR_INTEL) ? ..._INTEL : ..._AMD
        "vendor_id": "INTEL" if c.x86_vendor == X86_VENDOR_INTEL else "AMD",
        "cpu_family": c.x86_family,
        "model": c.x86_model,
        "stepping": c.x86_mask,
        "capability_ver": 2,
        "capability": list(c.x86_capability),
    }
    if c.x86_model_id:  # if (rt_cpu_info.x86_model_id[0])
        entry["model_id"] = c.x86_model_id
    entry["xfeatures_mask"] = c.xfeatures_mask
    entry["xsave_size"] = c.xsave_size
    entry["xsave_size_max"] = c.xsave_size_max
    return entry


def img_to_cpuinfo(entry: dict[str, object], rt: CompelCpuinfo) -> CompelCpuinfo | str:
    """cpu_validate_cpuinfo's vendor check, then img_to_cpuinfo, on the restoring
    machine `rt`: the image as compel_cpuinfo_t, or CRIU's error text."""
    vendor = VENDOR_ENUM[str(entry["vendor_id"])]
    if vendor not in (VENDOR_ENUM["INTEL"], VENDOR_ENUM["AMD"]):
        return "Unknown cpu vendor %d" % vendor  # noqa: UP031
    words = list(entry.get("capability", []))  # type: ignore[call-overload]
    version = int(entry["capability_ver"])  # type: ignore[call-overload]
    for capability_ver, ncapints in NCAPINTS_BY_VERSION:
        if version == capability_ver:
            if len(words) != ncapints:
                return "Image carries %u words while %u expected" % (len(words), ncapints)  # noqa: UP031
            break
    else:
        return "Image carries unknown capability version %d" % version  # noqa: UP031
    cap = words + [0] * (NCAPINTS - len(words))
    if version == 1:  # memcpy(&cpu_info->x86_capability[NCAPINTS_V1], &rt_cpu_info...)
        cap[12:NCAPINTS] = rt.x86_capability[12:NCAPINTS]

    def field(name: str, runtime: int) -> int:
        return int(entry[name]) if name in entry else runtime  # type: ignore[call-overload]

    return CompelCpuinfo(
        cap,
        field("xfeatures_mask", rt.xfeatures_mask),
        field("xsave_size", rt.xsave_size),
        field("xsave_size_max", rt.xsave_size_max),
        X86_VENDOR_INTEL if vendor == VENDOR_ENUM["INTEL"] else X86_VENDOR_AMD,
        int(entry["cpu_family"]),  # type: ignore[call-overload]
        int(entry["model"]),  # type: ignore[call-overload]
        int(entry["stepping"]),  # type: ignore[call-overload]
    )


def cpu_validate_cpuinfo_fpu(entry: dict[str, object], rt: CompelCpuinfo) -> str | None:
    """`criu restore --cpu-cap=fpu` on `rt` of an image whose cpuinfo.img holds `entry`:
    img_to_cpuinfo, then cpu_validate_features' FPU checks."""
    image = img_to_cpuinfo(entry, rt)
    if isinstance(image, str):
        return image
    return cpu_validate_features_fpu(image, rt)


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
