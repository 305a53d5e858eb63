"""Rendering of decode and layout results: JSON (the documented contract), plain text for
pipes, and the terminal view. Presentation never parses: values come from the model.

Hex in both text views is zero-padded to the register's width, as gdb's p/x of a vector
and eu-readelf show it, so that values line up in columns and a register's size shows;
JSON keeps the plain "0x..." of the contract. Cores with many threads get a summary on a
terminal (one line per thread) unless --all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from xcr0tool.arch.components import component, describe_mask
from xcr0tool.model.image import XsaveImage
from xcr0tool.model.layout import Layout
from xcr0tool.model.registers import (
    Register,
    register_values,
    registers,
    select,
    stale_registers,
)
from xcr0tool.model.sigframe import SignalFrameInfo
from xcr0tool.ops.inspect import Decoded, LayoutQuery, ThreadSummary, is_vector, summarise
from xcr0tool.render.output import Streamed, View
from xcr0tool.sources.open import SourceResult, parse_source

# What only some views need is imported where they are made: the terminal view's, the
# value descriptions of text, the lanes of --lanes.
if TYPE_CHECKING:
    from xcr0tool.render.styled import Page, Screen

# Above this many images a terminal shows one line per thread (--all: everything).
SUMMARY_THRESHOLD = 16


def hex_value(register: Register) -> str:
    """The JSON contract's value: the register's bytes as one little-endian integer."""
    return hex(register.value)


def padded_hex(value: int, size: int) -> str:
    """0x-prefixed, zero-padded to `size` bytes (gdb's p/z, eu-readelf)."""
    return f"0x{value:0{2 * size}x}"


# JSON ---------------------------------------------------------------------------------
def layout_json(layout: Layout, mask: int | None = None) -> dict[str, object]:
    """The layout object of the JSON contract; with a mask, only those components."""
    data = layout.to_json()
    if mask is not None:
        data["components"] = [c for c in data["components"] if mask >> c["id"] & 1]  # type: ignore[attr-defined]
    return data


def image_json(
    image: XsaveImage,
    patterns: Sequence[str] = (),
    stale: bool = False,
    lanes: str | None = None,
) -> dict[str, object]:
    extra: dict[str, object] = {}
    if patterns or lanes is not None:
        regs = select(registers(image), patterns)
        shown = {r.name: hex_value(r) for r in regs}
    else:
        # Every register, the hot path of a many-thread core: no Register objects.
        names, values = register_values(image)
        shown = dict(zip(names, map(hex, values), strict=True))
    if lanes is not None:
        from xcr0tool.render.lanes import braced

        extra["register_lanes"] = {
            r.name: braced(r.value, r.size, lanes)[1:-1].split(", ")
            for r in regs
            if is_vector(r.name)
        }
    if stale:
        extra["stale_registers"] = {
            r.name: hex_value(r) for r in select(stale_registers(image), patterns)
        }
    frame = image.signal_frame
    if image.event is not None:
        extra["event"] = image.event
    if image.absent:
        extra["absent"] = [i for i in range(64) if image.absent >> i & 1]
    if frame is not None:
        extra["signal_frame"] = {
            "xfeatures": hex(frame.xfeatures),
            "xstate_size": frame.xstate_size,
            "extended_size": frame.extended_size,
            "magic2": None if frame.magic2 is None else hex(frame.magic2),
            "magic2_ok": frame.magic2_ok,
        }
    return {
        "tid": image.tid,
        "format": image.format,
        "size": len(image.data),
        "xcr0": hex(image.xcr0),
        "xcr0_source": image.xcr0_source,
        "xstate_bv": hex(image.xstate_bv),
        "xcomp_bv": hex(image.xcomp_bv),
        "components": [
            {
                "id": i,
                "name": component(i).name,
                "offset": image.offsets[i],
                "size": image.size_of(i),
                "in_use": image.in_use(i),
            }
            for i in image.component_ids
        ],
        "registers": shown,
        "notes": list(image.notes),
        **extra,
    }


def decode_json(decoded: Decoded) -> dict[str, object]:
    streamed = decode_json_stream(decoded)
    return {**streamed.fields, streamed.key: list(streamed.items)}


def decode_json_stream(decoded: Decoded) -> Streamed:
    """decode's JSON with its threads made one by one (render/output.py writes each as it
    comes): an rr trace's frames are read again, not held."""
    result = decoded.source
    layout = result.layout or result.images[0].layout
    known = getattr(result.images, "held_components", None)  # TraceImages: none read again
    if known is not None:
        held = known()
    else:
        held = 0
        for image in result.images:
            held |= sum(1 << i for i in image.offsets)
    fields: dict[str, object] = {
        "source": result.name,
        "kind": result.kind,
        **({"details": result.details} if result.details else {}),
        "layout": layout_json(layout, held),
        **({"lanes": decoded.lanes} if decoded.lanes else {}),
    }
    threads = (
        image_json(image, decoded.patterns, decoded.stale, decoded.lanes) for image in result.images
    )
    return Streamed(fields, "threads", threads)


# Shared by both text views ------------------------------------------------------------
def magic2_state(frame: SignalFrameInfo) -> str:
    if frame.magic2 is None:
        return "missing (past the end of the buffer)"
    return "ok" if frame.magic2_ok else f"{frame.magic2:#010x} (wrong)"


class RegisterRow(NamedTuple):
    name: str
    value: str  # padded hex, or lanes
    description: str
    in_use: bool
    component: int


def register_rows(
    regs: Sequence[Register], patterns: Sequence[str], lanes: str | None = None
) -> list[RegisterRow]:
    # Text alone shows the descriptions (x87 values, MXCSR flags, TILECFG) and lanes.
    from xcr0tool.render.lanes import braced
    from xcr0tool.render.values import describe

    return [
        RegisterRow(
            r.name,
            braced(r.value, r.size, lanes)
            if lanes and is_vector(r.name)
            else padded_hex(r.value, r.size),
            describe(r.name, r.value),
            r.in_use,
            r.component,
        )
        for r in select(regs, patterns)
    ]


class ThreadView(NamedTuple):  # not a dataclass: cheap to define at every start
    """What both text views show of one image."""

    title: str
    summary: list[tuple[str, str]]
    components: list[tuple[str, str, str, str, str]]  # id, name, offset, size, state
    registers: list[RegisterRow]
    stale: list[RegisterRow]  # bytes behind init-state components, when asked for


STALE_TITLE = "stale bytes behind init-state components (XRSTOR loads init values instead)"


def thread_view(image: XsaveImage, decoded: Decoded) -> ThreadView:
    patterns, lanes = decoded.patterns, decoded.lanes
    title = f"thread {image.tid}" if image.tid is not None else image.origin
    if image.event is not None:
        title = f"frame {image.event}, {title}"
    summary = [
        ("format", f"{image.format}, {len(image.data)} bytes"),
        ("XCR0", f"{image.xcr0:#x} ({describe_mask(image.xcr0)}) from {image.xcr0_source}"),
        ("XSTATE_BV", f"{image.xstate_bv:#x} ({describe_mask(image.xstate_bv)})"),
        ("XCOMP_BV", f"{image.xcomp_bv:#x}"),
    ]
    frame = image.signal_frame
    if frame is not None:
        summary.append(
            (
                "signal frame",
                f"xfeatures {frame.xfeatures:#x}, xstate_size {frame.xstate_size},"
                f" extended_size {frame.extended_size}, magic2 {magic2_state(frame)}",
            )
        )
    summary.extend(("note", note) for note in image.notes)
    leftover = image.stale_components()
    if leftover:
        names = ", ".join(component(i).name for i in leftover)
        summary.append(("stale", f"init-state components with leftover bytes: {names}"))
    rows = [
        (
            str(i),
            component(i).name,
            str(image.offsets[i]),
            str(image.size_of(i)),
            "in use" if image.in_use(i) else "init",
        )
        for i in image.component_ids
    ]
    stale_rows = register_rows(stale_registers(image), patterns) if decoded.stale else []
    return ThreadView(
        title, summary, rows, register_rows(registers(image), patterns, lanes), stale_rows
    )


def _kind(result: SourceResult) -> str:
    details = ", ".join(result.details.values())
    # `self` is one thread saved twice (XSAVE, XSAVEC): count images, not threads
    unit = {"self": "image", "rr-trace": "frame"}.get(result.kind, "thread")
    count = f"{len(result.images)} {unit}{'s' if len(result.images) != 1 else ''}"
    return ", ".join(x for x in (result.kind, details, count) if x)


def wants_summary(decoded: Decoded, summary: bool | None, terminal: bool) -> bool:
    """--summary / --all when given; on a terminal, a summary above the threshold
    unless particular registers were asked for."""
    if summary is not None:
        return summary
    return (
        terminal
        and len(decoded.source.images) > SUMMARY_THRESHOLD
        and not decoded.patterns
        and not decoded.stale
        and decoded.lanes is None
    )


def summary_rows(decoded: Decoded) -> tuple[str, list[ThreadSummary]]:
    lines = summarise(decoded.source)
    return lines[0].label, lines


def _differs_text(line: ThreadSummary, first: str, index: int) -> str:
    if not index:
        return "(first)"
    if not line.differs:
        return f"same as {first}"
    return "differs: " + " ".join(component(i).name for i in line.differs)


SUMMARY_HEADER = ("thread", "XCR0", "in use (XSTATE_BV)", "registers")


def _summary_hint(decoded: Decoded) -> str:
    result = decoded.source
    base = parse_source(result.name)[0]
    return (
        f"{len(result.images)} threads, one line each; every register: --all,"
        f" one thread: {base}@TID"
    )


# Plain text ---------------------------------------------------------------------------
def decode_text(decoded: Decoded, summary: bool = False) -> str:
    return "".join(decode_text_chunks(decoded, summary))


def decode_text_chunks(decoded: Decoded, summary: bool = False) -> Iterator[str]:
    """decode's plain text, its head and then each image's part as it is made: a whole
    rr trace's text (tens of KiB a frame) is never held whole."""
    result = decoded.source
    layout = result.layout or result.images[0].layout
    lines = [f"source: {result.name} ({_kind(result)})", f"layout: {layout.source}"]
    if summary:
        first, rows = summary_rows(decoded)
        lines += ["", _summary_hint(decoded)]
        table = [SUMMARY_HEADER] + [
            (
                line.label,
                f"{line.xcr0:#x}",
                describe_mask(line.xstate_bv),
                _differs_text(line, first, i),
            )
            for i, line in enumerate(rows)
        ]
        widths = [max(len(row[c]) for row in table) for c in range(3)]
        lines += [
            f"  {a:>{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in table
        ]
        yield "\n".join(lines) + "\n"
        return
    yield "\n".join(lines) + "\n"
    for image in result.images:
        yield "\n".join(_thread_lines(image, decoded)) + "\n"


def _thread_lines(image: XsaveImage, decoded: Decoded) -> list[str]:
    """One image's part of the plain text, from the blank line before it."""
    view = thread_view(image, decoded)
    lines = ["", f"{view.title}:"]
    lines += [f"  {key}: {value}" for key, value in view.summary]
    if not decoded.patterns:
        lines.append("  components:")
        lines += [
            f"    {cid:>2} {name:<10} offset {offset:>5} size {size:>5} {state}"
            for cid, name, offset, size, state in view.components
        ]
    width = max((len(r.name) for r in [*view.registers, *view.stale]), default=0)
    for row in view.registers:
        text = f"  {row.description}" if row.description else ""
        lines.append(f"  {row.name:<{width}} {row.value}{text}")
    if view.stale:
        lines.append(f"  {STALE_TITLE}:")
        lines += [f"  {row.name:<{width}} {row.value}  stale" for row in view.stale]
    return lines


# Terminal -----------------------------------------------------------------------------
def decode_terminal(decoded: Decoded, screen: Screen, summary: bool = False) -> str:
    from xcr0tool.render.styled import Page

    result = decoded.source
    page = Page(screen)
    layout = result.layout or result.images[0].layout
    page.add((result.name, "bold"), f" ({_kind(result)})")
    page.add(f"layout: {layout.source}")
    if summary:
        _summary_page(page, decoded)
        return page.render()
    for image in result.images:
        _thread_page(page, image, decoded)
    return page.render()


def _summary_page(page: Page, decoded: Decoded) -> None:
    first, rows = summary_rows(decoded)
    page.blank()
    page.add((_summary_hint(decoded), "dim"))
    page.table(
        SUMMARY_HEADER,
        [
            (
                line.label,
                f"{line.xcr0:#x}",
                describe_mask(line.xstate_bv),
                (_differs_text(line, first, i), "yellow" if line.differs else "green"),
            )
            for i, line in enumerate(rows)
        ],
        right={0},
    )


def _thread_page(page: Page, image: XsaveImage, decoded: Decoded) -> None:
    view = thread_view(image, decoded)
    page.blank()
    page.rule(view.title)
    for key, value in view.summary:
        page.add("  ", (key, "cyan"), f": {value}")
    if not decoded.patterns:
        page.table(
            ("id", "component", "offset", "size", "state"),
            [
                (cid, name, offset, size, (state, "green" if state == "in use" else ""))
                for cid, name, offset, size, state in view.components
            ],
            right={0, 2, 3},
        )
    groups = _by_component(image, view.registers)
    if view.stale:
        groups.append((STALE_TITLE, view.stale))
    bold, end = page.codes("bold")
    dim, _ = page.codes("dim")
    for title, rows in groups:
        # The hot loop of a many-thread core: one f-string per register, no table.
        name_width = max(len("register"), *(len(row.name) for row in rows))
        value_width = max(len("value"), *(len(row.value) for row in rows))
        page.add((title, "bold"))
        page.line(f" {bold}{'register':<{name_width}}{end}  {bold}value{end}")
        for row in rows:
            value = f"{row.value:<{value_width}}"
            if not row.in_use:
                value = f"{dim}{value}{end}"
            page.line(
                f" {bold}{row.name:<{name_width}}{end}  {value}  {row.description}".rstrip(" ")
            )


def _by_component(
    image: XsaveImage, rows: list[RegisterRow]
) -> list[tuple[str, list[RegisterRow]]]:
    groups: dict[int, list[RegisterRow]] = {}
    for row in rows:
        groups.setdefault(row.component, []).append(row)
    return [
        (f"{component(cid).title}{'' if image.in_use(cid) else ' (init state)'}", members)
        for cid, members in sorted(groups.items())
    ]


def decode_view(decoded: Decoded, summary: bool | None = None) -> View:
    """decode's answer in every form; `summary`: --summary (True), --all (False)."""
    return View(
        json=lambda: decode_json(decoded),
        text=lambda: decode_text(decoded, wants_summary(decoded, summary, False)),
        text_chunks=lambda: decode_text_chunks(decoded, wants_summary(decoded, summary, False)),
        json_stream=lambda: decode_json_stream(decoded),
        terminal=lambda screen: decode_terminal(
            decoded, screen, wants_summary(decoded, summary, True)
        ),
        warnings=decoded.warnings,
    )


# layout ----------------------------------------------------------------------------------
LAYOUT_HEADER = ("id", "name", "size", "standard", "compacted", "aligned", "kind")


def layout_rows(layout: Layout, xcr0: int | None, xcomp_bv: int | None) -> list[tuple[str, ...]]:
    compacted = layout.compacted_offsets(xcomp_bv) if xcomp_bv is not None else {}
    rows: list[tuple[str, ...]] = []
    for entry in layout.entries():
        if xcr0 is not None and not (xcr0 | (xcomp_bv or 0)) >> entry.id & 1:
            continue
        rows.append(
            (
                str(entry.id),
                entry.name,
                str(entry.size),
                "-" if entry.standard_offset is None else str(entry.standard_offset),
                str(compacted[entry.id]) if entry.id in compacted else "-",
                "yes" if entry.aligned else "no",
                "supervisor" if entry.supervisor else "user",
            )
        )
    return rows


def _layout_totals(layout: Layout, xcr0: int | None, xcomp_bv: int | None) -> list[str]:
    lines = []
    if xcr0 is not None:
        lines.append(f"standard size for XCR0 {xcr0:#x}: {layout.standard_size(xcr0)}")
    if xcomp_bv is not None:
        lines.append(
            f"compacted size for XCOMP_BV {xcomp_bv:#x}: {layout.compacted_size(xcomp_bv)}"
        )
    return lines


def layout_text(query: LayoutQuery) -> str:
    layout, xcr0, xcomp_bv = query.layout, query.xcr0, query.xcomp_bv
    rows = layout_rows(layout, xcr0, xcomp_bv)
    lines = [f"layout: {layout.source}"]
    lines += [f"note: {n}" for n in layout.notes]
    lines.append("  ".join(f"{h:>9}" for h in LAYOUT_HEADER))
    lines += ["  ".join(f"{c:>9}" for c in row) for row in rows]
    lines += _layout_totals(layout, xcr0, xcomp_bv)
    return "\n".join(lines) + "\n"


def layout_terminal(query: LayoutQuery, screen: Screen) -> str:
    from xcr0tool.render.styled import Page

    layout, xcr0, xcomp_bv = query.layout, query.xcr0, query.xcomp_bv
    page = Page(screen)
    page.add(("layout: ", "bold"), (layout.source, "bold"))
    page.table(LAYOUT_HEADER, layout_rows(layout, xcr0, xcomp_bv), right={0, 2, 3, 4})
    for line in [*(f"note: {n}" for n in layout.notes), *_layout_totals(layout, xcr0, xcomp_bv)]:
        page.add(line)
    return page.render()


def layout_query_json(query: LayoutQuery) -> dict[str, object]:
    """`layout --json`: a layout file (`--layout FILE` reads it), with the sizes asked."""
    layout, xcr0, xcomp_bv = query.layout, query.xcr0, query.xcomp_bv
    data = layout_json(layout)
    if xcr0 is not None:
        data["standard_size"] = layout.standard_size(xcr0)
    if xcomp_bv is not None:
        data["compacted_offsets"] = {
            str(k): v for k, v in layout.compacted_offsets(xcomp_bv).items()
        }
        data["compacted_size"] = layout.compacted_size(xcomp_bv)
    return data


def layout_view(query: LayoutQuery) -> View:
    return View(
        json=lambda: layout_query_json(query),
        text=lambda: layout_text(query),
        terminal=lambda screen: layout_terminal(query, screen),
        warnings=query.warnings,
    )
