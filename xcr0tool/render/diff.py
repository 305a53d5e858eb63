"""Rendering of `xcr0tool diff` results: JSON, plain text for pipes, rich on a terminal.

JSON schema (`xcr0tool diff --json`):

    {
      "a": {"source": str, "kind": str, "threads": int},
      "b": {"source": str, "kind": str, "threads": int},
      "mode": "state" | "raw",
      "lanes": "u8" | "u16" | "u32" | "u64" | "f32" | "f64",
      "registers_filter": [str, ...],          # the --reg globs, [] for all
      "same": bool,                            # exit status 0 exactly when true
      "pairs": [
        {
          "status": "same" | "different" | "only-a" | "only-b",
          "a": IMAGE | null,                   # null: a thread only B has
          "b": IMAGE | null,
          "header": [{"field": str, "a": str, "b": str}, ...],
              # fields that differ, of: format, size, xcr0, xcr0_source, xstate_bv,
              # xcomp_bv, layout; masks as "0x..." hex
          "registers": [                       # mode "state": differing registers
            {"name": str, "component": int, "size": int,
             "status": "different" | "only-a" | "only-b",
             "a": "0x..." | null, "b": "0x..." | null,
             "lanes": [{"index": int, "a": str, "b": str}, ...]}
                 # differing lanes, 0 the lowest; hex digits, or floats for f32/f64
          ],
          "bytes": [                           # mode "raw": runs of differing bytes
            {"offset": int, "length": int,
             "a": "hex bytes in memory order" , "b": "...",   # "" past the end
             "a_place": PLACE, "b_place": PLACE}
          ]
        }
      ]
    }
    IMAGE = {"origin": str, "tid": int | null, "format": str, "size": int,
             "xcr0": "0x...", "xstate_bv": "0x...", "xcomp_bv": "0x...", "layout": str,
             "event": int}                 # "event": an rr trace frame's index, rr only
    PLACE = {"component": int | null, "component_name": str | null,
             "field": str, "register": str | null}
"""

from __future__ import annotations

from collections.abc import Iterator

from xcr0tool.arch.components import describe_mask
from xcr0tool.model.image import XsaveImage
from xcr0tool.ops.diff import (
    DIFFERENT,
    ONLY_A,
    ONLY_B,
    RAW,
    SAME,
    ByteRun,
    DiffResult,
    Place,
    RegisterChange,
    ThreadDiff,
    format_lane,
    lane_widths,
    lanes_of,
)
from xcr0tool.ops.inspect import Compared
from xcr0tool.render.output import Streamed, View
from xcr0tool.render.styled import Page, Screen, Span
from xcr0tool.sources.open import SourceResult

STATUS_TEXT = {SAME: "same", DIFFERENT: "different", ONLY_A: "only in A", ONLY_B: "only in B"}


# JSON ----------------------------------------------------------------------------------
def _source_json(source: SourceResult) -> dict[str, object]:
    return {"source": source.name, "kind": source.kind, "threads": len(source.images)}


def _image_json(image: XsaveImage | None) -> dict[str, object] | None:
    if image is None:
        return None
    return {
        "origin": image.origin,
        "tid": image.tid,
        "format": image.format,
        "size": len(image.data),
        "xcr0": hex(image.xcr0),
        "xstate_bv": hex(image.xstate_bv),
        "xcomp_bv": hex(image.xcomp_bv),
        "layout": image.layout.source,
        **({"event": image.event} if image.event is not None else {}),
    }


def _place_json(place: Place) -> dict[str, object]:
    return {
        "component": place.component,
        "component_name": place.component_name,
        "field": place.field,
        "register": place.register,
    }


def _register_json(change: RegisterChange) -> dict[str, object]:
    return {
        "name": change.name,
        "component": change.component,
        "size": change.size,
        "status": change.status,
        "a": None if change.a is None else hex(change.a),
        "b": None if change.b is None else hex(change.b),
        "lanes": [{"index": c.index, "a": c.a, "b": c.b} for c in change.lanes],
    }


def _run_json(run: ByteRun) -> dict[str, object]:
    return {
        "offset": run.offset,
        "length": run.length,
        "a": run.a.hex(),
        "b": run.b.hex(),
        "a_place": _place_json(run.a_place),
        "b_place": _place_json(run.b_place),
    }


def diff_json(result: DiffResult) -> dict[str, object]:
    streamed = diff_json_stream(result)
    return {**streamed.fields, streamed.key: list(streamed.items)}


def diff_json_stream(result: DiffResult) -> Streamed:
    """diff's JSON with its pairs made one by one (an rr trace's are compared again as
    they are written, not held)."""
    fields: dict[str, object] = {
        "a": _source_json(result.a),
        "b": _source_json(result.b),
        "mode": result.mode,
        "lanes": result.lanes,
        "registers_filter": list(result.patterns),
        "same": result.same,
    }
    return Streamed(fields, "pairs", map(_pair_json, result.pairs))


def _pair_json(pair: ThreadDiff) -> dict[str, object]:
    return {
        "status": pair.status,
        "a": _image_json(pair.a),
        "b": _image_json(pair.b),
        "header": [{"field": h.field, "a": h.a, "b": h.b} for h in pair.header],
        "registers": [_register_json(r) for r in pair.registers],
        "bytes": [_run_json(r) for r in pair.bytes],
    }


# Shared by text and rich -------------------------------------------------------------------
def describe_header_value(field: str, value: str) -> str:
    """A header value with the component names of a mask."""
    if field in ("xcr0", "xstate_bv", "xcomp_bv"):
        return f"{value} ({describe_mask(int(value, 16))})"
    return value


def _lane_texts(value: int, size: int, kind: str) -> list[str]:
    """The register's lanes in the view asked for, lane 0 first."""
    widths = lane_widths(size, kind)
    return [
        format_lane(lane, width, kind)
        for lane, width in zip(lanes_of(value, size, kind), widths, strict=True)
    ]


def aligned_cells(change: RegisterChange, kind: str) -> tuple[list[str], list[str]]:
    """A's and B's lanes, the highest first (as a hex number reads), each column padded
    to the wider of the two, differing lanes in brackets."""
    assert change.a is not None and change.b is not None
    changed = {c.index for c in change.lanes}
    texts_a = _lane_texts(change.a, change.size, kind)
    texts_b = _lane_texts(change.b, change.size, kind)
    out_a, out_b = [], []
    for i in reversed(range(len(texts_a))):
        text_a, text_b = texts_a[i], texts_b[i]
        if i in changed:
            text_a, text_b = f"[{text_a}]", f"[{text_b}]"
        width = max(len(text_a), len(text_b))
        out_a.append(text_a.rjust(width))
        out_b.append(text_b.rjust(width))
    return out_a, out_b


def _side(image: XsaveImage | None) -> str:
    if image is None:
        return "-"
    return f"thread {image.tid}" if image.tid is not None else image.origin


def pair_title(pair: ThreadDiff) -> str:
    return f"{_side(pair.a)} | {_side(pair.b)}: {STATUS_TEXT[pair.status]}"


def _source_line(label: str, source: SourceResult) -> str:
    count = len(source.images)
    return f"{label}: {source.name} ({source.kind}, {count} thread{'s' if count != 1 else ''})"


def _intro(result: DiffResult) -> list[str]:
    lines = [_source_line("A", result.a), _source_line("B", result.b)]
    if result.mode == RAW:
        lines.append("compared: bytes at the same offsets")
    else:
        lines.append(
            f"compared: registers, lanes {result.lanes} (lane 0 rightmost; [..] marks a"
            " differing lane)"
        )
    if result.patterns:
        lines.append(f"registers: {' '.join(result.patterns)}")
    return lines


def _summary(result: DiffResult) -> str:
    if result.same:
        return "same"
    statuses = result.statuses()
    differing = sum(1 for status in statuses if status != SAME)
    return f"different: {differing} of {len(statuses)} thread pairs"


def _place_text(run: ByteRun) -> str:
    if run.a_place == run.b_place:
        return run.a_place.describe()
    return f"A: {run.a_place.describe()} / B: {run.b_place.describe()}"


# Text ----------------------------------------------------------------------------------
def _register_lines(change: RegisterChange, kind: str, width: int) -> list[str]:
    if change.a is None or change.b is None:
        value = change.b if change.a is None else change.a
        return [f"    {change.name:<{width}} {STATUS_TEXT[change.status]}: {value:#x}"]
    cells_a, cells_b = aligned_cells(change, kind)
    return [
        f"    {change.name:<{width}} A {' '.join(cells_a)}",
        f"    {'':<{width}} B {' '.join(cells_b)}",
    ]


def diff_text(result: DiffResult) -> str:
    return "".join(diff_text_chunks(result))


def diff_text_chunks(result: DiffResult) -> Iterator[str]:
    """diff's plain text: its head, each pair's part as it is compared, the verdict."""
    yield "\n".join(_intro(result)) + "\n"
    for pair in result.pairs:
        yield "\n".join(_pair_lines(pair, result.lanes)) + "\n"
    yield "\n" + _summary(result) + "\n"


def _pair_lines(pair: ThreadDiff, lanes: str) -> list[str]:
    """One pair's part of the plain text, from the blank line before it."""
    lines = ["", pair_title(pair)]
    if pair.header:
        lines.append("  header:")
        for h in pair.header:
            a = describe_header_value(h.field, h.a)
            b = describe_header_value(h.field, h.b)
            lines.append(f"    {h.field:<11} A {a}")
            lines.append(f"    {'':<11} B {b}")
    if pair.registers:
        width = max(len(r.name) for r in pair.registers)
        count = len(pair.registers)
        lines.append(f"  {count} register{' differs' if count == 1 else 's differ'}:")
        for change in pair.registers:
            lines += _register_lines(change, lanes, width)
    for run in pair.bytes:
        end = run.offset + run.length - 1
        lines.append(f"  bytes {run.offset}-{end} ({run.length}): {_place_text(run)}")
        lines.append(f"    A {run.a.hex(' ') or 'past the end'}")
        lines.append(f"    B {run.b.hex(' ') or 'past the end'}")
    return lines


# Terminal ------------------------------------------------------------------------------
def diff_terminal(result: DiffResult, screen: Screen) -> str:
    page = Page(screen)
    for line in _intro(result):
        page.add(line)
    for pair in result.pairs:
        page.blank()
        style = "green" if pair.status == SAME else "red"
        page.rule(pair_title(pair), f"bold {style}")
        if pair.header:
            page.table(
                ("header", "A", "B"),
                [
                    (
                        h.field,
                        describe_header_value(h.field, h.a),
                        describe_header_value(h.field, h.b),
                    )
                    for h in pair.header
                ],
            )
        if pair.registers:
            width = max(len(r.name) for r in pair.registers)
            for change in pair.registers:
                _terminal_register_lines(page, change, result.lanes, width)
        if pair.bytes:
            page.table(
                ("bytes", "place", "A", "B"),
                [
                    (
                        f"{run.offset}-{run.offset + run.length - 1}",
                        _place_text(run),
                        (run.a.hex(" ") or "past the end", "red"),
                        (run.b.hex(" ") or "past the end", "green"),
                    )
                    for run in pair.bytes
                ],
            )
    page.blank()
    page.add((_summary(result), "bold green" if result.same else "bold red"))
    return page.render()


def _terminal_register_lines(page: Page, change: RegisterChange, kind: str, width: int) -> None:
    """The plain-text lines of a register, with differing lanes in colour."""
    if change.a is None or change.b is None:
        value = change.b if change.a is None else change.a
        page.add(
            "    ",
            (f"{change.name:<{width}}", "bold"),
            f" {STATUS_TEXT[change.status]}: {value:#x}",
        )
        return
    cells_a, cells_b = aligned_cells(change, kind)
    for label, cells, style in (("A", cells_a, "red"), ("B", cells_b, "green")):
        spans: list[Span] = [
            ("    ", ""),
            (f"{change.name if label == 'A' else '':<{width}}", "bold"),
        ]
        spans.append((f" {label} ", ""))
        for i, cell in enumerate(cells):
            if i:
                spans.append((" ", ""))
            spans.append((cell, f"bold {style}" if "[" in cell else ""))
        page.add(*spans)


def brief_text(result: DiffResult) -> str:
    """diff -q: one line when A and B differ, nothing when they are the same."""
    if result.same:
        return ""
    return f"{result.a.name} and {result.b.name} differ\n"


def diff_view(compared: Compared, brief: bool = False) -> View:
    result = compared.diff
    if brief:
        return View(
            json=lambda: diff_json(result),
            json_stream=lambda: diff_json_stream(result),
            text=lambda: brief_text(result),
            warnings=compared.warnings,
            status=0 if result.same else 1,
        )
    return View(
        json=lambda: diff_json(result),
        text=lambda: diff_text(result),
        text_chunks=lambda: diff_text_chunks(result),
        json_stream=lambda: diff_json_stream(result),
        terminal=lambda screen: diff_terminal(result, screen),
        warnings=compared.warnings,
        status=0 if result.same else 1,
    )
