"""Rules: what loads, but not as one would think (stale bytes, x87 TOP and tags, an
invalid TILECFG, supervisor components under XRSTOR, MXCSR loaded in init state)."""

from __future__ import annotations

from collections.abc import Iterator

from xcr0tool.arch import mxcsr, tilecfg
from xcr0tool.arch import offsets as at
from xcr0tool.arch.components import BY_NAME, SUPERVISOR_MASK, bits, component
from xcr0tool.ops.validate.instructions import mxcsr_loaded
from xcr0tool.ops.validate.model import SURPRISE, WARNING, XRSTOR, Hit, Subject, Target
from xcr0tool.ops.validate.registry import XRSTOR_GP as _XRSTOR_GP  # noqa: F401
from xcr0tool.ops.validate.registry import hex64 as _hex64
from xcr0tool.ops.validate.registry import names as _names
from xcr0tool.ops.validate.registry import rule

TILECFG = BY_NAME["xtilecfg"].id


@rule(
    "stale-bytes",
    WARNING,
    {SURPRISE},
    "Intel SDM vol. 1 §13.8: XSTATE_BV[i] = 0 initializes component i, its bytes unread",
    "no bytes behind components in init state",
)
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


@rule(
    "x87-top-ftw",
    WARNING,
    {SURPRISE},
    "Intel SDM vol. 1 §8.1.2, §8.1.7: the valid registers are the stack from TOP up",
    "the valid x87 registers are the TOP..TOP+n-1 stack",
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


@rule(
    "tilecfg-invalid",
    WARNING,
    {SURPRISE},
    "Intel SDM vol. 2, LDTILECFG: palette, reserved bytes, rows and bytes per row",
    "TILECFG is one LDTILECFG accepts",
)
def _tilecfg(s: Subject, t: Target) -> Iterator[Hit]:
    image = s.image
    if image is None or TILECFG not in image.offsets or not image.in_use(TILECFG):
        return
    base = image.offsets[TILECFG]
    config = tilecfg.decode(image.stored_bytes(TILECFG))
    for offset, value, problem in tilecfg.problems(config):
        yield Hit(
            f"TILECFG: {problem}; LDTILECFG would #GP on it, and what XRSTOR does with it"
            " has not been checked on a CPU",
            base + offset,
            value,
        )


@rule(
    "supervisor-under-xrstor",
    WARNING,
    {XRSTOR},
    "Intel SDM vol. 1 §13.2, §13.11: supervisor components are saved by XSAVES and"
    " loaded by XRSTORS only",
    "no supervisor components for XRSTOR",
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


@rule(
    "mxcsr-loaded-while-init",
    WARNING,
    {XRSTOR},
    "Intel SDM vol. 2, XRSTOR, note 1 and Operation: the standard form loads MXCSR when"
    " RFBM[1] or RFBM[2] is set, whatever XSTATE_BV says (confirmed on this CPU)",
    "standard form: MXCSR at its init value when SSE and AVX are",
)
def _mxcsr_loaded_while_init(s: Subject, t: Target) -> Iterator[Hit]:
    if (
        not s.compacted
        and mxcsr_loaded(s, t)
        and not s.xstate_bv & mxcsr.OWNERS
        and s.mxcsr != mxcsr.MXCSR_INIT
        and not s.mxcsr & ~t.mxcsr_mask
    ):
        yield Hit(
            f"SSE and AVX are in init state, yet the standard form loads MXCSR {s.mxcsr:#x}"
            f" from byte 24, not {mxcsr.MXCSR_INIT:#x}",
            at.MXCSR,
            f"{s.mxcsr:#010x}",
        )
