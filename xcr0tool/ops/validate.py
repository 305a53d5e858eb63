"""Would XRSTOR, XRSTORS or the Linux kernel take this XSAVE image? Every reason why not.

Rules are data (`RULES`): each has an id, a severity, the stages it belongs to, the
primary source it encodes, and a check that yields hits, each with the byte offset and
the value that break the rule. `validate` runs the rules of the stages that apply and
returns a `Report`; it never raises for a bad image, only for a missing input.

Stages, that is what loads the image:

    xrstor        the XRSTOR instruction (CPL 3)
    xrstors       the XRSTORS instruction (CPL 0, supervisor components)
    fxrstor       what rt_sigreturn falls back to when a frame's sw_bytes are not valid
    linux-ptrace  PTRACE_SETREGSET with NT_X86_XSTATE (regset.c xstateregs_set)
    sigframe      rt_sigreturn's look at struct _fpx_sw_bytes (signal.c)
    surprise      what loads, but not as one would think

Severities: `fault` (the instruction raises #GP), `reject` (the kernel refuses the
buffer; for a signal frame, it ignores the extended state), `warning` (loads, but
surprises). A report with a fault or a reject is not accepted.

What this machine's CPU (AMD Zen 4) says where the written sources are silent or
disagree, checked by tests/test_validate_cpu.py:

- Compacted form: XSTATE_BV[63] = 1 faults, although XCOMP_BV[63] is set too. The
  SDM's "a bit in XCOMP_BV is 0 and the corresponding bit in XSTATE_BV is 1" does not
  cover bit 63 and Bochs (cpu/xsave.cc) lets it through; here it counts as outside.
- Compacted form: MXCSR is loaded only when RFBM[1] and XSTATE_BV[1] are set, as the
  SDM's pseudocode says; Bochs loads it whenever RFBM[1] is set.
- Standard form: MXCSR is loaded whenever RFBM[1] or RFBM[2] is set, even with SSE and
  AVX in init state, and a later XSAVE writes it back with XSTATE_BV[2:1] = 0.
- Standard form: bytes 536-575 of the header are not checked; 520-535 are.

rt_sigreturn: Linux 6.15 to 7.0 (commit "x86/fpu: Refine and simplify the magic number
check during signal return", reverted in June 2026 in 7.1 and the stable trees) checked
only magic1, and magic2 at the kernel's user xstate size; the rules here are those of
the kernels before and after, which also bound xstate_size and read magic2 there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cache, cached_property

from xcr0tool.arch import offsets as at
from xcr0tool.arch.components import (
    COMPACTED_BIT,
    EXTENDED_START,
    SUPERVISOR_MASK,
    bits,
    component,
    describe_mask,
)
from xcr0tool.arch.offsets import FP_XSTATE_MAGIC1, FP_XSTATE_MAGIC2, read_u32, read_u64
from xcr0tool.errors import InputError, XcrError
from xcr0tool.layouts.choose import build_image
from xcr0tool.model.image import (
    FXSAVE,
    MXCSR_INIT,
    MXCSR_MASK_DEFAULT,
    HostFallback,
    XsaveImage,
    plausible_xcr0,
)
from xcr0tool.model.layout import LEGACY_BITS, Layout
from xcr0tool.model.sigframe import SignalFrameInfo, signal_frame_info

FAULT, REJECT, WARNING = "fault", "reject", "warning"
SEVERITIES = (FAULT, REJECT, WARNING)

XRSTOR, XRSTORS, FXRSTOR = "xrstor", "xrstors", "fxrstor"
LINUX_PTRACE, SIGFRAME, SURPRISE = "linux-ptrace", "sigframe", "surprise"
# What `--as` can name: the bare instruction, or the kernel path that ends in one.
CPU, SIGRETURN = "cpu", "sigreturn"
CHECKS = (CPU, LINUX_PTRACE, SIGRETURN)

ALL_ONES = (1 << 64) - 1
XSTATE_SIZE_OFFSET = at.SW_BYTES + 16  # struct _fpx_sw_bytes.xstate_size
X87_SSE_YMM = 0b111
SSE_AVX = 0b110
TILECFG = 17
TILE_NAMES = 8  # palette 1: tmm0-7
TILE_MAX_ROWS = 16
TILE_MAX_COLSB = 64

FX_ONLY = (
    "rt_sigreturn then restores x87 and SSE only (FXRSTOR of bytes 0-511) and resets every"
    " other component to its init state"
)


# The model -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Subject:
    """One image to validate: its bytes, where it came from, and the model of it when its
    components can be placed (rules about header bytes need only the bytes)."""

    data: bytes
    origin: str
    image: XsaveImage | None = None
    model_note: str | None = None  # why there is no model

    @cached_property
    def fxsave_only(self) -> bool:
        return self.image is not None and self.image.format == FXSAVE

    @cached_property
    def xstate_bv(self) -> int:
        return LEGACY_BITS if self.fxsave_only else read_u64(self.data, at.XSTATE_BV)

    @cached_property
    def xcomp_bv(self) -> int:
        return 0 if self.fxsave_only else read_u64(self.data, at.XCOMP_BV)

    @property
    def compacted(self) -> bool:
        return bool(self.xcomp_bv & COMPACTED_BIT)

    @cached_property
    def mxcsr(self) -> int:
        return read_u32(self.data, at.MXCSR)

    @cached_property
    def signal_frame(self) -> SignalFrameInfo | None:
        """The sw_bytes of a signal frame: None unless magic1 is there."""
        return signal_frame_info(self.data)


@dataclass(frozen=True)
class Target:
    """What loads the image and the machine state it loads into; every default says
    where it came from."""

    check: str  # cpu | linux-ptrace | sigreturn
    instruction: str  # xrstor | xrstors | fxrstor: what finally loads the bytes
    xcr0: int
    xcr0_source: str
    xss: int
    xss_source: str
    rfbm: int  # EDX:EAX as given; the CPU ANDs it with XCR0 (| IA32_XSS for XRSTORS)
    mxcsr_mask: int
    mxcsr_mask_source: str
    xsavec: bool | None  # CPUID.(0xD,1):EAX[1]; None when unknown
    user_size: int | None  # the kernel's user xstate size (standard format)
    user_size_source: str

    @property
    def enabled(self) -> int:
        """XCR0, or XCR0 | IA32_XSS for XRSTORS."""
        return self.xcr0 | (self.xss if self.instruction == XRSTORS else 0)

    @property
    def requested(self) -> int:
        """RFBM: the components the instruction touches."""
        return self.rfbm & self.enabled


@dataclass(frozen=True)
class Hit:
    message: str
    offset: int | None = None
    value: str | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    stages: frozenset[str]
    source: str
    summary: str
    check: Callable[[Subject, Target], Iterator[Hit]]


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    message: str
    offset: int | None
    value: str | None
    source: str


@dataclass(frozen=True)
class Report:
    origin: str
    target: Target
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def accepted(self) -> bool:
        return not any(f.severity in (FAULT, REJECT) for f in self.findings)

    @property
    def verdict(self) -> str:
        severities = {f.severity for f in self.findings}
        if FAULT in severities:
            return "would fault"
        if REJECT in severities:
            return "rejected"
        return "accepted"


# Helpers for the rules -------------------------------------------------------------------
def _hex64(value: int) -> str:
    return f"{value:#018x}"


def _names(mask: int) -> str:
    return f"{mask:#x} ({describe_mask(mask)})"


def _nonzero_words(data: bytes, start: int, end: int, what: Callable[[int], str]) -> Iterator[Hit]:
    """One hit per 8-byte word of data[start:end] that is not zero, at its first set byte."""
    for word in range(start, end, 8):
        chunk = data[word : word + 8]
        if any(chunk):
            first = word + next(i for i, b in enumerate(chunk) if b)
            value = int.from_bytes(chunk, "little")
            yield Hit(
                f"{what(word)} (bytes {word}-{word + 7}) hold {value:#x}", first, _hex64(value)
            )


def _header_word(offset: int) -> str:
    if offset == at.XCOMP_BV:
        return "XCOMP_BV"
    in_header = offset - at.XSTATE_BV
    return f"header bytes {in_header}-{in_header + 7}"


def _reserved_mxcsr_bits(s: Subject, t: Target) -> int:
    return s.mxcsr & ~t.mxcsr_mask


def mxcsr_loaded(subject: Subject, target: Target) -> bool:
    """Does the instruction load MXCSR from byte 24? SDM vol. 1 §13.8: the standard form
    whenever RFBM[1] or RFBM[2] is set, the compacted form only with SSE restored."""
    if target.instruction == FXRSTOR:
        return True
    rfbm = target.requested
    if subject.compacted:
        return bool(rfbm & subject.xstate_bv & subject.xcomp_bv & 0b10)
    return bool(rfbm & SSE_AVX)


# Rules: the instructions -----------------------------------------------------------------
def _compacted_without_xsavec(s: Subject, t: Target) -> Iterator[Hit]:
    if s.compacted and t.xsavec is False:
        yield Hit(
            "XCOMP_BV[63] selects the compacted form, which this CPU lacks (no XSAVEC)",
            at.XCOMP_BV,
            _hex64(s.xcomp_bv),
        )


def _standard_under_xrstors(s: Subject, t: Target) -> Iterator[Hit]:
    if not s.compacted:
        yield Hit(
            "XCOMP_BV[63] is 0: XRSTORS takes only the compacted format",
            at.XCOMP_BV,
            _hex64(s.xcomp_bv),
        )


def _xstate_bv_outside_xcr0(s: Subject, t: Target) -> Iterator[Hit]:
    extra = s.xstate_bv & ~t.xcr0
    if not s.compacted and extra:
        yield Hit(
            f"XSTATE_BV has {_names(extra)} set, outside XCR0 {_names(t.xcr0)}",
            at.XSTATE_BV,
            _hex64(s.xstate_bv),
        )


def _standard_header_reserved(s: Subject, t: Target) -> Iterator[Hit]:
    if not s.compacted:
        yield from _nonzero_words(s.data, at.XCOMP_BV, at.XCOMP_BV + 16, _header_word)


def _xcomp_bv_outside_enabled(s: Subject, t: Target) -> Iterator[Hit]:
    extra = s.xcomp_bv & ~COMPACTED_BIT & ~t.enabled
    if s.compacted and extra:
        what = "XCR0 | IA32_XSS" if t.instruction == XRSTORS else "XCR0"
        yield Hit(
            f"XCOMP_BV has {_names(extra)} set, outside {what} {_names(t.enabled)}",
            at.XCOMP_BV,
            _hex64(s.xcomp_bv),
        )


def _xstate_bv_outside_xcomp_bv(s: Subject, t: Target) -> Iterator[Hit]:
    # Bit 63 of XSTATE_BV counts as outside: the CPU faults on it (module docstring).
    extra = s.xstate_bv & ~(s.xcomp_bv & ~COMPACTED_BIT)
    if s.compacted and extra:
        yield Hit(
            f"XSTATE_BV has {_names(extra)} set, outside XCOMP_BV[62:0]"
            f" {_names(s.xcomp_bv & ~COMPACTED_BIT)}",
            at.XSTATE_BV,
            _hex64(s.xstate_bv),
        )


def _compacted_header_reserved(s: Subject, t: Target) -> Iterator[Hit]:
    if s.compacted:
        yield from _nonzero_words(s.data, at.HEADER_RESERVED, EXTENDED_START, _header_word)


def _mxcsr_reserved(s: Subject, t: Target) -> Iterator[Hit]:
    reserved = _reserved_mxcsr_bits(s, t)
    if reserved and mxcsr_loaded(s, t):
        yield Hit(
            f"MXCSR {s.mxcsr:#x} sets reserved bits {reserved:#x}"
            f" (MXCSR_MASK {t.mxcsr_mask:#x}, {t.mxcsr_mask_source})",
            at.MXCSR,
            f"{s.mxcsr:#010x}",
        )


# Rules: Linux ----------------------------------------------------------------------------
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


def _ptrace_xfeatures(s: Subject, t: Target) -> Iterator[Hit]:
    extra = s.xstate_bv & ~t.xcr0
    if extra:
        yield Hit(
            f"XSTATE_BV has {_names(extra)} set, outside the user features"
            f" {_names(t.xcr0)}: EINVAL",
            at.XSTATE_BV,
            _hex64(s.xstate_bv),
        )


def _ptrace_xcomp_bv(s: Subject, t: Target) -> Iterator[Hit]:
    if s.xcomp_bv:
        yield Hit(
            f"XCOMP_BV is {s.xcomp_bv:#x}: the kernel takes only the standard format,"
            " XCOMP_BV 0: EINVAL",
            at.XCOMP_BV,
            _hex64(s.xcomp_bv),
        )


def _ptrace_header_reserved(s: Subject, t: Target) -> Iterator[Hit]:
    for hit in _nonzero_words(s.data, at.HEADER_RESERVED, EXTENDED_START, _header_word):
        yield replace(hit, message=f"{hit.message}: the 48 reserved bytes must be zero: EINVAL")


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


def _sigframe_magic1(s: Subject, t: Target) -> Iterator[Hit]:
    magic1 = read_u32(s.data, at.SW_BYTES)
    if magic1 != FP_XSTATE_MAGIC1:
        yield Hit(
            f"magic1 is {magic1:#010x}, not {FP_XSTATE_MAGIC1:#010x}: {FX_ONLY}",
            at.SW_BYTES,
            f"{magic1:#010x}",
        )


def _size_problems(frame: SignalFrameInfo, t: Target) -> list[str]:
    """What is wrong with xstate_size, in the order the kernel tests it."""
    size = frame.xstate_size
    problems = []
    if size < EXTENDED_START:
        problems.append(
            f"xstate_size {size} is below {EXTENDED_START}, the legacy region and header"
        )
    if t.user_size is not None and size > t.user_size:
        problems.append(
            f"xstate_size {size} exceeds the kernel's user xstate size"
            f" {t.user_size} ({t.user_size_source})"
        )
    if size > frame.extended_size:
        problems.append(f"xstate_size {size} exceeds extended_size {frame.extended_size}")
    return problems


def _sigframe_sizes(s: Subject, t: Target) -> Iterator[Hit]:
    frame = s.signal_frame
    if frame is None:
        return  # no magic1: the other fields mean nothing then
    for problem in _size_problems(frame, t):
        yield Hit(f"{problem}: {FX_ONLY}", XSTATE_SIZE_OFFSET, str(frame.xstate_size))


def _sigframe_magic2(s: Subject, t: Target) -> Iterator[Hit]:
    frame = s.signal_frame
    if frame is None or _size_problems(frame, t):
        return  # the kernel looks no further
    where = frame.xstate_size
    if frame.magic2 is None:
        yield Hit(
            f"no magic2: it would be at byte {where} (xstate_size), past the end of the"
            f" {len(s.data)}-byte buffer: {FX_ONLY}",
            where,
            None,
        )
    elif not frame.magic2_ok:
        yield Hit(
            f"magic2 at byte {where} (xstate_size) is {frame.magic2:#010x}, not"
            f" {FP_XSTATE_MAGIC2:#010x}: {FX_ONLY}",
            where,
            f"{frame.magic2:#010x}",
        )


# Rules: surprises ------------------------------------------------------------------------
def _stale_bytes(s: Subject, t: Target) -> Iterator[Hit]:
    if s.image is None:
        return
    for i in s.image.stale_components():
        stored = s.image.stored_bytes(i)
        count = sum(1 for b in stored if b)
        yield Hit(
            f"{component(i).name} is in init state (XSTATE_BV[{i}] = 0) but {count} of its"
            f" {len(stored)} bytes are not zero: they are ignored, init values load instead",
            s.image.offsets[i],
            f"{count} non-zero bytes",
        )


def _top_ftw(s: Subject, t: Target) -> Iterator[Hit]:
    if not s.xstate_bv & 1:
        return
    top = int.from_bytes(s.data[at.FSW : at.FSW + 2], "little") >> 11 & 7
    ftw = s.data[at.ABRIDGED_FTW]
    valid = set(bits(ftw))
    stack = {(top + k) % 8 for k in range(len(valid))}
    if valid != stack:
        listed = ", ".join(f"R{r}" for r in sorted(valid))
        expected = ", ".join(f"R{r}" for r in sorted(stack)) or "none"
        yield Hit(
            f"TOP is {top} but the abridged FTW {ftw:#04x} marks {listed} valid: a stack of"
            f" {len(valid)} from R{top} up would be {expected}; the stack has holes",
            at.ABRIDGED_FTW,
            f"TOP={top} FTW={ftw:#04x}",
        )


def _tilecfg_problems(raw: bytes) -> Iterator[tuple[int, str, str]]:
    """(offset in TILECFG, value, what is wrong), by LDTILECFG's rules (SDM vol. 2)."""
    from xcr0tool.formats.xsave import (
        xtilecfg,  # construct: only for the rare image with AMX in use
    )

    cfg = xtilecfg.parse(raw)
    if cfg.palette == 0:
        if any(raw[1:]):
            yield 0, "palette 0", "palette 0 means no tiles configured, yet other bytes are set"
        return
    if cfg.palette != 1:
        yield 0, str(cfg.palette), f"palette {cfg.palette}: only 0 and 1 are defined"
        return
    if any(raw[2:16]):
        yield 2, raw[2:16].hex(), "bytes 2-15 are reserved and not zero"
    for i in range(16):
        colsb, rows = cfg.colsb[i], cfg.rows[i]
        if i >= TILE_NAMES:
            if colsb or rows:
                yield 16 + 2 * i, f"{rows}x{colsb}B", f"tile {i} configured; palette 1 has 8"
            continue
        if colsb > TILE_MAX_COLSB:
            yield 16 + 2 * i, str(colsb), f"tmm{i} has {colsb} bytes a row, over 64"
        if rows > TILE_MAX_ROWS:
            yield 48 + i, str(rows), f"tmm{i} has {rows} rows, over 16"
        if (colsb == 0) != (rows == 0):
            yield 16 + 2 * i, f"{rows}x{colsb}B", f"tmm{i} has rows or bytes a row, not both"


def _tilecfg(s: Subject, t: Target) -> Iterator[Hit]:
    image = s.image
    if image is None or TILECFG not in image.offsets or not image.in_use(TILECFG):
        return
    base = image.offsets[TILECFG]
    for offset, value, problem in _tilecfg_problems(image.stored_bytes(TILECFG)[:64]):
        yield Hit(
            f"TILECFG: {problem}; LDTILECFG would #GP on it, and what XRSTOR does with it"
            " has not been checked on a CPU",
            base + offset,
            value,
        )


def _supervisor_under_xrstor(s: Subject, t: Target) -> Iterator[Hit]:
    found = (s.xstate_bv | (s.xcomp_bv if s.compacted else 0)) & SUPERVISOR_MASK
    if found:
        yield Hit(
            f"the image holds supervisor components {_names(found)}: XSAVES wrote it, and only"
            " XRSTORS (CPL 0) loads them",
            at.XCOMP_BV if s.compacted else at.XSTATE_BV,
            _hex64(s.xcomp_bv if s.compacted else s.xstate_bv),
        )


def _mxcsr_loaded_while_init(s: Subject, t: Target) -> Iterator[Hit]:
    if (
        not s.compacted
        and mxcsr_loaded(s, t)
        and not s.xstate_bv & SSE_AVX
        and s.mxcsr != MXCSR_INIT
        and not s.mxcsr & ~t.mxcsr_mask
    ):
        yield Hit(
            f"SSE and AVX are in init state, yet the standard form loads MXCSR {s.mxcsr:#x}"
            f" from byte 24, not {MXCSR_INIT:#x}",
            at.MXCSR,
            f"{s.mxcsr:#010x}",
        )


_XRSTOR_GP = "Intel SDM vol. 2, XRSTOR, #GP(0)"
_XRSTORS_GP = "Intel SDM vol. 2, XRSTORS, #GP(0)"
_PTRACE = "Linux arch/x86/kernel/fpu"
_SIGNAL = "Linux arch/x86/kernel/fpu/signal.c check_xstate_in_sigframe()"
_INSTRUCTIONS = frozenset({XRSTOR, XRSTORS})


def _rule(
    id: str,
    severity: str,
    stages: frozenset[str] | set[str],
    source: str,
    summary: str,
    check: Callable[[Subject, Target], Iterator[Hit]],
) -> Rule:
    return Rule(id, severity, frozenset(stages), source, summary, check)


RULES: tuple[Rule, ...] = (
    _rule(
        "compacted-without-xsavec",
        FAULT,
        {XRSTOR},
        f"{_XRSTOR_GP}: XCOMP_BV[63] = 1 and CPUID.(EAX=0DH,ECX=1):EAX.XSAVEC[bit 1] = 0",
        "the compacted form needs XSAVEC",
        _compacted_without_xsavec,
    ),
    _rule(
        "xrstors-standard-form",
        FAULT,
        {XRSTORS},
        f"{_XRSTORS_GP}: bit 63 of XCOMP_BV is 0",
        "XRSTORS takes only the compacted format",
        _standard_under_xrstors,
    ),
    _rule(
        "xstate-bv-outside-xcr0",
        FAULT,
        {XRSTOR},
        f"{_XRSTOR_GP}: standard form and a bit in XCR0 is 0 and the corresponding bit in"
        " XSTATE_BV is 1",
        "standard form: XSTATE_BV within XCR0",
        _xstate_bv_outside_xcr0,
    ),
    _rule(
        "standard-header-reserved",
        FAULT,
        {XRSTOR},
        f"{_XRSTOR_GP}: standard form and bytes 23:8 of the XSAVE header are not all zero",
        "standard form: header bytes 8-23 (image bytes 520-535) zero",
        _standard_header_reserved,
    ),
    _rule(
        "xcomp-bv-outside-xcr0",
        FAULT,
        _INSTRUCTIONS,
        f"{_XRSTOR_GP} and {_XRSTORS_GP}: compacted form and a bit in XCR0 (XCR0 | IA32_XSS"
        " for XRSTORS, SDM vol. 1 §13.12) is 0 and the corresponding bit in XCOMP_BV is 1",
        "compacted form: XCOMP_BV[62:0] within XCR0 (| IA32_XSS)",
        _xcomp_bv_outside_enabled,
    ),
    _rule(
        "xstate-bv-outside-xcomp-bv",
        FAULT,
        _INSTRUCTIONS,
        f"{_XRSTOR_GP}: compacted form and a bit in XCOMP_BV is 0 and the corresponding bit"
        " in XSTATE_BV is 1 (bit 63 included: this CPU faults on it)",
        "compacted form: XSTATE_BV within XCOMP_BV[62:0]",
        _xstate_bv_outside_xcomp_bv,
    ),
    _rule(
        "compacted-header-reserved",
        FAULT,
        _INSTRUCTIONS,
        f"{_XRSTOR_GP}: compacted form and bytes 63:16 of the XSAVE header are not all zero",
        "compacted form: header bytes 16-63 (image bytes 528-575) zero",
        _compacted_header_reserved,
    ),
    _rule(
        "mxcsr-reserved",
        FAULT,
        {XRSTOR, XRSTORS, FXRSTOR},
        f"{_XRSTOR_GP}: attempting to write any reserved bits of MXCSR with 1; when MXCSR"
        " loads: SDM vol. 1 §13.8 (standard form: RFBM[1] or RFBM[2]; compacted: RFBM[1] and"
        " XSTATE_BV[1]); FXRSTOR always",
        "MXCSR within MXCSR_MASK when it loads",
        _mxcsr_reserved,
    ),
    _rule(
        "ptrace-size",
        REJECT,
        {LINUX_PTRACE},
        "Linux kernel/ptrace.c ptrace_regset(): iov_len % 8 -> -EINVAL, then iov_len clamped"
        f" to the regset size; {_PTRACE}/regset.c xstateregs_set(): count !="
        " fpu_user_cfg.max_size -> -EFAULT",
        "a multiple of 8 bytes, at least the kernel's user xstate size",
        _ptrace_size,
    ),
    _rule(
        "ptrace-size-longer",
        WARNING,
        {LINUX_PTRACE},
        "Linux kernel/ptrace.c ptrace_regset(): iov_len = min(iov_len, regset size)",
        "no bytes past the kernel's user xstate size",
        _ptrace_size_longer,
    ),
    _rule(
        "ptrace-xfeatures",
        REJECT,
        {LINUX_PTRACE},
        f"{_PTRACE}/xstate.c validate_user_xstate_header(): xfeatures outside user_xfeatures",
        "XSTATE_BV within the user features",
        _ptrace_xfeatures,
    ),
    _rule(
        "ptrace-xcomp-bv",
        REJECT,
        {LINUX_PTRACE},
        f"{_PTRACE}/xstate.c validate_user_xstate_header(): xcomp_bv != 0",
        "XCOMP_BV zero: the standard format",
        _ptrace_xcomp_bv,
    ),
    _rule(
        "ptrace-header-reserved",
        REJECT,
        {LINUX_PTRACE},
        f"{_PTRACE}/xstate.c validate_user_xstate_header(): memchr_inv(hdr->reserved, 0, 48)",
        "all 48 reserved header bytes (528-575) zero",
        _ptrace_header_reserved,
    ),
    _rule(
        "ptrace-mxcsr-reserved",
        REJECT,
        {LINUX_PTRACE},
        f"{_PTRACE}/xstate.c copy_uabi_to_xstate(): mxcsr & ~mxcsr_feature_mask when"
        " xfeatures has FP, SSE or YMM",
        "MXCSR within MXCSR_MASK when x87, SSE or AVX is in use",
        _ptrace_mxcsr,
    ),
    _rule(
        "sigframe-magic1",
        REJECT,
        {SIGFRAME},
        f"{_SIGNAL}: fx_sw->magic1 != FP_XSTATE_MAGIC1",
        "magic1 0x46505853 at byte 464",
        _sigframe_magic1,
    ),
    _rule(
        "sigframe-xstate-size",
        REJECT,
        {SIGFRAME},
        f"{_SIGNAL}: xstate_size < sizeof(fxregs_state) + sizeof(xstate_header), >"
        " fpstate->user_size or > extended_size",
        "576 <= xstate_size <= min(user size, extended_size)",
        _sigframe_sizes,
    ),
    _rule(
        "sigframe-magic2",
        REJECT,
        {SIGFRAME},
        f"{_SIGNAL}: the u32 at fpstate + xstate_size != FP_XSTATE_MAGIC2",
        "magic2 0x46505845 at byte xstate_size",
        _sigframe_magic2,
    ),
    _rule(
        "stale-bytes",
        WARNING,
        {SURPRISE},
        "Intel SDM vol. 1 §13.8: XSTATE_BV[i] = 0 initializes component i, its bytes unread",
        "no bytes behind components in init state",
        _stale_bytes,
    ),
    _rule(
        "x87-top-ftw",
        WARNING,
        {SURPRISE},
        "Intel SDM vol. 1 §8.1.2, §8.1.7: the valid registers are the stack from TOP up",
        "the valid x87 registers are the TOP..TOP+n-1 stack",
        _top_ftw,
    ),
    _rule(
        "tilecfg-invalid",
        WARNING,
        {SURPRISE},
        "Intel SDM vol. 2, LDTILECFG: palette, reserved bytes, rows and bytes per row",
        "TILECFG is one LDTILECFG accepts",
        _tilecfg,
    ),
    _rule(
        "supervisor-under-xrstor",
        WARNING,
        {XRSTOR},
        "Intel SDM vol. 1 §13.2, §13.11: supervisor components are saved by XSAVES and"
        " loaded by XRSTORS only",
        "no supervisor components for XRSTOR",
        _supervisor_under_xrstor,
    ),
    _rule(
        "mxcsr-loaded-while-init",
        WARNING,
        {XRSTOR},
        "Intel SDM vol. 2, XRSTOR, note 1 and Operation: the standard form loads MXCSR when"
        " RFBM[1] or RFBM[2] is set, whatever XSTATE_BV says (confirmed on this CPU)",
        "standard form: MXCSR at its init value when SSE and AVX are",
        _mxcsr_loaded_while_init,
    ),
)

RULES_BY_ID = {rule.id: rule for rule in RULES}


# Running the rules -----------------------------------------------------------------------
def run_stage(subject: Subject, target: Target, stage: str) -> list[Finding]:
    return [
        Finding(rule.id, rule.severity, hit.message, hit.offset, hit.value, rule.source)
        for rule in RULES
        if stage in rule.stages
        for hit in rule.check(subject, target)
    ]


def _loaded_by_fxrstor(target: Target) -> Target:
    return replace(target, instruction=FXRSTOR, rfbm=LEGACY_BITS)


def validate(subject: Subject, target: Target) -> Report:
    """Every finding of every stage that applies to `target`."""
    notes: list[str] = []
    findings: list[Finding] = []
    if subject.model_note:
        notes.append(f"components not placed ({subject.model_note}): content checks skipped")
    if subject.fxsave_only:
        target, stage = _loaded_by_fxrstor(target), FXRSTOR
        notes.append("a 512-byte FXSAVE area: checked as FXRSTOR loads it")
    elif target.check == LINUX_PTRACE:
        stage = LINUX_PTRACE
    else:
        if target.check == SIGRETURN:
            findings += run_stage(subject, target, SIGFRAME)
            frame = subject.signal_frame
            if findings or frame is None:
                target = _loaded_by_fxrstor(target)
                notes.append("sw_bytes not valid: rt_sigreturn falls back to FXRSTOR")
            else:
                target = replace(target, instruction=XRSTOR, rfbm=target.rfbm & frame.xfeatures)
                notes.append(
                    f"rt_sigreturn restores with XRSTOR, RFBM = xfeatures"
                    f" {_names(frame.xfeatures)} & XCR0; a fault is a SIGSEGV"
                )
        stage = target.instruction
    for each in (stage, SURPRISE):
        findings += run_stage(subject, target, each)
    return Report(subject.origin, target, tuple(findings), tuple(notes))


# Defaults: the image, then this machine ----------------------------------------------------
@dataclass(frozen=True)
class HostFacts:
    """What this machine says about XRSTOR (xss: None when CPUID does not pin it down)."""

    xcr0: int
    mxcsr_mask: int
    xsavec: bool
    xss: int | None  # the one IA32_XSS value CPUID.(0xD,1).EBX explains
    layout: Layout


@cache
def host_facts() -> HostFacts | None:
    """This machine's XCR0, MXCSR_MASK, XSAVEC and layout; None off x86-64 Linux."""
    try:
        from xcr0tool.sources import cpu, hostinfo
        from xcr0tool.sources.open import host_layout

        table = cpu.leaf_0d()
        xcr0 = cpu.xgetbv(0)
        return HostFacts(
            xcr0=xcr0,
            mxcsr_mask=hostinfo.mxcsr_mask_of(cpu.xsave_snapshot(compacted=False)),
            xsavec=hostinfo.xsave_support(table).xsavec,
            xss=hostinfo.inferred_xss(table, xcr0)[0],
            layout=host_layout(),
        )
    except XcrError:
        return None


def make_target(
    subject: Subject,
    *,
    check: str = CPU,
    instruction: str = XRSTOR,
    xcr0: int | None = None,
    xss: int | None = None,
    rfbm: int | None = None,
    mxcsr_mask: int | None = None,
    layout: Layout | None = None,
    host: HostFacts | None = None,
) -> Target:
    """The target with every value not given taken from the image, else this machine
    (`host`), each with its source."""
    xcr0_value, xcr0_source = _default_xcr0(subject, xcr0, host, check)
    if xss is not None:
        xss_value, xss_source = xss, "given"
    elif host is not None and host.xss is not None:
        xss_value, xss_source = host.xss, "this machine's, inferred from CPUID.(0xD,1).EBX"
    else:
        xss_value, xss_source = 0, "IA32_XSS cannot be read here: taken as 0"
    field_mask = read_u32(subject.data, at.MXCSR_MASK)
    if mxcsr_mask is not None:
        mask, mask_source = mxcsr_mask, "given"
    elif field_mask:
        mask, mask_source = field_mask, "the image's MXCSR_MASK field"
    elif host is not None:
        mask, mask_source = host.mxcsr_mask, "this machine's, the image's field is 0"
    else:
        mask, mask_source = MXCSR_MASK_DEFAULT, "the SDM default, the image's field is 0"
    size_layout, size_source = _size_layout(subject, layout, host)
    user_mask, user_what, user_why = _user_features(subject, xcr0_value, check)
    user_size = None
    if size_layout is not None:
        try:
            user_size = size_layout.standard_size(user_mask)
        except XcrError:
            size_source = "unknown: the layout does not know every XCR0 component"
    return Target(
        check=check,
        instruction=instruction,
        xcr0=xcr0_value,
        xcr0_source=xcr0_source,
        xss=xss_value,
        xss_source=xss_source,
        rfbm=ALL_ONES if rfbm is None else rfbm,
        mxcsr_mask=mask,
        mxcsr_mask_source=mask_source,
        xsavec=None if host is None else host.xsavec,
        user_size=user_size,
        user_size_source=f"standard size of {user_what} in {size_source}{user_why}",
    )


# XFEATURE_MASK_USER_DYNAMIC (arch/x86/include/asm/fpu/xstate.h): user components a task's
# fpstate holds only once it has asked for them (arch_prctl ARCH_REQ_XCOMP_PERM) and used
# them; fpu__init_system_xstate leaves them out of fpu_user_cfg.default_features.
LINUX_USER_DYNAMIC = 1 << 18  # AMX tile data


def _user_features(subject: Subject, xcr0: int, check: str) -> tuple[int, str, str]:
    """The user components whose standard size bounds the buffer, what to call them, and
    why some of XCR0's are left out ("" when none are).

    ptrace takes fpu_user_cfg.max_size: all of XCR0's user components (regset.c
    xstateregs_set). rt_sigreturn takes the task's fpstate->user_size
    (signal.c check_xstate_in_sigframe): without the dynamic components unless the task
    has them, which its frame's xfeatures (fpstate->user_xfeatures, save_sw_bytes) show.
    """
    user = xcr0 & ~SUPERVISOR_MASK
    what = f"XCR0 {xcr0:#x}"
    frame = subject.signal_frame
    dynamic = user & LINUX_USER_DYNAMIC & ~(frame.xfeatures if frame is not None else 0)
    if check != SIGRETURN or not dynamic:
        return user, what, ""
    names = describe_mask(dynamic)
    return (
        user & ~dynamic,
        f"{what} less {names}",
        f"; a task's fpstate holds {names} only once the task has asked for it"
        " (ARCH_REQ_XCOMP_PERM) and used it, and the frame's xfeatures do not have it",
    )


def _default_xcr0(
    subject: Subject, given: int | None, host: HostFacts | None, check: str
) -> tuple[int, str]:
    if given is not None:
        return given, "given"
    # A signal frame's bytes 464-511 are sw_bytes, never an XCR0 word, even when spoilt.
    if not subject.fxsave_only and check != SIGRETURN and subject.signal_frame is None:
        word = read_u64(subject.data, at.SW_BYTES)
        if plausible_xcr0(word, 0):
            return word, "the image's XCR0 word at byte 464"
    if host is not None:
        return host.xcr0, "this machine's (XGETBV)"
    if subject.image is not None:
        return subject.image.xcr0, subject.image.xcr0_source
    return subject.xstate_bv | LEGACY_BITS, "XSTATE_BV: no XCR0 word and no XSAVE here"


def _size_layout(
    subject: Subject, given: Layout | None, host: HostFacts | None
) -> tuple[Layout | None, str]:
    if given is not None:
        return given, given.source
    if host is not None:
        return host.layout, host.layout.source
    if subject.image is not None:
        return subject.image.layout, subject.image.layout.source
    return None, "no layout"


# Inputs ------------------------------------------------------------------------------------
def load_subjects(
    name: str,
    *,
    layout_option: str | None = None,
    xcr0: int | None = None,
    warnings: list[str] | None = None,
) -> list[Subject]:
    """The images of a source, as subjects. Raw images (a file, `-`) are taken whatever
    their header says: a header XRSTOR would fault on is what this command is for, so a
    model that cannot be built leaves only the content checks undone. The source's
    warnings (an ignored --layout, ...) are added to `warnings`."""
    from xcr0tool.layouts.files import resolve_layout_option
    from xcr0tool.sources.open import open_source

    raw = _raw_input(name)
    if raw is None:
        result = open_source(name, layout_option=layout_option, xcr0=xcr0)
        if warnings is not None:
            warnings.extend(result.warnings)
        return [Subject(image.data, image.origin, image) for image in result.images]
    origin, data = raw
    return [subject_from_bytes(data, origin, resolve_layout_option(layout_option), xcr0)]


def _raw_input(name: str) -> tuple[str, bytes] | None:
    """The origin and bytes of a raw image; None for the sources open_source reads itself
    (a core or a thread of one, a process, self, a name that is not a file: it says what
    is wrong)."""
    from xcr0tool.sources.open import (
        ELF_MAGIC,
        RAW_LIMIT,
        is_container,
        read_input_file,
        split_thread,
    )

    if name == "-":
        data = sys.stdin.buffer.read(RAW_LIMIT + 1)
        if data.startswith(ELF_MAGIC):
            raise InputError("<stdin>", "an ELF core: pass it as a file, not through a pipe")
        if len(data) > RAW_LIMIT:
            raise InputError("<stdin>", f"over {RAW_LIMIT} bytes: not an XSAVE image")
        return "<stdin>", data
    if name.startswith("pid:") or name == "self" or split_thread(name)[1] is not None:
        return None
    if not os.path.isfile(name):
        return None
    data = read_input_file(name)
    if data is None or is_container(data):  # an ELF core, a CRIU image: open_source's
        return None
    return name, data


def subject_from_bytes(
    data: bytes, origin: str, layout: Layout | None = None, xcr0: int | None = None
) -> Subject:
    """A raw image as a subject: the model if it can be built (`layout`, else a guess,
    else this machine's layout), else the bytes alone. Below 576 bytes (and not a
    512-byte FXSAVE area) it is not an XSAVE image: InputError."""
    host = host_facts()
    fallback = None
    attempts: list[Layout | None] = [layout]
    if host is not None:
        host_layout = host.layout
        fallback = HostFallback(host.xcr0, lambda: host_layout)
        if layout is None:
            attempts.append(host_layout)
    problem = ""
    for attempt in attempts:
        try:
            image = build_image(data, origin=origin, layout=attempt, xcr0=xcr0, host=fallback)
        except InputError as error:
            if len(data) < EXTENDED_START:
                raise  # not an XSAVE image at all: trouble, not a verdict
            problem = problem or error.problem
            continue
        return Subject(data, origin, image)
    return Subject(data, origin, None, problem)
