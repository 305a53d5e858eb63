"""Rewriting an ELF core: new NT_X86_XSTATE and NT_X86_XSAVE_LAYOUT notes, everything
else kept in its place; holes stay holes. The reading half is elfcore.py, whose parsed
structures this module takes; nothing there imports this.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from xcr0tool.errors import UsageError
from xcr0tool.files.input import FileInput, Input
from xcr0tool.files.output import Sink, write_output
from xcr0tool.formats import elf as g
from xcr0tool.sources.elfcore import (
    _LAYOUT,
    _SYSTEM_OWNERS,
    MAX_ALIGN,
    NT_PRFPREG,
    NT_PRPSINFO,
    NT_X86_XSAVE_LAYOUT,
    NT_X86_XSTATE,
    CoreFile,
    _align,
    _all_phdrs,
    _Elf,
    _first_desc,
    _Input,
    _Note,
    _open,
    _Range,
    _read_elf,
    _read_notes,
    _system,
    _thread_groups,
)


def write_core(
    core: CoreFile,
    dest: str | None,
    *,
    xstate: Mapping[int, bytes] | None = None,
    xsave_layout: bytes | None = None,
    drop_xsave_layout: bool = False,
    drop_memory: bool = False,
    drop_note_types: Collection[tuple[str, int]] = (),
    scrub_prpsinfo: bool = False,
) -> None:
    """Write `core` to `dest` (None or `-`: standard output) with the changes asked for,
    through files.output.write_output; the input is never touched.

    `xstate` maps thread indices to new NT_X86_XSTATE descriptors (a thread without
    one gets one after its NT_PRFPREG). `xsave_layout` replaces or adds the process's
    NT_X86_XSAVE_LAYOUT. `drop_memory` keeps every PT_LOAD header but none of its bytes,
    for small test fixtures. `drop_note_types` lists (owner, type) pairs to leave out,
    and `scrub_prpsinfo` blanks the command name, arguments, uid and gid in NT_PRPSINFO.

    Every other note keeps its bytes and its place; segments and sections after a note
    segment that changed size move by that change, rounded up to their alignment. The
    output is as readable as the input at most (files.output).
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
    if core.source is not None:
        _write(core, core.source, dest, edit, drop_memory)
        return
    with _open(core.path, core.path) as opened:
        _write(core, opened, dest, edit, drop_memory)


def _write(core: CoreFile, opened: Input, dest: str | None, edit: _NoteEdit, drop: bool) -> None:
    if dest is not None and dest != "-" and _same_file(opened, dest):
        raise UsageError(f"{dest}: is the input core; write the new core elsewhere")
    src = _Input(opened)
    elf = _read_elf(src)
    notes = _read_notes(src, elf)
    if [note.public for note in notes] != core.notes:
        raise src.error("changed since it was read")
    segments = _rebuild_notes(src, elf, notes, _system(elf, notes), edit)
    opened.drain()  # a stream: the rest of the core, into its spool
    regions = _place(src, elf, segments, drop)
    size = max((r.new_start + r.new_size for r in regions), default=0)
    write_output(
        dest,
        lambda sink: _emit(src, sink, regions),
        mode=opened.mode,
        size=max(size, opened.size or 0),
    )


def _same_file(opened: Input, dest: str) -> bool:
    if not isinstance(opened, FileInput):
        return False
    try:
        return os.path.samestat(os.fstat(opened.fileno()), os.stat(dest))
    except OSError:
        return False


# ---- writing -------------------------------------------------------------------------


@dataclass(frozen=True)
class _NoteEdit:
    xstate: dict[int, bytes]
    layout: bytes | None
    drop_layout: bool
    drops: frozenset[tuple[str, int]]
    scrub: bool


_Piece = bytes | _Range  # new bytes, or input bytes copied as they are


def _note_bytes(name: bytes, note_type: int, desc: bytes) -> bytes:
    header = g.record("note_header").format.pack(len(name), len(desc), note_type)
    return b"".join((header, _padded(name), _padded(desc)))


def _padded(field: bytes) -> bytes:
    return field + bytes(_align(len(field)) - len(field))


def _rebuild_notes(
    src: _Input, elf: _Elf, notes: list[_Note], system: str, edit: _NoteEdit
) -> dict[int, list[_Piece]]:
    """The new contents of each PT_NOTE segment, by program header index: new bytes for
    the notes that change, ranges of the input for the others (never held in memory)."""
    owner = b"FreeBSD\0" if system == "freebsd" else b"LINUX\0"
    thread_of: dict[int, int] = {}
    added_after: dict[int, bytes] = {}
    for thread, members in enumerate(_thread_groups(notes)):
        thread_of.update(dict.fromkeys(members, thread))
        if thread in edit.xstate and _first_desc(notes, members, NT_X86_XSTATE) is None:
            anchor = next((i for i in members if notes[i].public.type == NT_PRFPREG), members[0])
            added_after[anchor] = _note_bytes(owner, NT_X86_XSTATE, edit.xstate[thread])
    layouts = [i for i, note in enumerate(notes) if note.kind == _LAYOUT]

    def edited(i: int, note: _Note) -> _Piece:
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
        return note.raw

    segments: dict[int, list[_Piece]] = {index: [] for index, _ in elf.note_segments}
    for i, note in enumerate(notes):
        pieces = segments[note.segment]
        pieces.append(edited(i, note))
        if i in added_after:
            pieces.append(added_after[i])
    if edit.layout is not None and not layouts:
        if not segments:
            raise src.error("no PT_NOTE segment to hold NT_X86_XSAVE_LAYOUT")
        # Linux writes it after every thread's notes.
        segments[max(segments)].append(_note_bytes(b"LINUX\0", NT_X86_XSAVE_LAYOUT, edit.layout))
    for index, padding in elf.padding.items():
        segments[index].append(padding)
    return {index: [p for p in pieces if _size(p)] for index, pieces in segments.items()}


def _size(piece: _Piece) -> int:
    return piece.size if isinstance(piece, _Range) else len(piece)


def _scrubbed(src: _Input, elf: _Elf, system: str, note: _Note) -> bytes:
    prpsinfo = g.record("prpsinfo_prefix", system, elf.elf_class)
    desc = note.desc or b""
    if len(desc) < prpsinfo.size:
        raise src.error(f"{note.describe()} is {len(desc)} bytes, too short to scrub")
    info = src.unpack(prpsinfo, desc, note.describe())
    info["pr_fname"] = bytes(len(info["pr_fname"]))
    info["pr_psargs"] = bytes(len(info["pr_psargs"]))
    if "pr_uid" in info:
        info["pr_uid"] = info["pr_gid"] = 0
    return prpsinfo.pack(info) + desc[prpsinfo.size :]


def _alignment(value: int) -> int:
    """The alignment a rewrite keeps for p_align or sh_addralign `value`: a power of two
    up to MAX_ALIGN (gABI: 0 and 1 mean none, anything else is a power of two)."""
    if value <= 1 or value & (value - 1):
        return 1
    return min(value, MAX_ALIGN)


@dataclass(eq=False)
class _Region:
    """A range of the input that the output keeps, and where it goes."""

    kind: str  # "copy", "notes" (new contents), "dropped" (no bytes) or "table"
    start: int  # in the input
    size: int  # bytes it spans in the input
    align: int
    new_size: int
    content: list[_Piece] = field(default_factory=list)  # for "notes" and "table"
    new_start: int = 0


def _place(
    src: _Input, elf: _Elf, notes: dict[int, list[_Piece]], drop_memory: bool
) -> list[_Region]:
    """Lay out the output and update the headers to match.

    Every region moves by the size changes before it, rounded up to its own alignment,
    so a segment keeps p_offset = p_vaddr modulo p_align; nothing moves when nothing
    changes size, which makes an unchanged rewrite byte-identical. A region that holds
    no bytes (a PT_LOAD of p_filesz 0, wherever it points) moves nothing after it.
    """
    c, header = elf.elf_class, elf.header
    header_record = g.record("elf_header", c)
    segment_records = g.record("program_header", c)
    sections = g.record("section_header", c)
    phdrs = _all_phdrs(src, elf)
    shdrs = src.table(
        "section header table", header["e_shoff"], elf.shnum, header["e_shentsize"], sections
    )

    def table(start: int, size: int, align: int) -> _Region:
        return _Region("table", start, size, align, new_size=size)

    ehdr = table(0, header_record.size, 1)
    phdr_table = table(header["e_phoff"], len(phdrs) * segment_records.size, c // 8)
    shdr_table = table(header["e_shoff"], len(shdrs) * sections.size, c // 8)
    tables = [ehdr, phdr_table, shdr_table] if shdrs else [ehdr, phdr_table]

    segments = [_segment(src, i, phdr, notes, drop_memory) for i, phdr in enumerate(phdrs)]
    loose, riders = _sections(src, shdrs, segments)
    regions = [*tables, *segments, *(region for _, region in loose)]
    regions.sort(key=lambda r: (r.start, r.size))
    shift = end = written = 0
    for region in regions:
        if region.size and region.start < end:
            raise src.error(f"cannot rewrite: file ranges overlap at {region.start:#x}")
        rounded = -(-shift // region.align) * region.align
        region.new_start = region.start + rounded
        if region.new_size:
            shift = rounded
        elif region.new_start < written and (region.kind == "dropped" or region.new_start < 0):
            # Nothing to place: after what is written, keeping its offset modulo its
            # alignment. A dropped PT_LOAD, or an empty one inside a region that shrank.
            region.new_start = written + (region.start - written) % region.align
        shift += region.new_size - region.size
        end = max(end, region.start + region.size)
        written = max(written, region.new_start + region.new_size)
    if max(region.new_start + region.new_size for region in regions) >= 1 << c:
        raise src.error(f"cannot rewrite: the new layout does not fit in ELF{c} offsets")

    for phdr, segment in zip(phdrs, segments, strict=True):
        phdr["p_offset"], phdr["p_filesz"] = segment.new_start, segment.new_size
    for shdr, region in loose:
        shdr["sh_offset"] = region.new_start
    for shdr, host in riders:
        shdr["sh_offset"] += host.new_start - host.start
        if host.kind == "notes" and shdr["sh_type"] != g.SHT_NOBITS and shdr["sh_size"]:
            shdr["sh_size"] = host.new_size  # the whole segment (_sections)
        elif host.kind == "dropped":
            shdr["sh_type"] = g.SHT_NOBITS

    new_header = {**header, "e_phoff": phdr_table.new_start}
    if shdrs:
        new_header["e_shoff"] = shdr_table.new_start
    ehdr.content = [header_record.pack(new_header)]
    phdr_table.content = [b"".join(segment_records.pack(p) for p in phdrs)]
    shdr_table.content = [b"".join(sections.pack(s) for s in shdrs)]
    return regions


def _segment(
    src: _Input,
    index: int,
    phdr: dict[str, int],
    notes: dict[int, list[_Piece]],
    drop_memory: bool,
) -> _Region:
    start, size, align = phdr["p_offset"], phdr["p_filesz"], _alignment(phdr["p_align"])
    if index in notes:
        content = notes[index]
        return _Region("notes", start, size, align, sum(map(_size, content)), content)
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
    # Segments by start, to find the one a section lies in without a scan per section.
    by_start = sorted((s for s in segments if s.size), key=lambda s: s.start)
    starts = [s.start for s in by_start]
    # Section 0 holds no bytes, only the extended counts.
    for index, shdr in enumerate(shdrs[1:], start=1):
        start = shdr["sh_offset"]
        size = 0 if shdr["sh_type"] == g.SHT_NOBITS else shdr["sh_size"]
        host = None
        at = bisect.bisect_right(starts, start) - 1
        if at >= 0:
            candidate = by_start[at]
            limit = candidate.start + candidate.size
            if start < limit and start + size <= limit:
                host = candidate
        if host is None:
            src.need(f"section {index}", start + size)
            align = _alignment(shdr["sh_addralign"])
            loose.append((shdr, _Region("copy", start, size, align, size)))
        elif host.kind == "notes" and size and (start, size) != (host.start, host.size):
            # A section of no file bytes covers nothing: a NOBITS section's offset is only
            # where it would be (gABI), and may be a note segment's (memory a tool left
            # out of a gcore, as tests/make_fixtures.py does).
            raise src.error(f"cannot rewrite: section {index} covers part of a note segment")
        else:
            riders.append((shdr, host))
    return loose, riders


def _emit(src: _Input, out: Sink, regions: list[_Region]) -> None:
    """Write the regions where `_place` put them, in order. Bytes between regions, which
    no header names, follow the region before them; padding added for alignment is a
    hole where the output can have one, and so is every hole of the input."""
    opened = src.input
    size = opened.size or 0
    copied_to = 0
    for region in regions:
        # A region with no file bytes may start past the end of a scrubbed core.
        gap_end = min(region.start, size)
        if gap_end > copied_to:
            out.copy(opened, copied_to, gap_end - copied_to)
        copied_to = max(copied_to, region.start + region.size)
        if not region.new_size:
            continue
        if region.new_start < out.position:
            raise src.error(f"cannot rewrite: file ranges overlap at {region.start:#x}")
        out.zeros(region.new_start - out.position)
        if region.kind == "copy":
            out.copy(opened, region.start, region.new_size)
            continue
        for piece in region.content:
            if isinstance(piece, _Range):
                out.copy(opened, piece.start, piece.size)
            else:
                out.write(piece)
    if size > copied_to:
        out.copy(opened, copied_to, size - copied_to)
