"""Fixed byte offsets of the XSAVE area and the kernel's magics, as plain numbers for the
hot paths (which must not pay for importing construct).

The offsets are read from the one field table, arch/legacy.py (Intel SDM vol. 1 §10.5.1
and §13.4); the magics are the kernel's (arch/x86/include/uapi/asm/sigcontext.h).
"""

from __future__ import annotations

from xcr0tool.arch.legacy import HEADER, field

# Legacy region (FXSAVE layout)
FCW = field("fcw").offset
FSW = field("fsw").offset
ABRIDGED_FTW = field("abridged_ftw").offset
FOP = field("fop").offset
FIP = field("fip").offset  # 64-bit form: 8 bytes; 32-bit form: FIP (4), FCS (2)
FDP = field("fdp").offset  # 64-bit form: 8 bytes; 32-bit form: FDP (4), FDS (2)
FCS_32 = field("fcs", long_mode=False).offset
FDS_32 = field("fds", long_mode=False).offset
MXCSR = field("mxcsr").offset
MXCSR_MASK = field("mxcsr_mask").offset
ST0 = field("st").offset  # 8 slots of 16 bytes, 10 used
ST_STRIDE = field("st").stride
XMM0 = field("xmm").offset  # 16 registers of 16 bytes
SW_BYTES = field("sw_reserved").offset  # 48 bytes no XSAVE instruction writes; software's

# XSAVE header
XSTATE_BV, XCOMP_BV, HEADER_RESERVED = (row.offset for row in HEADER)

FP_XSTATE_MAGIC1 = 0x46505853  # at SW_BYTES in a signal frame
FP_XSTATE_MAGIC2 = 0x46505845  # at xstate_size, after the frame's XSAVE area


def read_u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def read_u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 8], "little")
