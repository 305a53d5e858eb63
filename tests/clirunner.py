"""The one way tests run xcr0tool.

`run` runs the command line in this process, through click's CliRunner isolation and
the program's own entry point (xcr0tool.cli.main.main), so exit statuses, the one-line
errors and stdout/stderr are the program's, without an interpreter start per call.
`run_program` runs it as a program, for what only a process has: pipes that close,
signals, ptys, the exit status a shell sees, startup.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from click.testing import CliRunner

from xcr0tool.cli.main import main

REPO = Path(__file__).resolve().parent.parent
PROGRAM = [sys.executable, "-m", "xcr0tool"]


@dataclass
class Ran:
    """What subprocess.run's CompletedProcess has, for either way of running."""

    args: list[str]
    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""
    extra: dict[str, object] = field(default_factory=dict)


def run(*args: str, stdin: bytes | None = None, env: Mapping[str, str | None] | None = None) -> Ran:
    """xcr0tool ARGS in this process; an exception that escapes it fails the test."""
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click 8.1
    except TypeError:
        runner = CliRunner()  # click 8.2 and later keep stderr apart always
    with runner.isolation(input=stdin, env=dict(env or {})) as streams:
        try:
            main(list(args))
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        stdout, stderr = streams[0].getvalue(), streams[1].getvalue()
    return Ran(list(args), code, stdout, stderr)


def run_program(
    *args: str,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> Ran:
    """xcr0tool ARGS as a program (`python -m xcr0tool`)."""
    proc = subprocess.run(
        [*PROGRAM, *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=timeout,
        cwd=REPO,
    )
    return Ran(list(args), proc.returncode, proc.stdout, proc.stderr)


def one_line_error(result: Ran) -> str:
    """Trouble means exit 2, nothing on stdout, and exactly one line on stderr."""
    assert result.returncode == 2, result
    assert result.stdout == b"", result
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def ok(result: Ran) -> bytes:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def stderr_lines(result: Ran) -> list[str]:
    return result.stderr.decode().splitlines()
