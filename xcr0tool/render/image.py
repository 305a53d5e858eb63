"""Rendering of decode and layout results: JSON (the documented contract), plain text for
pipes, rich tables for terminals. Presentation never parses: values come from the model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from xcr0tool.arch.components import component, describe_mask
from xcr0tool.model.image import XsaveImage
from xcr0tool.model.layout import Layout
from xcr0tool.model.registers import Register, registers, select, stale_registers
from xcr0tool.model.sigframe import SignalFrameInfo
from xcr0tool.render.values import describe
from xcr0tool.sources.open import SourceResult

if TYPE_CHECKING:
    from rich.console import Console


def hex_value(register: Register) -> str:
    return hex(register.value)


# JSON ---------------------------------------------------------------------------------
def layout_json(layout: Layout, mask: int | None = None) -> dict[str, object]:
    """The layout object of the JSON contract; with a mask, only those components."""
    data = layout.to_json()
    if mask is not None:
        data["components"] = [c for c in data["components"] if mask >> c["id"] & 1]  # type: ignore[attr-defined]
    return data


def image_json(
    image: XsaveImage, patterns: Sequence[str] = (), stale: bool = False
) -> dict[str, object]:
    extra: dict[str, object] = {}
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
        "registers": {r.name: hex_value(r) for r in select(registers(image), patterns)},
        "notes": list(image.notes),
        **extra,
    }


def decode_json(
    result: SourceResult, patterns: Sequence[str] = (), stale: bool = False
) -> dict[str, object]:
    layout = result.layout or result.images[0].layout
    held = 0
    for image in result.images:
        held |= sum(1 << i for i in image.offsets)
    return {
        "source": result.name,
        "kind": result.kind,
        **({"details": result.details} if result.details else {}),
        "layout": layout_json(layout, held),
        "threads": [image_json(image, patterns, stale) for image in result.images],
    }


# Text ---------------------------------------------------------------------------------
def magic2_state(frame: SignalFrameInfo) -> str:
    if frame.magic2 is None:
        return "missing (past the end of the buffer)"
    return "ok" if frame.magic2_ok else f"{frame.magic2:#010x} (wrong)"


class RegisterRow(NamedTuple):
    name: str
    value: str  # hex
    description: str
    in_use: bool
    component: int


def register_rows(regs: Sequence[Register], patterns: Sequence[str]) -> list[RegisterRow]:
    return [
        RegisterRow(r.name, hex_value(r), describe(r.name, r.value), r.in_use, r.component)
        for r in select(regs, patterns)
    ]


@dataclass(frozen=True)
class ThreadView:
    """What both the plain and the rich renderer show of one image."""

    title: str
    summary: list[tuple[str, str]]
    components: list[tuple[str, str, str, str, str]]  # id, name, offset, size, state
    registers: list[RegisterRow]
    stale: list[RegisterRow]  # bytes behind init-state components, when asked for


STALE_TITLE = "stale bytes behind init-state components (XRSTOR loads init values instead)"


def thread_view(image: XsaveImage, patterns: Sequence[str], stale: bool = False) -> ThreadView:
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
    stale_rows = register_rows(stale_registers(image), patterns) if stale else []
    return ThreadView(title, summary, rows, register_rows(registers(image), patterns), stale_rows)


def decode_text(result: SourceResult, patterns: Sequence[str], stale: bool = False) -> str:
    layout = result.layout or result.images[0].layout
    lines = [f"source: {result.name} ({_kind(result)})", f"layout: {layout.source}"]
    lines += [f"warning: {w}" for w in result.warnings]
    for image in result.images:
        view = thread_view(image, patterns, stale)
        lines.append("")
        lines.append(f"{view.title}:")
        lines += [f"  {key}: {value}" for key, value in view.summary]
        if not patterns:
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
    return "\n".join(lines) + "\n"


def _kind(result: SourceResult) -> str:
    details = ", ".join(result.details.values())
    # `self` is one thread saved twice (XSAVE, XSAVEC): count images, not threads
    unit = {"self": "image", "rr-trace": "frame"}.get(result.kind, "thread")
    count = f"{len(result.images)} {unit}{'s' if len(result.images) != 1 else ''}"
    return ", ".join(x for x in (result.kind, details, count) if x)


def decode_rich(
    result: SourceResult, patterns: Sequence[str], stale: bool = False, out: Console | None = None
) -> None:
    from rich.table import Table

    from xcr0tool.files.output import console

    out = out or console()
    layout = result.layout or result.images[0].layout
    out.print(f"[bold]{result.name}[/bold] ({_kind(result)})")
    out.print(f"layout: {layout.source}")
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/yellow] {warning}")
    for image in result.images:
        view = thread_view(image, patterns, stale)
        out.print()
        out.rule(f"[bold]{view.title}")
        for key, value in view.summary:
            out.print(f"  [cyan]{key}[/cyan]: {value}")
        if not patterns:
            table = Table("id", "component", "offset", "size", "state", box=None, padding=(0, 1))
            for cid, name, offset, size, state in view.components:
                table.add_row(
                    cid, name, offset, size, state if state == "init" else f"[green]{state}"
                )
            out.print(table)
        groups = _by_component(image, view.registers)
        if view.stale:
            groups.append((STALE_TITLE, view.stale))
        for title, rows in groups:
            table = Table(title=title, title_justify="left", box=None, padding=(0, 1))
            table.add_column("register", style="bold")
            table.add_column("value", overflow="fold")
            table.add_column("")
            for row in rows:
                value = row.value if row.in_use else f"[dim]{row.value}"
                table.add_row(row.name, value, row.description)
            out.print(table)


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


def layout_text(layout: Layout, xcr0: int | None, xcomp_bv: int | None) -> str:
    rows = layout_rows(layout, xcr0, xcomp_bv)
    lines = [f"layout: {layout.source}"]
    lines += [f"note: {n}" for n in layout.notes]
    header = ("id", "name", "size", "standard", "compacted", "aligned", "kind")
    lines.append("  ".join(f"{h:>9}" for h in header))
    lines += ["  ".join(f"{c:>9}" for c in row) for row in rows]
    lines += _layout_totals(layout, xcr0, xcomp_bv)
    return "\n".join(lines) + "\n"


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


def layout_rich(
    layout: Layout, xcr0: int | None, xcomp_bv: int | None, out: Console | None = None
) -> None:
    from rich.table import Table

    from xcr0tool.files.output import console

    out = out or console()
    table = Table(title=f"layout: {layout.source}", title_justify="left")
    for column in ("id", "name", "size", "standard", "compacted", "aligned", "kind"):
        table.add_column(
            column, justify="right" if column in ("id", "size", "standard", "compacted") else "left"
        )
    for row in layout_rows(layout, xcr0, xcomp_bv):
        table.add_row(*row)
    out.print(table)
    for line in [*(f"note: {n}" for n in layout.notes), *_layout_totals(layout, xcr0, xcomp_bv)]:
        out.print(line)
