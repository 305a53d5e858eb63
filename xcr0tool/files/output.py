"""Where output goes: rich on a terminal, plain text in a pipe, JSON, raw bytes.

Binary output goes only to a file or a pipe, never to a terminal (like gzip). Files are
written to a temporary name beside the target and renamed, so a failure leaves no
partial file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from xcr0tool.errors import InputError, XcrError

if TYPE_CHECKING:
    from rich.console import Console


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def console(stderr: bool = False) -> Console:
    """A rich console; imported only when a terminal will see it. rich itself honours
    NO_COLOR."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def write_json(data: object) -> None:
    # Indented for a person at a terminal; compact in a pipe, where json's C encoder
    # runs (indent forces the pure-Python one, several times slower on big cores).
    indent = 2 if stdout_is_terminal() else None
    sys.stdout.write(json.dumps(data, indent=indent))
    sys.stdout.write("\n")


def write_atomic(path: str, fill: Callable[[IO[bytes]], object]) -> None:
    """Write a file through a temporary beside it, so that it is whole or untouched; on
    any failure the temporary goes and the error is one line naming the file."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
        )
    except OSError as exc:
        raise InputError(path, f"cannot write here: {_reason(exc)}") from None
    try:
        with os.fdopen(handle, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp makes the file 0600; give it the mode any new file would get here.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise InputError(path, f"cannot write: {_reason(error)}") from None
        raise


def _reason(error: OSError) -> str:
    return (error.strerror or str(error)).lower()


def write_binary(data: bytes, output: str | None) -> None:
    """Raw bytes to -o FILE, or to stdout when stdout is not a terminal."""
    if output is not None and output != "-":
        write_atomic(output, lambda out: out.write(data))
        return
    if stdout_is_terminal():
        raise XcrError(
            "refusing to write binary data to a terminal: pass -o FILE or pipe the output"
        )
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
