"""Signal frames: the fpstate the kernel puts on the stack for a signal handler, an XSAVE
image whose bytes 464-511 hold struct _fpx_sw_bytes instead of the ptrace XCR0 word.

Sources: arch/x86/include/uapi/asm/sigcontext.h (struct _fpx_sw_bytes, FP_XSTATE_MAGIC1
and 2) and arch/x86/kernel/fpu/signal.c (save_sw_bytes, save_xstate_epilog,
check_xstate_in_sigframe).
"""

from __future__ import annotations

from typing import NamedTuple

from xcr0tool.arch.components import EXTENDED_START, LEGACY_SIZE
from xcr0tool.arch.offsets import FP_XSTATE_MAGIC1, FP_XSTATE_MAGIC2, read_u32, read_u64
from xcr0tool.arch.offsets import SW_BYTES as SW_BYTES_OFFSET


class SignalFrameInfo(NamedTuple):  # not a dataclass: cheap to define at every start
    """struct _fpx_sw_bytes at bytes 464-511 of a signal frame's fpstate."""

    extended_size: int
    xfeatures: int
    xstate_size: int
    magic2: int | None  # the u32 at xstate_size, None when past the end of the buffer

    @property
    def magic2_ok(self) -> bool:
        return self.magic2 == FP_XSTATE_MAGIC2


def signal_frame_info(data: bytes) -> SignalFrameInfo | None:
    if len(data) < LEGACY_SIZE or read_u32(data, SW_BYTES_OFFSET) != FP_XSTATE_MAGIC1:
        return None
    xstate_size = read_u32(data, SW_BYTES_OFFSET + 16)
    magic2 = read_u32(data, xstate_size) if xstate_size + 4 <= len(data) else None
    return SignalFrameInfo(
        extended_size=read_u32(data, SW_BYTES_OFFSET + 4),
        xfeatures=read_u64(data, SW_BYTES_OFFSET + 8),
        xstate_size=xstate_size,
        magic2=magic2,
    )


# struct fregs_state: the kernel counts it in a 32-bit frame's extended_size (signal.c)
FSAVE_HEADER_SIZE = 112
MAGIC2_SIZE = 4


def below_header(frame: SignalFrameInfo) -> str | None:
    """xstate_size too small to hold the legacy region and header: the first thing
    rt_sigreturn checks (signal.c check_xstate_in_sigframe) and a frame never written."""
    if frame.xstate_size < EXTENDED_START:
        return (
            f"xstate_size {frame.xstate_size} is below {EXTENDED_START}, the legacy region and"
            " XSAVE header"
        )
    return None


def sigreturn_size_problems(
    frame: SignalFrameInfo, user_size: int | None, user_size_source: str
) -> list[str]:
    """What rt_sigreturn finds wrong with xstate_size, in the order it tests it
    (check_xstate_in_sigframe): below the header, above the kernel's user size (when
    known), above extended_size."""
    problems = [p for p in (below_header(frame),) if p]
    size = frame.xstate_size
    if user_size is not None and size > user_size:
        problems.append(
            f"xstate_size {size} exceeds the kernel's user xstate size"
            f" {user_size} ({user_size_source})"
        )
    if size > frame.extended_size:
        problems.append(f"xstate_size {size} exceeds extended_size {frame.extended_size}")
    return problems


def magic2_problem(frame: SignalFrameInfo, size: int) -> str | None:
    """magic2, the u32 at xstate_size, missing (past the end of the `size`-byte buffer)
    or wrong: rt_sigreturn then ignores the extended state."""
    at = frame.xstate_size
    if frame.magic2 is None:
        return (
            f"no magic2: it would be at byte {at} (xstate_size), past the end of the"
            f" {size}-byte buffer"
        )
    if not frame.magic2_ok:
        return (
            f"magic2 at byte {at} (xstate_size) is {frame.magic2:#010x},"
            f" not {FP_XSTATE_MAGIC2:#010x}"
        )
    return None


def signal_frame_problems(frame: SignalFrameInfo, size: int) -> list[str]:
    """What is wrong with a signal frame's sw_bytes, given the `size`-byte buffer it came in.

    The kernel writes (arch/x86/kernel/fpu/signal.c, save_sw_bytes and
    save_xstate_epilog): xstate_size = its user XSAVE size, extended_size = xstate_size
    + 4 (+ 112 in a 32-bit frame), and magic2 right after the XSAVE area, at xstate_size.
    Checked in the order rt_sigreturn checks them (check_xstate_in_sigframe), with the
    reader's checks above.
    """
    problems = []
    at = frame.xstate_size
    too_small = below_header(frame)
    if too_small:
        problems.append(too_small)
    elif frame.magic2 is None and frame.extended_size == at + MAGIC2_SIZE:
        # the two sizes agree with each other: the copy, not the sw_bytes, fell short
        problems.append(
            f"the buffer ends at {size} bytes, before magic2 at byte {at} (xstate_size):"
            f" the frame was cut short (a whole frame is extended_size, {frame.extended_size},"
            " bytes)"
        )
    elif frame.magic2 is None:
        problems.append(
            f"no magic2: xstate_size {at} points past the end of the {size}-byte buffer"
        )
    else:
        wrong = magic2_problem(frame, size)
        if wrong:
            problems.append(wrong)
    expected = at + MAGIC2_SIZE
    if frame.extended_size == expected + FSAVE_HEADER_SIZE:
        problems.append(
            f"extended_size {frame.extended_size} is xstate_size + 4 + {FSAVE_HEADER_SIZE}:"
            " a 32-bit frame's, whose XSAVE area follows a 112-byte fsave header"
        )
    elif frame.extended_size != expected:
        problems.append(f"extended_size {frame.extended_size} is not xstate_size + 4 ({expected})")
    return problems


def damaged_frame_hint(data: bytes) -> str | None:
    """A buffer that is not a signal frame only because magic1 is wrong: the rest of the
    sw_bytes still points at a magic2."""
    if len(data) < EXTENDED_START or read_u32(data, SW_BYTES_OFFSET) == FP_XSTATE_MAGIC1:
        return None
    at = read_u32(data, SW_BYTES_OFFSET + 16)
    if not EXTENDED_START <= at <= len(data) - MAGIC2_SIZE:
        return None
    if read_u32(data, at) != FP_XSTATE_MAGIC2:
        return None
    return (
        f"not read as a signal frame: magic1 at byte {SW_BYTES_OFFSET} is"
        f" {read_u32(data, SW_BYTES_OFFSET):#010x}, not {FP_XSTATE_MAGIC1:#010x}, though magic2"
        f" sits at byte {at} (xstate_size)"
    )


def frame_area_sizes(frame: SignalFrameInfo, size: int) -> list[int]:
    """Sizes the XSAVE area of a signal frame may have, most trusted first: xstate_size,
    extended_size less magic2, the buffer less magic2, the whole buffer."""
    found: list[int] = []
    for candidate in (frame.xstate_size, frame.extended_size - MAGIC2_SIZE, size - MAGIC2_SIZE):
        if candidate >= EXTENDED_START and candidate not in found:
            found.append(candidate)
    return [*found, size] if size not in found else found


def frame_context(data: bytes, frame: SignalFrameInfo | None) -> list[str]:
    if frame is not None:
        return [f"signal frame: {p}" for p in signal_frame_problems(frame, len(data))]
    hint = damaged_frame_hint(data)
    return [hint] if hint else []
