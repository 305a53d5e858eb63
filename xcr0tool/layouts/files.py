"""`--layout NAME` and `--layout FILE` in all their forms: a built-in profile, a JSON
layout (`layout --json`, `host --save`), a `cpuid -r` dump or an AIDA64/InstLatx64 dump."""

from __future__ import annotations

import os

from xcr0tool.errors import InputError, LayoutError, XcrError
from xcr0tool.files.input import read_limited
from xcr0tool.formats import jsontext
from xcr0tool.model.layout import Layout, layout_from_cpuid, layout_from_json

# The largest layout file read: a JSON layout is a few KiB, and an AIDA64 dump lists
# every logical CPU (tens of KiB for a desktop, a few hundred for a big server).
LAYOUT_FILE_LIMIT = 4 << 20


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
        data = jsontext.loads(text, path)
        return layout_from_json(data, f"layout file {path}")
    # The dump readers only for a dump: every command that opens a source loads this
    # module, and decode of a core with its layout note never reads a dump.
    from xcr0tool.formats.cpuid_dump import complete_leaf_0d, parse_cpuid_dump

    source = f"CPUID dump {path}"
    try:
        leaves, inferred = complete_leaf_0d(parse_cpuid_dump(text, path), path)
        if inferred:
            source += f" ({'; '.join(inferred)})"
        return layout_from_cpuid(leaves, source)
    except LayoutError as exc:
        raise InputError(path, exc.problem) from None
