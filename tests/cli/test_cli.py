"""The command line as a user meets it: help, completions, errors, exit statuses."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import click
import pytest
from clirunner import one_line_error, run
from paths import REPO

from xcr0tool.cli.main import cli

COMMANDS = sorted(cli.list_commands(click.Context(cli)))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_is_documented(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "(being built)" not in text
    assert len(text.splitlines()) > 5
    assert f"xcr0tool {command}" in (REPO / "README.md").read_text()


def test_completion_offers_every_command() -> None:
    result = run(
        env={"_XCR0TOOL_COMPLETE": "bash_complete", "COMP_WORDS": "xcr0tool ", "COMP_CWORD": "1"}
    )
    offered = {line.split(",", 1)[1] for line in result.stdout.decode().splitlines()}
    assert offered >= set(COMMANDS)


def test_changelog_mentions_every_command() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog")
    assert "## [Unreleased]" in changelog
    for command in COMMANDS:
        assert f"- `{command}" in changelog, command


def test_missing_file(tmp_path: Path) -> None:
    assert (
        one_line_error(run("decode", str(tmp_path / "nope")))
        == f"xcr0tool: {tmp_path / 'nope'}: no such file"
    )


def test_directory(tmp_path: Path) -> None:
    line = one_line_error(run("decode", str(tmp_path)))
    assert line == (
        f"xcr0tool: {tmp_path}: is a directory, not an rr trace (no version file) or a CRIU"
        " image directory (no core-TID.img)"
    )


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert one_line_error(run("decode", str(empty))) == f"xcr0tool: {empty}: empty: no XSAVE image"


def test_random_bytes(tmp_path: Path) -> None:
    noise = tmp_path / "noise"
    noise.write_bytes(random.Random(1).randbytes(3000))
    line = one_line_error(run("decode", str(noise)))
    assert line == (
        f"xcr0tool: {noise}: not an XSAVE image: XSTATE_BV 0x1622bd795fec898f sets bits that no"
        " state component uses (21, 22, 23, 24, 25, 26, 27, 28, 30, 32, 35, 36, 37, 38, 40, 42,"
        " 43, 44, 45, 47, 49, 53, 57, 58, 60)"
    )


def test_too_small(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.write_bytes(bytes(100))
    line = one_line_error(run("decode", str(small)))
    assert (
        line
        == f"xcr0tool: {small}: 100 bytes is too small for an XSAVE image (legacy region and header need 576)"
    )


def standard_image(xcr0: int, size: int, xstate_bv: int) -> bytes:
    image = bytearray(size)
    image[0:2] = (0x37F).to_bytes(2, "little")
    image[24:28] = (0x1F80).to_bytes(4, "little")
    image[464:472] = xcr0.to_bytes(8, "little")
    image[512:520] = xstate_bv.to_bytes(8, "little")
    return bytes(image)


def test_truncated_image_names_what_is_missing(tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    cut.write_bytes(standard_image(0xE7, 2432, 0x7)[:2000])
    line = one_line_error(run("decode", "--layout", "amd-zen4", str(cut)))
    assert line == (
        f"xcr0tool: {cut}: truncated: x87|sse|ymm|opmask|zmm_hi256|hi16_zmm needs 2432 bytes"
        " in the standard format (built-in profile amd-zen4 (CPUID of K19_Genoa_01)), the image has 2000"
    )


def test_unknown_layout_name(tmp_path: Path) -> None:
    image = tmp_path / "img"
    image.write_bytes(standard_image(0x7, 832, 0x7))
    line = one_line_error(run("decode", "--layout", "zen9", str(image)))
    assert line.startswith(
        "xcr0tool: --layout zen9: no such file, and not a built-in layout (intel,"
    )


def test_bad_mask_value() -> None:
    result = run("layout", "--layout", "intel", "--xcr0", "zz")
    assert result.returncode == 2
    assert "'zz' is not a number (write hex as 0xe7)" in result.stderr.decode()


def test_stdin_and_extract_pipeline(tmp_path: Path) -> None:
    data = standard_image(0x7, 832, 0x3)
    image = tmp_path / "img"
    image.write_bytes(data)
    extracted = run("extract", str(image))
    assert extracted.returncode == 0
    assert extracted.stdout == data
    decoded = run("decode", "--json", "-", stdin=extracted.stdout)
    assert decoded.returncode == 0, decoded.stderr
    assert b'"ymm0": "0x0"' in decoded.stdout


def test_extract_refuses_a_terminal(tmp_path: Path) -> None:
    import pty

    image = tmp_path / "img"
    image.write_bytes(standard_image(0x7, 832, 0x3))
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "xcr0tool", "extract", str(image)],
            stdout=terminal,
            stderr=subprocess.PIPE,
            check=False,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        "xcr0tool: refusing to write binary data to a terminal: pass -o FILE or pipe the output"
    )


def test_extract_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "missing-dir" / "out.bin"
    image = tmp_path / "img"
    image.write_bytes(standard_image(0x7, 832, 0x3))
    line = one_line_error(run("extract", str(image), "-o", str(out)))
    assert line.startswith(f"xcr0tool: {out}: cannot write here")
    assert not out.parent.exists()


def test_written_files_get_the_usual_mode(tmp_path: Path) -> None:
    image = tmp_path / "img"
    image.write_bytes(standard_image(0x7, 832, 0x3))
    out = tmp_path / "out.bin"
    assert run("extract", str(image), "-o", str(out)).returncode == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert {p.name for p in tmp_path.iterdir()} == {"img", "out.bin"}  # no temporary left


# Bad cores, made from a real one ---------------------------------------------------------
CORE = REPO / "tests" / "fixtures" / "linux-amd-avx512bw-1t.core"


def xstate_note_header_offset(data: bytes) -> int:
    """Where the NT_X86_XSTATE note's header starts, found the way readelf would."""
    from xcr0tool.sources.elfcore import NT_X86_XSTATE, read_core

    note = next(n for n in read_core(str(CORE)).notes if n.type == NT_X86_XSTATE)
    return note.desc_offset - 8 - 12  # "LINUX\0" padded to 8, after the 12-byte header


def test_truncated_core(tmp_path: Path) -> None:
    cut = tmp_path / "cut.core"
    cut.write_bytes(CORE.read_bytes()[:3000])
    line = one_line_error(run("decode", str(cut)))
    assert line.startswith(f"xcr0tool: {cut}: truncated: note segment 0 ends at 0x")
    assert line.endswith(", file is 0xbb8 bytes")


def test_note_that_lies_about_its_size(tmp_path: Path) -> None:
    data = bytearray(CORE.read_bytes())
    at = xstate_note_header_offset(bytes(data))
    assert int.from_bytes(data[at : at + 4], "little") == 6  # namesz of "LINUX\0"
    data[at + 4 : at + 8] = (0x100000).to_bytes(4, "little")  # descsz: 1 MiB
    liar = tmp_path / "liar.core"
    liar.write_bytes(bytes(data))
    line = one_line_error(run("decode", str(liar)))
    assert line.startswith(f"xcr0tool: {liar}: note ")
    assert "(NT_X86_XSTATE) claims 1048576 bytes but its segment ends after" in line


def test_xstate_note_shorter_than_its_xcr0_needs(tmp_path: Path) -> None:
    from xcr0tool.sources.corewriter import write_core
    from xcr0tool.sources.elfcore import read_core

    core = read_core(str(CORE))
    short = tmp_path / "short.core"
    write_core(core, str(short), xstate={0: (core.threads[0].xstate or b"")[:1000]})
    line = one_line_error(run("decode", str(short)))
    tid = core.threads[0].tid
    assert line.startswith(
        f"xcr0tool: {short} thread {tid}: truncated: x87|sse|ymm|opmask|zmm_hi256|hi16_zmm needs 2432 bytes"
    )
    assert line.endswith("the image has 1000")


def test_elf_that_is_not_a_core() -> None:
    executable = os.path.realpath(sys.executable)
    line = one_line_error(run("decode", executable))
    assert line in (
        f"xcr0tool: {executable}: an ELF executable, not a core",
        f"xcr0tool: {executable}: an ELF shared object, not a core",
    )


def test_read_error_names_the_file() -> None:
    # /proc/self/mem passes every check and fails at the first read: EIO.
    assert (
        one_line_error(run("decode", "/proc/self/mem"))
        == "xcr0tool: /proc/self/mem: input/output error"
    )


# The shape of the CLI ----------------------------------------------------------------------
COMMAND_BODY_LIMIT = 35  # lines of a click command's body, decorators and docstring aside


def command_bodies() -> dict[str, int]:
    """Every function decorated as a click command in xcr0tool/cli, with the lines of its
    body after the docstring."""
    import ast

    bodies = {}
    for path in sorted((REPO / "xcr0tool" / "cli").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            names = [ast.unparse(d) for d in node.decorator_list]
            if not any(n.startswith(("click.command", "click.group")) for n in names):
                continue
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]  # the docstring
            lines = 0 if not body else (body[-1].end_lineno or 0) - body[0].lineno + 1
            bodies[f"{path.name}:{node.name}"] = lines
    return bodies


def test_command_bodies_are_short() -> None:
    bodies = command_bodies()
    assert len(bodies) >= len(COMMANDS) + 1  # every command and the group
    long = {name: lines for name, lines in bodies.items() if lines > COMMAND_BODY_LIMIT}
    assert not long, f"command bodies over {COMMAND_BODY_LIMIT} lines: {long}"


def test_the_body_measure_sees_a_long_body(tmp_path: Path) -> None:
    """The measure above can fail: a 40-line body counts 40."""
    import ast

    source = "@click.command()\ndef f() -> None:\n    '''doc'''\n" + "    x = 1\n" * 40
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.FunctionDef)
    assert node.body[-1].end_lineno is not None
    assert node.body[-1].end_lineno - node.body[1].lineno + 1 == 40


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_examples(command: str) -> None:
    text = run(command, "--help").stdout.decode()
    assert "\n  Examples:\n" in text, command
    examples = text.split("\n  Examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert sum(line.strip().startswith(f"xcr0tool {command}") for line in examples) >= 2


def test_top_level_help_names_sources_and_exit_codes() -> None:
    text = run("--help").stdout.decode()
    for form in ("CORE@TID", "pid:N", "pid:N@TID", "self", "self@xsave", "self@xsavec", "--thread"):
        assert form in text, form
    status = text.split("Exit status:", 1)[1]
    for code in ("0 ", "1 ", "2 ", "141 "):
        assert f"\n    {code}" in status, code
    assert "\n  Examples:\n" in text


def test_man_page_is_current() -> None:
    from xcr0tool.cli.manpage import manpage

    shipped = (REPO / "man" / "xcr0tool.1").read_text()
    assert manpage(cli) == shipped, "regenerate: python3 -m xcr0tool.cli.manpage > man/xcr0tool.1"
    for command in COMMANDS:
        assert f".SS xcr0tool {command}" in shipped or f".SS xcr0tool {command}\n" in shipped


def test_man_page_renders_without_warnings() -> None:
    import shutil

    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    result = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(REPO / "man" / "xcr0tool.1")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
