"""Big, sparse and hostile cores made from a small real one, for tests and bench/.

Each is built with `struct` from the fixture kernel core (never with the grammars under
test), and is sparse: an "8 GiB core" takes a few KiB of disk. Run as a script to make
them by hand:

    python3 tests/bigcores.py DIR        # writes DIR/sparse-8g.core, DIR/bad-*.core, ...
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "linux-amd-avx512bw-1t.core"
GIB = 1 << 30
PAGE = 4096
PT_LOAD = 1
PT_NOTE = 4
PHDR = struct.Struct("<IIQQQQQQ")  # ELF64 program header
MARK = bytes(range(256)) * (PAGE // 256)  # one page that is not zeros


def _phdrs(data: bytes | bytearray) -> tuple[int, int, list[list[int]]]:
    phoff = struct.unpack_from("<Q", data, 32)[0]
    phnum = struct.unpack_from("<H", data, 56)[0]
    return phoff, phnum, [list(PHDR.unpack_from(data, phoff + i * PHDR.size)) for i in range(phnum)]


def _put(data: bytearray, phoff: int, index: int, phdr: list[int]) -> None:
    PHDR.pack_into(data, phoff + index * PHDR.size, *phdr)


def memory_start(source: Path = FIXTURE) -> int:
    """Where the fixture's memory would start: the page after its notes."""
    _, _, phdrs = _phdrs(source.read_bytes())
    note = next(p for p in phdrs if p[0] == PT_NOTE)
    return -(-(note[2] + note[5]) // PAGE) * PAGE


def with_memory(dest: Path, size: int, marks: tuple[int, ...] = (), source: Path = FIXTURE) -> Path:
    """The fixture with its last PT_LOAD holding `size` bytes of memory, all holes but a
    page of MARK at each offset in `marks` (relative to the memory's start)."""
    data = bytearray(source.read_bytes())
    phoff, phnum, phdrs = _phdrs(data)
    start = memory_start(source)
    load = phdrs[-1]
    assert load[0] == PT_LOAD
    load[2], load[5] = start, size
    load[6] = max(load[6], size)
    _put(data, phoff, phnum - 1, load)
    with open(dest, "wb") as out:
        out.write(data)
        out.truncate(start + size)
        for at in marks:
            out.seek(start + at)
            out.write(MARK)
    return dest


def bad_align(dest: Path, align: int) -> Path:
    """A zero-size PT_LOAD placed inside the note segment, with p_align `align`, in a
    core whose last PT_LOAD holds 64 KiB (which a rewrite must place after it)."""
    with_memory(dest, 16 * PAGE, marks=(0,))
    data = bytearray(dest.read_bytes())
    phoff, _, phdrs = _phdrs(data)
    note = next(p for p in phdrs if p[0] == PT_NOTE)
    load = phdrs[1]
    load[2], load[5], load[7] = note[2] + 16, 0, align
    _put(data, phoff, 1, load)
    dest.write_bytes(bytes(data))
    return dest


def huge_note_segment(dest: Path, claim: int = 4 * GIB, size: int = 8 * GIB) -> Path:
    """A PT_NOTE claiming `claim` bytes inside a sparse file of `size` bytes: the real
    notes, then zeros."""
    data = bytearray(FIXTURE.read_bytes())
    phoff, _, phdrs = _phdrs(data)
    index = next(i for i, p in enumerate(phdrs) if p[0] == PT_NOTE)
    phdrs[index][5] = claim
    _put(data, phoff, index, phdrs[index])
    with open(dest, "wb") as out:
        out.write(data)
        out.truncate(size)
    return dest


def huge_note(
    dest: Path, size: int = 8 * GIB, note_type: int = 0x999, descsz: int = (1 << 32) - 16
) -> Path:
    """The real notes followed by one note of `descsz` bytes (type `note_type`, owner
    "CORE"; 4 GiB - 16 by default), its segment grown to hold it, in a sparse file of
    `size` bytes."""
    data = bytearray(FIXTURE.read_bytes())
    phoff, _, phdrs = _phdrs(data)
    index = next(i for i, p in enumerate(phdrs) if p[0] == PT_NOTE)
    note = phdrs[index]
    end = note[2] + note[5]
    header = struct.pack("<III", 5, descsz, note_type) + b"CORE\0\0\0\0"
    note[5] += len(header) + descsz
    _put(data, phoff, index, note)
    with open(dest, "wb") as out:
        out.write(data[:end])
        out.write(header)
        out.write(data[end:])  # stale bytes under the note's descriptor: harmless
        out.truncate(size)
    return dest


def note_flood(dest: Path, size: int) -> Path:
    """The real notes followed by `size` bytes of 12-byte notes with no name and no
    descriptor, of type 7: hundreds of thousands of them."""
    data = bytearray(FIXTURE.read_bytes())
    phoff, _, phdrs = _phdrs(data)
    index = next(i for i, p in enumerate(phdrs) if p[0] == PT_NOTE)
    note = phdrs[index]
    end = note[2] + note[5]
    count = size // 12
    note[5] += count * 12
    _put(data, phoff, index, note)
    with open(dest, "wb") as out:
        out.write(data[:end])
        out.write(struct.pack("<III", 0, 0, 7) * count)
        out.write(data[end:])
    return dest


def many_phdrs(dest: Path, count: int = (1 << 32) - 1, size: int = 256 * GIB) -> Path:
    """e_phnum = PN_XNUM, section header 0's sh_info = `count`, in a sparse file of
    `size` bytes (the kernel's layout for more than 65534 segments, fs/binfmt_elf.c
    fill_extnum_info)."""
    data = bytearray(FIXTURE.read_bytes())
    shoff = len(data) + (-len(data) % 8)
    struct.pack_into("<Q", data, 40, shoff)  # e_shoff
    struct.pack_into("<HHHH", data, 56, 0xFFFF, 64, 1, 0)  # phnum, shentsize, shnum, shstrndx
    section0 = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, count, 0, 0)
    with open(dest, "wb") as out:
        out.write(data + bytes(shoff - len(data)) + section0)
        out.truncate(size)
    return dest


def main(directory: str) -> None:
    where = Path(directory)
    where.mkdir(parents=True, exist_ok=True)
    with_memory(where / "sparse-1g.core", GIB, marks=(0, GIB // 2))
    with_memory(where / "sparse-8g.core", 8 * GIB, marks=(0, 3 * GIB, 8 * GIB - PAGE))
    bad_align(where / "bad-align-2-63.core", 1 << 63)
    bad_align(where / "bad-align-2-50.core", 1 << 50)
    huge_note_segment(where / "bad-note-segment-4g.core")
    huge_note(where / "bad-note-4g.core")
    many_phdrs(where / "bad-phnum-2-32.core")
    for path in sorted(where.iterdir()):
        info = os.stat(path)
        print(f"{path}: {info.st_size} bytes, {info.st_blocks * 512} on disk")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
