"""The one way out of every command: its answer as JSON, as plain text for a pipe, or as
the terminal view (coloured or not, through a pager when longer than the screen), and
its warnings, each said once: on stderr in text mode, in the "warnings" list in JSON.

Colour (--color=auto|always|never): auto colours a terminal unless NO_COLOR is set and
non-empty (no-color.org); FORCE_COLOR set and non-empty colours a pipe too
(force-color.org); --color always/never overrides both. Coloured output is the terminal
view, wherever it goes (`--color=always | less -R`).

Pager, as git does it: on a terminal, when the text is longer than the screen, through
$XCR0TOOL_PAGER, else $PAGER, else `less`, with LESS=FRX and LV=-c unless already set;
"" or "cat" means none, and so does --no-pager.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, TextIO

# Each form's modules are loaded only where it is shown (json for JSON; the terminal
# view, the pager and the terminal's size on a terminal): a small decode is mostly
# interpreter start (bench/bench_decode.py).
if TYPE_CHECKING:
    from xcr0tool.render.styled import Screen

SCHEMA = 1  # "schema" of every JSON document; raised when a key changes or goes
COLOR_CHOICES = ("auto", "always", "never")


# NamedTuples, not dataclasses: cheap to define at every start.
class Streamed(NamedTuple):
    """A JSON answer whose last key's list is made item by item (a whole rr trace's
    frames): written to a pipe as it is made, the same bytes as the whole document."""

    fields: dict[str, object]  # the answer but its last key
    key: str
    items: Iterable[object]


class View(NamedTuple):
    """A command's answer, ready to be shown: each form made only when asked for."""

    json: Callable[[], dict[str, object]] | None = None
    text: Callable[[], str] | None = None  # plain text for a pipe
    terminal: Callable[[Screen], str] | None = None  # the terminal view; default: text
    warnings: Sequence[str] = ()
    status: int = 0  # the exit status: 0 ok, 1 differs / would fault
    # The same text and JSON made piece by piece, for answers that grow with the input:
    # a pipe gets each piece as it is made, so memory stays flat in the input's size.
    text_chunks: Callable[[], Iterable[str]] | None = None
    json_stream: Callable[[], Streamed] | None = None


class OutputOptions(NamedTuple):
    as_json: bool = False
    color: str = "auto"
    pager: bool = True  # False: --no-pager


def json_document(view: View) -> dict[str, object]:
    """The JSON document: "schema" first, the answer, then "warnings"."""
    assert view.json is not None
    return {"schema": SCHEMA, **view.json(), "warnings": list(view.warnings)}


def wants_colour(color: str, is_terminal: bool, env: Mapping[str, str]) -> bool:
    if color != "auto":
        return color == "always"
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    return is_terminal and env.get("TERM") != "dumb"


def pager_command(env: Mapping[str, str]) -> str | None:
    """The pager to run, or None: XCR0TOOL_PAGER, PAGER, else less; "" or cat: none."""
    for name in ("XCR0TOOL_PAGER", "PAGER"):
        if name in env:
            command = env[name].strip()
            break
    else:
        command = "less"
    if command in ("", "cat"):
        return None
    import shlex
    import shutil

    try:
        program = shlex.split(command)[0]
    except (ValueError, IndexError):
        return None
    return command if shutil.which(program) else None


def longer_than(text: str, rows: int, columns: int) -> bool:
    """Would the text fill more than `rows` lines of a `columns`-wide screen?"""
    if text.count("\n") >= rows:
        return True
    columns = max(columns, 1)
    shown = 0
    for line in text.splitlines():
        shown += max(1, -(-_visible_length(line) // columns))
        if shown >= rows:
            return True
    return False


def _visible_length(line: str) -> int:
    """The printed width of a line, without its SGR escape sequences."""
    if "\x1b" not in line:
        return len(line)
    import re

    return len(re.sub(r"\x1b\[[0-9;]*m", "", line))


def emit(
    view: View,
    options: OutputOptions,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Show the view and its warnings; the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    env = os.environ if env is None else env
    if options.as_json and view.json is not None:
        if view.json_stream is not None and not _isatty(out):
            _stream_json(view.json_stream(), view.warnings, out)
        else:
            _write_json(json_document(view), out)
        return view.status
    if view.text is not None or view.terminal is not None:
        terminal = _isatty(out)
        colour = wants_colour(options.color, terminal, env)
        if terminal or colour:
            _show_on_screen(view, out, env, terminal=terminal, colour=colour, pager=options.pager)
        elif view.text_chunks is not None:  # plain text for a pipe, piece by piece
            for chunk in view.text_chunks():
                out.write(chunk)
            out.flush()
        else:  # plain text for a pipe: no screen size to ask, no pager
            out.write(view.text() if view.text is not None else "")
            out.flush()
    for warning in view.warnings:
        err.write(f"xcr0tool: warning: {warning}\n")
    err.flush()
    return view.status


def _show_on_screen(
    view: View, out: TextIO, env: Mapping[str, str], *, terminal: bool, colour: bool, pager: bool
) -> None:
    """The terminal view (or the text) on a terminal, paged when longer than the screen,
    or coloured into a pipe."""
    import shutil

    from xcr0tool.render.styled import Screen

    size = shutil.get_terminal_size()
    if view.terminal is not None:
        text = view.terminal(Screen(size.columns, colour))
    else:
        text = view.text() if view.text is not None else ""
    command = pager_command(env) if terminal and pager else None
    if command is not None and longer_than(text, size.lines - 1, size.columns):
        _page(text, command, env)
    else:
        out.write(text)
        out.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _write_json(data: object, out: TextIO) -> None:
    import json

    # Indented for a person at a terminal; compact in a pipe, where json's C encoder
    # runs (indent forces the pure-Python one, several times slower on big cores).
    out.write(json.dumps(data, indent=2 if _isatty(out) else None))
    out.write("\n")
    out.flush()


# Where a streamed list goes in the document: no string of it can hold a NUL (paths and
# arguments cannot), so its JSON form cannot occur elsewhere.
_ITEMS_HERE = "\x00items\x00"


def _stream_json(streamed: Streamed, warnings: Sequence[str], out: TextIO) -> None:
    """The compact document of _write_json, its list written item by item: json.dumps
    separates items with ", ", as written here."""
    import json

    document = {"schema": SCHEMA, **streamed.fields, streamed.key: _ITEMS_HERE}
    document["warnings"] = list(warnings)
    head, found, tail = json.dumps(document).partition(json.dumps(_ITEMS_HERE))
    assert found, "the streamed list's place is in the document"
    out.write(head)
    out.write("[")
    separator = ""
    for item in streamed.items:
        out.write(separator)
        out.write(json.dumps(item))
        separator = ", "
    out.write("]")
    out.write(tail)
    out.write("\n")
    out.flush()


def _page(text: str, command: str, env: Mapping[str, str]) -> None:
    """Through the pager; quitting it early is no error (its reader is gone, not ours)."""
    import subprocess

    pager_env = {**env}
    pager_env.setdefault("LESS", "FRX")
    pager_env.setdefault("LV", "-c")
    sys.stdout.flush()
    try:
        process = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, env=pager_env)
    except OSError:
        sys.stdout.write(text)
        return
    assert process.stdin is not None
    try:
        process.stdin.write(text.encode(sys.stdout.encoding or "utf-8", "replace"))
        process.stdin.close()
    except BrokenPipeError:
        pass
    while True:
        try:
            process.wait()
            break
        except KeyboardInterrupt:
            # Ctrl-C is the pager's to handle (less stops a search with it); git too
            # waits for its pager to end.
            continue
