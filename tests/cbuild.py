"""Programs built once per test session, whatever the number of pytest-xdist workers.

A build is keyed by what goes into it (source, flags, compiler): the first worker to
need it builds it under a lock, in a directory every worker of the session shares; the
others wait for that lock and find it built. tests/conftest.py names the directory at
the start of the session (`configure`); a script without it gets a private one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

_where: list[Path] = []


def configure(directory: Path) -> None:
    """Build into `directory`, shared by every worker of the session."""
    directory.mkdir(parents=True, exist_ok=True)
    _where[:] = [directory]


def once(name: str, key: bytes, make: Callable[[Path], Path]) -> Path:
    """`make(directory)` run once per session for this `key`, in a directory of its own;
    what it returned (a path inside that directory). An exception (or a skip) records
    nothing: the next caller tries again, and meets the same reason."""
    if not _where:
        configure(Path(tempfile.mkdtemp(prefix="xcr0tool-builds-")))
    home = _where[0] / f"{name}-{hashlib.sha256(key).hexdigest()[:16]}"
    home.mkdir(exist_ok=True)
    made = home / ".made"
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if made.is_file():
            return home / made.read_text()
        result = make(home)
        made.write_text(str(result.relative_to(home)))
    return result


def compile_c(name: str, source: str, *flags: str, purpose: str) -> Path:
    """`source` built with gcc -O1 `flags` into an executable called `name`, once per
    session; skips the test, saying why it needed the program (`purpose`), where there
    is no gcc. The binary is shared: run it, never write to it."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip(f"gcc is not installed: {purpose}")

    def build(home: Path) -> Path:
        (home / f"{name}.c").write_text(source)
        subprocess.run(
            [gcc, "-O1", *flags, "-o", str(home / name), str(home / f"{name}.c")],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return home / name

    return once(name, "\0".join([source, gcc, *flags]).encode(), build)


def gcc_key() -> bytes:
    """The compiler a build depends on, for keys of builds made elsewhere."""
    return (shutil.which(os.environ.get("CC", "gcc")) or "").encode()
