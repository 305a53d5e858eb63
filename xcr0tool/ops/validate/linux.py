"""Rules: what Linux refuses, through PTRACE_SETREGSET (arch/x86/kernel/fpu/regset.c and
xstate.c) and rt_sigreturn (signal.c check_xstate_in_sigframe). The signal-frame checks
themselves are model/sigframe.py's, shared with decode.

rt_sigreturn: Linux 6.15 to 7.0 (commit "x86/fpu: Refine and simplify the magic number
check during signal return", reverted in June 2026 in 7.1 and the stable trees) checked
only magic1, and magic2 at the kernel's user xstate size; the rules here are those of
the kernels before and after, which also bound xstate_size and read magic2 there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from xcr0tool.arch import offsets as at
from xcr0tool.arch.components import EXTENDED_START
from xcr0tool.arch.offsets import FP_XSTATE_MAGIC1, read_u32
from xcr0tool.arch.xcr0 import AVX, SSE, X87
from xcr0tool.model.sigframe import magic2_problem, sigreturn_size_problems
from xcr0tool.ops.validate.model import (
    LINUX_PTRACE,
    REJECT,
    SIGFRAME,
    WARNING,
    Hit,
    Subject,
    Target,
)
from xcr0tool.ops.validate.registry import LINUX_FPU as _PTRACE
from xcr0tool.ops.validate.registry import LINUX_SIGNAL as _SIGNAL
from xcr0tool.ops.validate.registry import header_word as _header_word
from xcr0tool.ops.validate.registry import hex64 as _hex64
from xcr0tool.ops.validate.registry import names as _names
from xcr0tool.ops.validate.registry import nonzero_words as _nonzero_words
from xcr0tool.ops.validate.registry import reserved_mxcsr_bits as _reserved_mxcsr_bits
from xcr0tool.ops.validate.registry import rule

XSTATE_SIZE_OFFSET = at.SW_BYTES + 16  # struct _fpx_sw_bytes.xstate_size
X87_SSE_YMM = X87 | SSE | AVX  # copy_uabi_to_xstate checks MXCSR when any is in use

FX_ONLY = (
    "rt_sigreturn then restores x87 and SSE only (FXRSTOR of bytes 0-511) and resets every"
    " other component to its init state"
)


@rule(
    "ptrace-size",
    REJECT,
    {LINUX_PTRACE},
    "Linux kernel/ptrace.c ptrace_regset(): iov_len % 8 -> -EINVAL, then iov_len clamped"
    f" to the regset size; {_PTRACE}/regset.c xstateregs_set(): count !="
    " fpu_user_cfg.max_size -> -EFAULT",
    "a multiple of 8 bytes, at least the kernel's user xstate size",
)
def _ptrace_size(s: Subject, t: Target) -> Iterator[Hit]:
    size = len(s.data)
    if size % 8:
        yield Hit(
            f"{size} bytes is not a whole number of 8-byte units, as the NT_X86_XSTATE regset"
            " is made of: EINVAL",
            None,
            str(size),
        )
    elif t.user_size is not None and size < t.user_size:
        yield Hit(
            f"{size} bytes, short of the kernel's user xstate size {t.user_size}"
            f" ({t.user_size_source}): EFAULT",
            None,
            str(size),
        )


@rule(
    "ptrace-size-longer",
    WARNING,
    {LINUX_PTRACE},
    "Linux kernel/ptrace.c ptrace_regset(): iov_len = min(iov_len, regset size)",
    "no bytes past the kernel's user xstate size",
)
def _ptrace_size_longer(s: Subject, t: Target) -> Iterator[Hit]:
    size = len(s.data)
    if t.user_size is not None and size > t.user_size and not size % 8:
        yield Hit(
            f"{size} bytes, longer than the kernel's user xstate size {t.user_size}"
            f" ({t.user_size_source}): the kernel takes the first {t.user_size} and ignores"
            f" the last {size - t.user_size}",
            t.user_size,
            str(size),
        )


@rule(
    "ptrace-xfeatures",
    REJECT,
    {LINUX_PTRACE},
    f"{_PTRACE}/xstate.c validate_user_xstate_header(): xfeatures outside user_xfeatures",
    "XSTATE_BV within the user features",
)
def _ptrace_xfeatures(s: Subject, t: Target) -> Iterator[Hit]:
    extra = s.xstate_bv & ~t.xcr0
    if extra:
        yield Hit(
            f"XSTATE_BV has {_names(extra)} set, outside the user features"
            f" {_names(t.xcr0)}: EINVAL",
            at.XSTATE_BV,
            _hex64(s.xstate_bv),
        )


@rule(
    "ptrace-xcomp-bv",
    REJECT,
    {LINUX_PTRACE},
    f"{_PTRACE}/xstate.c validate_user_xstate_header(): xcomp_bv != 0",
    "XCOMP_BV zero: the standard format",
)
def _ptrace_xcomp_bv(s: Subject, t: Target) -> Iterator[Hit]:
    if s.xcomp_bv:
        yield Hit(
            f"XCOMP_BV is {s.xcomp_bv:#x}: the kernel takes only the standard format,"
            " XCOMP_BV 0: EINVAL",
            at.XCOMP_BV,
            _hex64(s.xcomp_bv),
        )


@rule(
    "ptrace-header-reserved",
    REJECT,
    {LINUX_PTRACE},
    f"{_PTRACE}/xstate.c validate_user_xstate_header(): memchr_inv(hdr->reserved, 0, 48)",
    "all 48 reserved header bytes (528-575) zero",
)
def _ptrace_header_reserved(s: Subject, t: Target) -> Iterator[Hit]:
    for hit in _nonzero_words(s.data, at.HEADER_RESERVED, EXTENDED_START, _header_word):
        yield replace(hit, message=f"{hit.message}: the 48 reserved bytes must be zero: EINVAL")


@rule(
    "ptrace-mxcsr-reserved",
    REJECT,
    {LINUX_PTRACE},
    f"{_PTRACE}/xstate.c copy_uabi_to_xstate(): mxcsr & ~mxcsr_feature_mask when"
    " xfeatures has FP, SSE or YMM",
    "MXCSR within MXCSR_MASK when x87, SSE or AVX is in use",
)
def _ptrace_mxcsr(s: Subject, t: Target) -> Iterator[Hit]:
    reserved = _reserved_mxcsr_bits(s, t)
    if reserved and s.xstate_bv & X87_SSE_YMM:
        yield Hit(
            f"MXCSR {s.mxcsr:#x} sets reserved bits {reserved:#x} (MXCSR_MASK"
            f" {t.mxcsr_mask:#x}, {t.mxcsr_mask_source}) and XSTATE_BV has x87, SSE or AVX:"
            " EINVAL",
            at.MXCSR,
            f"{s.mxcsr:#010x}",
        )


@rule(
    "sigframe-magic1",
    REJECT,
    {SIGFRAME},
    f"{_SIGNAL}: fx_sw->magic1 != FP_XSTATE_MAGIC1",
    "magic1 0x46505853 at byte 464",
)
def _sigframe_magic1(s: Subject, t: Target) -> Iterator[Hit]:
    magic1 = read_u32(s.data, at.SW_BYTES)
    if magic1 != FP_XSTATE_MAGIC1:
        yield Hit(
            f"magic1 is {magic1:#010x}, not {FP_XSTATE_MAGIC1:#010x}: {FX_ONLY}",
            at.SW_BYTES,
            f"{magic1:#010x}",
        )


@rule(
    "sigframe-xstate-size",
    REJECT,
    {SIGFRAME},
    f"{_SIGNAL}: xstate_size < sizeof(fxregs_state) + sizeof(xstate_header), >"
    " fpstate->user_size or > extended_size",
    "576 <= xstate_size <= min(user size, extended_size)",
)
def _sigframe_sizes(s: Subject, t: Target) -> Iterator[Hit]:
    frame = s.signal_frame
    if frame is None:
        return  # no magic1: the other fields mean nothing then
    for problem in sigreturn_size_problems(frame, t.user_size, t.user_size_source):
        yield Hit(f"{problem}: {FX_ONLY}", XSTATE_SIZE_OFFSET, str(frame.xstate_size))


@rule(
    "sigframe-magic2",
    REJECT,
    {SIGFRAME},
    f"{_SIGNAL}: the u32 at fpstate + xstate_size != FP_XSTATE_MAGIC2",
    "magic2 0x46505845 at byte xstate_size",
)
def _sigframe_magic2(s: Subject, t: Target) -> Iterator[Hit]:
    frame = s.signal_frame
    if frame is None or sigreturn_size_problems(frame, t.user_size, t.user_size_source):
        return  # the kernel looks no further
    problem = magic2_problem(frame, len(s.data))
    if problem is not None:
        magic2 = None if frame.magic2 is None else f"{frame.magic2:#010x}"
        yield Hit(f"{problem}: {FX_ONLY}", frame.xstate_size, magic2)
