"""`rr traceinfo` JSON: a trace header as rr prints it (src/TraceInfoCommand.cc,
dump_trace_info):

    {"uuid": [...], "xcr0": 743, "bindToCpu": 0, "cpuidFaulting": true, ...,
     "cpuidRecords": [[eax_in, ecx_in, eax, ebx, ecx, edx], ...], ...}

"xcr0" is TraceReader::xcr0(): the recorded XCR0, or CPUID.(0xD,0) EDX:EAX when the
header holds 0. ecx_in is 0xffffffff for a leaf without sub-leaves. rr writes the JSON
with fprintf; when its replay to the first exec fails it still closes the object after
a trailing comma, which is accepted here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xcr0tool.errors import InputError
from xcr0tool.formats import jsontext

Regs = tuple[int, int, int, int]


@dataclass(frozen=True)
class TraceInfo:
    xcr0: int
    cpuid: dict[tuple[int, int], Regs]  # (eax_in, ecx_in) -> (eax, ebx, ecx, edx)
    cpuid_faulting: bool


_TRAILING_COMMA = re.compile(r",\s*}\s*$")


def looks_like_traceinfo(data: object) -> bool:
    return isinstance(data, dict) and "cpuidRecords" in data and "xcr0" in data


def load_traceinfo_text(text: str, source: str) -> object:
    try:
        return jsontext.loads(text, source)
    except InputError:
        repaired = _TRAILING_COMMA.sub("}", text)
        if repaired == text:
            raise
        try:
            return jsontext.loads(repaired, source)
        except InputError:
            pass
        raise


def _u32(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 32


def parse_traceinfo(data: object, source: str) -> TraceInfo:
    if not looks_like_traceinfo(data):
        raise InputError(source, 'not `rr traceinfo` output: no "xcr0" and "cpuidRecords"')
    assert isinstance(data, dict)
    xcr0 = data["xcr0"]
    if not isinstance(xcr0, int) or isinstance(xcr0, bool) or not 0 <= xcr0 < 1 << 64:
        raise InputError(source, f'"xcr0" is {xcr0!r}, not a 64-bit number')
    records = data["cpuidRecords"]
    if not isinstance(records, list):
        raise InputError(source, '"cpuidRecords" is not a list')
    table: dict[tuple[int, int], Regs] = {}
    for index, record in enumerate(records):
        if not (isinstance(record, list) and len(record) == 6 and all(map(_u32, record))):
            raise InputError(
                source, f"cpuidRecords[{index}] is not six 32-bit numbers [eax_in, ecx_in, ...]"
            )
        # rr's find_cpuid_record takes the first match: keep the first of duplicates.
        table.setdefault((record[0], record[1]), (record[2], record[3], record[4], record[5]))
    faulting = data.get("cpuidFaulting", False)
    return TraceInfo(xcr0, table, faulting is True)
