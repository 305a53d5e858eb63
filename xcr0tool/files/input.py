"""Reading what the user named: one-line errors for every way a path can be wrong, and
reads that stop at a bound whatever the file claims to be (a device, /dev/zero, a FIFO)."""

from __future__ import annotations

import os
import stat

from xcr0tool.errors import InputError


def reason(error: OSError) -> str:
    """An OSError as the lower-case phrase our one-line messages use."""
    return (error.strerror or str(error)).lower()


def check_readable_file(path: str, expected: str = "an XSAVE image or a core") -> None:
    """One line naming the file, for what every input can be: missing, unreadable, a
    directory."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except PermissionError:
        raise InputError(path, "permission denied") from None
    except OSError as exc:
        raise InputError(path, reason(exc)) from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(path, f"is a directory, not {expected}")


def read_limited(path: str, limit: int, expected: str) -> bytes:
    """A whole input file of at most `limit` bytes, read with that bound (so a device or
    a lying file costs at most limit + 1 bytes of memory); one line naming the file
    otherwise."""
    check_readable_file(path, expected)
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputError(path, reason(exc)) from None
    if len(data) > limit:
        raise InputError(path, f"over {limit} bytes: too large for {expected}")
    return data
