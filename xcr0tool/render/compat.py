"""Rendering of `xcr0tool compat`: JSON, plain text for pipes, rich on a terminal. The
warnings are the view's: on stderr in text, the "warnings" list in JSON (render/output).

JSON schema (`xcr0tool compat --json`; stable: new keys may be added, none removed or
changed; indexes refer to "machines"):

    {"schema": 1,
     "machines": [{"source": str, "name": str, "xcr0": "0x...", "xcr0_source": str,
                   "xcr0_capable": "0x..." | null,     # CPUID.(0xD,0) EDX:EAX; null: unknown
                   "standard_size": int,                # XSAVE's size under xcr0
                   "xsavec": bool | null, "xsaves": bool | null}],   # null: unknown
     "portable_xcr0": "0x...",
     "components": [{"id": int, "name": str, "same": bool,
                     "on": [{"size": int, "offset": int, "aligned": bool} | null, ...]}],
                                                        # per machine; null: not in its XCR0
     "rr":   [{"recorded_on": int, "replayed_on": int, "replays": bool,
               "fatal_feature": int | null, "message": str | null, "warnings": [str]}],
     "criu": [{"dumped_on": int, "restored_on": int,
               "restores": bool | null,                 # null: a machine lacks CRIU's facts
               "reason": str | null}],
     "images": [{"machine": int, "tid": int | null,
                 "event": int | null,                   # an rr trace's frame: its index
                 "in_use": "0x...",                     #   in events; null otherwise
                 "lost_on": [int], "moved_on": [int]}],
     "advice": [str], "warnings": [str]}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xcr0tool.arch.components import bits, component, describe_mask
from xcr0tool.model.machine import Machine, Placement
from xcr0tool.ops.compat import CompatResult, ImageCheck
from xcr0tool.render.output import View
from xcr0tool.render.styled import drawn_by_rich

if TYPE_CHECKING:
    from rich.console import Console

SCHEMA = 1

# What a person calls the state of a group of components, for "holds AVX-512 state".
_FAMILIES = (
    (0b100, "AVX"),
    (0b11000, "MPX"),
    (0b11100000, "AVX-512"),
    (1 << 9, "PKRU"),
    (0b11 << 17, "AMX"),
    (1 << 19, "APX"),
)


def _hex(value: int | None) -> str | None:
    return None if value is None else hex(value)


def _place_json(place: Placement | None) -> dict[str, object] | None:
    if place is None:
        return None
    return {"size": place.size, "offset": place.offset, "aligned": place.aligned}


def compat_json(result: CompatResult) -> dict[str, object]:
    return {
        "schema": SCHEMA,
        "machines": [
            {
                "source": m.source,
                "name": m.name,
                "xcr0": hex(m.xcr0),
                "xcr0_source": m.xcr0_source,
                "xcr0_capable": _hex(m.xcr0_capable),
                "standard_size": m.standard_size,
                "xsavec": m.xsavec,
                "xsaves": m.xsaves,
            }
            for m in result.machines
        ],
        "portable_xcr0": hex(result.portable_xcr0),
        "components": [
            {
                "id": row.id,
                "name": row.name,
                "same": row.same,
                "on": [_place_json(place) for place in row.on],
            }
            for row in result.components
        ],
        "rr": [
            {
                "recorded_on": v.recorded_on,
                "replayed_on": v.replayed_on,
                "replays": v.replays,
                "fatal_feature": v.fatal_feature,
                "message": v.message,
                "warnings": list(v.warnings),
            }
            for v in result.rr
        ],
        "criu": [
            {
                "dumped_on": v.dumped_on,
                "restored_on": v.restored_on,
                "restores": v.restores,
                "reason": v.reason,
            }
            for v in result.criu
        ],
        "images": [
            {
                "machine": c.machine,
                "tid": c.tid,
                "event": c.event,
                "in_use": hex(c.in_use),
                "lost_on": list(c.lost_on),
                "moved_on": list(c.moved_on),
            }
            for c in result.images
        ],
        "advice": list(result.advice),
        "warnings": list(result.warnings),
    }


# Text -------------------------------------------------------------------------------


def _yes(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "no"


def _label(result: CompatResult, index: int) -> str:
    return f"[{index}] {result.machines[index].name}"


def _place_text(place: Placement | None) -> str:
    if place is None:
        return "-"
    return f"{place.offset}+{place.size}{' A' if place.aligned else ''}"


def state_words(mask: int) -> str:
    """'AVX-512 state (opmask, zmm_hi256, hi16_zmm)'."""
    families = [name for family, name in _FAMILIES if mask & family]
    names = ", ".join(component(i).name for i in bits(mask))
    return f"{'/'.join(families) or 'extended'} state ({names})"


def _moves(source: Machine, target: Machine, mask: int) -> str:
    moves = []
    for i in bits(mask):
        here, there = source.placement(i), target.placement(i)
        moves.append(f"{component(i).name} {_place_text(here)} -> {_place_text(there)}")
    return ", ".join(moves)


def machine_lines(result: CompatResult) -> list[str]:
    lines = []
    for index, m in enumerate(result.machines):
        lines.append(f"{_label(result, index)}: {m.kind}, {m.source}")
        lines.append(f"    XCR0 {m.xcr0:#x} ({describe_mask(m.xcr0)}): {m.xcr0_source}")
        capable = "unknown" if m.xcr0_capable is None else f"{m.xcr0_capable:#x}"
        lines.append(
            f"    XCR0 may hold {capable}; standard size {m.standard_size};"
            f" XSAVEC {_yes(m.xsavec)}, XSAVES {_yes(m.xsaves)}; layout: {m.cpuid_source}"
        )
    return lines


COMPONENTS_TITLE = (
    "components (standard format: offset+size, A = 64-byte aligned when compacted; - = not in XCR0)"
)


def component_table(result: CompatResult) -> tuple[list[str], list[list[str]]]:
    header = ["id", "name", *(_label(result, i) for i in range(len(result.machines))), "same"]
    rows = [
        [
            str(row.id),
            row.name,
            *(_place_text(place) for place in row.on),
            "yes" if row.same else "NO",
        ]
        for row in result.components
    ]
    return header, rows


def portable_line(result: CompatResult) -> str:
    p = result.portable_xcr0
    verdict = (
        "every machine's XCR0 already"
        if result.portable
        else "not every machine's XCR0: state can be lost or misplaced"
    )
    return f"portable XCR0: {p:#x} ({describe_mask(p)}), {verdict}"


def rr_lines(result: CompatResult) -> list[str]:
    lines = []
    for v in result.rr:
        pair = f"{_label(result, v.recorded_on)} -> {_label(result, v.replayed_on)}"
        if v.replays:
            lines.append(f"{pair}: replays")
        else:
            at = f" at feature {v.fatal_feature}" if v.fatal_feature is not None else ""
            message = " ".join((v.message or "").splitlines())
            lines.append(f"{pair}: FATAL{at}: {message}")
        lines += [f"    warning: {w}" for w in v.warnings]
    return lines


def criu_lines(result: CompatResult) -> list[str]:
    lines = []
    for v in result.criu:
        pair = f"{_label(result, v.dumped_on)} -> {_label(result, v.restored_on)}"
        if v.restores is True:
            lines.append(f"{pair}: restores")
        elif v.restores is False:
            lines.append(f"{pair}: REFUSED: {v.reason}")
        else:
            lines.append(f"{pair}: unknown: {v.reason}")
    return lines


@dataclass(frozen=True)
class _Group:
    machine: int
    checks: tuple[ImageCheck, ...]

    @property
    def check(self) -> ImageCheck:
        return self.checks[0]


def _grouped(checks: Sequence[ImageCheck]) -> list[_Group]:
    """Saved states that fare alike, together: four threads of one core with the same
    in-use components say it once; an rr trace's frames, once per thread."""
    groups: dict[tuple[object, ...], list[ImageCheck]] = {}
    for check in checks:
        thread = check.tid if check.event is not None else None
        key = (
            check.machine,
            check.event is not None,
            thread,
            check.in_use,
            check.lost,
            check.moved,
        )
        groups.setdefault(key, []).append(check)
    return [_Group(found[0].machine, tuple(found)) for found in groups.values()]


# A list of frames longer than this is shown by its first few and its last.
_FRAMES_SHOWN = 8


def _who(group: _Group, source: str) -> str:
    """'threads 6785, 6788 of [0] core', 'frames 1, 3 of thread 4242 in [0] trace'."""
    checks = group.checks
    if checks[0].event is not None:
        events = [str(c.event) for c in checks]
        if len(events) > _FRAMES_SHOWN:
            events = [*events[: _FRAMES_SHOWN - 2], "...", events[-1]]
            listed = f"{len(checks)} frames ({', '.join(events)})"
        else:
            listed = f"frame{'s' if len(events) > 1 else ''} {', '.join(events)}"
        tid = checks[0].tid
        return (
            f"{listed} of thread {tid} in {source}" if tid is not None else f"{listed} in {source}"
        )
    labels = [c.label for c in checks]
    if len(labels) == 1:
        return f"{labels[0]} of {source}"
    if all(label.startswith("thread ") for label in labels):
        return (
            "threads "
            + ", ".join(label.removeprefix("thread ") for label in labels)
            + f" of {source}"
        )
    return ", ".join(labels) + f" of {source}"


def image_lines(result: CompatResult) -> list[str]:
    lines = []
    for group in _grouped(result.images):
        check = group.check
        source = result.machines[group.machine]
        who = _who(group, _label(result, group.machine))
        if not check.lost and not check.moved:
            lines.append(
                f"{who}: in use {check.in_use:#x} ({describe_mask(check.in_use)}),"
                " placed alike everywhere"
            )
            continue
        holds = "holds" if len(group.checks) == 1 else "hold"
        for target, mask in check.lost:
            lines.append(f"{who} {holds} {state_words(mask)} that {_label(result, target)} lacks")
        for target, mask in check.moved:
            there = result.machines[target]
            lines.append(
                f"{who} {holds} {state_words(mask)} that {_label(result, target)} places"
                f" elsewhere: {_moves(source, there, mask)}"
            )
    return lines


def _section(title: str, lines: Sequence[str], bullet: str = "  ") -> list[str]:
    return [f"{title}:", *(f"{bullet}{line}" for line in lines), ""] if lines else []


def _columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {0}
    out = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.append("  ".join(cells).rstrip())
    return out


def compat_text(result: CompatResult) -> str:
    header, rows = component_table(result)
    lines = [
        *_section("machines", machine_lines(result)),
        f"{COMPONENTS_TITLE}:",
        *(f"  {line}" for line in _columns(header, rows)),
        "",
        portable_line(result),
        "",
        *_section("rr (recorded on -> replayed on; check_xsave_compatibility)", rr_lines(result)),
        *_section(
            "CRIU (dumped on -> restored on; cpu_validate_features, --cpu-cap=fpu)",
            criu_lines(result),
        ),
        *_section("saved state", image_lines(result)),
        *_section("advice", list(result.advice), "  - "),
    ]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def compat_rich(result: CompatResult, out: Console | None = None) -> None:
    from rich.table import Table
    from rich.text import Text

    from xcr0tool.files.output import console

    out = out or console()

    def section(title: str, lines: Sequence[str], styles: dict[str, str] | None = None) -> None:
        if not lines:
            return
        out.print(Text(f"{title}:", style="bold"))
        for line in lines:
            style = ""
            for marker, chosen in (styles or {}).items():
                if marker in line:
                    style = chosen
            out.print(Text(f"  {line}", style=style))
        out.print()

    section("machines", machine_lines(result))
    header, rows = component_table(result)
    table = Table(title=COMPONENTS_TITLE, title_justify="left", box=None, padding=(0, 1))
    for column in header:
        table.add_column(column, justify="right" if column == "id" else "left")
    for row in rows:
        styled = [Text(cell) for cell in row]
        if row[-1] == "NO":
            styled = [Text(cell, style="yellow") for cell in row[:-1]] + [
                Text(row[-1], style="bold red")
            ]
        table.add_row(*styled)
    out.print(table)
    out.print()
    style = "bold green" if result.portable else "bold yellow"
    out.print(Text(portable_line(result), style=style))
    out.print()
    bad = {"FATAL": "bold red", "REFUSED": "bold red", "warning:": "yellow"}
    section("rr (recorded on -> replayed on; check_xsave_compatibility)", rr_lines(result), bad)
    section(
        "CRIU (dumped on -> restored on; cpu_validate_features, --cpu-cap=fpu)",
        criu_lines(result),
        bad,
    )
    section("saved state", image_lines(result), {"lacks": "red", "elsewhere": "yellow"})
    section("advice", [f"- {a}" for a in result.advice])


def compat_view(result: CompatResult) -> View:
    """compat's answer; its warnings are said once, on stderr or in the JSON."""
    return View(
        json=lambda: compat_json(result),
        text=lambda: compat_text(result),
        terminal=lambda screen: drawn_by_rich(lambda out: compat_rich(result, out), screen),
        warnings=result.warnings,
        status=0 if result.portable else 1,
    )
