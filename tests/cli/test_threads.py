"""One thread, chosen alike everywhere: SOURCE@ID and --thread ID give the same answer in
every command, for a core by path, a core on standard input and `self`; an unknown
thread gets the same refusal in every command; naming it twice is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clirunner import ok, one_line_error, run
from paths import FIXTURES

from xcr0tool.sources import cpu
from xcr0tool.sources.elfcore import read_core

FOUR = FIXTURES / "linux-amd-avx512bw-4t.core"
CORE = read_core(str(FOUR))
TIDS = [t.tid for t in CORE.threads]
THIRD = TIDS[2]


def decoded(*args: str, stdin: bytes | None = None) -> dict[str, object]:
    return json.loads(ok(run("decode", "--json", *args, stdin=stdin)))


def test_decode_by_at_by_option_and_from_stdin() -> None:
    by_at = decoded(f"{FOUR}@{THIRD}")
    by_option = decoded("--thread", str(THIRD), str(FOUR))
    piped = decoded("--thread", str(THIRD), "-", stdin=FOUR.read_bytes())
    piped_at = decoded("--", f"-@{THIRD}", stdin=FOUR.read_bytes())  # after --: not an option
    assert by_at["threads"] == by_option["threads"] == piped["threads"] == piped_at["threads"]
    assert [t["tid"] for t in by_at["threads"]] == [THIRD]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "command",
    [
        ["extract"],
        ["convert", "--to", "compacted"],
        ["mask", "--xcr0", "0x7"],
    ],
    ids=lambda c: c[0],
)
def test_image_commands_by_at_and_by_option(command: list[str], tmp_path: Path) -> None:
    by_at, by_option = tmp_path / "at", tmp_path / "option"
    ok(run(*command, f"{FOUR}@{THIRD}", "-o", str(by_at)))
    ok(run(*command, "--thread", str(THIRD), str(FOUR), "-o", str(by_option)))
    assert by_at.read_bytes() == by_option.read_bytes()
    if command == ["extract"]:
        assert by_at.read_bytes() == CORE.threads[2].xstate


def test_validate_by_at_and_by_option() -> None:
    by_at = json.loads(run("validate", "--json", f"{FOUR}@{THIRD}").stdout)
    by_option = json.loads(run("validate", "--json", "--thread", str(THIRD), str(FOUR)).stdout)
    assert by_at["images"] == by_option["images"]
    assert [i["tid"] for i in by_at["images"]] == [THIRD]


@pytest.mark.parametrize(
    "command",
    [
        ["decode"],
        ["extract"],
        ["validate"],
        ["convert", "--to", "compacted"],
        ["mask", "--xcr0", "0x7"],
    ],
    ids=lambda c: c[0],
)
def test_an_unknown_thread_is_refused_alike(command: list[str], tmp_path: Path) -> None:
    known = ", ".join(map(str, TIDS))
    out = ["-o", str(tmp_path / "out")] if command[0] in ("extract", "convert", "mask") else []
    for source in ([f"{FOUR}@1"], ["--thread", "1", str(FOUR)]):
        line = one_line_error(run(*command, *source, *out))
        name = f"{FOUR}@1"
        assert line == f"xcr0tool: {name}: no thread 1 in this core (threads: {known})"


def test_a_thread_named_twice_is_refused() -> None:
    line = one_line_error(run("decode", "--thread", str(TIDS[0]), f"{FOUR}@{THIRD}"))
    assert line == (
        f"xcr0tool: {FOUR}@{THIRD} already names thread {THIRD}: give --thread or {FOUR}@ID,"
        " not both"
    )


def test_a_raw_image_has_no_threads(tmp_path: Path) -> None:
    raw = tmp_path / "raw.bin"
    raw.write_bytes(CORE.threads[0].xstate or b"")
    for args in ([f"{raw}@5"], ["--thread", "5", str(raw)]):
        assert one_line_error(run("decode", *args)) == (
            f"xcr0tool: {raw}: @TID selects a thread of a core, and this is not an ELF core"
        )


def needs_xsavec() -> None:
    if not cpu.is_x86_64_linux() or not cpu.cpuid(1)[2] >> 26 & 1:
        pytest.skip("no XSAVE here (Linux on x86-64 with CPUID.1:ECX.XSAVE)")
    if not cpu.cpuid(0xD, 1)[0] & 0b10:
        pytest.skip("no XSAVEC on this CPU (CPUID.(0xD,1).EAX[1] = 0)")


def test_self_snapshots_by_name(tmp_path: Path) -> None:
    needs_xsavec()
    both = decoded("self")
    assert [t["format"] for t in both["threads"]] == ["standard", "compacted"]  # type: ignore[union-attr]
    for name, form in (("xsave", "standard"), ("xsavec", "compacted")):
        for args in ([f"self@{name}"], ["--thread", name, "self"]):
            one = decoded(*args)
            assert [t["format"] for t in one["threads"]] == [form]  # type: ignore[union-attr]
    out = tmp_path / "xsavec.bin"
    ok(run("extract", "--thread", "xsavec", "self", "-o", str(out)))
    assert decoded(str(out))["threads"][0]["format"] == "compacted"  # type: ignore[index]


def test_self_refuses_what_it_does_not_have() -> None:
    needs_xsavec()
    for args in (["self@1"], ["--thread", "1", "self"]):
        for command in ("decode", "extract"):
            assert one_line_error(run(command, *args)) == (
                "xcr0tool: self@1: no such snapshot of this thread: self@xsave (XSAVE) or"
                " self@xsavec (XSAVEC)"
            )


def test_extract_says_how_to_choose_in_the_form_that_works() -> None:
    needs_xsavec()
    result = run("extract", "self")
    assert result.stderr.decode() == (
        "xcr0tool: warning: self has 2 images (xsave, xsavec); extracted the first, xsave:"
        " choose with --thread ID or self@ID\n"
    )
    ok(run("extract", "--thread", "xsavec", "self"))  # what the warning says works
