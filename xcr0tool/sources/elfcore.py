"""Read the notes of x86 ELF cores (Linux, FreeBSD), and write cores with notes changed.

Only the ELF header, the header tables and the notes are ever read, in bounded pieces,
and only the descriptors xcr0tool uses are kept in memory. A core's PT_LOAD segments hold
the process memory, possibly gigabytes: `read_core` never reads them (from a pipe it
stops after the notes) and `write_core` copies them through without holding them, its
holes kept as holes (files.output.Sink).

Whatever a core claims, what is read is bounded: every size is checked against the file
and against what any real core holds (the bounds below say why), and a claim beyond
them is one line naming the input.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from xcr0tool.errors import InputError
from xcr0tool.files.input import Input, open_input
from xcr0tool.formats import elf as g

NT_PRSTATUS = 1
NT_PRFPREG = 2
NT_PRPSINFO = 3
NT_AUXV = 6
NT_X86_XSTATE = 0x202
NT_X86_SHSTK = 0x204
NT_X86_XSAVE_LAYOUT = 0x205
NT_FILE = 0x46494C45
NT_SIGINFO = 0x53494749
# i386 Linux: NT_PRFPREG holds the 108-byte FSAVE area, and this one the FXSAVE area.
NT_PRXFPREG = 0x46E62B7F

NOTE_TYPE_NAMES = {
    NT_PRSTATUS: "NT_PRSTATUS",
    NT_PRFPREG: "NT_PRFPREG",
    NT_PRPSINFO: "NT_PRPSINFO",
    NT_AUXV: "NT_AUXV",
    NT_X86_XSTATE: "NT_X86_XSTATE",
    NT_X86_SHSTK: "NT_X86_SHSTK",
    NT_X86_XSAVE_LAYOUT: "NT_X86_XSAVE_LAYOUT",
    NT_FILE: "NT_FILE",
    NT_SIGINFO: "NT_SIGINFO",
    NT_PRXFPREG: "NT_PRXFPREG",
}

FXSAVE_SIZE = 512

# ---- bounds: what a real core holds, with room; beyond them a core is refused --------
#
# Program headers (and section headers): one PT_LOAD per mapping. Linux caps a
# process's mappings at vm.max_map_count, 65530 by default
# (include/linux/mm.h DEFAULT_MAX_MAP_COUNT); databases and search engines raise it to
# 262144 or so. 2^20 is four times that: a 56 MiB table, read in pieces.
HEADER_LIMIT = 1 << 20
# The notes, all PT_NOTE segments together. A thread's notes take about 3 KiB (12 KiB
# with AMX state), and NT_FILE at most 16 MiB (fs/binfmt_elf.c fill_files_note, the
# core_file_note_size_limit sysctl): 1 GiB holds some 80,000 AMX threads.
NOTES_LIMIT = 1 << 30
# Notes, counted: a few per thread (Linux writes one per regset, fs/binfmt_elf.c
# fill_thread_core_info: NT_PRSTATUS, NT_PRFPREG, NT_X86_XSTATE, maybe NT_X86_SHSTK).
# 2^18 notes is over 65,000 threads, twice Linux's default pid_max (PID_MAX_DEFAULT,
# 32768); walking them takes about a second.
NOTE_COUNT_LIMIT = 1 << 18
# The descriptors kept whole (XSAVE areas, FPU areas, the layout, NT_PRPSINFO): an XSAVE
# area is at most a few tens of KiB (CPUID.(0xD,0).ECX: 11 KiB with AMX), the others are
# smaller. Anything larger than this is not one of them.
DESC_LIMIT = 1 << 20
# Of NT_PRSTATUS only the start is read: the thread id lies within its first 64 bytes
# on every system (formats.elf_grammar.prstatus_prefix).
PRSTATUS_PREFIX = 64
# Note names ("CORE", "LINUX", "FreeBSD") are a few bytes; a longer one is read only this
# far, and its note is nobody's xcr0tool knows.
NAME_LIMIT = 256
# Segments are placed at most this aligned in a rewrite: Linux and FreeBSD write PT_LOAD
# with p_align = the page size (fs/binfmt_elf.c: ELF_EXEC_PAGESIZE, 4 KiB on x86), gdb
# smaller; 2 MiB is x86's large page. A larger (or not power of two) p_align is kept in
# the header but not honoured: it could only turn a small core into a huge file.
MAX_ALIGN = 1 << 21
# Notes are read this much at a time.
NOTE_PIECE = 1 << 20

# The note types above mean what they say only under these owners; "GDB", "GNU" and
# others number their own types.
_SYSTEM_OWNERS = frozenset({"CORE", "LINUX", "FreeBSD"})
_READ_WHOLE = frozenset({NT_PRFPREG, NT_X86_XSTATE, NT_PRXFPREG, NT_X86_XSAVE_LAYOUT, NT_PRPSINFO})
_LAYOUT = ("LINUX", NT_X86_XSAVE_LAYOUT)
# Notes about the process, not about the thread whose NT_PRSTATUS they follow: Linux
# writes its process notes after the first thread's NT_PRSTATUS and NT_X86_XSAVE_LAYOUT
# after the last thread; FreeBSD its NT_PROCSTAT_* (8 to 16) after the last thread.
_PROCESS_NOTES = frozenset(
    {
        ("CORE", NT_PRPSINFO),
        ("CORE", NT_AUXV),
        ("CORE", NT_FILE),
        _LAYOUT,
        ("FreeBSD", NT_PRPSINFO),
        *(("FreeBSD", procstat) for procstat in range(8, 17)),
    }
)

_MACHINES = {(64, g.EM_X86_64): "x86-64", (32, g.EM_386): "i386", (32, g.EM_X86_64): "x32"}
_NOT_A_CORE = {
    g.ET_REL: "an ELF relocatable object",
    g.ET_EXEC: "an ELF executable",
    g.ET_DYN: "an ELF shared object",
}


# Immutable records are NamedTuples: defining a dataclass costs every start of the
# program about half a millisecond, as much as reading the notes of a small core.
# CoreThread stays a dataclass: its field `index` would hide tuple.index.
class CoreNote(NamedTuple):
    owner: str
    type: int
    desc_offset: int  # file offset of the descriptor
    desc_size: int


@dataclass
class CoreThread:
    index: int  # position in the core, 0-based
    tid: int | None  # from NT_PRSTATUS; None when the descriptor is too short to hold it
    xstate: bytes | None  # NT_X86_XSTATE descriptor, verbatim
    fpregs: bytes | None  # NT_PRFPREG descriptor, verbatim
    fxsave: bytes | None  # the 512-byte FXSAVE area, from NT_PRFPREG or NT_PRXFPREG
    notes: list[CoreNote]  # this thread's notes, from its NT_PRSTATUS on


@dataclass
class CoreFile:
    path: str
    elf_class: int  # 32 or 64
    machine: str  # "x86-64", "i386" or "x32"
    os: str  # "linux" or "freebsd"
    threads: list[CoreThread]
    xsave_layout: bytes | None  # NT_X86_XSAVE_LAYOUT descriptor, verbatim
    notes: list[CoreNote]  # every note, in file order
    # The open input the core was read from, when its reader keeps it open (a stream
    # cannot be opened again): write_core copies from it. None: write_core opens `path`.
    source: Input | None = field(default=None, compare=False, repr=False)


def looks_like_elf(head: bytes) -> bool:
    return head[:4] == g.ELFMAG


def read_core(path: str | Input, name: str | None = None) -> CoreFile:
    """Read the threads and notes of a core: at `path` (then `name` is how errors call
    it), or from an open Input, which the CoreFile keeps for write_core."""
    if isinstance(path, Input):
        return _read_core(_Input(path), path.name, path)
    with _open(path, path if name is None else name) as opened:
        return _read_core(_Input(opened), path, None)


def _read_core(src: _Input, path: str, keep: Input | None) -> CoreFile:
    elf = _read_elf(src)
    notes = _read_notes(src, elf)
    system = _system(elf, notes)
    groups = _thread_groups(notes)
    if not groups:
        problem = "no NT_PRSTATUS note" if notes else "no notes"
        raise src.error(f"{problem}: a core without threads")
    return CoreFile(
        path=path,
        elf_class=elf.elf_class,
        machine=elf.machine,
        os=system,
        threads=[_thread(src, elf, system, notes, i, members) for i, members in enumerate(groups)],
        xsave_layout=_first_desc(notes, range(len(notes)), NT_X86_XSAVE_LAYOUT),
        notes=[note.public for note in notes],
        source=keep,
    )


def _open(path: str, name: str) -> Input:
    try:
        opened = open_input(path)
    except InputError as error:
        raise InputError(name, error.problem) from None
    opened.name = name
    return opened


# ---- reading -------------------------------------------------------------------------


class _Input:
    """The core reader's view of an Input: bounds-checked reads, records, parses."""

    def __init__(self, opened: Input) -> None:
        self.input = opened
        self.source = opened.name

    @property
    def size(self) -> int | None:
        return self.input.size

    def error(self, problem: str) -> InputError:
        return InputError(self.source, problem)

    def need(self, what: str, end: int) -> None:
        self.input.need(what, end)

    def read(self, what: str, offset: int, size: int) -> bytes:
        return self.input.read(what, offset, size)

    def table(
        self, what: str, offset: int, count: int, entry_size: int, records: g.Record
    ) -> list[dict[str, int]]:
        return [record for _, record in self.records(what, offset, count, entry_size, records)]

    def records(
        self, what: str, offset: int, count: int, entry_size: int, records: g.Record
    ) -> Iterator[tuple[int, dict[str, int]]]:
        """The entries of a header table, read a bounded piece at a time."""
        if count and entry_size != records.size:
            raise self.error(f"{what}: entries of {entry_size} bytes, not {records.size}")
        if self.size is not None:
            self.need(what, offset + count * records.size)
        per_piece = max(1, NOTE_PIECE // records.size)
        for first in range(0, count, per_piece):
            number = min(per_piece, count - first)
            data = self.read(what, offset + first * records.size, number * records.size)
            for i in range(number):
                yield first + i, records.unpack(data, i * records.size)

    def unpack(self, record: g.Record, data: bytes | memoryview, what: str) -> dict[str, Any]:
        """One record of `data`; callers check bounds first."""
        try:
            return record.unpack(data)
        except (struct.error, ValueError) as error:
            raise self.error(f"cannot parse {what}: {error}") from None


class _Elf(NamedTuple):
    """The headers of an x86 core, checked."""

    elf_class: int
    machine: str
    header: dict[str, Any]  # g.record("elf_header", elf_class)
    phnum: int
    note_segments: list[tuple[int, dict[str, int]]]  # (index, header) of every PT_NOTE
    shnum: int
    # Zero bytes ending a note segment, by segment index: copied, not read as notes.
    padding: dict[int, _Range]


def _read_elf(src: _Input) -> _Elf:
    head = src.input.read_upto(0, g.EI_NIDENT)
    if not head:
        raise src.error("empty file")
    if not looks_like_elf(head):
        raise src.error("not an ELF file")
    src.need("ELF identification", g.EI_NIDENT)
    ident = src.unpack(g.record("elf_ident"), head, "ELF identification")
    if ident["ei_data"] == g.ELFDATA2MSB:
        raise src.error("not an x86 core: big-endian")
    if ident["ei_data"] != g.ELFDATA2LSB:
        raise src.error(f"unknown ELF data encoding {ident['ei_data']}")
    elf_class = {g.ELFCLASS32: 32, g.ELFCLASS64: 64}.get(ident["ei_class"])
    if elf_class is None:
        raise src.error(f"unknown ELF class {ident['ei_class']}")

    record = g.record("elf_header", elf_class)
    header = src.unpack(record, src.read("ELF header", 0, record.size), "ELF header")
    if header["e_type"] != g.ET_CORE:
        kind = _NOT_A_CORE.get(header["e_type"], f"an ELF file of type {header['e_type']}")
        raise src.error(f"{kind}, not a core")
    machine = _MACHINES.get((elf_class, header["e_machine"]))
    if machine is None:
        raise src.error(f"not an x86 core: ELF{elf_class}, e_machine {header['e_machine']}")

    phoff, shoff = header["e_phoff"], header["e_shoff"]
    phnum, shnum = header["e_phnum"], header["e_shnum"] if shoff else 0
    # Past 0xfffe segments or 0xfeff sections, the counts move into section header 0
    # (gABI "Sections"; fs/binfmt_elf.c fill_extnum_info). From a pipe, reading it may
    # mean reading the whole core: the kernel writes it last.
    if shoff and (phnum == g.PN_XNUM or shnum == 0):
        sections = g.record("section_header", elf_class)
        zero = src.table("section header table", shoff, 1, header["e_shentsize"], sections)
        phnum = zero[0]["sh_info"] if phnum == g.PN_XNUM else phnum
        shnum = shnum or zero[0]["sh_size"]
    for count, what in ((phnum, "program"), (shnum, "section")):
        if count > HEADER_LIMIT:
            raise src.error(
                f"claims {count} {what} headers, more than any core holds (at most {HEADER_LIMIT})"
            )
    segments = g.record("program_header", elf_class)
    notes = [
        (index, phdr)
        for index, phdr in src.records(
            "program header table", phoff, phnum, header["e_phentsize"], segments
        )
        if phdr["p_type"] == g.PT_NOTE
    ]
    return _Elf(elf_class, machine, header, phnum, notes, shnum, {})


def _all_phdrs(src: _Input, elf: _Elf) -> list[dict[str, int]]:
    """Every program header, for a rewrite (which moves them all)."""
    segments = g.record("program_header", elf.elf_class)
    header = elf.header
    return src.table(
        "program header table", header["e_phoff"], elf.phnum, header["e_phentsize"], segments
    )


class _Range(NamedTuple):
    """Bytes of the input, copied as they are."""

    start: int
    size: int


class _Note:
    """A note as it lies in its segment: the public view and what a rewrite needs."""

    __slots__ = ("desc", "name", "number", "public", "raw_size", "raw_start", "segment")

    def __init__(
        self,
        public: CoreNote,
        number: int,
        segment: int,
        name: bytes,
        raw_start: int,
        raw_size: int,
        desc: bytes | None,
    ) -> None:
        self.public = public
        self.number = number  # position among all notes, as error messages count them
        self.segment = segment  # index of its program header
        self.name = name  # the n_namesz bytes of the name field (at most NAME_LIMIT)
        # Header, name, descriptor and padding, in the file.
        self.raw_start, self.raw_size = raw_start, raw_size
        # The descriptor, for the notes xcr0tool reads (of NT_PRSTATUS: its start).
        self.desc = desc

    @property
    def raw(self) -> _Range:
        return _Range(self.raw_start, self.raw_size)

    @property
    def kind(self) -> tuple[str, int]:
        return self.public.owner, self.public.type

    def describe(self) -> str:
        return _label(self.number, self.public.type)


def _label(number: int, note_type: int) -> str:
    return f"note {number} ({NOTE_TYPE_NAMES.get(note_type, f'type {note_type:#x}')})"


def _align(size: int) -> int:
    return -(-size // g.NOTE_ALIGN) * g.NOTE_ALIGN


def _read_notes(src: _Input, elf: _Elf) -> list[_Note]:
    """Every note of every PT_NOTE segment, in program header order, each segment read
    NOTE_PIECE bytes at a time; descriptors are read only for the notes xcr0tool uses.
    Zero bytes are empty notes (gABI: no name, type 0, no descriptor) that no one
    uses: those ending a segment are its padding (elf.padding), others go with the note
    after them (copied with it, unless that note is rewritten); neither is listed."""
    notes: list[_Note] = []
    total = 0
    for segment, phdr in elf.note_segments:
        base, length = phdr["p_offset"], phdr["p_filesz"]
        if not length:
            continue
        total += length
        if total > NOTES_LIMIT:
            raise src.error(
                f"note segment {segment} claims {length} bytes: more notes than any core"
                f" holds (at most {NOTES_LIMIT} bytes in all)"
            )
        if src.size is not None:
            src.need(f"note segment {segment}", base + length)  # a file: before any walk
        _walk(_Segment(src, segment, base, length), notes, elf)
    return notes


class _Segment:
    """A note segment, read a piece at a time."""

    def __init__(self, src: _Input, index: int, base: int, length: int) -> None:
        self.src, self.index, self.base, self.length = src, index, base, length
        self.what = f"note segment {index}"
        self.data = b""  # the piece read last
        self.at = 0  # where it starts in the segment

    def load(self, offset: int, size: int) -> None:
        """Make [offset, offset + size) part of the piece."""
        size = min(max(size, NOTE_PIECE), self.length - offset)
        self.data = self.src.read(self.what, self.base + offset, size)
        self.at = offset

    def next_data(self, offset: int) -> int:
        """The offset of the first non-zero byte from `offset` on (the length if none)."""
        while offset < self.length:
            self.load(offset, NOTE_PIECE)
            found = _NON_ZERO.search(self.data)
            if found:
                return offset + found.start()
            offset += len(self.data)
        return self.length


_NON_ZERO = re.compile(rb"[^\x00]")


def _walk(seg: _Segment, notes: list[_Note], elf: _Elf) -> None:
    """Append the notes of one segment. The loop is written for speed: a core may have
    hundreds of thousands of notes."""
    src, base, length, segment = seg.src, seg.base, seg.length, seg.index
    header = g.record("note_header").format
    head_size, unpack_from = header.size, header.unpack_from
    pad = g.NOTE_ALIGN - 1
    owners: dict[bytes, str] = {}
    lead = -1  # where a run of empty notes before this one starts
    at = 0
    while at < length:
        number = len(notes)
        if number >= NOTE_COUNT_LIMIT:
            raise src.error(f"more than {NOTE_COUNT_LIMIT} notes: more than any core holds")
        if at + head_size > seg.at + len(seg.data) and length - at >= head_size:
            seg.load(at, head_size)
        if length - at < head_size or not any(
            unpack_from(seg.data, at - seg.at)
        ):  # zeros: empty notes (no name, type or descriptor), or padding
            data = seg.next_data(at)
            if data >= length:
                # Zeros to the end: padding (a segment padded, or claiming more than
                # was written), copied in a rewrite, never walked 12 bytes at a time.
                elf.padding[segment] = _Range(base + at, length - at)
                return
            if length - at < head_size:
                left = length - at
                raise src.error(f"note {number}: header runs past its segment ({left} bytes left)")
            # Empty notes up to the one holding the next non-zero byte: no note of
            # anyone's, kept as bytes before that note.
            lead = at if lead < 0 else lead
            at += (data - at) // head_size * head_size
            seg.load(at, head_size)
            continue
        namesz, descsz, note_type = unpack_from(seg.data, at - seg.at)
        name_at = at + head_size
        desc_at = name_at + ((namesz + pad) & ~pad)
        desc_end = desc_at + descsz
        if desc_at > length:
            problem = f"{_label(number, note_type)} has a {namesz}-byte name"
            raise src.error(f"{problem} but its segment ends after {length - name_at}")
        if desc_end > length:
            problem = f"{_label(number, note_type)} claims {descsz} bytes"
            raise src.error(f"{problem} but its segment ends after {length - desc_at}")
        if namesz:
            kept = min(namesz, NAME_LIMIT)
            if name_at + kept > seg.at + len(seg.data):
                seg.load(name_at, kept)
            name = seg.data[name_at - seg.at : name_at - seg.at + kept]
            owner = owners.get(name)
            if owner is None:
                owner = owners[name] = _owner(name) if namesz <= NAME_LIMIT else ""
        else:
            name, owner = b"", ""
        desc = None
        if owner in _SYSTEM_OWNERS and (note_type == NT_PRSTATUS or note_type in _READ_WHOLE):
            size = descsz
            if note_type == NT_PRSTATUS:
                size = min(descsz, PRSTATUS_PREFIX)
            elif descsz > DESC_LIMIT:
                raise src.error(
                    f"{_label(number, note_type)} claims {descsz} bytes, more than"
                    f" such a note holds (at most {DESC_LIMIT})"
                )
            if desc_at + size > seg.at + len(seg.data):
                seg.load(desc_at, size)
            desc = seg.data[desc_at - seg.at : desc_at - seg.at + size]
        # The last note of a segment may go without its final padding.
        end = min((desc_end + pad) & ~pad, length)
        public = CoreNote(owner, note_type, base + desc_at, descsz)
        start = at if lead < 0 else lead
        notes.append(_Note(public, number, segment, name, base + start, end - start, desc))
        lead = -1
        at = end


def _owner(name: bytes) -> str:
    return name.split(b"\0", 1)[0].decode("ascii", "replace")


def _system(elf: _Elf, notes: list[_Note]) -> str:
    freebsd = elf.header["e_ident.ei_osabi"] == g.ELFOSABI_FREEBSD
    return "freebsd" if freebsd or any(n.public.owner == "FreeBSD" for n in notes) else "linux"


def _thread_groups(notes: list[_Note]) -> list[list[int]]:
    """Note indices per thread: each NT_PRSTATUS opens a thread, which takes the notes
    after it up to the next NT_PRSTATUS (Linux and FreeBSD both write them so), less
    the notes about the whole process."""
    groups: list[list[int]] = []
    for i, note in enumerate(notes):
        if note.public.type == NT_PRSTATUS and note.public.owner in _SYSTEM_OWNERS:
            groups.append([i])
        elif groups and note.kind not in _PROCESS_NOTES:
            groups[-1].append(i)
    return groups


def _first_desc(notes: list[_Note], members: Iterable[int], note_type: int) -> bytes | None:
    for i in members:
        if notes[i].public.type == note_type and notes[i].public.owner in _SYSTEM_OWNERS:
            return notes[i].desc
    return None


def _thread(
    src: _Input, elf: _Elf, system: str, notes: list[_Note], index: int, members: list[int]
) -> CoreThread:
    fpregs = _first_desc(notes, members, NT_PRFPREG)
    # x86-64 NT_PRFPREG is the FXSAVE area; i386's is FSAVE, with FXSAVE in NT_PRXFPREG.
    fxsave_candidates = (fpregs, _first_desc(notes, members, NT_PRXFPREG))
    return CoreThread(
        index=index,
        tid=_tid(g.record("prstatus_prefix", system, elf.elf_class), notes[members[0]]),
        xstate=_first_desc(notes, members, NT_X86_XSTATE),
        fpregs=fpregs,
        fxsave=next(
            (d for d in fxsave_candidates if d is not None and len(d) == FXSAVE_SIZE), None
        ),
        notes=[notes[i].public for i in members],
    )


def _tid(prstatus: g.Record, status: _Note) -> int | None:
    size = _pid_end(prstatus)
    if status.desc is None or len(status.desc) < size:
        return None
    # pr_pid is the record's last field, a signed 32-bit integer (_pid_end checks): read
    # with int.from_bytes, a thousand threads cost no record unpack each.
    return int.from_bytes(status.desc[size - 4 : size], "little", signed=True)


@functools.cache
def _pid_end(prstatus: g.Record) -> int:
    """Where pr_pid ends in a prstatus prefix (formats.elf_grammar.prstatus_prefix)."""
    if prstatus.names[-1] != "pr_pid" or not prstatus.format.format.endswith("l"):
        raise TypeError("prstatus_prefix must end with pr_pid, a signed 32-bit integer")
    return prstatus.size
