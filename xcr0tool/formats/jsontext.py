"""JSON text from a file the user named, decoded with one set of one-line refusals.

json.loads can fail three ways on hostile input: bad syntax (JSONDecodeError), an integer
past Python's digit limit (ValueError, sys.set_int_max_str_digits) and nesting past the
recursion limit (RecursionError). Each becomes an InputError naming the file.
"""

from __future__ import annotations

from xcr0tool.errors import InputError


def loads(text: str, source: str) -> object:
    """The JSON value of `text`, or InputError(source, ...) in one line."""
    # json is imported here, not with the module: the sources that may be JSON text (a
    # layout file) are on every decode's import path, and few decodes read one.
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(source, f"not valid JSON: {exc}") from None
    except ValueError as exc:  # an integer beyond Python's digit limit
        raise InputError(source, f"not usable JSON: {exc}") from None
    except RecursionError:
        raise InputError(source, "not usable JSON: nested too deeply") from None
