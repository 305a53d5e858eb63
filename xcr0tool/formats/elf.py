"""Construct grammars for the parts of an x86 ELF core that xcr0tool reads or rewrites.

Bytes only: no checks beyond construct's own, no formatting. Every factory takes the
variant (ELF class, OS) as arguments, so nothing here depends on the file being read.
Only little-endian layouts exist: x86 cores are never big-endian.
"""

from __future__ import annotations

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


def _word(elf_class: int) -> FormatField:
    return Int64ul if elf_class == 64 else Int32ul


def struct_format(grammar: Struct) -> str:
    """The `struct` module format of a grammar made only of integer fields.

    For loops over many records (program headers, notes), where construct's parser costs
    a hundred times more than `struct.unpack_from`; the layout stays declared once, here.
    """
    codes = []
    for field in grammar.subcons:
        if not isinstance(field.subcon, FormatField):
            raise TypeError(f"{field.name} is not a fixed-size integer")
        codes.append(field.subcon.fmtstr.lstrip("<"))
    return "<" + "".join(codes)


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
