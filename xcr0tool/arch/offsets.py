"""Fixed byte offsets of the XSAVE area (Intel SDM vol. 1 §10.5.1 and §13.4) and the
kernel's magics (arch/x86/include/uapi/asm/sigcontext.h).

grammar.py declares the same bytes as construct structures; these plain numbers are for
the hot paths, which must not pay for importing construct. A test checks both agree.
"""

from __future__ import annotations

# Legacy region (FXSAVE layout)
FCW = 0
FSW = 2
ABRIDGED_FTW = 4
FOP = 6
FIP = 8  # 64-bit form: 8 bytes; 32-bit form: FIP (4), FCS (2)
FDP = 16  # 64-bit form: 8 bytes; 32-bit form: FDP (4), FDS (2)
FCS_32 = 12
FDS_32 = 20
MXCSR = 24
MXCSR_MASK = 28
ST0 = 32  # 8 slots of 16 bytes, 10 used
ST_STRIDE = 16
XMM0 = 160  # 16 registers of 16 bytes
SW_BYTES = 464  # 48 bytes no XSAVE instruction writes; software's to use

# XSAVE header
XSTATE_BV = 512
XCOMP_BV = 520
HEADER_RESERVED = 528  # 48 bytes

FP_XSTATE_MAGIC1 = 0x46505853  # at SW_BYTES in a signal frame
FP_XSTATE_MAGIC2 = 0x46505845  # at xstate_size, after the frame's XSAVE area


def read_u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def read_u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 8], "little")
