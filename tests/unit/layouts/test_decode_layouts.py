"""The layout decides where registers are read. A real core, rewritten into the other
vendor's layout (components moved, NT_X86_XSAVE_LAYOUT rewritten), must decode to the
same registers at the new offsets; without the note, the guess must name itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from clirunner import ok, run
from paths import FIXTURES

from xcr0tool.arch.components import bits
from xcr0tool.layouts.profiles import profile_layout
from xcr0tool.model.image import read_u64
from xcr0tool.model.layout import Layout, layout_from_note, note_from_layout
from xcr0tool.sources.corewriter import write_core
from xcr0tool.sources.elfcore import read_core

FIXTURE = FIXTURES / "linux-amd-avx512bw-4t.core"


def decode(path: Path) -> dict[str, Any]:
    return json.loads(ok(run("decode", "--json", str(path))))


def move_components(image: bytes, source: Layout, target: Layout) -> bytes:
    """The same state in the target's standard layout: legacy region and header kept,
    each extended component copied to its new offset."""
    xcr0 = read_u64(image, 464)
    moved = bytearray(target.standard_size(xcr0))
    moved[:576] = image[:576]
    for i in bits(xcr0):
        if i >= 2:
            size = source.require(i).size
            src = source.require(i).standard_offset or 0
            dst = target.require(i).standard_offset or 0
            moved[dst : dst + size] = image[src : src + size]
    return bytes(moved)


def relayout_core(core_path: Path, dest: Path, target: Layout, keep_note: bool) -> None:
    core = read_core(str(core_path))
    assert core.xsave_layout is not None
    source = layout_from_note(core.xsave_layout, "note")
    xstate = {t.index: move_components(t.xstate or b"", source, target) for t in core.threads}
    xcr0 = read_u64(core.threads[0].xstate or b"", 464)
    if keep_note:
        write_core(core, str(dest), xstate=xstate, xsave_layout=note_from_layout(target, xcr0))
    else:
        write_core(core, str(dest), xstate=xstate, drop_xsave_layout=True)


def offsets_of(thread: dict[str, Any]) -> dict[int, int]:
    return {c["id"]: c["offset"] for c in thread["components"]}


@pytest.mark.parametrize("target_name", ["intel", "amd-zen4"])
def test_rewritten_core_decodes_with_the_notes_offsets(tmp_path: Path, target_name: str) -> None:
    original = decode(FIXTURE)
    assert original["layout"]["source"].endswith("NT_X86_XSAVE_LAYOUT note")
    target = profile_layout(target_name)
    moved = tmp_path / "moved.core"
    relayout_core(FIXTURE, moved, target, keep_note=True)
    decoded = decode(moved)
    assert decoded["layout"]["source"] == f"{moved} NT_X86_XSAVE_LAYOUT note"
    xcr0 = int(original["threads"][0]["xcr0"], 16)
    for before, after in zip(original["threads"], decoded["threads"], strict=True):
        assert after["tid"] == before["tid"]
        assert offsets_of(after) == target.standard_offsets(xcr0)
        assert after["size"] == target.standard_size(xcr0)
        assert after["registers"] == before["registers"]
    if target_name == "intel":
        assert offsets_of(decoded["threads"][0])[5] == 1088  # opmask past the MPX hole
    else:
        assert offsets_of(decoded["threads"][0])[5] == 832


@pytest.mark.parametrize(("target_name", "guessed"), [("intel", "intel"), ("amd-zen4", "amd-zen4")])
def test_without_the_note_the_guess_names_itself(
    tmp_path: Path, target_name: str, guessed: str
) -> None:
    original = decode(FIXTURE)
    bare = tmp_path / "bare.core"
    relayout_core(FIXTURE, bare, profile_layout(target_name), keep_note=False)
    decoded = decode(bare)
    source = decoded["layout"]["source"]
    assert source.startswith(
        f"guess from XCR0 0xe7 and {decoded['threads'][0]['size']} bytes: built-in profile {guessed}"
    )
    for before, after in zip(original["threads"], decoded["threads"], strict=True):
        assert after["registers"] == before["registers"]


def test_plain_text_names_the_layout_source(tmp_path: Path) -> None:
    bare = tmp_path / "bare.core"
    relayout_core(FIXTURE, bare, profile_layout("intel"), keep_note=False)
    text = ok(run("decode", str(bare))).decode()
    assert text.splitlines()[1].startswith(
        "layout: guess from XCR0 0xe7 and 2688 bytes: built-in profile intel"
    )
