"""Read the notes of x86 ELF cores (Linux, FreeBSD), and write cores with notes changed.

Only the ELF header, the header tables and the PT_NOTE segments are ever read into
memory. A core's PT_LOAD segments hold the process memory, possibly gigabytes:
`read_core` never reads them and `write_core` copies them through in bounded chunks.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import struct
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from construct import ConstructError

from xcr0tool.errors import InputError, UsageError
from xcr0tool.files.output import write_atomic
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
COPY_CHUNK = 1 << 20

# The note types above mean what they say only under these owners; "GDB", "GNU" and
# others number their own types.
_SYSTEM_OWNERS = frozenset({"CORE", "LINUX", "FreeBSD"})
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


@dataclass(frozen=True)
class CoreNote:
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


def looks_like_elf(head: bytes) -> bool:
    return head[:4] == g.ELFMAG


def read_core(path: str, name: str | None = None) -> CoreFile:
    """Read the threads and notes of the core at `path`; `name` is how errors call it."""
    with _open_input(path, path if name is None else name) as src:
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
    )


def write_core(
    core: CoreFile,
    dest: str,
    *,
    xstate: Mapping[int, bytes] | None = None,
    xsave_layout: bytes | None = None,
    drop_xsave_layout: bool = False,
    drop_memory: bool = False,
    drop_note_types: Collection[tuple[str, int]] = (),
    scrub_prpsinfo: bool = False,
) -> None:
    """Write `core` to `dest` with the changes asked for; the input is never touched.

    `xstate` maps thread indices to new NT_X86_XSTATE descriptors (a thread without
    one gets one after its NT_PRFPREG). `xsave_layout` replaces or adds the process's
    NT_X86_XSAVE_LAYOUT. `drop_memory` keeps every PT_LOAD header but none of its bytes,
    for small test fixtures. `drop_note_types` lists (owner, type) pairs to leave out,
    and `scrub_prpsinfo` blanks the command name, arguments, uid and gid in NT_PRPSINFO.

    Every other note keeps its bytes and its place; segments and sections after a note
    segment that changed size move by that change, rounded up to their alignment.
    """
    if xsave_layout is not None and drop_xsave_layout:
        raise UsageError("xsave_layout and drop_xsave_layout exclude each other")
    unknown = sorted(set(xstate or {}) - set(range(len(core.threads))))
    if unknown:
        last = len(core.threads) - 1
        raise UsageError(f"{core.path}: no thread {unknown[0]} (threads 0 to {last})")
    edit = _NoteEdit(
        xstate=dict(xstate or {}),
        layout=xsave_layout,
        drop_layout=drop_xsave_layout,
        drops=frozenset(drop_note_types),
        scrub=scrub_prpsinfo,
    )
    with _open_input(core.path, core.path) as src:
        if os.path.exists(dest) and os.path.samefile(dest, core.path):
            raise UsageError(f"{dest}: is the input core; write the new core elsewhere")
        elf = _read_elf(src)
        notes = _read_notes(src, elf)
        if [note.public for note in notes] != core.notes:
            raise src.error("changed since it was read")
        segments = _rebuild_notes(src, elf, notes, _system(elf, notes), edit)
        regions = _place(src, elf, segments, drop_memory)
        write_atomic(dest, lambda out: _emit(src, out, regions))


# ---- reading -------------------------------------------------------------------------


class _Input:
    """An input file: reads are bounds-checked, and errors name the file as the user did."""

    def __init__(self, f: BinaryIO, source: str) -> None:
        self.f = f
        self.source = source
        self.size = os.fstat(f.fileno()).st_size

    def error(self, problem: str) -> InputError:
        return InputError(self.source, problem)

    def need(self, what: str, end: int) -> None:
        if end > self.size:
            raise self.error(f"truncated: {what} ends at {end:#x}, file is {self.size:#x} bytes")

    def read(self, what: str, offset: int, size: int) -> bytes:
        self.need(what, offset + size)
        self.f.seek(offset)
        return self.f.read(size)

    def table(
        self, what: str, offset: int, count: int, entry_size: int, records: _Records
    ) -> list[dict[str, int]]:
        if count and entry_size != records.size:
            raise self.error(f"{what}: entries of {entry_size} bytes, not {records.size}")
        data = self.read(what, offset, count * records.size)
        return [records.unpack(data, i * records.size) for i in range(count)]

    def copy_to(self, out: IO[bytes], offset: int, size: int) -> None:
        """Copy in bounded chunks: segments can be gigabytes."""
        self.f.seek(offset)
        while size:
            chunk = self.f.read(min(size, COPY_CHUNK))
            if not chunk:
                raise self.error(f"truncated while copying: file ends before {offset + size:#x}")
            out.write(chunk)
            size -= len(chunk)
            offset += len(chunk)

    def parse(self, grammar: Any, data: bytes | memoryview, what: str) -> Any:
        """The one place construct meets file bytes; callers check bounds first."""
        try:
            return grammar.parse(data)
        except (ConstructError, struct.error) as error:
            raise self.error(f"cannot parse {what}: {error}") from None


def _reason(error: OSError) -> str:
    return (error.strerror or str(error)).lower()


@contextlib.contextmanager
def _open_input(path: str, source: str) -> Iterator[_Input]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as error:
        raise InputError(source, _reason(error)) from None
    with f:
        try:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InputError(source, "not a regular file")
            yield _Input(f, source)
        except OSError as error:
            raise InputError(source, _reason(error)) from None


@functools.cache
def _grammar(factory: Callable[..., Any], *variant: object) -> Any:
    """Grammars are immutable: build each variant once."""
    return factory(*variant)


class _Records:
    """A grammar of integers, read and written with `struct` for tables and note walks."""

    def __init__(self, grammar: Any) -> None:
        self.names = [field.name for field in grammar.subcons]
        self.format = struct.Struct(g.struct_format(grammar))
        self.size = self.format.size

    def unpack(self, data: bytes | memoryview, offset: int = 0) -> dict[str, int]:
        return dict(zip(self.names, self.format.unpack_from(data, offset), strict=True))

    def pack(self, fields: Mapping[str, int]) -> bytes:
        return self.format.pack(*(fields[name] for name in self.names))


@functools.cache
def _records(factory: Callable[..., Any], *variant: object) -> _Records:
    return _Records(_grammar(factory, *variant))


@dataclass
class _Elf:
    """The headers of an x86 core, checked."""

    elf_class: int
    machine: str
    header: Any  # construct Container of g.elf_header
    phdrs: list[dict[str, int]]
    shnum: int


def _read_elf(src: _Input) -> _Elf:
    head = src.read("ELF identification", 0, min(src.size, g.EI_NIDENT))
    if not head:
        raise src.error("empty file")
    if not looks_like_elf(head):
        raise src.error("not an ELF file")
    src.need("ELF identification", g.EI_NIDENT)
    ident = src.parse(_grammar(g.elf_ident), head, "ELF identification")
    if ident.ei_data == g.ELFDATA2MSB:
        raise src.error("not an x86 core: big-endian")
    if ident.ei_data != g.ELFDATA2LSB:
        raise src.error(f"unknown ELF data encoding {ident.ei_data}")
    elf_class = {g.ELFCLASS32: 32, g.ELFCLASS64: 64}.get(ident.ei_class)
    if elf_class is None:
        raise src.error(f"unknown ELF class {ident.ei_class}")

    grammar = _grammar(g.elf_header, elf_class)
    header = src.parse(grammar, src.read("ELF header", 0, grammar.sizeof()), "ELF header")
    if header.e_type != g.ET_CORE:
        kind = _NOT_A_CORE.get(header.e_type, f"an ELF file of type {header.e_type}")
        raise src.error(f"{kind}, not a core")
    machine = _MACHINES.get((elf_class, header.e_machine))
    if machine is None:
        raise src.error(f"not an x86 core: ELF{elf_class}, e_machine {header.e_machine}")

    phnum, shnum = header.e_phnum, header.e_shnum if header.e_shoff else 0
    # Past 0xfffe segments or 0xfeff sections, the counts move into section header 0.
    if header.e_shoff and (phnum == g.PN_XNUM or shnum == 0):
        sections = _records(g.section_header, elf_class)
        zero = src.table("section header table", header.e_shoff, 1, header.e_shentsize, sections)
        phnum = zero[0]["sh_info"] if phnum == g.PN_XNUM else phnum
        shnum = shnum or zero[0]["sh_size"]
    segments = _records(g.program_header, elf_class)
    phdrs = src.table("program header table", header.e_phoff, phnum, header.e_phentsize, segments)
    return _Elf(elf_class, machine, header, phdrs, shnum)


@dataclass
class _Note:
    """A note as it lies in its segment: the public view and what a rewrite needs."""

    public: CoreNote
    number: int  # position among all notes, as error messages count them
    segment: int  # index of its program header
    name: bytes  # the n_namesz bytes of the name field
    raw: memoryview  # header, name, descriptor and padding, as in the file
    desc: memoryview

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
    """Every note of every PT_NOTE segment, in program header order."""
    header = _records(g.note_header).format
    notes: list[_Note] = []
    for segment, phdr in enumerate(elf.phdrs):
        if phdr["p_type"] != g.PT_NOTE:
            continue
        base, length = phdr["p_offset"], phdr["p_filesz"]
        data = memoryview(src.read(f"note segment {segment}", base, length))
        at = 0
        while at < length:
            number = len(notes)
            if length - at < header.size:
                left = length - at
                raise src.error(f"note {number}: header runs past its segment ({left} bytes left)")
            namesz, descsz, note_type = header.unpack_from(data, at)
            name_at = at + header.size
            desc_at = name_at + _align(namesz)
            desc_end = desc_at + descsz
            if desc_at > length:
                problem = f"{_label(number, note_type)} has a {namesz}-byte name"
                raise src.error(f"{problem} but its segment ends after {length - name_at}")
            if desc_end > length:
                problem = f"{_label(number, note_type)} claims {descsz} bytes"
                raise src.error(f"{problem} but its segment ends after {length - desc_at}")
            name = bytes(data[name_at : name_at + namesz])
            # The last note of a segment may go without its final padding.
            end = min(_align(desc_end), length)
            public = CoreNote(_owner(name), note_type, base + desc_at, descsz)
            notes.append(_Note(public, number, segment, name, data[at:end], data[desc_at:desc_end]))
            at = end
    return notes


def _owner(name: bytes) -> str:
    return name.split(b"\0", 1)[0].decode("ascii", "replace")


def _system(elf: _Elf, notes: list[_Note]) -> str:
    freebsd = elf.header.e_ident.ei_osabi == g.ELFOSABI_FREEBSD
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
            return bytes(notes[i].desc)
    return None


def _thread(
    src: _Input, elf: _Elf, system: str, notes: list[_Note], index: int, members: list[int]
) -> CoreThread:
    fpregs = _first_desc(notes, members, NT_PRFPREG)
    # x86-64 NT_PRFPREG is the FXSAVE area; i386's is FSAVE, with FXSAVE in NT_PRXFPREG.
    fxsave_candidates = (fpregs, _first_desc(notes, members, NT_PRXFPREG))
    return CoreThread(
        index=index,
        tid=_tid(src, _grammar(g.prstatus_prefix, system, elf.elf_class), notes[members[0]]),
        xstate=_first_desc(notes, members, NT_X86_XSTATE),
        fpregs=fpregs,
        fxsave=next(
            (d for d in fxsave_candidates if d is not None and len(d) == FXSAVE_SIZE), None
        ),
        notes=[notes[i].public for i in members],
    )


def _tid(src: _Input, grammar: Any, status: _Note) -> int | None:
    size = grammar.sizeof()
    if len(status.desc) < size:
        return None
    return int(src.parse(grammar, status.desc[:size], status.describe()).pr_pid)


# ---- writing -------------------------------------------------------------------------


@dataclass(frozen=True)
class _NoteEdit:
    xstate: dict[int, bytes]
    layout: bytes | None
    drop_layout: bool
    drops: frozenset[tuple[str, int]]
    scrub: bool


def _note_bytes(name: bytes, note_type: int, desc: bytes) -> bytes:
    header = _records(g.note_header).format.pack(len(name), len(desc), note_type)
    return b"".join((header, _padded(name), _padded(desc)))


def _padded(field: bytes) -> bytes:
    return field + bytes(_align(len(field)) - len(field))


def _rebuild_notes(
    src: _Input, elf: _Elf, notes: list[_Note], system: str, edit: _NoteEdit
) -> dict[int, bytes]:
    """The new contents of each PT_NOTE segment, by program header index."""
    owner = b"FreeBSD\0" if system == "freebsd" else b"LINUX\0"
    thread_of: dict[int, int] = {}
    added_after: dict[int, bytes] = {}
    for thread, members in enumerate(_thread_groups(notes)):
        thread_of.update(dict.fromkeys(members, thread))
        if thread in edit.xstate and _first_desc(notes, members, NT_X86_XSTATE) is None:
            anchor = next((i for i in members if notes[i].public.type == NT_PRFPREG), members[0])
            added_after[anchor] = _note_bytes(owner, NT_X86_XSTATE, edit.xstate[thread])
    layouts = [i for i, note in enumerate(notes) if note.kind == _LAYOUT]

    def edited(i: int, note: _Note) -> bytes:
        system_note = note.public.owner in _SYSTEM_OWNERS
        if system_note and note.public.type == NT_X86_XSTATE and thread_of.get(i) in edit.xstate:
            return _note_bytes(note.name, NT_X86_XSTATE, edit.xstate[thread_of[i]])
        if note.kind == _LAYOUT and edit.layout is not None:
            return (
                _note_bytes(note.name, NT_X86_XSAVE_LAYOUT, edit.layout) if i == layouts[0] else b""
            )
        if (note.kind == _LAYOUT and edit.drop_layout) or note.kind in edit.drops:
            return b""
        if edit.scrub and system_note and note.public.type == NT_PRPSINFO:
            return _note_bytes(note.name, NT_PRPSINFO, _scrubbed(src, elf, system, note))
        return bytes(note.raw)

    segments = {i: bytearray() for i, phdr in enumerate(elf.phdrs) if phdr["p_type"] == g.PT_NOTE}
    for i, note in enumerate(notes):
        segments[note.segment] += edited(i, note) + added_after.get(i, b"")
    if edit.layout is not None and not layouts:
        if not segments:
            raise src.error("no PT_NOTE segment to hold NT_X86_XSAVE_LAYOUT")
        # Linux writes it after every thread's notes.
        segments[max(segments)] += _note_bytes(b"LINUX\0", NT_X86_XSAVE_LAYOUT, edit.layout)
    return {index: bytes(content) for index, content in segments.items()}


def _scrubbed(src: _Input, elf: _Elf, system: str, note: _Note) -> bytes:
    grammar = _grammar(g.prpsinfo_prefix, system, elf.elf_class)
    size = grammar.sizeof()
    if len(note.desc) < size:
        raise src.error(f"{note.describe()} is {len(note.desc)} bytes, too short to scrub")
    info = src.parse(grammar, note.desc[:size], note.describe())
    info.pr_fname = bytes(len(info.pr_fname))
    info.pr_psargs = bytes(len(info.pr_psargs))
    if "pr_uid" in info:
        info.pr_uid = info.pr_gid = 0
    return bytes(grammar.build(info)) + bytes(note.desc[size:])


@dataclass(eq=False)
class _Region:
    """A range of the input that the output keeps, and where it goes."""

    kind: str  # "copy", "notes" (new contents), "dropped" (no bytes) or "table"
    start: int  # in the input
    size: int  # bytes it spans in the input
    align: int
    new_size: int
    content: bytes = b""  # for "notes" and "table"
    new_start: int = 0


def _place(src: _Input, elf: _Elf, notes: dict[int, bytes], drop_memory: bool) -> list[_Region]:
    """Lay out the output and update the headers to match.

    Every region moves by the size changes before it, rounded up to its own alignment,
    so a segment keeps p_offset = p_vaddr modulo p_align; nothing moves when nothing
    changes size, which makes an unchanged rewrite byte-identical.
    """
    c, header = elf.elf_class, elf.header
    header_grammar = _grammar(g.elf_header, c)
    segment_records = _records(g.program_header, c)
    sections = _records(g.section_header, c)
    shdrs = src.table(
        "section header table", header.e_shoff, elf.shnum, header.e_shentsize, sections
    )

    def table(start: int, size: int, align: int) -> _Region:
        return _Region("table", start, size, align, new_size=size)

    ehdr = table(0, header_grammar.sizeof(), 1)
    phdr_table = table(header.e_phoff, len(elf.phdrs) * segment_records.size, c // 8)
    shdr_table = table(header.e_shoff, len(shdrs) * sections.size, c // 8)
    tables = [ehdr, phdr_table, shdr_table] if shdrs else [ehdr, phdr_table]

    segments = [_segment(src, i, phdr, notes, drop_memory) for i, phdr in enumerate(elf.phdrs)]
    loose, riders = _sections(src, shdrs, segments)
    regions = [*tables, *segments, *(region for _, region in loose)]
    regions.sort(key=lambda r: (r.start, r.size))
    shift = end = written = 0
    for region in regions:
        if region.size and region.start < end:
            raise src.error(f"cannot rewrite: file ranges overlap at {region.start:#x}")
        shift = -(-shift // region.align) * region.align
        region.new_start = region.start + shift
        if region.new_start < written:
            # An empty region inside a larger one that shrank (a dropped PT_LOAD).
            region.new_start = written + (region.start - written) % region.align
        shift += region.new_size - region.size
        end = max(end, region.start + region.size)
        written = max(written, region.new_start + region.new_size)
    if max(region.new_start + region.new_size for region in regions) >= 1 << c:
        raise src.error(f"cannot rewrite: the new layout does not fit in ELF{c} offsets")

    for phdr, segment in zip(elf.phdrs, segments, strict=True):
        phdr["p_offset"], phdr["p_filesz"] = segment.new_start, segment.new_size
    for shdr, region in loose:
        shdr["sh_offset"] = region.new_start
    for shdr, host in riders:
        shdr["sh_offset"] += host.new_start - host.start
        if host.kind == "notes":
            shdr["sh_size"] = host.new_size
        elif host.kind == "dropped":
            shdr["sh_type"] = g.SHT_NOBITS

    new_header = header.copy()
    new_header.e_phoff = phdr_table.new_start
    new_header.e_shoff = shdr_table.new_start if shdrs else header.e_shoff
    ehdr.content = bytes(header_grammar.build(new_header))
    phdr_table.content = b"".join(segment_records.pack(p) for p in elf.phdrs)
    shdr_table.content = b"".join(sections.pack(s) for s in shdrs)
    return regions


def _segment(
    src: _Input, index: int, phdr: dict[str, int], notes: dict[int, bytes], drop_memory: bool
) -> _Region:
    start, size, align = phdr["p_offset"], phdr["p_filesz"], max(phdr["p_align"], 1)
    if index in notes:
        return _Region("notes", start, size, align, len(notes[index]), notes[index])
    if drop_memory and phdr["p_type"] == g.PT_LOAD:
        return _Region("dropped", start, size, align, 0)
    if size:  # a segment with no file bytes may point past the end (scrubbed cores)
        src.need(f"segment {index}", start + size)
    return _Region("copy", start, size, align, size)


def _sections(
    src: _Input, shdrs: list[dict[str, int]], segments: list[_Region]
) -> tuple[list[tuple[dict[str, int], _Region]], list[tuple[dict[str, int], _Region]]]:
    """Sections outside every segment, each with a region of its own; and sections that
    lie in a segment (gcore names each segment so), each with the segment it rides in."""
    loose: list[tuple[dict[str, int], _Region]] = []
    riders: list[tuple[dict[str, int], _Region]] = []
    # Section 0 holds no bytes, only the extended counts.
    for index, shdr in enumerate(shdrs[1:], start=1):
        start = shdr["sh_offset"]
        size = 0 if shdr["sh_type"] == g.SHT_NOBITS else shdr["sh_size"]
        host = next(
            (
                s
                for s in segments
                if s.start <= start < s.start + s.size and start + size <= s.start + s.size
            ),
            None,
        )
        if host is None:
            src.need(f"section {index}", start + size)
            loose.append((shdr, _Region("copy", start, size, max(shdr["sh_addralign"], 1), size)))
        elif host.kind == "notes" and (start, size) != (host.start, host.size):
            raise src.error(f"cannot rewrite: section {index} covers part of a note segment")
        else:
            riders.append((shdr, host))
    return loose, riders


def _emit(src: _Input, out: IO[bytes], regions: list[_Region]) -> None:
    """Write the regions where `_place` put them. Bytes between regions, which no header
    names, follow the region before them; padding added for alignment reads as zeros."""
    copied_to = 0
    for region in regions:
        # A region with no file bytes may start past the end of a scrubbed core.
        gap_end = min(region.start, src.size)
        if gap_end > copied_to:
            src.copy_to(out, copied_to, gap_end - copied_to)
        copied_to = max(copied_to, region.start + region.size)
        if not region.new_size:
            continue
        out.seek(region.new_start)
        if region.kind == "copy":
            src.copy_to(out, region.start, region.new_size)
        else:
            out.write(region.content)
    if src.size > copied_to:
        src.copy_to(out, copied_to, src.size - copied_to)
