"""The read-only commands as calls: decode a source, describe a layout, compare two
sources. Each returns a result object that carries its warnings; the renderers show it
(render/), the CLI only parses options (cli/). A warning is one sentence that names what
it concerns; it is said once, wherever the result is shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from xcr0tool.errors import UsageError
from xcr0tool.model.layout import Layout
from xcr0tool.model.registers import DEFAULT_LANES, LANES, Register, registers
from xcr0tool.sources.open import SourceResult, open_source, with_thread

if TYPE_CHECKING:
    from xcr0tool.ops.diff import DiffResult

# Registers that --lanes splits, as gdb's vector views do (v4_float, v8_int32, ...).
VECTOR_PREFIXES = ("xmm", "ymm", "zmm")


def is_vector(name: str) -> bool:
    return name.startswith(VECTOR_PREFIXES) and name[3:].isdigit()


# decode --------------------------------------------------------------------------------
# The results are NamedTuples, not dataclasses: cheap to define at every start.
class Decoded(NamedTuple):
    """`decode`: the images of a source, and which of their registers were asked for."""

    source: SourceResult
    patterns: tuple[str, ...] = ()  # --reg globs; () for every register
    stale: bool = False  # also the bytes behind init-state components
    lanes: str | None = None  # show vector registers as lanes of this kind
    warnings: tuple[str, ...] = ()


def decode(
    name: str,
    *,
    thread: str | None = None,
    patterns: Sequence[str] = (),
    stale: bool = False,
    lanes: str | None = None,
    layout: str | None = None,
    xcr0: int | None = None,
) -> Decoded:
    """Open SOURCE (SOURCE@ID or `thread` for one thread) for showing."""
    if lanes is not None and lanes not in LANES:
        raise UsageError(f"--lanes {lanes}: one of {', '.join(LANES)}")
    source = open_source(with_thread(name, thread), layout_option=layout, xcr0=xcr0)
    warnings = [*source.warnings, *unmatched_patterns(patterns, [source])]
    return Decoded(source, tuple(patterns), stale, lanes, tuple(warnings))


def unmatched_patterns(patterns: Sequence[str], sources: Sequence[SourceResult]) -> list[str]:
    """A warning for each --reg glob that no register of any image matches."""
    if not patterns:
        return []
    import fnmatch  # only for --reg: most runs match no glob

    waiting = list(dict.fromkeys(patterns))
    for source in sources:
        for image in source.images:
            if not waiting:
                return []
            names = [r.name for r in registers(image)]
            waiting = [p for p in waiting if not fnmatch.filter(names, p)]
    where = " or ".join(s.name for s in sources)
    return [f"--reg {p}: no register of {where} matches" for p in waiting]


class ThreadSummary(NamedTuple):
    """One line of the many-thread summary. It keeps what the line shows, not the image:
    a summary of a whole rr trace is one line per frame, and no frame's bytes."""

    xcr0: int
    xstate_bv: int
    label: str  # the tid, or what NAME@ID selects
    differs: tuple[int, ...]  # components whose registers differ from the first image's


def summarise(source: SourceResult) -> list[ThreadSummary]:
    """Each image beside the first: which components hold different register values
    (by state, as diff compares: init-state components count as their init values)."""
    images = source.images
    labels: Sequence[str | None] = source.thread_ids()
    if len(labels) != len(images):
        labels = [None] * len(images)  # each image's origin, taken as it is read
    first = _by_name(registers(images[0]))
    out = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        differs: set[int] = set()
        if index:
            mine = _by_name(registers(image))
            for name in first.keys() | mine.keys():
                a, b = first.get(name), mine.get(name)
                if a is None:
                    differs.add(mine[name].component)
                elif b is None or a.value != b.value:
                    differs.add(a.component)
        shown = image.origin if label is None else label
        out.append(ThreadSummary(image.xcr0, image.xstate_bv, shown, tuple(sorted(differs))))
    return out


def _by_name(regs: Iterable[Register]) -> dict[str, Register]:
    return {r.name: r for r in regs}


# layout --------------------------------------------------------------------------------
class LayoutQuery(NamedTuple):
    """`layout`: a layout, and the XCR0 and XCOMP_BV asked about."""

    layout: Layout
    xcr0: int | None = None
    xcomp_bv: int | None = None  # with --xcr0 alone: XCR0 (XSAVEC saves XCR0 & RFBM)
    warnings: tuple[str, ...] = ()


def describe_layout(
    layout: str | None = None, xcr0: int | None = None, xcomp_bv: int | None = None
) -> LayoutQuery:
    """The layout named (default: this machine's CPUID leaf 0xD)."""
    from xcr0tool.arch.xcr0 import check_xcr0
    from xcr0tool.layouts.files import resolve_layout_option
    from xcr0tool.sources.open import host_layout

    if xcr0 is not None:
        check_xcr0(xcr0)  # the one rule table: refused alike by every command
    chosen = resolve_layout_option(layout) or host_layout()
    if xcr0 is not None and xcomp_bv is None:
        xcomp_bv = xcr0
    return LayoutQuery(chosen, xcr0, xcomp_bv)


# diff ----------------------------------------------------------------------------------
class Compared(NamedTuple):
    """`diff`: the comparison and the warnings of both sources."""

    diff: DiffResult
    warnings: tuple[str, ...] = ()

    @property
    def same(self) -> bool:
        return self.diff.same


def compare(
    a: str,
    b: str,
    *,
    lanes: str = DEFAULT_LANES,
    patterns: Sequence[str] = (),
    raw: bool = False,
    pairs: Sequence[tuple[int, int]] = (),
    layout: str | None = None,
) -> Compared:
    """Compare A and B (either may be SOURCE@ID), thread pair by thread pair."""
    if a == "-" and b == "-":
        raise UsageError("A and B cannot both be standard input")
    from xcr0tool.ops.diff import diff_sources  # not loaded by decode: startup

    source_a = open_source(a, layout_option=layout)
    source_b = open_source(b, layout_option=layout)
    result = diff_sources(source_a, source_b, lanes=lanes, patterns=patterns, raw=raw, pairs=pairs)
    warnings = [f"{s.name}: {w}" for s in (source_a, source_b) for w in s.warnings]
    warnings += unmatched_patterns(patterns, [source_a, source_b])
    return Compared(result, tuple(dict.fromkeys(warnings)))
