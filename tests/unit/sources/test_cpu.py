"""xcr0tool.sources.cpu and xcr0tool.sources.hostinfo against this CPU, a C helper and synthetic tables.

The oracle is a small C program compiled with gcc at test time (tests/cpuid_helper.py): it
runs CPUID through <cpuid.h> and XGETBV/FXSAVE through inline asm, so it shares no code
with the hand-assembled stubs under test.
"""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest
from cpuid_helper import ZEN4, ZEN4_FLAGS, Oracle, cpuinfo_cpu0, helper_oracle, needs_xsave
from paths import REPO

from xcr0tool.errors import UsageError, XcrError
from xcr0tool.sources import cpu, hostinfo

pytestmark = [
    pytest.mark.cpu,
    pytest.mark.skipif(not cpu.is_x86_64_linux(), reason="needs Linux on x86-64"),
]


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    return helper_oracle()


# ---------------------------------------------------------------- CPUID / XGETBV


def test_leaf_0d_equals_c_helper(oracle: Oracle) -> None:
    needs_xsave()
    expected = {
        sub: regs for (leaf, sub), regs in oracle.leaves.items() if leaf == 0xD and any(regs)
    }
    assert cpu.leaf_0d() == expected
    for sub in range(64):
        assert cpu.cpuid(0xD, sub) == oracle.leaves[(0xD, sub)]


def test_other_leaves_equal_c_helper(oracle: Oracle) -> None:
    for (leaf, sub), regs in oracle.leaves.items():
        got = cpu.cpuid(leaf, sub)
        if leaf == 1:
            # EBX[31:24] is the initial APIC ID of whichever CPU ran the instruction
            assert got[1] & 0x00FFFFFF == regs[1] & 0x00FFFFFF
            assert (got[0], got[2], got[3]) == (regs[0], regs[2], regs[3])
        else:
            assert got == regs, f"leaf {leaf:#x}.{sub}"


def test_xcr0_equals_c_helper(oracle: Oracle) -> None:
    needs_xsave()
    assert cpu.xgetbv(0) == oracle.xcr0


def test_xinuse_is_within_xcr0() -> None:
    needs_xsave()
    if not cpu.cpuid(0xD, 1)[0] & 1 << 2:
        with pytest.raises(XcrError, match=r"CPUID.\(0xD,1\).EAX\[2\]"):
            cpu.xgetbv(1)
        return
    xinuse = cpu.xgetbv(1)
    assert xinuse & ~cpu.xgetbv(0) == 0


def test_undefined_xgetbv_index_is_refused_not_executed() -> None:
    # XGETBV 2 would raise #GP and kill the interpreter: it must never reach the CPU
    with pytest.raises(UsageError, match="XGETBV index 2 is not defined"):
        cpu.xgetbv(2)


def test_cpuid_rejects_out_of_range_leaf() -> None:
    with pytest.raises(UsageError):
        cpu.cpuid(1 << 32)


def test_importing_cpu_builds_no_page() -> None:
    code = "import xcr0tool.sources.cpu as c, sys; sys.exit(len(c._built))"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0


# ---------------------------------------------------------------- XSAVE / XSAVEC


def test_standard_snapshot_size_and_header() -> None:
    needs_xsave()
    xcr0 = cpu.xgetbv(0)
    image = cpu.xsave_snapshot(compacted=False)
    assert len(image) == cpu.cpuid(0xD, 0)[1]
    xstate_bv, xcomp_bv = struct.unpack_from("<QQ", image, 512)
    assert xstate_bv & ~xcr0 == 0
    assert xcomp_bv == 0


@pytest.mark.parametrize("which", ["xcr0", "x87", "sse", "x87+sse", "avx", "all-but-avx", "top"])
def test_compacted_snapshot_xcomp_bv(which: str) -> None:
    needs_xsave()
    if not cpu.cpuid(0xD, 1)[0] & 0b10:
        pytest.skip("no XSAVEC on this CPU (CPUID.(0xD,1).EAX[1] = 0)")
    xcr0 = cpu.xgetbv(0)
    top = 1 << (xcr0.bit_length() - 1)
    rfbm = {
        "xcr0": xcr0,
        "x87": 0x1,
        "sse": 0x2,
        "x87+sse": 0x3,
        "avx": 0x7,
        "all-but-avx": xcr0 & ~0x4,
        "top": 0x3 | top,
    }[which]
    if rfbm & ~xcr0:
        pytest.skip(f"XCR0 {xcr0:#x} lacks some of {rfbm:#x}")
    image = cpu.xsave_snapshot(compacted=True, rfbm=rfbm)
    xstate_bv, xcomp_bv = struct.unpack_from("<QQ", image, 512)
    assert xcomp_bv == rfbm | 1 << 63
    assert xstate_bv & ~rfbm == 0
    assert len(image) == cpu.compacted_size(cpu.leaf_0d(), rfbm)


def test_compacted_default_rfbm_is_xcr0() -> None:
    needs_xsave()
    if not cpu.cpuid(0xD, 1)[0] & 0b10:
        pytest.skip("no XSAVEC on this CPU (CPUID.(0xD,1).EAX[1] = 0)")
    image = cpu.xsave_snapshot(compacted=True)
    assert struct.unpack_from("<Q", image, 520)[0] == cpu.xgetbv(0) | 1 << 63


def test_rfbm_bits_outside_xcr0_are_dropped_like_the_cpu_does() -> None:
    needs_xsave()
    xcr0 = cpu.xgetbv(0)
    absent = next(i for i in range(2, 63) if not xcr0 >> i & 1)
    image = cpu.xsave_snapshot(compacted=False, rfbm=0x3 | 1 << absent)
    assert struct.unpack_from("<Q", image, 512)[0] & ~0x3 == 0


def test_standard_snapshot_of_partial_rfbm_keeps_full_size() -> None:
    needs_xsave()
    image = cpu.xsave_snapshot(compacted=False, rfbm=0x3)
    assert len(image) == cpu.cpuid(0xD, 0)[1]


def test_mxcsr_mask_equals_fxsave_of_c_helper(oracle: Oracle) -> None:
    needs_xsave()
    expected = oracle.mxcsr_mask or 0xFFBF
    assert hostinfo.mxcsr_mask_of(cpu.xsave_snapshot(compacted=False)) == expected


# ---------------------------------------------------------------- sizes


# Sapphire Rapids-like: Intel offsets with their holes, AMX aligned when compacted.
SPR = {
    0: (0x602E7, 11008, 11008, 0),
    1: (0x1F, 0, 0x1900, 0),  # EBX filled in below
    2: (256, 576, 0, 0),
    5: (64, 1088, 0, 0),
    6: (512, 1152, 0, 0),
    7: (1024, 1664, 0, 0),
    8: (128, 0, 1, 0),
    9: (8, 2688, 0, 0),
    11: (16, 0, 1, 0),
    12: (24, 0, 1, 0),
    17: (64, 2752, 2, 0),
    18: (8192, 2816, 6, 0),
}
SPR_XCR0 = 0x602E7
SPR_FLAGS = ["avx", "avx512f", "pku", "ospke", "amx_tile", "xsavec", "xsaves", "xfd"]
# EBX as the hardware gives it with the kernel's usual IA32_XSS (CET user + supervisor)
SPR[1] = (0x1F, cpu.compacted_size(SPR, SPR_XCR0 | 0x1800), 0x1900, 0)


def test_standard_size_is_furthest_end_not_highest_bit() -> None:
    table = {2: (256, 576, 0, 0), 5: (64, 1088, 0, 0), 19: (128, 960, 0, 0)}
    assert cpu.standard_size(table, 0x7 | 1 << 5 | 1 << 19) == 1152
    assert cpu.standard_size(table, 0x7 | 1 << 19) == 1088
    assert cpu.standard_size(table, 0x3) == 576


def test_compacted_size_aligns_flagged_components() -> None:
    assert cpu.compacted_size(SPR, 0x3 | 1 << 9) == 584
    # TILECFG must start on 64 bytes: 584 -> 640, +64 = 704, TILEDATA 704 (aligned) + 8192
    assert cpu.compacted_size(SPR, 0x3 | 1 << 9 | 1 << 17 | 1 << 18) == 704 + 8192


def test_zen4_sizes() -> None:
    assert cpu.standard_size(ZEN4, 0xE7) == 2432
    assert cpu.compacted_size(ZEN4, 0xE7) == 2432
    assert cpu.compacted_size(ZEN4, 0x18E7) == 2472
    assert hostinfo.xss_candidates(ZEN4, 0xE7) == [0x1800]


# ---------------------------------------------------------------- hostinfo, live


def test_hostinfo_agrees_with_proc_cpuinfo() -> None:
    needs_xsave()
    info = hostinfo.gather_host_info()
    proc = cpuinfo_cpu0()
    flags = set(proc["flags"].split())
    assert info.cpuinfo_flags == proc["flags"].split()
    assert info.vendor == proc["vendor_id"]
    assert info.family == int(proc["cpu family"])
    assert info.model == int(proc["model"])
    assert info.stepping == int(proc["stepping"])
    if info.brand:
        assert info.brand == proc["model name"]
    assert info.supports.xsaveopt == ("xsaveopt" in flags)
    assert info.supports.xsavec == ("xsavec" in flags)
    assert info.supports.xgetbv1 == ("xgetbv1" in flags)
    assert info.supports.xsaves == ("xsaves" in flags)
    assert ("avx" in flags) == (info.xcr0 & 0b110 == 0b110)
    assert ("avx512f" in flags) == (info.xcr0 & 0xE0 == 0xE0)
    assert ("ospke" in flags) == bool(info.xcr0 & 1 << 9)
    assert info.xss_capable == info.leaf_0d[1][3] << 32 | info.leaf_0d[1][2]
    assert info.mxcsr_mask & 0xFFBF == 0xFFBF
    if info.xcomp_supp is not None:
        assert info.xcomp_supp == info.xcr0
        assert info.xcomp_perm is not None and info.xcomp_perm & ~info.xcomp_supp == 0
    if info.xinuse is not None:
        assert info.xinuse & ~info.xcr0 == 0
    assert all(isinstance(line, str) for line in info.inconsistencies)


def test_decoders() -> None:
    assert hostinfo.decode_signature(0x00A10F11) == (0x19, 0x11, 1)  # Zen 4 Genoa
    assert hostinfo.decode_signature(0x00050654) == (6, 0x55, 4)  # Skylake-SP
    assert hostinfo.decode_signature(0x00000F41) == (0xF, 4, 1)  # NetBurst, ext 0
    assert hostinfo.decode_vendor((0x10, 0x756E6547, 0x6C65746E, 0x49656E69)) == "GenuineIntel"
    text = "processor\t: 0\nflags\t\t: fpu avx\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    assert hostinfo.parse_cpuinfo_flags(text) == ["fpu", "avx"]
    assert hostinfo.mxcsr_mask_of(bytes(512)) == 0xFFBF


# ---------------------------------------------------------------- consistency rules


def problems(
    table: dict[int, tuple[int, int, int, int]],
    xcr0: int,
    flags: list[str],
    xinuse: int | None = None,
    supp: int | None = None,
) -> list[str]:
    return hostinfo.find_inconsistencies(table, xcr0, flags, xinuse, supp)


def test_consistent_tables_raise_nothing() -> None:
    assert problems(ZEN4, 0xE7, ZEN4_FLAGS, 0xA2, 0xE7) == []
    assert problems(SPR, SPR_XCR0, SPR_FLAGS, 0x2, SPR_XCR0) == []


def test_rule_stray_sub_leaves() -> None:
    # what XSAVE.md says of the development VM: AMX sub-leaves on an 0xe7 machine
    table = dict(ZEN4)
    table[17] = (64, 2752, 2, 0)
    table[18] = (8192, 2816, 2, 0)
    assert problems(table, 0xE7, ZEN4_FLAGS) == [
        "CPUID leaf 0xD enumerates sub-leaves 17, 18 for components that neither "
        "CPUID.(0xD,0) EDX:EAX (0xe7) nor CPUID.(0xD,1) EDX:ECX (0x1800) lists"
    ]


def test_rule_supported_component_without_size() -> None:
    table = dict(ZEN4)
    del table[6]
    found = problems(table, 0xE7, ZEN4_FLAGS)
    assert found[0] == (
        "components 6 are listed as supported but their CPUID leaf 0xD sub-leaves give no size"
    )


def test_rule_xcr0_beyond_cpuid() -> None:
    found = problems(ZEN4, 0xE7 | 1 << 9, [*ZEN4_FLAGS, "ospke"])
    assert found[0] == "XCR0 0x2e7 has bits 9 that CPUID.(0xD,0) EDX:EAX (0xe7) does not allow"


def test_rule_xcr0_bit_without_cpuinfo_flag() -> None:
    flags = [f for f in SPR_FLAGS if f not in ("avx512f", "ospke", "pku")]
    assert problems(SPR, SPR_XCR0, flags) == [
        "XCR0 bits 5, 6, 7 are set but /proc/cpuinfo has no avx512f flag",
        "XCR0 bits 9 are set but /proc/cpuinfo has no ospke or pku flag",
    ]


def test_rule_amx_and_mpx_bits_need_their_flags() -> None:
    flags = [f for f in SPR_FLAGS if f != "amx_tile"]
    assert problems(SPR, SPR_XCR0, flags) == [
        "XCR0 bits 17, 18 are set but /proc/cpuinfo has no amx_tile flag"
    ]
    skx = {
        0: (0x2FF, 2696, 2696, 0),
        1: (0xF, 2568, 0x100, 0),
        2: (256, 576, 0, 0),
        3: (64, 960, 0, 0),
        4: (64, 1024, 0, 0),
        5: (64, 1088, 0, 0),
        6: (512, 1152, 0, 0),
        7: (1024, 1664, 0, 0),
        8: (128, 0, 1, 0),
        9: (8, 2688, 0, 0),
    }
    assert problems(skx, 0x2FF, ["avx", "avx512f", "pku", "ospke"]) == [
        "XCR0 bits 3, 4 are set but /proc/cpuinfo has no mpx flag"
    ]


def test_rule_cpuinfo_flag_without_xcr0_bits() -> None:
    # the CPU can do AVX-512 but the OS enabled only AVX, and still shows the flag
    table = dict(ZEN4)
    table[0] = (0xE7, 832, 2432, 0)
    table[1] = (0xF, cpu.compacted_size(ZEN4, 0x7 | 0x1800), 0x1800, 0)
    assert problems(table, 0x7, ZEN4_FLAGS) == [
        "/proc/cpuinfo has avx512f but XCR0 0x7 lacks bits 5, 6, 7: "
        "avx512f instructions would fault"
    ]


def test_rule_standard_size_ebx() -> None:
    table = dict(ZEN4)
    table[0] = (0xE7, 2696, 2432, 0)
    assert problems(table, 0xE7, ZEN4_FLAGS) == [
        "CPUID.(0xD,0).EBX is 2696 but the standard-format size of XCR0 0xe7 "
        "(furthest offset+size of its user components) is 2432"
    ]


def test_rule_standard_size_ecx() -> None:
    table = dict(ZEN4)
    table[0] = (0xE7, 2432, 2440, 0)
    assert problems(table, 0xE7, ZEN4_FLAGS) == [
        "CPUID.(0xD,0).ECX is 2440 but the standard-format size of every supported user "
        "component (0xe7) is 2432"
    ]


def test_rule_compacted_size_ebx() -> None:
    table = dict(ZEN4)
    table[1] = (0xF, 2450, 0x1800, 0)
    assert problems(table, 0xE7, ZEN4_FLAGS) == [
        "CPUID.(0xD,1).EBX is 2450 but no IA32_XSS within 0x1800 makes the compacted size "
        "of XCR0|IA32_XSS equal it; for XCR0 0xe7 alone it is 2432 (IA32_XSS itself cannot "
        "be read in user mode)"
    ]


def test_rule_compacted_size_accepts_any_plausible_xss() -> None:
    for xss in (0, 0x800, 0x1000, 0x1800):
        table = dict(ZEN4)
        table[1] = (0xF, cpu.compacted_size(ZEN4, 0xE7 | xss), 0x1800, 0)
        assert problems(table, 0xE7, ZEN4_FLAGS) == [], hex(xss)


def test_rule_xinuse_outside_xcr0() -> None:
    assert problems(ZEN4, 0xE7, ZEN4_FLAGS, xinuse=0x2E3) == [
        "XINUSE 0x2e3 has bits 9 outside XCR0"
    ]


def test_rule_kernel_supported_features_differ_from_xcr0() -> None:
    assert problems(ZEN4, 0xE7, ZEN4_FLAGS, supp=0x7) == [
        "arch_prctl(ARCH_GET_XCOMP_SUPP) is 0x7 but XCR0 is 0xe7"
    ]


def test_unknown_flags_skip_flag_rules() -> None:
    assert problems(SPR, SPR_XCR0, []) == []
