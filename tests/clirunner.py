"""The one way tests run xcr0tool.

`run` runs the command line in this process, through click's CliRunner isolation and
the program's own entry point (xcr0tool.cli.main.main), so exit statuses, the one-line
errors and stdout/stderr are the program's, without an interpreter start per call.
`run_program` runs it as a program, for what only a process has: pipes that close,
signals, ptys, the exit status a shell sees, startup.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


# ---- text results, for tests that compare strings (rr traces, CRIU images, compat)


def run_text(*args: str, limit_mib: int | None = None) -> subprocess.CompletedProcess[str]:
    """xcr0tool ARGS in this process, with text output; as a program when its memory is
    to be capped (`limit_mib`: an address-space limit, so that a 4 GiB allocation fails
    loudly)."""
    if limit_mib is None:
        ran = run(*args)
        return subprocess.CompletedProcess(
            list(args), ran.returncode, ran.stdout.decode(), ran.stderr.decode()
        )

    def cap_memory() -> None:
        size = limit_mib << 20
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return subprocess.run(
        [*PROGRAM, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=600,
        preexec_fn=cap_memory,
    )


def text_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of a text result that failed with exit 2, without "xcr0tool: "."""
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.removeprefix("xcr0tool: ").rstrip("\n")


def decode_json(*args: str) -> dict[str, Any]:
    """`xcr0tool decode --json ARGS`, which must succeed, parsed."""
    result = run_text("decode", "--json", *args)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def json_registers(thread: dict[str, Any]) -> dict[str, int]:
    """One thread of decode's JSON: {register: value}."""
    return {name: int(value, 16) for name, value in thread["registers"].items()}
