"""A C helper that reads this CPU as the tool must: CPUID through <cpuid.h>, XGETBV and
FXSAVE through inline asm, compiled with gcc at test time, sharing no code with the
tool's hand-assembled stubs (tests/unit/sources/test_cpu.py, tests/cli/test_host.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cbuild
import pytest

from xcr0tool.sources import cpu

HELPER_C = r"""
#include <cpuid.h>
#include <stdint.h>
#include <stdio.h>

static void leaf(unsigned l, unsigned s) {
    unsigned a, b, c, d;
    __cpuid_count(l, s, a, b, c, d);
    printf("cpuid %#x %u %u %u %u %u\n", l, s, a, b, c, d);
}

int main(void) {
    unsigned a, b, c, d;
    unsigned max = __get_cpuid_max(0, 0);
    unsigned maxext = __get_cpuid_max(0x80000000, 0);
    leaf(0, 0);
    leaf(1, 0);
    if (max >= 7) leaf(7, 0);
    if (max >= 0xd)
        for (unsigned s = 0; s < 64; s++) leaf(0xd, s);
    leaf(0x80000000, 0);
    for (unsigned l = 0x80000002; l <= 0x80000004 && l <= maxext; l++) leaf(l, 0);
    __cpuid(1, a, b, c, d);
    if (c & (1u << 27)) {
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        printf("xcr0 %llu\n", (unsigned long long)hi << 32 | lo);
    }
    static unsigned char area[512] __attribute__((aligned(16)));
    __asm__ volatile("fxsave64 %0" : "=m"(area));
    printf("mxcsr_mask %u\n", area[28] | area[29] << 8 | area[30] << 16 | (unsigned)area[31] << 24);
    return 0;
}
"""


class Oracle:
    def __init__(self, text: str) -> None:
        self.leaves: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        self.xcr0: int | None = None
        self.mxcsr_mask = 0
        for line in text.splitlines():
            words = line.split()
            if words[0] == "cpuid":
                regs = tuple(int(w) for w in words[3:7])
                self.leaves[(int(words[1], 16), int(words[2]))] = (
                    regs[0],
                    regs[1],
                    regs[2],
                    regs[3],
                )
            elif words[0] == "xcr0":
                self.xcr0 = int(words[1])
            elif words[0] == "mxcsr_mask":
                self.mxcsr_mask = int(words[1])


def helper_oracle() -> Oracle:
    """What the helper reads on this CPU (built once per session)."""
    helper = cbuild.compile_c("helper", HELPER_C, purpose="no C oracle for CPUID/XGETBV")
    run = subprocess.run([str(helper)], check=True, capture_output=True, text=True)
    return Oracle(run.stdout)


def needs_xsave() -> None:
    if not cpu.cpuid(1)[2] & 1 << 27:
        pytest.skip("CPUID.1:ECX.OSXSAVE is 0: no XSAVE on this machine")


# A Zen 4's leaf 0xD (sub-leaf: EAX, EBX, ECX, EDX), with the flags its kernel shows.
ZEN4 = {
    0: (0xE7, 2432, 2432, 0),
    1: (0xF, 2472, 0x1800, 0),
    2: (256, 576, 0, 0),
    5: (64, 832, 0, 0),
    6: (512, 896, 0, 0),
    7: (1024, 1408, 0, 0),
    11: (16, 0, 1, 0),
    12: (24, 0, 1, 0),
}
ZEN4_FLAGS = ["fpu", "sse", "xsave", "avx", "avx512f", "xsaveopt", "xsavec", "xsaves"]


def cpuinfo_cpu0() -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields
