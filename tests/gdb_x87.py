"""Run inside gdb (gdb -batch -nx -q -x THIS): how gdb prints 80-bit x87 values, as JSON.

$GDB_X87_IN names a JSON list of the values (hex strings); $GDB_X87_OUT the JSON file
written. Two modes, by $GDB_X87_MODE:

- "registers": gdb runs tests/progs/x87load (given with --args), which loads the values
  eight at a time into st0..st7 and stops in loaded(). At each stop this records, per
  register, `p $stN` (what a user types), `info registers stN` (its text and its raw
  bits, which show what the FPU really holds), and per physical register the value part
  of `info float`.
- "values": no program; each value becomes a gdb.Value of type long double (the
  i387_ext floatformat on x86-64, like the st registers) and is printed with `str()`,
  gdb's Python route into the same value printer. The registers mode shows that both
  routes give the same text.

This file must stay importable by the Python inside gdb 13 (3.11): standard library and
gdb's own module only.
"""

from __future__ import annotations

import json
import os
import re

import gdb  # type: ignore[import-not-found]

P_LINE = re.compile(r"^\$\d+ = (.*)$")
REG_LINE = re.compile(r"^(st[0-7])\s+(.*?)\s+\(raw 0x([0-9a-f]+)\)$")
FLOAT_LINE = re.compile(r"^(?:=>)?\s*R([0-7]): (\w+)\s+0x([0-9a-f]{20})(.*)$")


def _p(expression: str) -> str:
    text = gdb.execute(f"p {expression}", to_string=True).strip()
    m = P_LINE.match(text)
    if not m:
        raise RuntimeError(f"unexpected `p {expression}` output: {text!r}")
    return m.group(1)


def _stop() -> dict[str, object]:
    """Everything gdb says of st0..st7 at this stop."""
    registers = []
    info = gdb.execute("info registers " + " ".join(f"st{i}" for i in range(8)), to_string=True)
    lines = [line for line in info.splitlines() if line.strip()]
    if len(lines) != 8:
        raise RuntimeError(f"unexpected `info registers` output: {info!r}")
    for i, line in enumerate(lines):
        m = REG_LINE.match(line.strip())
        if not m or m.group(1) != f"st{i}":
            raise RuntimeError(f"unexpected `info registers` line: {line!r}")
        registers.append({"raw": m.group(3), "p": _p(f"$st{i}"), "info_registers": m.group(2)})
    physical: dict[str, dict[str, str]] = {}
    for line in gdb.execute("info float", to_string=True).splitlines():
        m = FLOAT_LINE.match(line)
        if m:
            physical[m.group(1)] = {"tag": m.group(2), "raw": m.group(3), "text": m.group(4)}
    top = int(gdb.parse_and_eval("$fstat")) >> 11 & 7
    for i, register in enumerate(registers):
        register["info_float"] = physical[str((top + i) % 8)]
    return {"registers": registers}


def registers_mode(count: int) -> list[dict[str, object]]:
    gdb.execute("break loaded", to_string=True)
    gdb.execute("run", to_string=True)
    stops = []
    while len(stops) * 8 < count:
        stops.append(_stop())
        gdb.execute("continue", to_string=True)
    return stops


def values_mode(values: list[int]) -> list[str]:
    gdb.execute("set architecture i386:x86-64", to_string=True)
    long_double = gdb.lookup_type("long double")
    if long_double.sizeof != 16:
        raise RuntimeError(f"long double is {long_double.sizeof} bytes here, not 16")
    return [str(gdb.Value(v.to_bytes(16, "little"), long_double)) for v in values]


def main() -> None:
    with open(os.environ["GDB_X87_IN"]) as f:
        values = [int(v, 16) for v in json.load(f)]
    mode = os.environ["GDB_X87_MODE"]
    if mode == "registers":
        result: object = registers_mode(len(values))
    else:
        result = values_mode(values)
    out = {"gdb_version": gdb.VERSION, "result": result}
    with open(os.environ["GDB_X87_OUT"], "w") as f:
        json.dump(out, f)


gdb.execute("set pagination off")
gdb.execute("set confirm off")
main()
