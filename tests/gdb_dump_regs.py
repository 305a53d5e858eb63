"""Run inside gdb (gdb -batch -nx -q -x THIS): dump every thread's XSAVE registers as JSON.

The output file is named by $GDB_DUMP_REGS_OUT. For every thread (by LWP) it
records each register of the x87/SSE/AVX/AVX-512/MPX/PKU/AMX families that gdb
knows for this target, as the register's bytes read as one little-endian
integer. A register gdb cannot show in full (``<unavailable>``) is listed under
"unavailable" instead.

The bytes are taken two independent ways and must agree:
1. from the gdb.Value: Value.bytes where gdb has it (14+), else by walking
   the register's type (integers, the i387_ext float via /x, which prints the
   raw bytes since gdb 8, unions through their integer-array member);
2. from ``maint print cooked-registers``, which prints every register's raw
   buffer in hex.
This file must stay importable by the Python inside gdb 13 (3.11), so it
uses nothing but the standard library and gdb's own module.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import gdb  # type: ignore[import-not-found]

# gdb's names for what lives in the XSAVE image. The raw halves gdb keeps
# internally (ymm0h, zmm0h, ...) are left out: no user-visible register is
# named so, and their values are parts of ymm/zmm.
XSAVE_NAME = re.compile(
    r"^(st[0-7]|fctrl|fstat|ftag|fiseg|fioff|foseg|fooff|fop|mxcsr"
    r"|[xyz]mm\d+|k[0-7]|pkru|bnd[0-3](raw)?|bndcfgu|bndstatus"
    r"|tilecfg|tiledata|tmm\d|pl3_ssp)$"
)
# Names to ask for even when no register group lists them: with AVX-512, gdb
# 13 puts the ymm pseudo registers in no group at all, and xmm only in "sse".
PROBE = (
    [f"st{i}" for i in range(8)]
    + ["fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop", "mxcsr"]
    + [f"{p}mm{n}" for p in "xyz" for n in range(32)]
    + [f"k{n}" for n in range(8)]
    + ["pkru", "bndcfgu", "bndstatus", "tilecfg", "pl3_ssp"]
    + [f"bnd{n}raw" for n in range(4)]
    + [f"bnd{n}" for n in range(4)]
    + [f"tmm{n}" for n in range(8)]
)
GROUPS = ("float", "vector", "system", "sse", "general", "all", "mmx")

INT_CODES = {
    gdb.TYPE_CODE_INT,
    gdb.TYPE_CODE_CHAR,
    gdb.TYPE_CODE_BOOL,
    gdb.TYPE_CODE_ENUM,
    gdb.TYPE_CODE_FLAGS,
    gdb.TYPE_CODE_PTR,
}


class Unavailable(Exception):
    pass


def _hex_to_bytes(text: str, size: int) -> bytes:
    if "<unavailable>" in text:  # gdb 13 formats a missing 128-bit piece so
        raise Unavailable(text)
    m = re.search(r"0x([0-9a-fA-F]+)", text)
    if not m:
        raise ValueError(f"no hex number in {text!r}")
    return int(m.group(1), 16).to_bytes(size, "little")


def value_bytes(value: Any) -> bytes:
    """The raw bytes of a gdb.Value, without going through any number format."""
    if hasattr(value, "bytes"):  # gdb 14+
        try:
            return bytes(value.bytes)
        except gdb.error as exc:
            raise Unavailable(str(exc)) from exc
    return _walk(value)


def _walk(value: Any) -> bytes:
    t = value.type.strip_typedefs()
    size = t.sizeof
    code = t.code
    try:
        if code in INT_CODES:
            if size <= 8 and code != gdb.TYPE_CODE_FLAGS:
                return (int(value) & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
            # 128-bit integers do not convert to a Python int in gdb 13, and
            # flags types print as a list of names: /x gives the bits of both
            return _hex_to_bytes(value.format_string(format="x"), size)
        if code == gdb.TYPE_CODE_FLT:
            # /x of a float prints its bytes, not a conversion (gdb 8+)
            return _hex_to_bytes(value.format_string(format="x"), size)
        if code == gdb.TYPE_CODE_ARRAY:
            lo, hi = t.range()
            return b"".join(_walk(value[i]) for i in range(lo, hi + 1))
        if code == gdb.TYPE_CODE_UNION:
            # the member that covers the whole register with plain integers
            best = None
            for f in t.fields():
                ft = f.type.strip_typedefs()
                if ft.sizeof != size:
                    continue
                is_int_array = (
                    ft.code == gdb.TYPE_CODE_ARRAY
                    and ft.target().strip_typedefs().code in INT_CODES
                )
                # the smallest elements: no 128-bit integers to convert
                if is_int_array and (best is None or ft.target().sizeof < best[1]):
                    best = (f.name, ft.target().sizeof)
            if best is None:
                raise ValueError(f"no integer-array member in union {t}")
            return _walk(value[best[0]])
        if code == gdb.TYPE_CODE_STRUCT:
            buf = bytearray(size)
            for f in t.fields():
                if f.bitsize or f.bitpos % 8:
                    raise ValueError(f"bit field {f.name} in {t}")
                part = _walk(value[f.name])
                buf[f.bitpos // 8 : f.bitpos // 8 + len(part)] = part
            return bytes(buf)
    except gdb.error as exc:
        # "value is not available" and friends
        raise Unavailable(str(exc)) from exc
    raise ValueError(f"cannot take the bytes of type {t} (code {code})")


def cooked_registers() -> dict[str, str]:
    """name -> the hex of `maint print cooked-registers` (or '<unavailable>')."""
    try:
        text = gdb.execute("maint print cooked-registers", to_string=True)
    except gdb.error:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 7 and parts[0] != "''":
            out[parts[0]] = parts[-1]
    return out


def register_names(frame: Any) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    arch = frame.architecture()
    groups: dict[str, list[str]] = {}
    types: dict[str, str] = {}
    names: list[str] = []
    for group in GROUPS:
        try:
            regs = list(arch.registers(group))
        except (gdb.error, ValueError):
            continue
        for reg in regs:
            groups.setdefault(reg.name, []).append(group)
            if XSAVE_NAME.match(reg.name) and reg.name not in names:
                names.append(reg.name)
    all_regs = arch.registers()
    for name in PROBE:
        if name not in names and all_regs.find(name) is not None:
            names.append(name)
    for name in names:
        try:
            types[name] = str(frame.read_register(name).type)
        except (gdb.error, ValueError):
            types[name] = "?"
    return names, groups, types


def dump() -> dict[str, Any]:
    out: dict[str, Any] = {"gdb_version": gdb.VERSION, "threads": []}
    mismatches: list[str] = []
    original = gdb.selected_thread()
    threads = [t for inf in gdb.inferiors() for t in inf.threads()]
    threads.sort(key=lambda t: t.num)
    for thread in threads:
        thread.switch()
        frame = gdb.newest_frame()
        names, groups, types = register_names(frame)
        out.setdefault("groups", groups)
        out.setdefault("types", types)
        cooked = cooked_registers()
        regs: dict[str, str] = {}
        unavailable: list[str] = []
        for name in names:
            try:
                raw = value_bytes(frame.read_register(name))
            except (Unavailable, gdb.error):
                # gdb 18 refuses an unavailable register already when read
                unavailable.append(name)
                continue
            value = int.from_bytes(raw, "little")
            regs[name] = hex(value)
            seen = cooked.get(name)
            if seen is not None and seen.startswith("0x") and int(seen, 16) != value:
                mismatches.append(f"LWP {thread.ptid[1]} {name}: value {value:#x}, maint {seen}")
        out["threads"].append(
            {
                "tid": thread.ptid[1] or thread.ptid[0],
                "num": thread.num,
                "registers": regs,
                "unavailable": unavailable,
            }
        )
    if original is not None:
        original.switch()
    out["mismatches"] = mismatches
    return out


def main() -> None:
    path = os.environ["GDB_DUMP_REGS_OUT"]
    result = dump()
    with open(path, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)


main()
