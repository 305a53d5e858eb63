"""The ELF numbers of an x86 core, and its records read and written with `struct`.

The records' bytes are declared once, as construct grammars in formats/elf_grammar.py;
what runs here are `struct` layouts derived from them (formats/elf_layouts.py,
generated, and checked against the grammars by a test). Only little-endian layouts
exist: x86 cores are never big-endian.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping
from typing import Any

from xcr0tool.formats.elf_layouts import CONSTS, LAYOUTS

ELFMAG = b"\x7fELF"
EI_NIDENT = 16
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2
ELFOSABI_FREEBSD = 9

ET_REL = 1
ET_EXEC = 2
ET_DYN = 3
ET_CORE = 4

EM_386 = 3
EM_X86_64 = 62

PT_LOAD = 1
PT_NOTE = 4
# e_phnum value meaning "the real count is in sh_info of section header 0".
PN_XNUM = 0xFFFF

SHT_NOBITS = 8

# Linux and FreeBSD pad note names and descriptors to 4 bytes in ELF32 and ELF64 cores
# alike, whatever the gABI says about 8-byte alignment for ELF64.
NOTE_ALIGN = 4


class Record:
    """One kind of ELF record as a flat dict: nested fields have dotted names
    ("e_ident.ei_class"), integers are ints and byte strings bytes."""

    __slots__ = ("consts", "format", "names", "size")

    def __init__(self, key: tuple[str | int, ...]) -> None:
        layout, self.names = LAYOUTS[key]
        self.format = struct.Struct(layout)
        self.size = self.format.size
        self.consts = CONSTS.get(key, {})

    def unpack(self, data: bytes | memoryview, offset: int = 0) -> dict[str, Any]:
        """The fields at `offset`; struct.error if `data` is short, ValueError if a
        constant field (the ELF magic) is not what the grammar says."""
        fields = dict(zip(self.names, self.format.unpack_from(data, offset), strict=True))
        for name, value in self.consts.items():
            if fields[name] != value:
                raise ValueError(f"{name} is {fields[name]!r}, not {value!r}")
        return fields

    def pack(self, fields: Mapping[str, Any]) -> bytes:
        return self.format.pack(*(fields[name] for name in self.names))


@functools.cache
def record(name: str, *variant: str | int) -> Record:
    """The record `name` of formats/elf_grammar.py for a variant (ELF class, system)."""
    return Record((name, *variant))
