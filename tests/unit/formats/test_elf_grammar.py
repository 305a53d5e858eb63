"""The core reader's `struct` layouts are its construct grammars, derived and kept current.

The grammars (formats/elf_grammar.py) declare the bytes; the reader and the writer run
formats/elf_layouts.py, generated from them. These tests hold the two equal: the file is
what the grammars generate today, and every record parses and builds alike both ways.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import pytest
from construct import ConstructError
from hypothesis import given, settings
from hypothesis import strategies as st

from xcr0tool.formats import elf, elf_grammar, elf_layouts

KEYS = list(elf_grammar.RECORDS)


def test_generated_layouts_are_current() -> None:
    generated = Path(elf_layouts.__file__).read_text()
    assert generated == elf_grammar.layouts_module(), (
        "formats/elf_layouts.py is stale: run "
        "`python -m xcr0tool.formats.elf_grammar > xcr0tool/formats/elf_layouts.py`"
    )


def test_every_layout_has_its_grammar() -> None:
    assert list(elf_layouts.LAYOUTS) == KEYS


def _flat(parsed: Any, prefix: str = "") -> dict[str, Any]:
    """A construct Container as the reader's flat dict: nested names dotted."""
    flat: dict[str, Any] = {}
    for name, value in parsed.items():
        if name.startswith("_"):  # construct's own bookkeeping (_io)
            continue
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[prefix + name] = value
    return flat


def _with_constants(key: tuple[str | int, ...], data: bytes) -> bytes:
    """`data` with each Const field set as the grammar requires (the ELF magic)."""
    record = elf.record(*key)
    codes = re.findall(r"\d*[a-zA-Z]", record.format.format)
    out = bytearray(data)
    for name, value in record.consts.items():
        at = struct.calcsize("<" + "".join(codes[: record.names.index(name)]))
        out[at : at + len(value)] = value
    return bytes(out)


@pytest.mark.parametrize("key", KEYS, ids=lambda key: "-".join(map(str, key)))
def test_sizes_agree(key: tuple[str | int, ...]) -> None:
    assert elf.record(*key).size == elf_grammar.RECORDS[key].sizeof()


@settings(max_examples=300)
@given(key=st.sampled_from(KEYS), data=st.binary(min_size=136, max_size=136))
def test_records_parse_and_build_as_the_grammar_does(
    key: tuple[str | int, ...], data: bytes
) -> None:
    grammar, record = elf_grammar.RECORDS[key], elf.record(*key)
    chunk = _with_constants(key, data[: record.size])
    fields = record.unpack(chunk)
    assert fields == _flat(grammar.parse(chunk))
    assert record.pack(fields) == bytes(grammar.build(grammar.parse(chunk))) == chunk


def test_a_wrong_magic_is_refused_as_the_grammar_refuses_it() -> None:
    data = b"\x7fELG" + bytes(60)
    with pytest.raises(ValueError, match="magic"):
        elf.record("elf_header", 64).unpack(data)
    with pytest.raises(ConstructError):
        elf_grammar.RECORDS["elf_header", 64].parse(data)


def test_the_reader_needs_no_construct() -> None:
    """What derivation buys: reading a core imports no construct (tests/bare_python.py)."""
    from bare_python import run_bare

    code = (
        "import sys\n"
        "from xcr0tool.sources.elfcore import read_core\n"
        "from xcr0tool.sources.corewriter import write_core\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'construct'))\n"
    )
    assert run_bare(code).strip() == "[]"
