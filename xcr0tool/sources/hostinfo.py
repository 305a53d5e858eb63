"""What this machine says about XSAVE: the CPU (CPUID, XGETBV, FXSAVE) and the kernel.

The checks are pure functions of the raw data, so tests can feed them synthetic CPUID
tables; `gather_host_info()` is the one function that reads the live machine.
"""

from __future__ import annotations

import ctypes
import functools
import struct
from dataclasses import dataclass, field
from itertools import combinations

from xcr0tool.arch.components import BY_NAME, bits
from xcr0tool.arch.mxcsr import MXCSR_MASK_DEFAULT
from xcr0tool.arch.offsets import MXCSR_MASK, read_u32
from xcr0tool.arch.xcr0 import AMX, AVX, AVX512
from xcr0tool.model.layout import Layout, Leaf0D, layout_from_cpuid
from xcr0tool.sources import cpu

HOST_LAYOUT_SOURCE = "this machine's CPUID leaf 0xD"


def layout_of_host(table: Leaf0D, machine: str | None = None) -> Layout:
    """A host's layout from its CPUID leaf 0xD: the one place it is made. Named after the
    machine when known (`host --save`), so that it still says where it came from when
    read elsewhere."""
    source = HOST_LAYOUT_SOURCE if machine is None else f"CPUID leaf 0xD of {machine}"
    return layout_from_cpuid(table, source)


@functools.cache
def host_layout() -> Layout:
    """This machine's layout (decode, convert, layout and validate take it from here).
    Immutable, so cached."""
    return layout_of_host(cpu.leaf_0d())


# CPUID.(0xD,1).EAX
SUB1_XSAVEOPT = 1 << 0
SUB1_XSAVEC = 1 << 1
SUB1_XGETBV1 = 1 << 2
SUB1_XSAVES = 1 << 3
SUB1_XFD = 1 << 4

# XCR0 bits and the /proc/cpuinfo flag the kernel shows when it enables them. The
# kernel's own table (xsave_cpuid_features in arch/x86/kernel/fpu/xstate.c) drops an
# XCR0 bit whose CPU feature is absent; PKRU is keyed on OSPKE there, not PKU.
XCR0_FLAGS: dict[int, tuple[str, ...]] = {
    2: ("avx",),
    3: ("mpx",),
    4: ("mpx",),
    5: ("avx512f",),
    6: ("avx512f",),
    7: ("avx512f",),
    9: ("ospke", "pku"),
    17: ("amx_tile",),
    18: ("amx_tile",),
}
# Flags that promise user code a feature which needs XCR0 bits: (flag, bits). MPX is
# left out: the kernel dropped MPX support in 5.6 and may still show the CPU flag.
FLAG_NEEDS_XCR0: tuple[tuple[str, int], ...] = (
    ("avx", AVX),
    ("avx512f", AVX512),
    ("ospke", BY_NAME["pkru"].bit),
    ("amx_tile", AMX),
)

ARCH_GET_XCOMP_SUPP = 0x1021
ARCH_GET_XCOMP_PERM = 0x1022
_SYS_ARCH_PRCTL = 158  # x86-64 syscall number


@dataclass(frozen=True)
class XsaveSupport:
    """CPUID.(0xD,1).EAX: which XSAVE variants this CPU has."""

    xsaveopt: bool
    xsavec: bool
    xgetbv1: bool
    xsaves: bool
    xfd: bool


@dataclass
class HostInfo:
    vendor: str
    family: int
    model: int
    stepping: int
    brand: str
    xcr0: int
    xinuse: int | None  # None: no XGETBV with ECX=1
    leaf_0d: Leaf0D
    supports: XsaveSupport
    xss_capable: int  # CPUID.(0xD,1) EDX:ECX, the bits IA32_XSS may hold
    mxcsr_mask: int  # 0 in the FXSAVE area already turned into 0xFFBF
    cpuinfo_flags: list[str]  # cpu0's flags; empty when /proc/cpuinfo is unreadable
    xcomp_supp: int | None  # arch_prctl(ARCH_GET_XCOMP_SUPP); None: kernel < 5.16
    xcomp_perm: int | None  # arch_prctl(ARCH_GET_XCOMP_PERM); None: kernel < 5.16
    inconsistencies: list[str] = field(default_factory=list)

    @property
    def machine(self) -> str:
        """'AuthenticAMD family 25 model 17 stepping 1 (AMD EPYC 9R14)', numbers as
        /proc/cpuinfo prints them."""
        brand = f" ({self.brand})" if self.brand else ""
        return (
            f"{self.vendor} family {self.family} model {self.model} stepping {self.stepping}{brand}"
        )

    @functools.cached_property
    def layout(self) -> Layout:
        return layout_of_host(self.leaf_0d, self.machine)


# ---------------------------------------------------------------- pure decoders


def decode_vendor(leaf0: tuple[int, int, int, int]) -> str:
    """The 12-character vendor string: EBX, EDX, ECX of leaf 0, in that order."""
    _, ebx, ecx, edx = leaf0
    return struct.pack("<III", ebx, edx, ecx).decode("ascii", "replace").rstrip("\0")


def decode_signature(eax: int) -> tuple[int, int, int]:
    """(family, model, stepping) from CPUID.1:EAX, with the extended fields folded in.

    The extended family counts only when the base family is 0xF; the extended model
    when the base family is 6 or 0xF (Intel SDM vol. 2 CPUID; AMD uses 0xF only, and
    its family-6 parts have an extended model of zero, so one rule fits both).
    """
    stepping = eax & 0xF
    model = eax >> 4 & 0xF
    family = eax >> 8 & 0xF
    if family == 0xF:
        family += eax >> 20 & 0xFF
    if eax >> 8 & 0xF in (0x6, 0xF):
        model += (eax >> 16 & 0xF) << 4
    return family, model, stepping


def decode_brand(leaves: list[tuple[int, int, int, int]]) -> str:
    """The brand string from leaves 0x80000002..0x80000004 (48 bytes, NUL-padded)."""
    raw = b"".join(struct.pack("<IIII", *regs) for regs in leaves)
    return raw.split(b"\0", 1)[0].decode("ascii", "replace").strip()


def xsave_support(table: Leaf0D) -> XsaveSupport:
    eax = table.get(1, (0, 0, 0, 0))[0]
    return XsaveSupport(
        xsaveopt=bool(eax & SUB1_XSAVEOPT),
        xsavec=bool(eax & SUB1_XSAVEC),
        xgetbv1=bool(eax & SUB1_XGETBV1),
        xsaves=bool(eax & SUB1_XSAVES),
        xfd=bool(eax & SUB1_XFD),
    )


def user_capable(table: Leaf0D) -> int:
    """CPUID.(0xD,0) EDX:EAX: the bits XCR0 may hold."""
    eax, _, _, edx = table.get(0, (0, 0, 0, 0))
    return edx << 32 | eax


def xss_capable(table: Leaf0D) -> int:
    """CPUID.(0xD,1) EDX:ECX: the bits IA32_XSS may hold."""
    _, _, ecx, edx = table.get(1, (0, 0, 0, 0))
    return edx << 32 | ecx


def parse_cpuinfo_flags(text: str) -> list[str]:
    """The `flags` of the first processor in /proc/cpuinfo text (cpu0)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return value.split()
    return []


def mxcsr_mask_of(image: bytes) -> int:
    """MXCSR_MASK from bytes 28-31 of an FXSAVE/XSAVE legacy area; 0 means 0xFFBF."""
    return read_u32(image, MXCSR_MASK) or MXCSR_MASK_DEFAULT


def xss_candidates(table: Leaf0D, xcr0: int) -> list[int]:
    """The IA32_XSS values that explain CPUID.(0xD,1).EBX, given XCR0.

    EBX is the compacted size of XCR0 | IA32_XSS, and IA32_XSS cannot be read in user
    mode, so try every subset of the XSS-capable bits (a handful on real CPUs).
    """
    want = table.get(1, (0, 0, 0, 0))[1]
    capable = bits(xss_capable(table))
    layout = cpu.table_layout(table)
    found = []
    for n in range(len(capable) + 1):
        for combo in combinations(capable, n):
            xss = sum(1 << i for i in combo)
            if cpu.compacted_size(table, xcr0 | xss, layout) == want:
                found.append(xss)
    return found


def inferred_xss(table: Leaf0D, xcr0: int) -> tuple[int | None, list[int]]:
    """IA32_XSS when exactly one value explains CPUID.(0xD,1).EBX, and every candidate."""
    candidates = xss_candidates(table, xcr0)
    return (candidates[0] if len(candidates) == 1 else None), candidates


def _bit_list(mask: int) -> str:
    return ", ".join(map(str, bits(mask)))


def find_inconsistencies(
    table: Leaf0D,
    xcr0: int,
    cpuinfo_flags: list[str],
    xinuse: int | None = None,
    xcomp_supp: int | None = None,
) -> list[str]:
    """Every way the CPU's and the kernel's statements about XSAVE disagree.

    An empty `cpuinfo_flags` means "unknown" and skips the flag checks.
    """
    found: list[str] = []
    user = user_capable(table)
    supervisor = xss_capable(table)
    listed = user | supervisor
    component_ids = range(2, 63)  # what sub-leaves 2..62 describe

    # A sub-leaf that describes a component neither XCR0 nor IA32_XSS may enable is
    # dead weight at best, a hypervisor bug at worst.
    stray = sum(1 << i for i in component_ids if i in table and not listed >> i & 1)
    if stray:
        found.append(
            f"CPUID leaf 0xD enumerates sub-leaves {_bit_list(stray)} for components that "
            f"neither CPUID.(0xD,0) EDX:EAX ({user:#x}) nor CPUID.(0xD,1) EDX:ECX "
            f"({supervisor:#x}) lists"
        )

    # The converse: a component that may be enabled but has no size.
    hollow = sum(
        1 << i for i in component_ids if listed >> i & 1 and table.get(i, (0, 0, 0, 0))[0] == 0
    )
    if hollow:
        found.append(
            f"components {_bit_list(hollow)} are listed as supported but their CPUID leaf 0xD "
            "sub-leaves give no size"
        )

    if xcr0 & ~user:
        found.append(
            f"XCR0 {xcr0:#x} has bits {_bit_list(xcr0 & ~user)} that CPUID.(0xD,0) EDX:EAX "
            f"({user:#x}) does not allow"
        )

    if cpuinfo_flags:
        flags = set(cpuinfo_flags)
        missing: dict[str, list[int]] = {}
        for bit, names in XCR0_FLAGS.items():
            if xcr0 >> bit & 1 and not flags.intersection(names):
                missing.setdefault(" or ".join(names), []).append(bit)
        for wanted, numbers in missing.items():
            found.append(
                f"XCR0 bits {', '.join(map(str, numbers))} are set but /proc/cpuinfo has no "
                f"{wanted} flag"
            )
        for flag, bits_needed in FLAG_NEEDS_XCR0:
            if flag in flags and xcr0 & bits_needed != bits_needed:
                found.append(
                    f"/proc/cpuinfo has {flag} but XCR0 {xcr0:#x} lacks bits "
                    f"{_bit_list(bits_needed & ~xcr0)}: {flag} instructions would fault"
                )

    layout = cpu.table_layout(table)
    if 0 in table:
        ebx, ecx = table[0][1], table[0][2]
        std = cpu.standard_size(table, xcr0, layout)
        if ebx != std:
            found.append(
                f"CPUID.(0xD,0).EBX is {ebx} but the standard-format size of XCR0 "
                f"{xcr0:#x} (furthest offset+size of its user components) is {std}"
            )
        std_all = cpu.standard_size(table, user, layout)
        if ecx != std_all:
            found.append(
                f"CPUID.(0xD,0).ECX is {ecx} but the standard-format size of every "
                f"supported user component ({user:#x}) is {std_all}"
            )

    sub1_ebx = table.get(1, (0, 0, 0, 0))[1]
    support = xsave_support(table)
    if support.xsaves or support.xsavec or sub1_ebx:
        candidates = xss_candidates(table, xcr0)
        if not candidates:
            found.append(
                f"CPUID.(0xD,1).EBX is {sub1_ebx} but no IA32_XSS within "
                f"{supervisor:#x} makes the compacted size of XCR0|IA32_XSS equal it; "
                f"for XCR0 {xcr0:#x} alone it is {cpu.compacted_size(table, xcr0, layout)} "
                "(IA32_XSS itself cannot be read in user mode)"
            )

    if xinuse is not None and xinuse & ~xcr0:
        found.append(f"XINUSE {xinuse:#x} has bits {_bit_list(xinuse & ~xcr0)} outside XCR0")

    if xcomp_supp is not None and xcomp_supp != xcr0:
        found.append(f"arch_prctl(ARCH_GET_XCOMP_SUPP) is {xcomp_supp:#x} but XCR0 is {xcr0:#x}")
    return found


# ---------------------------------------------------------------- the live machine


def _arch_prctl_get(code: int) -> int | None:
    """arch_prctl(code, &value). None when the kernel does not know the code.

    EINVAL is what kernels before 5.16 answer; any other failure (a seccomp filter
    answering EPERM or ENOSYS) means the same to us: the kernel's view is unavailable.
    """
    value = ctypes.c_uint64(0)
    if cpu.syscall(_SYS_ARCH_PRCTL, ctypes.c_long(code), ctypes.byref(value)):
        return None
    return int(value.value)


def _read_cpuinfo_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            return parse_cpuinfo_flags(handle.read())
    except OSError:
        return []


def gather_host_info() -> HostInfo:
    """Read this machine: CPUID, XCR0/XINUSE, an XSAVE of this thread, the kernel's view."""
    table = cpu.leaf_0d()  # raises XcrError off x86-64 Linux or without leaf 0xD
    leaf0 = cpu.cpuid(0)
    family, model, stepping = decode_signature(cpu.cpuid(1)[0])
    brand = ""
    if cpu.cpuid(0x80000000)[0] >= 0x80000004:
        brand = decode_brand([cpu.cpuid(leaf) for leaf in (0x80000002, 0x80000003, 0x80000004)])
    support = xsave_support(table)
    xcr0 = cpu.xgetbv(0)
    xinuse = cpu.xgetbv(1) if support.xgetbv1 else None
    flags = _read_cpuinfo_flags()
    supp = _arch_prctl_get(ARCH_GET_XCOMP_SUPP)
    perm = _arch_prctl_get(ARCH_GET_XCOMP_PERM)
    return HostInfo(
        vendor=decode_vendor(leaf0),
        family=family,
        model=model,
        stepping=stepping,
        brand=brand,
        xcr0=xcr0,
        xinuse=xinuse,
        leaf_0d=table,
        supports=support,
        xss_capable=xss_capable(table),
        mxcsr_mask=mxcsr_mask_of(cpu.xsave_snapshot(compacted=False)),
        cpuinfo_flags=flags,
        xcomp_supp=supp,
        xcomp_perm=perm,
        inconsistencies=find_inconsistencies(table, xcr0, flags, xinuse, supp),
    )
