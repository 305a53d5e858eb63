"""Construct grammars for the parts of an x86 ELF core that xcr0tool reads or rewrites:
the declaration of their bytes.

Bytes only: no checks beyond construct's own, no formatting. Every factory takes the
variant (ELF class, OS) as arguments, so nothing here depends on the file being read.
Only little-endian layouts exist: x86 cores are never big-endian.

The core reader and writer do not run these grammars: a core may hold hundreds of
thousands of records, construct's parser costs a hundred times what `struct` does, and
importing construct costs more than a whole small decode. They use the `struct` layouts
this module derives (`derive`), written out as formats/elf_layouts.py by

    python -m xcr0tool.formats.elf_grammar > xcr0tool/formats/elf_layouts.py

and held equal to the grammars by tests/unit/formats/test_elf_grammar.py (the file is
current, and both parse and build every record alike).
"""

from __future__ import annotations

from collections.abc import Iterator

from construct import (
    Bytes,
    Const,
    FormatField,
    Int8ul,
    Int16sl,
    Int16ul,
    Int32sl,
    Int32ul,
    Int64ul,
    Struct,
)

from xcr0tool.formats.elf import ELFMAG


def _word(elf_class: int) -> FormatField:
    return Int64ul if elf_class == 64 else Int32ul


# gABI "ELF Identification"; the kernel's include/uapi/linux/elf.h (EI_* indices).
def elf_ident() -> Struct:
    return Struct(
        "magic" / Const(ELFMAG),
        "ei_class" / Int8ul,
        "ei_data" / Int8ul,
        "ei_version" / Int8ul,
        "ei_osabi" / Int8ul,
        "ei_abiversion" / Int8ul,
        # Kept as bytes, not Padding, so that a rebuilt header is the original one.
        "ei_pad" / Bytes(7),
    )


# gABI "ELF Header"; include/uapi/linux/elf.h, struct elf32_hdr / elf64_hdr.
def elf_header(elf_class: int) -> Struct:
    word = _word(elf_class)
    return Struct(
        "e_ident" / elf_ident(),
        "e_type" / Int16ul,
        "e_machine" / Int16ul,
        "e_version" / Int32ul,
        "e_entry" / word,
        "e_phoff" / word,
        "e_shoff" / word,
        "e_flags" / Int32ul,
        "e_ehsize" / Int16ul,
        "e_phentsize" / Int16ul,
        "e_phnum" / Int16ul,
        "e_shentsize" / Int16ul,
        "e_shnum" / Int16ul,
        "e_shstrndx" / Int16ul,
    )


# gABI "Program Header"; include/uapi/linux/elf.h, struct elf32_phdr / elf64_phdr.
# p_flags moves to second place in ELF64 to keep the 64-bit fields aligned.
def program_header(elf_class: int) -> Struct:
    if elf_class == 64:
        return Struct(
            "p_type" / Int32ul,
            "p_flags" / Int32ul,
            "p_offset" / Int64ul,
            "p_vaddr" / Int64ul,
            "p_paddr" / Int64ul,
            "p_filesz" / Int64ul,
            "p_memsz" / Int64ul,
            "p_align" / Int64ul,
        )
    return Struct(
        "p_type" / Int32ul,
        "p_offset" / Int32ul,
        "p_vaddr" / Int32ul,
        "p_paddr" / Int32ul,
        "p_filesz" / Int32ul,
        "p_memsz" / Int32ul,
        "p_flags" / Int32ul,
        "p_align" / Int32ul,
    )


# gABI "Sections"; include/uapi/linux/elf.h, struct elf32_shdr / elf64_shdr.
def section_header(elf_class: int) -> Struct:
    word = _word(elf_class)
    return Struct(
        "sh_name" / Int32ul,
        "sh_type" / Int32ul,
        "sh_flags" / word,
        "sh_addr" / word,
        "sh_offset" / word,
        "sh_size" / word,
        "sh_link" / Int32ul,
        "sh_info" / Int32ul,
        "sh_addralign" / word,
        "sh_entsize" / word,
    )


# gABI "Note Section"; include/uapi/linux/elf.h, struct elf32_note / elf64_note (the
# same three 32-bit words in both classes). The name and the descriptor follow, each
# padded to NOTE_ALIGN.
def note_header() -> Struct:
    return Struct(
        "n_namesz" / Int32ul,
        "n_descsz" / Int32ul,
        "n_type" / Int32ul,
    )


# The start of NT_PRSTATUS, up to and including the thread id; the descriptor goes on
# with the times and the general registers, which xcr0tool does not read.
#
# Linux: include/uapi/linux/elfcore.h, struct elf_prstatus_common (x86-64, ulong is
# 8 bytes: pr_pid at 32) and include/linux/elfcore-compat.h, struct
# compat_elf_prstatus_common (i386 and x32, compat_ulong_t is 4 bytes: pr_pid at 24;
# x32 differs from i386 only in pr_reg, after this prefix). pr_pid holds the thread id.
#
# FreeBSD: sys/sys/procfs.h, struct prstatus (amd64: size_t is 8 bytes and aligned, so
# pr_pid is at 40) and struct prstatus32 (i386: pr_pid at 24). sys/kern/imgact_elf.c
# stores td_tid in pr_pid.
def prstatus_prefix(system: str, elf_class: int) -> Struct:
    if system == "freebsd":
        size_t = _word(elf_class)
        return Struct(
            "pr_version" / Int32sl,
            "pr_pad" / Bytes(4 if elf_class == 64 else 0),
            "pr_statussz" / size_t,
            "pr_gregsetsz" / size_t,
            "pr_fpregsetsz" / size_t,
            "pr_osreldate" / Int32sl,
            "pr_cursig" / Int32sl,
            "pr_pid" / Int32sl,
        )
    return Struct(
        "si_signo" / Int32sl,
        "si_code" / Int32sl,
        "si_errno" / Int32sl,
        "pr_cursig" / Int16sl,
        "pr_pad" / Bytes(2),
        "pr_sigpend" / _word(elf_class),
        "pr_sighold" / _word(elf_class),
        "pr_pid" / Int32sl,
    )


# The start of NT_PRPSINFO, up to the end of pr_psargs (the fields a fixture scrub
# clears).
#
# Linux x86-64: include/linux/elfcore.h, struct elf_prpsinfo with 8-byte pr_flag and
# 4-byte __kernel_uid_t (136 bytes). Linux i386 and x32: include/linux/elfcore-compat.h,
# struct compat_elf_prpsinfo with 4-byte pr_flag and 2-byte __compat_uid_t from
# arch/x86/include/asm/compat.h (124 bytes); glibc's __pr_uid_t agrees.
#
# FreeBSD: sys/sys/procfs.h, struct prpsinfo / prpsinfo32 (no uid or gid; the
# pr_pid that follows pr_psargs since version 1a is left alone).
def prpsinfo_prefix(system: str, elf_class: int) -> Struct:
    if system == "freebsd":
        return Struct(
            "pr_version" / Int32sl,
            "pr_pad" / Bytes(4 if elf_class == 64 else 0),
            "pr_psinfosz" / _word(elf_class),
            "pr_fname" / Bytes(17),
            "pr_psargs" / Bytes(81),
        )
    small = elf_class == 32
    return Struct(
        "pr_state" / Int8ul,
        "pr_sname" / Int8ul,
        "pr_zomb" / Int8ul,
        "pr_nice" / Int8ul,
        "pr_pad" / Bytes(0 if small else 4),
        "pr_flag" / _word(elf_class),
        "pr_uid" / (Int16ul if small else Int32ul),
        "pr_gid" / (Int16ul if small else Int32ul),
        "pr_pid" / Int32sl,
        "pr_ppid" / Int32sl,
        "pr_pgrp" / Int32sl,
        "pr_sid" / Int32sl,
        "pr_fname" / Bytes(16),
        "pr_psargs" / Bytes(80),
    )


# ---------------------------------------------------------------- derived layouts

# Every record the reader and the writer use, by name and variant: the keys of
# formats.elf_layouts.LAYOUTS.
RECORDS: dict[tuple[str | int, ...], Struct] = {
    ("elf_ident",): elf_ident(),
    **{("elf_header", c): elf_header(c) for c in (32, 64)},
    **{("program_header", c): program_header(c) for c in (32, 64)},
    **{("section_header", c): section_header(c) for c in (32, 64)},
    ("note_header",): note_header(),
    **{
        (name, system, c): factory(system, c)
        for name, factory in (
            ("prstatus_prefix", prstatus_prefix),
            ("prpsinfo_prefix", prpsinfo_prefix),
        )
        for system in ("linux", "freebsd")
        for c in (32, 64)
    },
}


def _fields(grammar: Struct, prefix: str = "") -> Iterator[tuple[str, str, bytes | None]]:
    """(dotted name, struct code, Const value or None) of every field, nested Structs
    flattened in order."""
    for field in grammar.subcons:
        name, subcon = prefix + field.name, field.subcon
        if isinstance(subcon, Struct):
            yield from _fields(subcon, name + ".")
        elif isinstance(subcon, FormatField):
            yield name, subcon.fmtstr.lstrip("<"), None
        elif isinstance(subcon, Const):
            yield name, f"{subcon.sizeof()}s", subcon.value
        elif isinstance(subcon, Bytes):
            yield name, f"{subcon.sizeof()}s", None
        else:
            raise TypeError(f"{name}: {subcon!r} has no fixed struct layout")


def derive(grammar: Struct) -> tuple[str, tuple[str, ...], dict[str, bytes]]:
    """The `struct` format, the dotted field names and the Const values of a grammar."""
    fields = list(_fields(grammar))
    return (
        "<" + "".join(code for _, code, _ in fields),
        tuple(name for name, _, _ in fields),
        {name: value for name, _, value in fields if value is not None},
    )


def layouts_module() -> str:
    """The text of formats/elf_layouts.py: one entry per record, its names wrapped."""
    import textwrap

    def text(value: object) -> str:  # repr, with the double quotes the project writes
        return repr(value).replace("'", '"')

    layouts, consts = [], []
    for key, grammar in RECORDS.items():
        layout, names, values = derive(grammar)
        wrapped = textwrap.wrap(", ".join(map(text, names)) + ",", 84)
        layouts += [f"    {text(key)}: (", f"        {text(layout)},", "        ("]
        layouts += [f"            {line}" for line in wrapped] + ["        ),", "    ),"]
        if values:
            consts.append(f"    {text(key)}: {text(values)},")
    return "\n".join(
        [
            '"""`struct` layouts of the ELF records in formats/elf_grammar.py, derived from those',
            "grammars. Generated by `python -m xcr0tool.formats.elf_grammar`: do not edit.",
            '"""',
            "",
            "# (name, *variant) -> (struct format, field names; nested fields dotted, in order)",
            "LAYOUTS: dict[tuple[str | int, ...], tuple[str, tuple[str, ...]]] = {",
            *layouts,
            "}",
            "",
            "# The fields a record must hold as they are (construct's Const).",
            "CONSTS: dict[tuple[str | int, ...], dict[str, bytes]] = {",
            *consts,
            "}",
            "",
        ]
    )


if __name__ == "__main__":
    print(layouts_module(), end="")
