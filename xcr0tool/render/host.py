"""Rendering of `xcr0tool host`: JSON (schema in the command's docstring), plain text for
pipes, rich tables for terminals, and the layout file `host --save` writes.

Everything shown comes from one `HostInfo` (hostinfo.gather_host_info); the view below
is built once and drawn by both text renderers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

from xcr0tool.arch.components import describe_mask
from xcr0tool.model.layout import Layout
from xcr0tool.render.output import View
from xcr0tool.render.styled import Page, Screen, Span
from xcr0tool.sources.hostinfo import XCR0_FLAGS, HostInfo, inferred_xss, user_capable

# /proc/cpuinfo flags that say what the kernel makes of XSAVE: the instructions, and the
# features whose state XCR0 enables (the kernel's own pairing, see hostinfo.XCR0_FLAGS).
XSAVE_INSTRUCTION_FLAGS = ("xsave", "xsaveopt", "xsavec", "xgetbv1", "xsaves", "xfd")
XSAVE_FLAGS = XSAVE_INSTRUCTION_FLAGS + tuple(
    dict.fromkeys(name for names in XCR0_FLAGS.values() for name in names)
)


class ComponentState(str, Enum):
    """Where a component stands on this machine (the JSON "state", the text column)."""

    XCR0 = "xcr0"  # enabled in XCR0
    XSS = "ia32_xss"  # enabled in IA32_XSS (inferred: user mode cannot read it)
    OFF = "off"  # the CPU supports it, neither XCR0 nor IA32_XSS enables it
    UNKNOWN = "unknown"  # a supervisor component, and IA32_XSS cannot be inferred
    UNLISTED = "unlisted"  # a sub-leaf for a component CPUID.(0xD,0/1) does not list

    __str__ = str.__str__


STATE_XCR0, STATE_XSS, STATE_OFF, STATE_UNKNOWN, STATE_UNLISTED = ComponentState
_STATE_TEXT = {
    STATE_XCR0: "XCR0",
    STATE_XSS: "IA32_XSS",
    STATE_OFF: "off",
    STATE_UNKNOWN: "IA32_XSS?",
    STATE_UNLISTED: "not listed",
}


@dataclass(frozen=True)
class ComponentRow:
    """One component as `host` shows it; the fields are the JSON "components" keys."""

    id: int
    name: str
    size: int
    offset: int | None  # standard format; None for supervisor components
    compacted_offset: int | None  # in an XSAVEC image of XCR0; None when not in XCR0
    aligned: bool
    supervisor: bool
    xfd: bool
    state: ComponentState


def component_rows(info: HostInfo, layout: Layout, xss: int | None) -> list[ComponentRow]:
    """Every component of the host's `layout`, `xss` being the inferred IA32_XSS."""
    compacted = layout.compacted_offsets(info.xcr0)
    listed = user_capable(info.leaf_0d) | info.xss_capable
    rows = []
    for entry in layout.entries():
        bit = 1 << entry.id
        if info.xcr0 & bit:
            state = STATE_XCR0
        elif not listed & bit:
            state = STATE_UNLISTED
        elif entry.supervisor and xss is None:
            state = STATE_UNKNOWN
        elif entry.supervisor and xss is not None and xss & bit:
            state = STATE_XSS
        else:
            state = STATE_OFF
        rows.append(
            ComponentRow(
                entry.id,
                entry.name,
                entry.size,
                entry.standard_offset,
                compacted.get(entry.id),
                entry.aligned,
                entry.supervisor,
                entry.xfd,
                state,
            )
        )
    return rows


def _sizes(info: HostInfo, layout: Layout) -> dict[str, int]:
    sub0 = info.leaf_0d.get(0, (0, 0, 0, 0))
    sub1 = info.leaf_0d.get(1, (0, 0, 0, 0))
    return {
        "standard_xcr0": sub0[1],  # CPUID.(0xD,0).EBX: XSAVE of XCR0
        "standard_max": sub0[2],  # CPUID.(0xD,0).ECX: every user component the CPU has
        "compacted_xcr0_xss": sub1[1],  # CPUID.(0xD,1).EBX: XSAVES of XCR0 | IA32_XSS
        "compacted_xcr0": layout.compacted_size(info.xcr0),  # XSAVEC of XCR0
    }


def _flags(info: HostInfo) -> dict[str, bool] | None:
    if not info.cpuinfo_flags:
        return None  # /proc/cpuinfo unreadable: unknown, not "absent"
    present = set(info.cpuinfo_flags)
    return {flag: flag in present for flag in XSAVE_FLAGS}


def _hex_or_none(value: int | None) -> str | None:
    return None if value is None else hex(value)


def _machine_json(info: HostInfo) -> dict[str, object]:
    return {
        "vendor": info.vendor,
        "family": info.family,
        "model": info.model,
        "stepping": info.stepping,
        "brand": info.brand,
    }


# JSON ---------------------------------------------------------------------------------
def host_json(info: HostInfo) -> dict[str, object]:
    layout = info.layout
    xss, candidates = inferred_xss(info.leaf_0d, info.xcr0)
    return {
        "cpu": _machine_json(info),
        "xcr0": hex(info.xcr0),
        "xinuse": _hex_or_none(info.xinuse),
        "xcr0_capable": hex(user_capable(info.leaf_0d)),
        "xss_capable": hex(info.xss_capable),
        "xss": _hex_or_none(xss),
        "xss_candidates": [hex(c) for c in candidates],
        "instructions": asdict(info.supports),
        "sizes": _sizes(info, layout),
        "mxcsr_mask": hex(info.mxcsr_mask),
        "leaf_0d": [
            {"subleaf": sub, "eax": hex(eax), "ebx": hex(ebx), "ecx": hex(ecx), "edx": hex(edx)}
            for sub, (eax, ebx, ecx, edx) in sorted(info.leaf_0d.items())
        ],
        "components": [asdict(row) for row in component_rows(info, layout, xss)],
        "kernel": {
            "cpuinfo_flags": _flags(info),
            "xcomp_supp": _hex_or_none(info.xcomp_supp),
            "xcomp_perm": _hex_or_none(info.xcomp_perm),
        },
        "inconsistencies": list(info.inconsistencies),
    }


def saved_layout(info: HostInfo) -> dict[str, object]:
    """The layout file `host --save` writes: what `layout --json` writes (which
    `--layout FILE` reads), plus the machine and its XCR0, for the person who reads it."""
    data = info.layout.to_json()
    data["machine"] = _machine_json(info)
    data["xcr0"] = hex(info.xcr0)
    return data


# Text ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostView:
    """What both the plain and the rich renderer show."""

    summary: list[tuple[str, str]]
    leaf_rows: list[tuple[str, ...]]  # under LEAF_HEADER
    component_rows: list[tuple[str, ...]]  # under COMPONENT_HEADER
    inconsistencies: list[str]


LEAF_TITLE = "CPUID leaf 0xD"
LEAF_HEADER = ("sub-leaf", "EAX", "EBX", "ECX", "EDX")
COMPONENT_TITLE = "components (compacted: offset in an XSAVEC image of XCR0)"
COMPONENT_HEADER = (
    "id",
    "name",
    "size",
    "standard",
    "compacted",
    "aligned",
    "kind",
    "xfd",
    "state",
)


def _mask(value: int) -> str:
    return f"{value:#x} ({describe_mask(value)})"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _kernel_mask(value: int | None) -> str:
    return _mask(value) if value is not None else "not known (< 5.16)"


def host_view(info: HostInfo) -> HostView:
    layout = info.layout
    xss, candidates = inferred_xss(info.leaf_0d, info.xcr0)
    sizes = _sizes(info, layout)
    if xss is not None:
        xss_text = f"{_mask(xss)}, the only value that CPUID.(0xD,1).EBX fits"
    elif candidates:
        xss_text = (
            f"unknown: {len(candidates)} values fit CPUID.(0xD,1).EBX"
            f" ({', '.join(hex(c) for c in candidates)})"
        )
    else:
        xss_text = "unknown: no value fits CPUID.(0xD,1).EBX"
    summary = [
        ("cpu", info.machine),
        ("XCR0", f"{_mask(info.xcr0)}, XGETBV 0"),
        (
            "XINUSE",
            f"{_mask(info.xinuse)}, XGETBV 1 (this tool's thread)"
            if info.xinuse is not None
            else "not available (no XGETBV with ECX=1)",
        ),
        ("XCR0 may hold", f"{_mask(user_capable(info.leaf_0d))}, CPUID.(0xD,0) EDX:EAX"),
        ("IA32_XSS may hold", f"{_mask(info.xss_capable)}, CPUID.(0xD,1) EDX:ECX"),
        ("IA32_XSS", xss_text),
        (
            "instructions",
            ", ".join(f"{name.upper()} {_yes(has)}" for name, has in asdict(info.supports).items()),
        ),
        (
            "sizes",
            f"XSAVE of XCR0 {sizes['standard_xcr0']} (CPUID.(0xD,0).EBX), all user components"
            f" {sizes['standard_max']} (ECX), XSAVES of XCR0|IA32_XSS"
            f" {sizes['compacted_xcr0_xss']} (CPUID.(0xD,1).EBX), XSAVEC of XCR0"
            f" {sizes['compacted_xcr0']}",
        ),
        ("MXCSR_MASK", f"{info.mxcsr_mask:#x}"),
    ]
    flags = _flags(info)
    if flags is None:
        summary.append(("/proc/cpuinfo", "unreadable"))
    else:
        shown = [flag for flag, present in flags.items() if present]
        absent = [flag for flag, present in flags.items() if not present]
        summary.append(
            (
                "/proc/cpuinfo",
                " ".join(shown) + (f" (not: {' '.join(absent)})" if absent else ""),
            )
        )
    summary.append(
        (
            "arch_prctl",
            f"ARCH_GET_XCOMP_SUPP {_kernel_mask(info.xcomp_supp)},"
            f" ARCH_GET_XCOMP_PERM {_kernel_mask(info.xcomp_perm)}",
        )
    )
    leaf_rows = [
        (str(sub), *(f"{reg:#010x}" for reg in regs)) for sub, regs in sorted(info.leaf_0d.items())
    ]
    rows: list[tuple[str, ...]] = [
        (
            str(row.id),
            row.name,
            str(row.size),
            "-" if row.offset is None else str(row.offset),
            "-" if row.compacted_offset is None else str(row.compacted_offset),
            _yes(row.aligned),
            "supervisor" if row.supervisor else "user",
            _yes(row.xfd),
            _STATE_TEXT[row.state],
        )
        for row in component_rows(info, layout, xss)
    ]
    return HostView(summary, leaf_rows, rows, list(info.inconsistencies))


NUMERIC_COLUMNS = frozenset({"id", "size", "standard", "compacted", *LEAF_HEADER})


def _columns(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Plain-text columns: numbers right-aligned, words left-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    right = [name in NUMERIC_COLUMNS for name in header]
    return [
        "  ".join(
            cell.rjust(width) if numeric else cell.ljust(width)
            for cell, width, numeric in zip(line, widths, right, strict=True)
        ).rstrip()
        for line in (header, *rows)
    ]


def host_text(info: HostInfo) -> str:
    view = host_view(info)
    lines = [f"{key}: {value}" for key, value in view.summary]
    for title, header, rows in (
        (LEAF_TITLE, LEAF_HEADER, view.leaf_rows),
        (COMPONENT_TITLE, COMPONENT_HEADER, view.component_rows),
    ):
        lines += ["", f"{title}:"]
        lines += [f"  {line}" for line in _columns(header, rows)]
    lines.append("")
    if view.inconsistencies:
        lines.append("inconsistencies:")
        lines += [f"  - {text}" for text in view.inconsistencies]
    else:
        lines.append("inconsistencies: none")
    return "\n".join(lines) + "\n"


def host_terminal(info: HostInfo, screen: Screen) -> str:
    page = Page(screen)
    view = host_view(info)
    for key, value in view.summary:
        page.add((key, "cyan"), f": {value}")
    enabled = _STATE_TEXT[STATE_XCR0]
    coloured: list[tuple[str | Span, ...]] = [
        (*row[:-1], (row[-1], "green" if row[-1] == enabled else "")) for row in view.component_rows
    ]
    for title, header, rows in (
        (LEAF_TITLE, LEAF_HEADER, view.leaf_rows),
        (COMPONENT_TITLE, COMPONENT_HEADER, coloured),
    ):
        page.add((title, "bold"))
        page.table(
            header, rows, right={i for i, column in enumerate(header) if column in NUMERIC_COLUMNS}
        )
    if view.inconsistencies:
        page.add(("inconsistencies:", "bold yellow"))
        for text in view.inconsistencies:
            page.add("  ", ("-", "yellow"), f" {text}")
    else:
        page.add("inconsistencies: none")
    return page.render()


def host_output(info: HostInfo) -> View:
    return View(
        json=lambda: host_json(info),
        text=lambda: host_text(info),
        terminal=lambda screen: host_terminal(info, screen),
    )


def save_layout(info: HostInfo, path: str) -> None:
    """`host --save FILE`: the layout file, written whole or not at all."""
    import json

    from xcr0tool.files.output import write_atomic
    from xcr0tool.render.output import SCHEMA

    text = json.dumps({"schema": SCHEMA, **saved_layout(info)}, indent=2) + "\n"
    write_atomic(path, lambda out: out.write(text.encode()))
