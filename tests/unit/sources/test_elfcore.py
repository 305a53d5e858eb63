"""ELF core reading and rewriting, against gdb, readelf, real kernel cores and the grammars."""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from corpus_facts import LLDB_ST, LLDB_XMM
from hypothesis import given, settings
from hypothesis import strategies as st

from xcr0tool.errors import InputError, UsageError
from xcr0tool.formats import elf_grammar as grammars
from xcr0tool.sources.corewriter import write_core
from xcr0tool.sources.elfcore import (
    NT_AUXV,
    NT_FILE,
    NT_PRFPREG,
    NT_PRPSINFO,
    NT_PRSTATUS,
    NT_PRXFPREG,
    NT_SIGINFO,
    NT_X86_XSAVE_LAYOUT,
    NT_X86_XSTATE,
    looks_like_elf,
    read_core,
)

# One worker runs every test here (pytest-xdist loadgroup): its program (gcc -g) and its
# kernel core and gcore are made once per module, not once per worker.
pytestmark = pytest.mark.xdist_group("elfcore")

# ---- synthetic cores, laid out with struct (not with the grammars under test) ---------

EM_X86_64 = 62
EM_386 = 3
# Descriptor size and pr_pid offset; the FreeBSD sizes only need to cover pr_pid.
LINUX_PRSTATUS = {64: (336, 32), 32: (144, 24)}
FREEBSD_PRSTATUS = {64: (176, 40), 32: (96, 24)}
LOAD_VADDR = 0x400000
LOAD_BYTES = bytes(range(256)) * 16


def pad4(field: bytes) -> bytes:
    return field + bytes(-len(field) % 4)


def note(owner: bytes, note_type: int, desc: bytes, descsz: int | None = None) -> bytes:
    size = len(desc) if descsz is None else descsz
    return struct.pack("<III", len(owner), size, note_type) + pad4(owner) + pad4(desc)


def prstatus(tid: int, elf_class: int = 64, system: str = "linux") -> bytes:
    size, at = (FREEBSD_PRSTATUS if system == "freebsd" else LINUX_PRSTATUS)[elf_class]
    desc = bytearray(size)
    struct.pack_into("<i", desc, at, tid)
    return bytes(desc)


def xstate_image(mark: int, size: int = 832) -> bytes:
    image = bytearray(size)
    image[0:2] = b"\x7f\x03"
    image[24:28] = struct.pack("<I", 0x1F80)
    image[160:176] = bytes([mark]) * 16
    image[464:472] = struct.pack("<Q", 0x7)
    return bytes(image)


def linux_notes(tids: tuple[int, ...] = (100, 101)) -> list[bytes]:
    notes = []
    for i, tid in enumerate(tids):
        notes.append(note(b"CORE\0", NT_PRSTATUS, prstatus(tid)))
        if i == 0:
            notes.append(note(b"CORE\0", NT_PRPSINFO, prpsinfo64()))
            notes.append(note(b"CORE\0", NT_AUXV, bytes(37)))
        notes.append(note(b"CORE\0", NT_PRFPREG, xstate_image(i)[:512]))
        notes.append(note(b"LINUX\0", NT_X86_XSTATE, xstate_image(i)))
    notes.append(note(b"LINUX\0", NT_X86_XSAVE_LAYOUT, struct.pack("<4I", 2, 256, 576, 0)))
    return notes


def prpsinfo64() -> bytes:
    desc = bytearray(136)
    struct.pack_into("<II", desc, 16, 1000, 1001)  # pr_uid, pr_gid
    desc[40:45] = b"prog\0"  # pr_fname
    desc[56:66] = b"./prog -x\0"  # pr_psargs
    return bytes(desc)


def make_core(
    notes: list[bytes],
    *,
    elf_class: int = 64,
    machine: int = EM_X86_64,
    e_type: int = 4,
    encoding: int = 1,
    osabi: int = 0,
) -> bytes:
    """ELF header, a PT_NOTE and a page-aligned PT_LOAD, as the kernel lays them out."""
    blob = b"".join(notes)
    ehsize, phentsize = (64, 56) if elf_class == 64 else (52, 32)
    note_at = ehsize + 2 * phentsize
    load_at = -(-(note_at + len(blob)) // 4096) * 4096
    ident = b"\x7fELF" + bytes([elf_class // 32, encoding, 1, osabi]) + bytes(8)
    if elf_class == 64:
        header = struct.pack(
            "<HHIQQQIHHHHHH", e_type, machine, 1, 0, ehsize, 0, 0, ehsize, phentsize, 2, 64, 0, 0
        )
        phdrs = struct.pack("<IIQQQQQQ", 4, 0, note_at, 0, 0, len(blob), 0, 4)
        phdrs += struct.pack(
            "<IIQQQQQQ", 1, 5, load_at, LOAD_VADDR, 0, len(LOAD_BYTES), len(LOAD_BYTES), 4096
        )
    else:
        header = struct.pack(
            "<HHIIIIIHHHHHH", e_type, machine, 1, 0, ehsize, 0, 0, ehsize, phentsize, 2, 40, 0, 0
        )
        phdrs = struct.pack("<8I", 4, note_at, 0, 0, len(blob), 0, 0, 4)
        phdrs += struct.pack(
            "<8I", 1, load_at, LOAD_VADDR, 0, len(LOAD_BYTES), len(LOAD_BYTES), 5, 4096
        )
    head = ident + header + phdrs + blob
    return head + bytes(load_at - len(head)) + LOAD_BYTES


def write(tmp_path: Path, data: bytes, name: str = "core") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def phdrs64(data: bytes) -> list[tuple[int, ...]]:
    phoff, phnum = struct.unpack_from("<Q", data, 32)[0], struct.unpack_from("<H", data, 56)[0]
    return [struct.unpack_from("<IIQQQQQQ", data, phoff + 56 * i) for i in range(phnum)]


# ---- the grammars ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "elf_class", "pid_at"),
    [("linux", 64, 32), ("linux", 32, 24), ("freebsd", 64, 40), ("freebsd", 32, 24)],
)
def test_prstatus_thread_id_offsets(system: str, elf_class: int, pid_at: int) -> None:
    grammar = grammars.prstatus_prefix(system, elf_class)
    assert grammar.sizeof() == pid_at + 4
    data = bytes(pid_at) + struct.pack("<i", 4242)
    assert grammar.parse(data).pr_pid == 4242
    assert grammar.build(grammar.parse(data)) == data


@pytest.mark.parametrize(
    ("system", "elf_class", "fname_at", "psargs_at", "size"),
    [
        ("linux", 64, 40, 56, 136),
        ("linux", 32, 28, 44, 124),
        ("freebsd", 64, 16, 33, 114),
        ("freebsd", 32, 8, 25, 106),
    ],
)
def test_prpsinfo_layouts(
    system: str, elf_class: int, fname_at: int, psargs_at: int, size: int
) -> None:
    grammar = grammars.prpsinfo_prefix(system, elf_class)
    data = bytes(range(size))
    parsed = grammar.parse(data)
    assert grammar.sizeof() == size
    assert parsed.pr_fname == data[fname_at : fname_at + len(parsed.pr_fname)]
    assert parsed.pr_psargs == data[psargs_at:size]
    assert grammar.build(parsed) == data


@pytest.mark.parametrize(
    ("factory", "size32", "size64"),
    [
        (grammars.elf_header, 52, 64),
        (grammars.program_header, 32, 56),
        (grammars.section_header, 40, 64),
    ],
)
def test_header_sizes(factory: object, size32: int, size64: int) -> None:
    assert callable(factory)
    assert (factory(32).sizeof(), factory(64).sizeof()) == (size32, size64)


def test_elf_header_round_trips_every_byte() -> None:
    data = make_core(linux_notes())[:64]
    grammar = grammars.elf_header(64)
    assert grammar.build(grammar.parse(data)) == data


# ---- reading synthetic cores ------------------------------------------------------------


def test_looks_like_elf() -> None:
    assert looks_like_elf(b"\x7fELF\x02\x01")
    assert not looks_like_elf(b"\x7fEL")
    assert not looks_like_elf(b"XSAVE...")


def test_reads_linux_threads_notes_and_layout(tmp_path: Path) -> None:
    path = write(tmp_path, make_core(linux_notes()))
    core = read_core(path)
    assert (core.path, core.elf_class, core.machine, core.os) == (path, 64, "x86-64", "linux")
    assert [t.tid for t in core.threads] == [100, 101]
    assert [t.xstate for t in core.threads] == [xstate_image(0), xstate_image(1)]
    assert [t.fxsave for t in core.threads] == [xstate_image(0)[:512], xstate_image(1)[:512]]
    assert core.xsave_layout == struct.pack("<4I", 2, 256, 576, 0)
    assert [(n.owner, n.type) for n in core.threads[0].notes] == [
        ("CORE", NT_PRSTATUS),
        ("CORE", NT_PRFPREG),
        ("LINUX", NT_X86_XSTATE),
    ]
    assert len(core.notes) == 9
    with open(path, "rb") as f:
        for n in core.notes:
            f.seek(n.desc_offset)
            assert len(f.read(n.desc_size)) == n.desc_size


def test_i386_fxsave_comes_from_prxfpreg(tmp_path: Path) -> None:
    fsave, fxsave = bytes(range(108)), xstate_image(7)[:512]
    notes = [
        note(b"CORE\0", NT_PRSTATUS, prstatus(9, 32)),
        note(b"CORE\0", NT_PRFPREG, fsave),
        note(b"LINUX\0", NT_PRXFPREG, fxsave),
        note(b"LINUX\0", NT_X86_XSTATE, xstate_image(7)),
    ]
    core = read_core(write(tmp_path, make_core(notes, elf_class=32, machine=EM_386)))
    thread = core.threads[0]
    assert (core.machine, thread.tid, thread.fpregs, thread.fxsave) == ("i386", 9, fsave, fxsave)


def test_x32_is_elf32_with_em_x86_64(tmp_path: Path) -> None:
    notes = [note(b"CORE\0", NT_PRSTATUS, prstatus(77, 32))]
    core = read_core(write(tmp_path, make_core(notes, elf_class=32, machine=EM_X86_64)))
    assert (core.machine, core.elf_class, core.threads[0].tid) == ("x32", 32, 77)


@pytest.mark.parametrize("elf_class", [64, 32])
def test_freebsd_thread_ids(tmp_path: Path, elf_class: int) -> None:
    notes = [
        note(b"FreeBSD\0", NT_PRPSINFO, bytes(120)),
        note(b"FreeBSD\0", NT_PRSTATUS, prstatus(100123, elf_class, "freebsd")),
        note(b"FreeBSD\0", NT_PRFPREG, xstate_image(3)[:512]),
        note(b"FreeBSD\0", NT_X86_XSTATE, xstate_image(3)),
        note(b"FreeBSD\0", NT_PRSTATUS, prstatus(100124, elf_class, "freebsd")),
    ]
    machine = EM_X86_64 if elf_class == 64 else EM_386
    core = read_core(
        write(tmp_path, make_core(notes, elf_class=elf_class, machine=machine, osabi=9))
    )
    assert core.os == "freebsd"
    assert [t.tid for t in core.threads] == [100123, 100124]
    assert core.threads[0].xstate == xstate_image(3)


def test_short_prstatus_gives_no_tid(tmp_path: Path) -> None:
    core = read_core(write(tmp_path, make_core([note(b"CORE\0", NT_PRSTATUS, bytes(20))])))
    assert core.threads[0].tid is None


# ---- rejected inputs: one line naming the file and the problem ----------------------------


def rejection(path: str, name: str | None = None) -> str:
    with pytest.raises(InputError) as caught:
        read_core(path, name)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "core.1")
    # The words every input uses (files.input.check_readable_file), library or CLI.
    assert rejection(path) == f"{path}: no such file"


def test_directory(tmp_path: Path) -> None:
    assert (
        rejection(str(tmp_path), name="dumps")
        == "dumps: is a directory, not an XSAVE image or a core"
    )


def test_empty_file(tmp_path: Path) -> None:
    assert rejection(write(tmp_path, b""), name="core.2") == "core.2: empty file"


def test_not_elf(tmp_path: Path) -> None:
    assert rejection(write(tmp_path, b"#!/bin/sh\n"), name="x") == "x: not an ELF file"


@pytest.mark.parametrize(
    ("e_type", "problem"),
    [
        (2, "an ELF executable, not a core"),
        (3, "an ELF shared object, not a core"),
        (1, "an ELF relocatable object, not a core"),
    ],
)
def test_elf_but_not_a_core(tmp_path: Path, e_type: int, problem: str) -> None:
    path = write(tmp_path, make_core(linux_notes(), e_type=e_type))
    assert rejection(path, name="a.out") == f"a.out: {problem}"


def test_big_endian(tmp_path: Path) -> None:
    path = write(tmp_path, make_core(linux_notes(), encoding=2))
    assert rejection(path, name="c") == "c: not an x86 core: big-endian"


def test_not_x86(tmp_path: Path) -> None:
    path = write(tmp_path, make_core(linux_notes(), machine=183))
    assert rejection(path, name="c") == "c: not an x86 core: ELF64, e_machine 183"


def test_unknown_class(tmp_path: Path) -> None:
    data = bytearray(make_core(linux_notes()))
    data[4] = 3
    assert rejection(write(tmp_path, bytes(data)), name="c") == "c: unknown ELF class 3"


def test_truncated_header(tmp_path: Path) -> None:
    path = write(tmp_path, make_core(linux_notes())[:40])
    assert rejection(path, name="c") == "c: truncated: ELF header ends at 0x40, file is 0x28 bytes"


def test_truncated_program_header_table(tmp_path: Path) -> None:
    path = write(tmp_path, make_core(linux_notes())[:100])
    expected = "c: truncated: program header table ends at 0xb0, file is 0x64 bytes"
    assert rejection(path, name="c") == expected


def test_truncated_note_segment(tmp_path: Path) -> None:
    path = write(tmp_path, make_core(linux_notes())[:0x200])
    note_end = 0xB0 + len(b"".join(linux_notes()))
    expected = f"c: truncated: note segment 0 ends at {note_end:#x}, file is 0x200 bytes"
    assert rejection(path, name="c") == expected


def test_note_claims_more_than_its_segment(tmp_path: Path) -> None:
    notes = [
        note(b"CORE\0", NT_PRSTATUS, prstatus(1)),
        note(b"CORE\0", NT_PRFPREG, bytes(512)),
        note(b"CORE\0", NT_SIGINFO, bytes(128)),
        note(b"LINUX\0", NT_X86_XSTATE, bytes(1024), descsz=2688),
    ]
    expected = "core.123: note 3 (NT_X86_XSTATE) claims 2688 bytes but its segment ends after 1024"
    assert rejection(write(tmp_path, make_core(notes)), name="core.123") == expected


def test_note_name_runs_past_its_segment(tmp_path: Path) -> None:
    broken = struct.pack("<III", 64, 0, NT_PRSTATUS) + b"CORE"
    path = write(tmp_path, make_core([note(b"CORE\0", NT_PRSTATUS, prstatus(1)), broken]))
    expected = "c: note 1 (NT_PRSTATUS) has a 64-byte name but its segment ends after 4"
    assert rejection(path, name="c") == expected


def test_note_header_runs_past_its_segment(tmp_path: Path) -> None:
    # Not zeros: zeros ending a segment are padding (test_io).
    path = write(tmp_path, make_core([note(b"CORE\0", NT_PRSTATUS, prstatus(1)), b"\1" * 8]))
    expected = "c: note 1: header runs past its segment (8 bytes left)"
    assert rejection(path, name="c") == expected


def test_no_prstatus(tmp_path: Path) -> None:
    path = write(tmp_path, make_core([note(b"CORE\0", NT_PRPSINFO, prpsinfo64())]))
    assert rejection(path, name="c") == "c: no NT_PRSTATUS note: a core without threads"


def test_no_notes(tmp_path: Path) -> None:
    assert (
        rejection(write(tmp_path, make_core([])), name="c") == "c: no notes: a core without threads"
    )


def test_truncated_memory_is_read_but_not_copied(tmp_path: Path) -> None:
    data = make_core(linux_notes())
    path = write(tmp_path, data[: len(data) - 100], name="cut")
    core = read_core(path)
    assert [t.tid for t in core.threads] == [100, 101]
    with pytest.raises(InputError) as caught:
        write_core(core, str(tmp_path / "new"))
    end, size = len(data), len(data) - 100
    assert (
        str(caught.value)
        == f"{path}: truncated: segment 1 ends at {end:#x}, file is {size:#x} bytes"
    )
    write_core(core, str(tmp_path / "new"), drop_memory=True)
    assert read_core(str(tmp_path / "new")).threads[1].xstate == xstate_image(1)


@settings(max_examples=300, deadline=None)
@given(
    changes=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.integers(0, 5000),
)
def test_damaged_cores_give_input_errors(
    tmp_path_factory: pytest.TempPathFactory, changes: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(make_core(linux_notes()))
    for at, value in changes:
        data[at % len(data)] = value
    tmp_path = tmp_path_factory.mktemp("damaged")
    path = write(tmp_path, bytes(data[: len(data) - cut]))
    try:
        core = read_core(path)
        write_core(core, str(tmp_path / "new"), xstate={0: bytes(600)}, drop_memory=cut > 0)
    except InputError as error:
        assert "\n" not in str(error)


def test_executable_is_not_a_core(program: Path) -> None:
    assert rejection(str(program), name="prog") == "prog: an ELF shared object, not a core"


# ---- rewriting synthetic cores ------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    descs=st.lists(
        st.tuples(
            st.sampled_from([b"CORE\0", b"LINUX\0", b"GDB\0", b"X"]),
            st.integers(0, 0x300),
            st.binary(max_size=40),
        ),
        max_size=6,
    ),
    elf_class=st.sampled_from([32, 64]),
)
def test_unchanged_rewrite_is_byte_identical(
    tmp_path_factory: pytest.TempPathFactory, descs: list[tuple[bytes, int, bytes]], elf_class: int
) -> None:
    tmp_path = tmp_path_factory.mktemp("same")
    notes = [note(b"CORE\0", NT_PRSTATUS, prstatus(5, elf_class))]
    notes += [note(owner, t, d) for owner, t, d in descs]
    machine = EM_X86_64 if elf_class == 64 else EM_386
    source = write(tmp_path, make_core(notes, elf_class=elf_class, machine=machine))
    write_core(read_core(source), str(tmp_path / "copy"))
    assert filecmp.cmp(source, tmp_path / "copy", shallow=False)


def test_new_xstate_moves_memory_by_whole_pages(tmp_path: Path) -> None:
    source = write(tmp_path, make_core(linux_notes()))
    core = read_core(source)
    bigger = xstate_image(0x5A, size=2688)
    write_core(core, str(tmp_path / "new"), xstate={1: bigger})
    new = read_core(str(tmp_path / "new"))
    assert [t.xstate for t in new.threads] == [xstate_image(0), bigger]
    assert [t.tid for t in new.threads] == [100, 101]
    data = (tmp_path / "new").read_bytes()
    load = phdrs64(data)[1]
    offset, vaddr, filesz = load[2], load[3], load[5]
    assert offset % 4096 == vaddr % 4096
    assert offset > phdrs64(Path(source).read_bytes())[1][2]
    assert data[offset : offset + filesz] == LOAD_BYTES


def test_missing_xstate_is_added_after_prfpreg(tmp_path: Path) -> None:
    notes = [
        note(b"CORE\0", NT_PRSTATUS, prstatus(8)),
        note(b"CORE\0", NT_PRFPREG, bytes(512)),
        note(b"CORE\0", NT_PRSTATUS, prstatus(9)),
    ]
    core = read_core(write(tmp_path, make_core(notes)))
    write_core(core, str(tmp_path / "new"), xstate={0: xstate_image(1)})
    new = read_core(str(tmp_path / "new"))
    assert [(n.owner, n.type) for n in new.threads[0].notes][-1] == ("LINUX", NT_X86_XSTATE)
    assert [t.xstate for t in new.threads] == [xstate_image(1), None]


def test_xsave_layout_replace_add_drop(tmp_path: Path) -> None:
    core = read_core(write(tmp_path, make_core(linux_notes())))
    layout = struct.pack("<8I", 2, 256, 576, 0, 9, 8, 2432, 0)
    write_core(core, str(tmp_path / "replaced"), xsave_layout=layout)
    assert read_core(str(tmp_path / "replaced")).xsave_layout == layout
    write_core(core, str(tmp_path / "dropped"), drop_xsave_layout=True)
    dropped = read_core(str(tmp_path / "dropped"))
    assert dropped.xsave_layout is None
    write_core(dropped, str(tmp_path / "added"), xsave_layout=layout)
    added = read_core(str(tmp_path / "added"))
    assert (added.xsave_layout, added.notes[-1].type) == (layout, NT_X86_XSAVE_LAYOUT)


def test_fixture_scrub(tmp_path: Path) -> None:
    core = read_core(write(tmp_path, make_core(linux_notes())))
    write_core(
        core,
        str(tmp_path / "fixture"),
        drop_memory=True,
        scrub_prpsinfo=True,
        drop_note_types=[("CORE", NT_AUXV), ("CORE", NT_FILE)],
    )
    fixture = read_core(str(tmp_path / "fixture"))
    assert NT_AUXV not in [n.type for n in fixture.notes]
    assert [t.xstate for t in fixture.threads] == [t.xstate for t in core.threads]
    info = next(n for n in fixture.notes if n.type == NT_PRPSINFO)
    data = (tmp_path / "fixture").read_bytes()
    desc = data[info.desc_offset : info.desc_offset + info.desc_size]
    assert desc[16:24] == bytes(8)  # pr_uid, pr_gid
    assert desc[40:136] == bytes(96)  # pr_fname, pr_psargs
    load = phdrs64(data)[1]
    assert (load[3], load[5], load[6]) == (LOAD_VADDR, 0, len(LOAD_BYTES))
    assert len(data) < 4096


def test_write_errors(tmp_path: Path) -> None:
    source = write(tmp_path, make_core(linux_notes()))
    core = read_core(source)
    with pytest.raises(UsageError, match="no thread 5"):
        write_core(core, str(tmp_path / "x"), xstate={5: b""})
    with pytest.raises(UsageError, match="is the input core"):
        write_core(core, source)
    with pytest.raises(UsageError, match="exclude each other"):
        write_core(core, str(tmp_path / "x"), xsave_layout=b"", drop_xsave_layout=True)
    with pytest.raises(InputError) as caught:
        write_core(core, str(tmp_path / "missing" / "x"))
    assert (
        str(caught.value)
        == f"{tmp_path / 'missing' / 'x'}: cannot write here: no such file or directory"
    )
    Path(source).write_bytes(make_core(linux_notes((7,))))
    with pytest.raises(InputError, match="changed since it was read"):
        write_core(core, str(tmp_path / "x"))
    assert sorted(os.listdir(tmp_path)) == ["core"]


# ---- real cores: a test program, gcore and the kernel ---------------------------------------

PROGRAM = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_barrier_t started;

static void *worker(void *arg) {
    printf("tid %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    pthread_barrier_wait(&started);
    for (;;)
        pause();
    return arg;
}

int main(int argc, char **argv) {
    int workers = atoi(argv[1]);
    pthread_t thread;
    printf("tid %ld\n", (long)getpid());
    fflush(stdout);
    pthread_barrier_init(&started, NULL, workers + 1);
    for (int i = 0; i < workers; i++)
        pthread_create(&thread, NULL, worker, NULL);
    pthread_barrier_wait(&started);
    if (argc > 2)
        abort();
    puts("ready");
    fflush(stdout);
    for (;;)
        pause();
}
"""
WORKERS = 3


@dataclass
class RealCore:
    program: Path
    path: Path
    tids: list[int]  # as the program printed them


def build(directory: Path, *flags: str) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    source = directory / "prog.c"
    source.write_text(PROGRAM)
    binary = directory / ("prog" + "".join(flags).replace("-", ""))
    done = subprocess.run(
        ["gcc", *flags, "-O0", "-g", "-pthread", str(source), "-o", str(binary)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        pytest.skip(
            f"gcc {' '.join(flags)} cannot build the test program:"
            f" {next((x for x in done.stderr.splitlines() if 'error' in x), '').strip()[:200]}"
        )
    return binary


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("prog"))


def kernel_core(program: Path, directory: Path) -> RealCore:
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern or "%" in pattern:
        pytest.skip(f"core_pattern {pattern!r} does not put a core in the working directory")
    uses_pid = Path("/proc/sys/kernel/core_uses_pid").read_text().strip() == "1"
    run = subprocess.run(
        ["bash", "-c", f"ulimit -c unlimited && exec {program} {WORKERS} abort"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    tids = [int(t) for t in re.findall(r"tid (\d+)", run.stdout)]
    path = directory / (f"{pattern}.{tids[0]}" if uses_pid and tids else pattern)
    if not path.exists():
        pytest.skip(
            f"the kernel wrote no core (exit {run.returncode}, {run.stderr.strip()[-200:]})"
        )
    return RealCore(program, path, tids)


@pytest.fixture(scope="module")
def kernel(program: Path, tmp_path_factory: pytest.TempPathFactory) -> RealCore:
    return kernel_core(program, tmp_path_factory.mktemp("kernel"))


@pytest.fixture(scope="module")
def gcore(program: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCore]:
    if shutil.which("gcore") is None:
        pytest.skip("gcore (gdb) is not installed")
    directory = tmp_path_factory.mktemp("gcore")
    process = subprocess.Popen([str(program), str(WORKERS)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(WORKERS + 2)]
        tids = [int(t) for t in re.findall(r"tid (\d+)", "".join(lines))]
        made = subprocess.run(
            ["gcore", "-o", str(directory / "core"), str(process.pid)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        process.kill()
        process.wait()
    path = directory / f"core.{process.pid}"
    if not path.exists():
        pytest.skip(f"gcore made no core: {made.stderr.strip()[-200:]}")
    yield RealCore(program, path, tids)


def gdb(program: Path, core: Path | str, *commands: str) -> str:
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed")
    args = ["gdb", "-nx", "-batch"]
    for command in commands:
        args += ["-ex", command]
    done = subprocess.run(
        [*args, str(program), str(core)], capture_output=True, text=True, timeout=120, check=False
    )
    return done.stdout + done.stderr


def gdb_tids(program: Path, core: Path | str) -> list[int]:
    command = "python print('tids', *(t.ptid[1] for t in gdb.selected_inferior().threads()))"
    line = re.search(r"^tids(( \d+)*)$", gdb(program, core, command), re.MULTILINE)
    assert line is not None, "gdb printed no thread list"
    return sorted(int(t) for t in line.group(1).split())


def gdb_value(output: str, command_index: int) -> int:
    return int(re.findall(r"^\$\d+ = (0x[0-9a-f]+)", output, re.MULTILINE)[command_index], 16)


def readelf_xstates(path: Path) -> list[bytes]:
    done = subprocess.run(
        ["readelf", "-n", "--wide", str(path)], capture_output=True, text=True, check=True
    )
    lines = [line for line in done.stdout.splitlines() if "NT_X86_XSTATE" in line]
    return [bytes.fromhex(line.split("description data:")[1]) for line in lines]


@pytest.fixture(params=["kernel", "gcore"])
def real(request: pytest.FixtureRequest) -> RealCore:
    core: RealCore = request.getfixturevalue(request.param)
    return core


@pytest.mark.gdb
def test_threads_match_gdb_and_the_program(real: RealCore) -> None:
    core = read_core(str(real.path))
    assert (core.elf_class, core.machine, core.os) == (64, "x86-64", "linux")
    assert len(core.threads) == WORKERS + 1
    tids = sorted(t.tid for t in core.threads if t.tid is not None)
    assert tids == sorted(real.tids) == gdb_tids(real.program, real.path)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils) is not installed")
def test_xstate_matches_readelf_and_the_bytes(real: RealCore) -> None:
    core = read_core(str(real.path))
    xstates = [t.xstate for t in core.threads]
    assert xstates == readelf_xstates(real.path)
    with real.path.open("rb") as f:
        for thread in core.threads:
            found = next(n for n in thread.notes if n.type == NT_X86_XSTATE)
            f.seek(found.desc_offset)
            assert f.read(found.desc_size) == thread.xstate
    for thread in core.threads:
        assert thread.xstate is not None and thread.fxsave is not None
        assert struct.unpack_from("<Q", thread.xstate, 464)[0] & 0x3 == 0x3  # XCR0: x87, SSE
        assert thread.xstate[24:28] == thread.fxsave[24:28]  # MXCSR


def test_unchanged_real_rewrite_is_byte_identical(real: RealCore, tmp_path: Path) -> None:
    write_core(read_core(str(real.path)), str(tmp_path / "copy"))
    assert filecmp.cmp(real.path, tmp_path / "copy", shallow=False)


@pytest.mark.gdb
def test_changed_xstate_shows_in_gdb(real: RealCore, tmp_path: Path) -> None:
    core = read_core(str(real.path))
    thread = core.threads[0]
    assert thread.xstate is not None and thread.fxsave is not None
    image = bytearray(thread.xstate)
    image[160:176] = bytes(range(0x10, 0x20))
    write_core(core, str(tmp_path / "new"), xstate={0: bytes(image)})
    assert read_core(str(tmp_path / "new")).threads[0].xstate == bytes(image)
    before = gdb(real.program, real.path, "p/x $rip", "p/x $xmm0.uint128")
    after = gdb(real.program, tmp_path / "new", "p/x $rip", "p/x $xmm0.uint128")
    assert gdb_value(after, 0) == gdb_value(before, 0)
    if "reg-xstate" in after and "too small" in after:
        # gdb 13 takes the note's size from its own idea of the layout (Intel's 2688
        # bytes for these features); an AMD kernel's standard-format note is smaller, so
        # gdb ignores it and shows xmm0 from NT_PRFPREG.
        expected = int.from_bytes(thread.fxsave[160:176], "little")
    else:
        expected = int.from_bytes(bytes(range(0x10, 0x20)), "little")
    assert gdb_value(after, 1) == expected


@pytest.mark.gdb
def test_fixture_without_memory_opens_in_gdb(real: RealCore, tmp_path: Path) -> None:
    core = read_core(str(real.path))
    fixture = tmp_path / "fixture"
    write_core(
        core,
        str(fixture),
        drop_memory=True,
        scrub_prpsinfo=True,
        drop_note_types=[("CORE", NT_FILE), ("CORE", NT_AUXV)],
    )
    assert fixture.stat().st_size < 64 * 1024 < real.path.stat().st_size
    small = read_core(str(fixture))
    assert [t.xstate for t in small.threads] == [t.xstate for t in core.threads]
    assert gdb_tids(real.program, fixture) == gdb_tids(real.program, real.path)
    rip = gdb_value(gdb(real.program, real.path, "p/x $rip"), 0)
    assert gdb_value(gdb(real.program, fixture, "p/x $rip"), 0) == rip
    assert gdb_value(gdb(real.program, fixture, "p/x $pc"), 0) == rip
    notes = subprocess.run(
        ["readelf", "-n", "--wide", str(fixture)], capture_output=True, text=True, check=False
    )
    assert notes.returncode == 0 and "NT_FILE" not in notes.stdout
    assert "warning" not in notes.stderr.lower()


@pytest.mark.gdb
def test_i386_kernel_core(tmp_path_factory: pytest.TempPathFactory) -> None:
    program = build(tmp_path_factory.mktemp("prog32"), "-m32")
    real = kernel_core(program, tmp_path_factory.mktemp("kernel32"))
    core = read_core(str(real.path))
    assert (core.elf_class, core.machine, len(core.threads)) == (32, "i386", WORKERS + 1)
    assert sorted(t.tid for t in core.threads if t.tid is not None) == sorted(real.tids)
    assert sorted(real.tids) == gdb_tids(program, real.path)
    for thread in core.threads:
        assert thread.fpregs is not None and len(thread.fpregs) == 108  # FSAVE
        assert thread.fxsave is not None and len(thread.fxsave) == 512  # from NT_PRXFPREG
        assert thread.xstate is not None and thread.xstate[24:28] == thread.fxsave[24:28]
    assert [t.xstate for t in core.threads] == readelf_xstates(real.path)
    write_core(core, str(real.path) + ".copy")
    assert filecmp.cmp(real.path, str(real.path) + ".copy", shallow=False)


# ---- third-party cores (XCR0TOOL_CORPUS) ------------------------------------------------------


@dataclass
class Expected:
    machine: str
    elf_class: int
    tid: int  # equals the pr_pid of the core's NT_PRPSINFO: one thread, the main one
    xstate_size: int
    xcr0: int
    xstate_bv: int


CORPUS = {
    "lldb-linux-fpr_sse_x86_64.core": Expected("x86-64", 64, 10375, 832, 0x7, 0x3),
    "lldb-linux-fpr_sse_i386.core": Expected("i386", 32, 10621, 832, 0x7, 0x3),
    "elfutils-testfile-x32-core": Expected("x32", 32, 6885, 832, 0x7, 0x2),
    "pyelftools-core_linux32.elf": Expected("i386", 32, 11038, 1088, 0x1F, 0x0),
}


def corpus_file(name: str) -> Path:
    directory = os.environ.get("XCR0TOOL_CORPUS")
    if not directory:
        pytest.skip("XCR0TOOL_CORPUS is not set (a directory of third-party cores)")
    return Path(directory) / name


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus(name: str, tmp_path: Path) -> None:
    path, expected = corpus_file(name), CORPUS[name]
    core = read_core(str(path))
    assert (core.machine, core.elf_class, core.os) == (
        expected.machine,
        expected.elf_class,
        "linux",
    )
    assert [t.tid for t in core.threads] == [expected.tid]
    xstate, fxsave = core.threads[0].xstate, core.threads[0].fxsave
    assert xstate is not None and fxsave is not None
    assert len(xstate) == expected.xstate_size
    assert struct.unpack_from("<Q", xstate, 464)[0] == expected.xcr0
    assert struct.unpack_from("<Q", xstate, 512)[0] == expected.xstate_bv
    assert fxsave[:464] == xstate[:464]
    write_core(core, str(tmp_path / "copy"))
    assert filecmp.cmp(path, tmp_path / "copy", shallow=False)


@pytest.mark.parametrize("name", ["lldb-linux-fpr_sse_x86_64.core", "lldb-linux-fpr_sse_i386.core"])
def test_corpus_lldb_registers(name: str) -> None:
    xstate = read_core(str(corpus_file(name))).threads[0].xstate
    assert xstate is not None
    assert struct.unpack_from("<HH", xstate, 0) == (0x037F, 0)  # fctrl, fstat
    assert struct.unpack_from("<II", xstate, 24) == (0x1F80, 0xFFFF)  # mxcsr, mask
    assert xstate[32:42] == bytes.fromhex(LLDB_ST[0])
    for i, lane in enumerate(LLDB_XMM):
        assert struct.unpack_from("<4I", xstate, 160 + 16 * i) == (lane,) * 4


def test_corpus_x32_registers() -> None:
    fxsave = read_core(str(corpus_file("elfutils-testfile-x32-core"))).threads[0].fxsave
    assert fxsave is not None
    assert int.from_bytes(fxsave[160:176], "little") == 0xFF00  # xmm0
    assert fxsave[176:192] == b"\x2f" * 16  # xmm1
    assert int.from_bytes(fxsave[208:224], "little") == 0xFF << 56  # xmm3
    assert int.from_bytes(fxsave[224:240], "little") == 0xFF << 48  # xmm4


def test_corpus_prpsinfo_scrub(tmp_path: Path) -> None:
    core = read_core(str(corpus_file("lldb-linux-fpr_sse_i386.core")))
    write_core(core, str(tmp_path / "fixture"), scrub_prpsinfo=True, drop_memory=True)
    info = next(n for n in read_core(str(tmp_path / "fixture")).notes if n.type == NT_PRPSINFO)
    data = (tmp_path / "fixture").read_bytes()[info.desc_offset : info.desc_offset + info.desc_size]
    assert data[8:12] == bytes(4)  # 16-bit pr_uid, pr_gid
    assert data[28:124] == bytes(96)  # pr_fname, pr_psargs
    assert struct.unpack_from("<i", data, 12)[0] == 10621  # pr_pid untouched
