"""`--layout NAME` and `--layout FILE` in all their forms: a built-in profile, a JSON
layout (`layout --json`, `host --save`), a `cpuid -r` dump or an AIDA64/InstLatx64 dump."""

from __future__ import annotations

import json
import os

from xcr0tool.errors import InputError, LayoutError, XcrError
from xcr0tool.files.input import read_limited
from xcr0tool.formats.cpuid_dump import missing_subleaves, parse_cpuid_dump
from xcr0tool.model.layout import Layout, layout_from_cpuid, layout_from_json

# The largest layout file read: a JSON layout is a few KiB, and an AIDA64 dump of a
# many-socket server lists every logical CPU in a few MiB.
LAYOUT_FILE_LIMIT = 16 << 20


def resolve_layout_option(value: str | None) -> Layout | None:
    """--layout NAME (a built-in profile) or FILE (a CPUID dump or a JSON layout)."""
    if value is None:
        return None
    from xcr0tool.layouts.profiles import NAMES, profile_layout

    if value in NAMES:
        return profile_layout(value)
    if not os.path.exists(value):
        raise XcrError(
            f"--layout {value}: no such file, and not a built-in layout ({', '.join(NAMES)})"
        )
    return load_layout_file(value)


def load_layout_file(path: str) -> Layout:
    """`--layout FILE`: a JSON layout, a `cpuid -r` dump or an AIDA64/InstLatx64 dump."""
    text = read_limited(path, LAYOUT_FILE_LIMIT, "a layout file").decode("utf-8", "replace")
    if text.lstrip()[:1] in ("{", "[") or path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON: {exc}") from None
        return layout_from_json(data, f"layout file {path}")
    try:
        leaves = parse_cpuid_dump(text, path)
    except LayoutError as exc:
        raise InputError(path, str(exc).removeprefix(f"{path}: ")) from None
    layout = layout_from_cpuid(leaves, f"CPUID dump {path}")
    missing = missing_subleaves(leaves)
    if missing:
        return Layout(
            source=layout.source,
            components=layout.components,
            xcr0_capable=layout.xcr0_capable,
            xss_capable=layout.xss_capable,
            notes=(f"the dump lacks sub-leaves {', '.join(map(str, missing))}",),
        )
    return layout
