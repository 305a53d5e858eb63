"""decode as a user meets it: thread and register selection, init state and stale bytes,
cores without XSTATE, the terminal view (golden, with a pinned console) and NO_COLOR."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

from clirunner import Ran, run
from paths import FIXTURES, GOLDEN

from xcr0tool.ops.inspect import decode
from xcr0tool.render import image as render
from xcr0tool.render.styled import Screen
from xcr0tool.sources.corewriter import write_core
from xcr0tool.sources.elfcore import NT_X86_XSTATE, read_core

ONE = FIXTURES / "linux-amd-avx512bw-1t.core"
FOUR = FIXTURES / "linux-amd-avx512bw-4t.core"


def xcr0tool(*args: str, env: dict[str, str] | None = None) -> Ran:
    """In this process; stdout and stderr as text."""
    result = run(*args, env=env)
    return Ran(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())  # type: ignore[arg-type]


def decode_json(*args: str) -> dict[str, Any]:
    result = xcr0tool("decode", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def gdb_view(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.gdb.json").read_text())


def test_thread_selection_by_option_and_by_at() -> None:
    every = decode_json(str(FOUR))
    tids = [t["tid"] for t in every["threads"]]
    assert len(tids) == 4
    by_option = decode_json("--thread", str(tids[2]), str(FOUR))
    by_at = decode_json(f"{FOUR}@{tids[2]}")
    assert by_option["threads"] == by_at["threads"] == [every["threads"][2]]


def test_unknown_thread_is_one_line() -> None:
    result = xcr0tool("decode", f"{FOUR}@1")
    assert result.returncode == 2
    assert result.stderr.startswith(f"xcr0tool: {FOUR}@1: no thread 1 in this core (threads: ")
    assert result.stderr.count("\n") == 1


def test_register_globs() -> None:
    (thread,) = decode_json("--reg", "zmm1?", "--reg", "k*", str(ONE))["threads"]
    assert sorted(thread["registers"]) == sorted(
        [f"zmm{i}" for i in range(10, 20)] + [f"k{i}" for i in range(8)]
    )


def test_init_state_shows_init_values_and_stale_bytes_only_when_asked(tmp_path: Path) -> None:
    core = read_core(str(ONE))
    (thread,) = core.threads
    image = bytearray(thread.xstate or b"")
    xstate_bv = int.from_bytes(image[512:520], "little")
    image[512:520] = (xstate_bv & ~(1 << 5)).to_bytes(8, "little")  # opmask to init state
    cleared = tmp_path / "cleared.core"
    write_core(core, str(cleared), xstate={0: bytes(image)})
    before = decode_json(str(ONE))["threads"][0]["registers"]
    (after,) = decode_json("--stale", str(cleared))["threads"]
    assert all(after["registers"][f"k{i}"] == "0x0" for i in range(8))
    assert any(before[f"k{i}"] != "0x0" for i in range(8))
    assert {f"k{i}": before[f"k{i}"] for i in range(8)} == {
        k: v for k, v in after["stale_registers"].items() if k.startswith("k")
    }
    assert "stale_registers" not in decode_json(str(cleared))["threads"][0]
    text = xcr0tool("decode", "--stale", "--reg", "k1", str(cleared)).stdout
    assert "stale: init-state components with leftover bytes: opmask" in text
    assert f"  k1 {before['k1']}  stale" in text


def test_core_without_xstate_falls_back_to_the_fxsave_note(tmp_path: Path) -> None:
    legacy_only = tmp_path / "fxsave.core"
    write_core(read_core(str(FOUR)), str(legacy_only), drop_note_types=[("LINUX", NT_X86_XSTATE)])
    full = decode_json(str(FOUR))
    fallback = decode_json(str(legacy_only))
    for with_xstate, without in zip(full["threads"], fallback["threads"], strict=True):
        assert without["format"] == "fxsave" and without["size"] == 512
        assert set(without["registers"]) == {
            *(f"st{i}" for i in range(8)),
            "fctrl",
            "fstat",
            "ftag",
            "fiseg",
            "fioff",
            "foseg",
            "fooff",
            "fop",
            "mxcsr",
            *(f"xmm{i}" for i in range(16)),
        }
        assert all(with_xstate["registers"][k] == v for k, v in without["registers"].items())


def test_registers_equal_gdbs_recorded_view() -> None:
    """gdb's view of the fixture, recorded when it was made (README in tests/fixtures)."""
    for name in ("linux-amd-avx512bw-4t", "gdb13-amd-avx512bw-2t"):
        recorded = gdb_view(name)
        decoded = {
            t["tid"]: t["registers"] for t in decode_json(str(FIXTURES / f"{name}.core"))["threads"]
        }
        for tid, regs in recorded["gdb"]["registers"].items():
            ours = decoded[int(tid)]
            compared = [r for r in regs if r in ours]
            assert len(compared) >= 30
            assert {r: int(ours[r], 16) for r in compared} == {
                r: int(regs[r], 16) for r in compared
            }


def rich_render(path: Path, *args: str) -> str:
    """The terminal view at 120 columns without colour."""
    decoded = decode(str(path), patterns=args)
    return render.decode_terminal(decoded, Screen(120, colour=False))


def test_terminal_view_is_golden() -> None:
    text = rich_render(ONE).replace(str(ONE), "CORE")
    golden = GOLDEN / "decode-1t.txt"
    if os.environ.get("XCR0TOOL_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), "XCR0TOOL_UPDATE_GOLDEN=1 rewrites tests/golden/"


def test_terminal_view_groups_by_component() -> None:
    text = rich_render(ONE)
    for title in (
        "x87 FPU",
        "SSE (XMM0-15, MXCSR)",
        "AVX (YMM_Hi128)",
        "AVX-512 opmask (k0-k7)",
        "AVX-512 Hi16_ZMM",
    ):
        assert title in text
    assert "in use" in text


def run_on_terminal(*args: str, env: dict[str, str]) -> bytes:
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "xcr0tool", *args],
            stdout=terminal,
            stderr=terminal,
            env={**os.environ, "COLUMNS": "120", **env},
        )
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=30)
    finally:
        os.close(controller)
    return b"".join(chunks)


def test_colour_on_a_terminal_and_no_colour_with_no_color() -> None:
    coloured = run_on_terminal("decode", "--reg", "xmm0", str(ONE), env={"TERM": "xterm-256color"})
    assert b"\x1b[" in coloured and b"xmm0" in coloured
    plain = run_on_terminal(
        "decode", "--reg", "xmm0", str(ONE), env={"TERM": "xterm-256color", "NO_COLOR": "1"}
    )
    assert b"xmm0" in plain
    colour_codes = [
        code for code in (b"\x1b[32m", b"\x1b[36m", b"\x1b[33m", b"\x1b[2m") if code in plain
    ]
    assert not colour_codes


def test_pipe_gets_plain_text() -> None:
    result = xcr0tool("decode", "--reg", "xmm0", str(ONE))
    assert "\x1b[" not in result.stdout
    assert (
        result.stdout.splitlines()[0] == f"source: {ONE} (elf-core, x86-64, linux, ELF64, 1 thread)"
    )


def test_a_layout_given_for_a_core_with_a_note_is_ignored_with_a_warning() -> None:
    result = xcr0tool("decode", "--layout", "intel", "--reg", "k0", str(ONE))
    assert result.returncode == 0
    assert result.stderr == (
        "xcr0tool: warning: the layout given (built-in profile intel (CPUID of SapphireRapids_05"
        " + SkylakeX)) is ignored: the core's NT_X86_XSAVE_LAYOUT note takes precedence\n"
    )
    assert "layout: " + str(ONE) + " NT_X86_XSAVE_LAYOUT note" in result.stdout


def test_extract_of_a_many_thread_core_says_which_thread() -> None:
    tids = [t["tid"] for t in decode_json(str(FOUR))["threads"]]
    result = run("extract", str(FOUR))
    assert result.returncode == 0
    assert result.stdout == (read_core(str(FOUR)).threads[0].xstate or b"")
    assert result.stderr.decode() == (
        f"xcr0tool: warning: {FOUR} has 4 threads ({', '.join(map(str, tids))}); extracted the"
        f" first, {tids[0]}: choose with --thread ID or {FOUR}@ID\n"
    )
