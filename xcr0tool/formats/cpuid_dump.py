"""Reading CPUID leaf 0xD out of text dumps.

Two dump formats are common: the `cpuid -r` utility's lines
    0x0000000d 0x02: eax=0x00000100 ebx=0x00000240 ecx=0x00000000 edx=0x00000000
and AIDA64's, as collected by InstLatx64:
    CPUID 0000000D: 00000100-00000240-00000000-00000000 [SL 02]
Dumps list every logical CPU; only the first CPU's sub-leaves are taken. Old AIDA64 dumps
omit the [SL nn] label; the first line is then sub-leaf 0 and the others are recognised by
their (size, offset) pair, or refused.
"""

from __future__ import annotations

import re

from xcr0tool.arch.components import BY_NAME, CATALOGUE
from xcr0tool.errors import LayoutError
from xcr0tool.model.layout import Leaf0D

_CPUID_R = re.compile(
    r"^\s*0x0000000d\s+0x([0-9a-f]+):\s*eax=0x([0-9a-f]+)\s+ebx=0x([0-9a-f]+)"
    r"\s+ecx=0x([0-9a-f]+)\s+edx=0x([0-9a-f]+)",
    re.IGNORECASE,
)
_CPU_HEADER = re.compile(r"^\s*CPU\s+\d+:\s*$", re.IGNORECASE)
_AIDA = re.compile(
    r"^\s*CPUID\s+0000000D:\s*([0-9a-f]{8})-([0-9a-f]{8})-([0-9a-f]{8})-([0-9a-f]{8})"
    r"(?:\s*\[SL\s*([0-9a-f]+)\])?",
    re.IGNORECASE,
)

# (size, standard offset) -> component, for unlabelled AIDA64 lines. Every pair here is
# one that a real CPU reports (Intel and AMD standard offsets).
_KNOWN_PAIRS = {
    (0x100, 0x240): 2,
    (0x40, 0x3C0): 3,
    (0x40, 0x400): 4,
    (0x40, 0x440): 5,
    (0x40, 0x340): 5,
    (0x200, 0x480): 6,
    (0x200, 0x380): 6,
    (0x400, 0x680): 7,
    (0x400, 0x580): 7,
    (0x08, 0xA80): 9,
    (0x08, 0x980): 9,
    (0x40, 0xAC0): 17,
    (0x2000, 0xB00): 18,
}


def parse_cpuid_dump(text: str, source: str) -> dict[int, tuple[int, int, int, int]]:
    """Leaf 0xD of the first CPU in a dump: {sub-leaf: (eax, ebx, ecx, edx)}."""
    leaves: dict[int, tuple[int, int, int, int]] = {}
    seen_cpu = False
    for number, line in enumerate(text.splitlines(), 1):
        if _CPU_HEADER.match(line):
            if seen_cpu and leaves:
                break
            seen_cpu = True
            continue
        match = _CPUID_R.match(line)
        if match:
            subleaf = int(match.group(1), 16)
            regs = tuple(int(g, 16) for g in match.groups()[1:])
        else:
            match = _AIDA.match(line)
            if not match:
                continue
            regs = tuple(int(g, 16) for g in match.groups()[:4])
            if match.group(5) is not None:
                subleaf = int(match.group(5), 16)
            elif not leaves:
                subleaf = 0
            elif regs == leaves.get(0):
                break  # the next logical CPU begins
            else:
                found = _KNOWN_PAIRS.get((regs[0], regs[1]))
                if found is None:
                    raise LayoutError(
                        source,
                        f"line {number}: a leaf 0xD line without [SL nn] that is"
                        f" not a known component (size {regs[0]:#x}, offset {regs[1]:#x});"
                        " label it [SL nn]",
                    )
                subleaf = found
        if subleaf in leaves:
            break  # the next logical CPU begins
        leaves[subleaf] = regs  # type: ignore[assignment]
    if 0 not in leaves:
        raise LayoutError(source, "no CPUID leaf 0xD sub-leaf 0 found (not a CPUID dump?)")
    return leaves


Regs = tuple[int, int, int, int]

_YMM, _PKRU = BY_NAME["ymm"].id, BY_NAME["pkru"].id
_BNDREGS, _BNDCSR = BY_NAME["bndregs"].id, BY_NAME["bndcsr"].id
# component -> (its MPX partner, its offset from the partner's)
_MPX = {_BNDREGS: (_BNDCSR, -64), _BNDCSR: (_BNDREGS, 64)}
_USER_ABOVE_PKRU = sum(c.bit for c in CATALOGUE if not c.supervisor and c.id > _PKRU)


def missing_subleaves(leaves: Leaf0D) -> list[int]:
    """User components that sub-leaf 0 says exist but that the dump does not describe
    (absent, or all zero as some old AIDA64 dumps print them)."""
    eax, _ebx, _ecx, edx = leaves[0]
    capable = eax | edx << 32
    return [i for i in range(2, 64) if capable >> i & 1 and not leaves.get(i, (0,))[0]]


def complete_leaf_0d(leaves: Leaf0D, source: str) -> tuple[dict[int, Regs], list[str]]:
    """The dump's sub-leaves with those it lacks but the architecture fixes filled in, and
    a phrase for each one inferred; LayoutError naming a missing sub-leaf that cannot be.

    What is fixed (SDM vol. 1 §13.4 and the CPUID sub-leaves of every CPU with the
    feature): AVX's YMM_Hi128 is 256 bytes at 576; MPX's BNDREGS and BNDCSR are 64 bytes
    each, BNDCSR right after BNDREGS; PKRU is 8 bytes and, when it is the highest user
    component, ends where sub-leaf 0 ECX (the size for every capable feature) does.
    """
    complete: dict[int, Regs] = dict(leaves)
    inferred = []
    capable = leaves[0][0] | leaves[0][3] << 32
    for i in missing_subleaves(leaves):
        regs: Regs | None = None
        if i == _YMM:
            regs = (256, 576, 0, 0)
            why = "256 bytes at 576, as for every CPU"
        elif i in _MPX and complete.get(_MPX[i][0], (0,))[0]:
            other = complete[_MPX[i][0]]
            regs = (64, other[1] + _MPX[i][1], 0, 0)
            why = f"64 bytes beside sub-leaf {_MPX[i][0]}"
        elif i == _PKRU and capable & _USER_ABOVE_PKRU == 0:
            regs = (8, leaves[0][2] - 8, 0, 0)
            why = f"8 bytes ending at sub-leaf 0 ECX ({leaves[0][2]})"
        if regs is None:
            raise LayoutError(
                source,
                f"sub-leaf 0 says component {i} exists, but the dump lacks"
                f" sub-leaf {i} ({i:#x}) and its place cannot be inferred",
            )
        complete[i] = regs
        inferred.append(f"sub-leaf {i} inferred: {why}")
    return complete, inferred
