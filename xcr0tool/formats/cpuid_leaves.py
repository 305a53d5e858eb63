"""The other CPUID leaves of a text dump: the ones around leaf 0xD that say who the CPU
is and which features it has (leaf 0 vendor, leaf 1 signature and feature flags, leaf 6,
leaf 7 sub-leaf 0), for rr's and CRIU's checks. Leaf 0xD itself is cpuid_dump's.

The formats are those of cpuid_dump: `cpuid -r`
    0x00000001 0x00: eax=0x000806f8 ebx=0x00800800 ecx=0x7ffefbff edx=0xbfebfbff
and AIDA64's (InstLatx64), whose sub-leaf is the optional [SL nn] label
    CPUID 00000001: 000806F8-00800800-7FFEFBFF-BFEBFBFF
Only the first logical CPU is read: the dump's second `CPU n:` header, or a (leaf,
sub-leaf) seen again, ends it.
"""

from __future__ import annotations

import re

Regs = tuple[int, int, int, int]

_CPUID_R = re.compile(
    r"^\s*0x([0-9a-f]{8})\s+0x([0-9a-f]+):\s*eax=0x([0-9a-f]+)\s+ebx=0x([0-9a-f]+)"
    r"\s+ecx=0x([0-9a-f]+)\s+edx=0x([0-9a-f]+)",
    re.IGNORECASE,
)
_AIDA = re.compile(
    r"^\s*CPUID\s+([0-9a-f]{8}):\s*([0-9a-f]{8})-([0-9a-f]{8})-([0-9a-f]{8})-([0-9a-f]{8})"
    r"(?:\s*\[SL\s*([0-9a-f]+)\])?",
    re.IGNORECASE,
)
_CPU_HEADER = re.compile(r"^\s*CPU\s+\d+:\s*$", re.IGNORECASE)

# The leaves read: what rr's cpuid_compatible and CRIU's compel_cpuid look at besides 0xD.
WANTED = frozenset({0x0, 0x1, 0x6, 0x7})


def parse_cpuid_leaves(
    text: str, wanted: frozenset[int] | None = WANTED
) -> dict[tuple[int, int], Regs]:
    """{(leaf, sub-leaf): (eax, ebx, ecx, edx)} of the first CPU, for the wanted leaves
    (every leaf when None). An AIDA64 line without [SL nn] is sub-leaf 0 (the first such
    line of its leaf)."""
    table: dict[tuple[int, int], Regs] = {}
    seen: set[tuple[int, int]] = set()
    seen_cpu = False
    for line in text.splitlines():
        if _CPU_HEADER.match(line):
            if seen_cpu and seen:
                break
            seen_cpu = True
            continue
        match = _CPUID_R.match(line)
        if match:
            leaf, subleaf = int(match.group(1), 16), int(match.group(2), 16)
            regs = tuple(int(g, 16) for g in match.groups()[2:])
        else:
            match = _AIDA.match(line)
            if not match:
                continue
            leaf = int(match.group(1), 16)
            subleaf = int(match.group(6), 16) if match.group(6) is not None else 0
            regs = tuple(int(g, 16) for g in match.groups()[1:5])
            if match.group(6) is None and (leaf, 0) in seen and leaf != 0:
                continue  # an unlabelled sub-leaf after the first: not sub-leaf 0
        key = (leaf, subleaf)
        if key in seen:
            break  # the next logical CPU begins
        seen.add(key)
        if wanted is None or leaf in wanted:
            table[key] = (regs[0], regs[1], regs[2], regs[3])
    return table
