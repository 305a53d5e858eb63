"""validate's model: what is checked (Subject), against what (Target), what a rule
finds (Hit, Finding) and the verdict (Report); the stages and severities."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property

from xcr0tool.arch import offsets as at
from xcr0tool.arch.components import COMPACTED_BIT
from xcr0tool.arch.offsets import read_u32, read_u64
from xcr0tool.model.image import FXSAVE, XsaveImage
from xcr0tool.model.layout import LEGACY_BITS
from xcr0tool.model.sigframe import SignalFrameInfo, signal_frame_info


class Severity(str, Enum):
    """`fault`: the instruction raises #GP; `reject`: the kernel refuses the buffer (for a
    signal frame, it ignores the extended state); `warning`: loads, but surprises."""

    FAULT = "fault"
    REJECT = "reject"
    WARNING = "warning"

    __str__ = str.__str__


FAULT, REJECT, WARNING = Severity.FAULT, Severity.REJECT, Severity.WARNING
SEVERITIES = tuple(Severity)

XRSTOR, XRSTORS, FXRSTOR = "xrstor", "xrstors", "fxrstor"
LINUX_PTRACE, SIGFRAME, SURPRISE = "linux-ptrace", "sigframe", "surprise"
# What `--as` can name: the bare instruction, or the kernel path that ends in one.
CPU, SIGRETURN = "cpu", "sigreturn"
CHECKS = (CPU, LINUX_PTRACE, SIGRETURN)

ALL_ONES = (1 << 64) - 1


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
    severity: Severity
    stages: frozenset[str]
    source: str
    summary: str
    check: Callable[[Subject, Target], Iterator[Hit]]


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
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
