"""Where output goes and how it looks: warnings said once (stderr in text, the JSON
"warnings" list), "schema" in every JSON document, --color / NO_COLOR / FORCE_COLOR,
the pager decision on a real terminal, the many-thread summary, user text never taken
as markup, diff -q, and a reader that leaves early."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from clirunner import PROGRAM, REPO, ok, run
from images import make_image, write
from paths import FIXTURES

from xcr0tool.ops import diff as ops_diff
from xcr0tool.ops.inspect import Decoded, decode, summarise
from xcr0tool.render import image as render_image
from xcr0tool.render.output import SCHEMA, longer_than, pager_command, wants_colour
from xcr0tool.render.styled import Screen
from xcr0tool.sources.open import SourceResult, open_source

ONE = FIXTURES / "linux-amd-avx512bw-1t.core"
FOUR = FIXTURES / "linux-amd-avx512bw-4t.core"
IGNORED = (
    "the layout given (built-in profile intel (CPUID of SapphireRapids_05 + SkylakeX)) is"
    " ignored: the core's NT_X86_XSAVE_LAYOUT note takes precedence"
)
SGR = "\x1b["


# ---------------------------------------------------------------- warnings, once
def test_warnings_in_a_pipe_go_to_stderr_once() -> None:
    result = run("decode", "--layout", "intel", "--reg", "nope*", "--reg", "k0", str(ONE))
    assert result.returncode == 0
    assert result.stderr.decode().splitlines() == [
        f"xcr0tool: warning: {IGNORED}",
        f"xcr0tool: warning: --reg nope*: no register of {ONE} matches",
    ]
    assert "warning" not in result.stdout.decode()
    assert " k0 " in result.stdout.decode()


def test_warnings_in_json_are_in_the_document_only() -> None:
    result = run("decode", "--json", "--layout", "intel", "--reg", "nope*", str(ONE))
    assert result.stderr == b""
    document = json.loads(result.stdout)
    assert document["warnings"] == [IGNORED, f"--reg nope*: no register of {ONE} matches"]
    assert next(iter(document)) == "schema" and document["schema"] == SCHEMA == 1


def test_warnings_on_the_terminal_view_go_to_stderr_once() -> None:
    result = run("decode", "--color=always", "--layout", "intel", "--reg", "k0", str(ONE))
    assert result.stderr.decode() == f"xcr0tool: warning: {IGNORED}\n"
    assert "ignored" not in result.stdout.decode()


def test_every_json_document_has_schema_and_warnings(tmp_path: Path) -> None:
    image = write(tmp_path, "a.bin", make_image())
    documents = {
        "decode": run("decode", "--json", str(ONE)),
        "layout": run("layout", "--json", "--layout", "intel", "--xcr0", "0x7"),
        "diff": run("diff", "--json", image, image),
        "validate": run("validate", "--json", image),
    }
    for command, result in documents.items():
        assert result.returncode == 0, (command, result.stderr)
        document = json.loads(result.stdout)
        assert (document["schema"], document["warnings"]) == (1, []), command


def test_validate_and_diff_say_the_ignored_layout() -> None:
    checked = json.loads(run("validate", "--json", "--layout", "intel", str(ONE)).stdout)
    assert checked["warnings"] == [IGNORED]
    compared = run("diff", "--layout", "intel", "--reg", "nope", str(ONE), str(ONE))
    assert compared.stderr.decode().splitlines() == [
        f"xcr0tool: warning: {ONE}: {IGNORED}",
        f"xcr0tool: warning: --reg nope: no register of {ONE} or {ONE} matches",
    ]


def test_convert_says_once_what_xcomp_bv_leaves_out(tmp_path: Path) -> None:
    image = write(tmp_path, "avx.bin", make_image(xstate_bv=0xE7))
    out = tmp_path / "out.bin"
    result = run("convert", "--to", "compacted", "--xcomp-bv", "0x3", image, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode().splitlines() == [
        f"xcr0tool: warning: left out by --xcomp-bv {name} (component {i}): in use, its values"
        " are gone"
        for i, name in ((2, "ymm"), (5, "opmask"), (6, "zmm_hi256"), (7, "hi16_zmm"))
    ]
    decoded = json.loads(ok(run("decode", "--json", str(out))))
    assert decoded["threads"][0]["xcomp_bv"] == hex(1 << 63 | 0x3)


# ---------------------------------------------------------------- colour
@pytest.mark.parametrize(
    ("color", "terminal", "env", "coloured"),
    [
        ("auto", True, {}, True),
        ("auto", False, {}, False),
        ("auto", True, {"NO_COLOR": "1"}, False),
        ("auto", True, {"NO_COLOR": ""}, True),  # present but empty: not set (no-color.org)
        ("auto", False, {"FORCE_COLOR": "1"}, True),
        ("auto", True, {"TERM": "dumb"}, False),
        ("always", False, {"NO_COLOR": "1"}, True),
        ("never", True, {"FORCE_COLOR": "1"}, False),
    ],
)
def test_colour_decision(color: str, terminal: bool, env: dict[str, str], coloured: bool) -> None:
    assert wants_colour(color, terminal, env) is coloured


def test_color_option_in_a_pipe() -> None:
    args = ("decode", "--reg", "xmm0", str(ONE))
    always = run(*args[:1], "--color=always", *args[1:]).stdout.decode()
    never = run(*args[:1], "--color=never", *args[1:]).stdout.decode()
    plain = run(*args).stdout.decode()
    assert SGR in always and "─" in always  # the terminal view, coloured
    assert SGR not in never and SGR not in plain
    assert never == plain  # in a pipe, never is the plain text
    forced = run(*args, env={"FORCE_COLOR": "1"}).stdout.decode()
    assert forced == always
    assert SGR not in run(*args, env={"FORCE_COLOR": "1", "NO_COLOR": "1"}).stdout.decode()


# ---------------------------------------------------------------- terminal and pager
def on_terminal(
    *args: str, env: dict[str, str], rows: int = 24, columns: int = 100
) -> tuple[int, str]:
    """Run as a program with stdin, stdout and stderr on a pty of this size."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    clean = {k: v for k, v in os.environ.items() if k not in ("PAGER", "XCR0TOOL_PAGER", "LESS")}
    process = subprocess.Popen(
        [*PROGRAM, *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**clean, "TERM": "xterm", **env},
        cwd=REPO,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=60), b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.fixture
def fake_pager(tmp_path: Path) -> tuple[str, Path]:
    """A pager that records what it was given and its LESS, and shows a marker."""
    record = tmp_path / "paged.txt"
    script = tmp_path / "pager.sh"
    script.write_text(f'#!/bin/sh\necho "LESS=$LESS" > {record}\ncat >> {record}\necho PAGED\n')
    script.chmod(0o755)
    return str(script), record


def test_long_output_on_a_terminal_goes_through_the_pager(fake_pager: tuple[str, Path]) -> None:
    """XCR0TOOL_PAGER before PAGER; LESS=FRX given to it; the whole text paged."""
    pager, record = fake_pager
    env = {"PAGER": "cat", "XCR0TOOL_PAGER": pager}
    code, screen = on_terminal("decode", "--color=never", str(ONE), env=env)
    assert code == 0
    assert screen.strip() == "PAGED"
    paged = record.read_text().splitlines()
    assert paged[0] == "LESS=FRX"
    assert len(paged) > 24 and "thread 6768" in "\n".join(paged)


def test_no_pager_for_short_output_a_pipe_or_no_pager(fake_pager: tuple[str, Path]) -> None:
    pager, record = fake_pager
    short = on_terminal("decode", "--reg", "xmm0", str(ONE), env={"PAGER": pager})[1]
    assert "PAGED" not in short and "xmm0" in short
    unpaged = on_terminal("decode", "--no-pager", str(ONE), env={"PAGER": pager})[1]
    assert "PAGED" not in unpaged and "hi16_zmm" in unpaged
    assert "PAGED" not in run("decode", str(ONE), env={"PAGER": pager}).stdout.decode()
    assert not record.exists()


def test_pager_command_and_screen_arithmetic(tmp_path: Path) -> None:
    assert pager_command({"PAGER": ""}) is None
    assert pager_command({"PAGER": "cat"}) is None
    assert pager_command({"PAGER": "no-such-pager-here -R"}) is None
    assert pager_command({"PAGER": "sh -c 'cat'", "XCR0TOOL_PAGER": "cat"}) is None
    assert pager_command({"PAGER": "sh -c 'cat'"}) == "sh -c 'cat'"
    assert longer_than("x\n" * 24, rows=23, columns=80)
    assert not longer_than("x\n" * 22, rows=23, columns=80)
    assert longer_than("x" * 800 + "\n", rows=9, columns=80)  # wraps to 10 rows
    assert not longer_than(f"{SGR}1m{'x' * 79}{SGR}0m\n", rows=2, columns=80)


def test_user_text_is_never_markup(tmp_path: Path) -> None:
    """A name that rich would read as markup ([/bold] closing nothing: MarkupError) or
    as an emoji code is shown as it is, in every view."""
    odd = tmp_path / "d[" / "bold]" / ":smile:[red]x.core"
    odd.parent.mkdir(parents=True)
    odd.write_bytes(ONE.read_bytes())
    for args in (("--color=always",), ("--color=never",), ()):
        result = run("decode", *args, "--layout", "intel", "--reg", "[/bold]", str(odd))
        assert result.returncode == 0, result.stderr
        assert str(odd) in result.stdout.decode().replace(f"{SGR}1m", "").replace(f"{SGR}0m", "")
        assert f"--reg [/bold]: no register of {odd} matches" in result.stderr.decode()
    code, screen = on_terminal("decode", "--reg", "k0", str(odd), env={"PAGER": "cat"})
    assert code == 0 and "Traceback" not in screen
    assert str(odd) in screen.replace(f"{SGR}1m", "").replace(f"{SGR}0m", "")


# ---------------------------------------------------------------- the many-thread summary
def test_summary_says_which_threads_differ_from_the_first() -> None:
    source = open_source(str(FOUR))
    lines = summarise(source)
    first = source.images[0]
    assert [line.label for line in lines] == [str(i.tid) for i in source.images]
    assert lines[0].differs == ()
    for line, image in zip(lines[1:], source.images[1:], strict=True):
        changes = ops_diff.compare_registers(first, image)
        assert set(line.differs) == {c.component for c in changes}
    # a thread compared with itself
    twice = SourceResult("x", "elf-core", [first, first], None)
    assert summarise(twice)[1].differs == ()


def test_summary_text_and_when_it_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    text = ok(run("decode", "--summary", str(FOUR))).decode().splitlines()
    tids = [str(t.tid) for t in open_source(str(FOUR)).images]
    assert text[3] == f"4 threads, one line each; every register: --all, one thread: {FOUR}@TID"
    rows = text[5:]
    assert [row.split()[0] for row in rows] == tids
    assert rows[0].endswith("(first)")
    assert all("0xe7" in row and "x87|sse|ymm" in row for row in rows)
    monkeypatch.setattr(render_image, "SUMMARY_THRESHOLD", 3)
    terminal = run("decode", "--color=never", str(FOUR))  # stdout is not a tty in-process
    assert "threads, one line each" not in terminal.stdout.decode()
    view = render_image.decode_view(decode(str(FOUR)))
    assert view.terminal is not None and view.text is not None
    assert "threads, one line each" in view.terminal(Screen(100))
    assert "threads, one line each" not in view.text()  # a pipe gets everything
    asked = render_image.decode_view(decode(str(FOUR), patterns=["xmm0"]))
    assert asked.terminal is not None and "one line each" not in asked.terminal(Screen(100))
    every = render_image.decode_view(decode(str(FOUR)), summary=False)
    assert every.terminal is not None and "one line each" not in every.terminal(Screen(100))
    coloured = render_image.decode_view(decode(str(FOUR)), summary=True)
    assert coloured.terminal is not None
    assert "(first)" in coloured.terminal(Screen(100, colour=True))


def test_terminal_view_costs_about_what_the_text_costs() -> None:
    """Issue 12: on a terminal at most 2x the pipe's time (a rich Table per register
    group made it 30x). Both views of 100 threads, rendered here, best of five."""
    source = open_source(str(FOUR))
    many = Decoded(SourceResult("many", "elf-core", source.images * 15, source.layout))

    def timed(render: Callable[[], str]) -> float:
        # This process's CPU time, not the wall clock: the cost of the rendering itself,
        # whatever a test running beside it (pytest-xdist) or any other program does.
        start = time.process_time()
        render()
        return time.process_time() - start

    # Alternating runs, the best of each: what load still does (caches) hits both alike.
    texts, terminals = [], []
    for _ in range(5):
        texts.append(timed(lambda: render_image.decode_text(many)))
        terminals.append(timed(lambda: render_image.decode_terminal(many, Screen(120, True))))
    text, terminal = min(texts), min(terminals)
    assert terminal < 2 * text, (terminal, text)


# ---------------------------------------------------------------- diff -q
def test_brief_diff(tmp_path: Path) -> None:
    a = write(tmp_path, "a.bin", make_image(1))
    b = write(tmp_path, "b.bin", make_image(2))
    same = run("diff", "-q", a, a)
    assert (same.returncode, same.stdout, same.stderr) == (0, b"", b"")
    differ = run("diff", "--brief", a, b)
    assert (differ.returncode, differ.stdout.decode()) == (1, f"{a} and {b} differ\n")
    assert run("diff", "-q", "--json", a, b).returncode == 1


# ---------------------------------------------------------------- a reader that leaves
@pytest.mark.parametrize(
    "args",
    [
        ["decode", "--json", str(FOUR)],
        ["decode", "--all", str(FOUR)],
        ["extract", str(FOUR)],
        ["convert", "--layout", "intel", str(FOUR)],
    ],
    ids=["json", "text", "extract", "convert"],
)
def test_closed_pipe_ends_as_a_killed_writer(args: list[str]) -> None:
    process = subprocess.Popen(
        [*PROGRAM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the first write: that write meets EPIPE
    err = process.stderr.read()
    assert process.wait(timeout=60) == -signal.SIGPIPE
    assert err == b""


def test_closed_pipe_in_a_shell_is_141_or_0() -> None:
    command = " ".join(f"'{a}'" for a in [*PROGRAM, "decode", "--json", str(FOUR)])
    script = f'{command} | head -c 10 >/dev/null; echo "${{PIPESTATUS[0]}}"'
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() in ("141", "0"), out
    assert out.stderr == ""


def test_help_says_the_summary_threshold() -> None:
    text = " ".join(run("decode", "--help").stdout.decode().split())
    assert f"for more than {render_image.SUMMARY_THRESHOLD} threads" in text
