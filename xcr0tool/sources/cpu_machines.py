"""Machines described by their CPUID: this machine, a built-in profile, a CPUID dump, a
layout JSON, a Firecracker fingerprint or template, an `rr traceinfo` JSON. machines.py
turns a MACHINE argument into one of these, or into a machine of saved state (a core, an
rr trace, CRIU images) that carries its own CPUID.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from xcr0tool.errors import InputError, LayoutError
from xcr0tool.files.input import read_limited, reason
from xcr0tool.formats import jsontext
from xcr0tool.formats.cpuid_dump import complete_leaf_0d, missing_subleaves, parse_cpuid_dump
from xcr0tool.formats.cpuid_leaves import parse_cpuid_leaves
from xcr0tool.formats.firecracker import (
    CpuTemplate,
    apply_cpu_template,
    fingerprint_cpuid,
    parse_cpu_template,
)
from xcr0tool.formats.rr_traceinfo import (
    load_traceinfo_text,
    looks_like_traceinfo,
    parse_traceinfo,
)
from xcr0tool.layouts.files import LAYOUT_FILE_LIMIT
from xcr0tool.model.layout import Layout, layout_from_cpuid, layout_from_json
from xcr0tool.model.machine import (
    LEAF1_ECX_OSXSAVE,
    NO_SUBLEAF,
    XSAVE_LEAF,
    CpuidTable,
    CriuFacts,
    Machine,
    Regs,
    cpuid_record,
    criu_facts_from_cpuid,
    criu_mask_from_xcr0,
    leaf_0d_from_layout,
    linux_xcr0,
)

if TYPE_CHECKING:
    pass

# A description is as small as a layout file: a JSON layout or fingerprint is tens of KiB,
# an AIDA64 dump of a big server a few hundred.
DESCRIPTION_LIMIT = LAYOUT_FILE_LIMIT
ELF_MAGIC = b"\x7fELF"
# IMG_COMMON_MAGIC (criu/include/magic.h), which starts every CRIU image since images
# v1.1; compared here so that naming a machine imports nothing of CRIU's reader.
CRIU_IMAGE_MAGIC = (0x54564319).to_bytes(4, "little")
CRIU_CPUINFO_MAGIC = (0x61404013).to_bytes(4, "little")  # CPUINFO_MAGIC, first in v1.0
CRIU_CPUINFO = "cpuinfo.img"
RR_VERSION = "version"
RR_EVENTS = "events"
RR_OTHER_FILES = (RR_EVENTS, "data", "mmaps", "tasks")  # what else rr writes in a trace
_LINUX_RULE = "CPUID.(0xD,0) EDX:EAX & 0xe02ff, what Linux would set"
# InstLatx64 file names: GenuineIntel00806F8_SapphireRapids_05_CPUID.txt
_INSTLATX64 = re.compile(
    r"^(?:GenuineIntel|AuthenticAMD)[0-9A-Fa-f]{7}_(?:K\d+_)?(.+?)(?:_CPUID)?$"
)


def _head(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(8)
    except OSError as exc:
        raise InputError(path, reason(exc)) from None


def _name(path: str) -> str:
    stem = Path(path.rstrip("/")).name
    stem = stem.removesuffix(".txt").removesuffix(".json")
    match = _INSTLATX64.match(stem)
    return match.group(1) if match else stem


def _with_xcr0_ebx(
    table: CpuidTable, xcr0: int, size: int
) -> tuple[dict[tuple[int, int], Regs], str | None]:
    """The table with CPUID.(0xD,0).EBX as the CPU reports it under this XCR0, and a note
    when that differs from the value recorded (which another XCR0 made)."""
    out = dict(table)
    sub0 = out.get((XSAVE_LEAF, 0))
    if sub0 is None or sub0[1] == size:
        return out, None
    out[(XSAVE_LEAF, 0)] = (sub0[0], size, sub0[2], sub0[3])
    return out, (
        f"CPUID.(0xD,0).EBX taken as {size}, the standard size for XCR0 {xcr0:#x}"
        f" (the description has {sub0[1]}, for the XCR0 it was taken under)"
    )


def _leaf_0d_table(leaves: Mapping[int, Regs]) -> dict[tuple[int, int], Regs]:
    return {(XSAVE_LEAF, sub): regs for sub, regs in leaves.items()}


def _cpuid_machine(
    *,
    spec: str,
    name: str,
    kind: str,
    table: CpuidTable,
    cpuid_source: str,
    xcr0: int | None = None,
    xcr0_source: str | None = None,
    notes: list[str] | None = None,
    has_cpuid_faulting: bool | None = None,
    uses_cpuid_faulting: bool | None = None,
    osxsave: bool | None = None,
    adjust_ebx: bool = True,
) -> Machine:
    """A machine whose CPUID (leaf 0xD, and others when known) is known."""
    notes = list(notes or [])
    sub0 = cpuid_record(table, XSAVE_LEAF, 0)
    if sub0 is None:
        raise InputError(spec, f"{cpuid_source} has no CPUID leaf 0xD sub-leaf 0")
    capable = sub0[0] | sub0[3] << 32
    leaf_0d = {sub: regs for (leaf, sub), regs in table.items() if leaf == XSAVE_LEAF}
    try:
        # The same check of each component as every layout gets (model.layout.entry_flaw).
        layout_from_cpuid({sub: r for sub, r in leaf_0d.items() if sub < 64}, cpuid_source)
    except LayoutError as exc:
        raise InputError(spec, exc.problem) from None
    if xcr0 is None:
        xcr0, xcr0_source = linux_xcr0(capable), _LINUX_RULE
    assert xcr0_source is not None
    draft = Machine(spec, name, kind, xcr0, xcr0_source, table, cpuid_source)
    if adjust_ebx and not draft.unplaced():
        table, note = _with_xcr0_ebx(table, xcr0, draft.standard_size)
        if note:
            notes.append(note)
    criu = criu_facts_from_cpuid(table, f"compel's reading of {cpuid_source}")
    if criu.caps is None:
        notes.append(
            "no CPUID leaf 1 (or 0xD sub-leaf 1): CRIU's fpu/fxsr/osxsave/xsaves check"
            " cannot be made against this machine"
        )
    return Machine(
        source=spec,
        name=name,
        kind=kind,
        xcr0=xcr0,
        xcr0_source=xcr0_source,
        cpuid=table,
        cpuid_source=cpuid_source,
        xcr0_capable=capable,
        osxsave=osxsave,
        has_cpuid_faulting=has_cpuid_faulting,
        uses_cpuid_faulting=(
            uses_cpuid_faulting if uses_cpuid_faulting is not None else has_cpuid_faulting
        ),
        criu=criu,
        notes=tuple(notes),
    )


# The host -----------------------------------------------------------------------------


def host_machine() -> Machine:
    from xcr0tool.sources import cpu
    from xcr0tool.sources.hostinfo import parse_cpuinfo_flags

    table: dict[tuple[int, int], Regs] = _leaf_0d_table(cpu.leaf_0d())
    top = cpu.cpuid(0)[0]
    for leaf in (0, 1, 6, 7):
        if leaf <= top:
            table[(leaf, 0)] = cpu.cpuid(leaf)
    faulting: bool | None = None
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            flags = parse_cpuinfo_flags(handle.read())
        # X86_FEATURE_CPUID_FAULT, shown as "cpuid_fault": what rr's cpuid_faulting_works
        # finds by trying ARCH_SET_CPUID.
        faulting = "cpuid_fault" in flags if flags else None
    except OSError:
        pass
    notes = []
    if faulting is None:
        notes.append("/proc/cpuinfo unreadable: CPUID faulting unknown")
    return _cpuid_machine(
        spec="host",
        name="host",
        kind="host",
        table=table,
        cpuid_source="this machine's CPUID",
        xcr0=cpu.xgetbv(0),
        xcr0_source="XGETBV 0 on this machine",
        has_cpuid_faulting=faulting,
        notes=notes,
        adjust_ebx=False,
    )


# Profiles and dumps -------------------------------------------------------------------


def profile_machine(name: str) -> Machine:
    from xcr0tool.layouts.profiles import ALIASES, BY_NAME, profile_layout

    profile = BY_NAME[ALIASES.get(name, name)]
    leaves: dict[int, Regs] = {}
    for dump, lines in reversed(profile.dumps):
        leaves.update(parse_cpuid_dump(lines, dump))
    layout = profile_layout(name)
    return _cpuid_machine(
        spec=name,
        name=profile.name,
        kind="profile",
        table=_leaf_0d_table(leaves),
        cpuid_source=layout.source,
        notes=["a profile holds CPUID leaf 0xD only: family, model and features unknown"],
    )


def dump_machine(path: str, text: str) -> Machine:
    try:
        leaves = parse_cpuid_dump(text, path)
    except LayoutError as exc:
        problem = exc.problem
        if "sub-leaf 0" in problem:
            if parse_cpuid_leaves(text, None):
                problem = "a CPUID dump without leaf 0xD: it says nothing of XSAVE"
            else:
                problem = (
                    "not a machine description (a CPUID dump, a layout, a Firecracker"
                    " fingerprint, rr traceinfo JSON, an rr trace, a CRIU cpuinfo.img or"
                    " an ELF core)"
                )
        raise InputError(path, problem) from None
    leaves, notes = _complete(leaves, path)
    table: dict[tuple[int, int], Regs] = dict(parse_cpuid_leaves(text))
    table.update(_leaf_0d_table(leaves))
    if (XSAVE_LEAF, 1) not in table:
        # Old AIDA64 versions print sub-leaves 0 and 2 only. A CPU reports sub-leaf 1 all
        # the same; XSAVEC and XSAVES came after those dumps (Skylake, Zen).
        table[(XSAVE_LEAF, 1)] = (0, 0, 0, 0)
        notes.append("the dump lists no CPUID.(0xD,1): taken as 0 (no XSAVEOPT, XSAVEC or XSAVES)")
    return _cpuid_machine(
        spec=path,
        name=_name(path),
        kind="cpuid-dump",
        table=table,
        cpuid_source=f"CPUID dump {path}",
        notes=notes,
    )


def _complete(leaves: Mapping[int, Regs], path: str) -> tuple[dict[int, Regs], list[str]]:
    """The dump's leaf 0xD with the sub-leaves it lacks filled in where the architecture
    fixes them (formats.cpuid_dump.complete_leaf_0d), for the components of the XCR0
    Linux would set; one the machine would not enable (AMD's LWP) may stay missing."""
    sub0 = leaves[0]
    capable = sub0[0] | sub0[3] << 32
    outside = sum(1 << i for i in missing_subleaves(leaves) if not linux_xcr0(capable) >> i & 1)
    kept = capable & ~outside
    asked = {**leaves, 0: (kept & 0xFFFFFFFF, sub0[1], sub0[2], kept >> 32)}
    try:
        completed, inferred = complete_leaf_0d(asked, path)
    except LayoutError as exc:
        raise InputError(path, exc.problem) from None
    completed[0] = sub0
    return completed, inferred


# JSON: layouts, Firecracker, rr traceinfo -----------------------------------------------


def _json_machine(path: str, text: str) -> Machine:
    data = load_traceinfo_text(text, path)
    if looks_like_traceinfo(data):
        info = parse_traceinfo(data, path)
        return rr_machine(
            path, _name(path), "rr-traceinfo", info.xcr0, info.cpuid, info.cpuid_faulting,
            f"rr traceinfo {path}",
        )  # fmt: skip
    if isinstance(data, dict) and ("guest_cpu_config" in data or "cpuid_modifiers" in data):
        template = parse_cpu_template(data, path)
        if not template.fingerprint:
            raise InputError(
                path,
                "a Firecracker CPU template describes no machine by itself: name it after"
                f" a fingerprint, FINGERPRINT+{path}",
            )
        return _fingerprint_machine(path, template, None)
    if isinstance(data, dict) and "components" in data:
        return layout_machine(path, data)
    raise InputError(
        path,
        "JSON, but not a layout file, a Firecracker fingerprint or `rr traceinfo` output",
    )


def layout_machine(path: str, data: dict) -> Machine:
    try:
        layout = layout_from_json(data, f"layout file {path}")
    except LayoutError as exc:
        raise InputError(path, exc.problem) from None
    table = leaf_0d_from_layout(layout)
    notes = ["a layout file does not say whether the CPU has XSAVEC or XSAVES"]
    recorded = data.get("xcr0")
    if recorded is not None:
        try:
            xcr0 = int(str(recorded), 0)
        except ValueError:
            raise InputError(path, f'"xcr0" {recorded!r} is not a number') from None
        xcr0_source = f'"xcr0" of layout file {path}'
    elif layout.xcr0_capable is not None:
        xcr0, xcr0_source = linux_xcr0(layout.xcr0_capable), _LINUX_RULE
    else:
        listed = sum(1 << e.id for e in layout.components if not e.supervisor)
        xcr0 = linux_xcr0(listed | 0b11)
        xcr0_source = "the user components the layout lists & 0xe02ff, what Linux would set"
    machine = Machine(path, _name(path), "layout", xcr0, xcr0_source, table, layout.source)
    return _layout_only(machine, layout, notes)


def _layout_only(machine: Machine, layout: Layout, notes: list[str]) -> Machine:
    """A machine known by a layout and an XCR0: CRIU's sizes follow from them where they
    can (xsave_size_max needs every component the CPU supports)."""
    size = machine.standard_size if not machine.unplaced() else None
    capable = layout.xcr0_capable
    size_max = None
    if capable is not None and size is not None:
        ends = [
            entry.standard_offset + entry.size
            for entry in layout.components
            if capable >> entry.id & 1 and entry.standard_offset is not None
        ]
        size_max = max([576, *ends])
    criu = CriuFacts(
        criu_mask_from_xcr0(machine.xcr0),
        size,
        size_max,
        None,
        f"computed from {layout.source} and XCR0 {machine.xcr0:#x}",
    )
    return Machine(
        source=machine.source,
        name=machine.name,
        kind=machine.kind,
        xcr0=machine.xcr0,
        xcr0_source=machine.xcr0_source,
        cpuid=machine.cpuid,
        cpuid_source=machine.cpuid_source,
        xcr0_capable=capable,
        criu=criu,
        images=machine.images,
        notes=(*machine.notes, *notes),
    )


def firecracker_machine(fingerprint: str, template: str) -> Machine:
    """FINGERPRINT+TEMPLATE: the guest Firecracker makes from that host with that custom
    CPU template."""
    base = _read_firecracker(fingerprint)
    if not base.fingerprint:
        raise InputError(fingerprint, "not a Firecracker fingerprint (no guest_cpu_config)")
    applied = _read_firecracker(template)
    return _fingerprint_machine(f"{fingerprint}+{template}", base, (template, applied))


def _read_firecracker(path: str) -> CpuTemplate:
    text = read_limited(path, DESCRIPTION_LIMIT, "a Firecracker CPU template").decode(
        "utf-8", "replace"
    )
    data = jsontext.loads(text, path)
    return parse_cpu_template(data, path)


def _fingerprint_machine(
    spec: str, fingerprint: CpuTemplate, template: tuple[str, CpuTemplate] | None
) -> Machine:
    base_path = spec.rsplit("+", 1)[0] if template else spec
    table = fingerprint_cpuid(fingerprint, base_path)
    name = _name(base_path)
    described = f"Firecracker fingerprint {base_path}"
    if template is not None:
        path, modifiers = template
        table = apply_cpu_template(table, modifiers, path)
        name = f"{name}+{_name(path)}"
        described = f"{described} with CPU template {path}"
    # The vCPU had not run when the fingerprint was dumped: CPUID.1:ECX.OSXSAVE is 0 and
    # CPUID.(0xD,0).EBX is the size for XCR0 = 3. In a running Linux guest KVM reflects
    # CR4.OSXSAVE in the first and the guest's XCR0 in the second
    # (kvm_update_cpuid_runtime); take the guest as running.
    notes = []
    leaf1 = table.get((1, 0))
    if leaf1 is not None and not leaf1[2] & LEAF1_ECX_OSXSAVE:
        table[(1, 0)] = (leaf1[0], leaf1[1], leaf1[2] | LEAF1_ECX_OSXSAVE, leaf1[3])
        notes.append(
            "CPUID.1:ECX.OSXSAVE taken as 1: a running Linux guest sets CR4.OSXSAVE, which"
            " KVM shows there (the fingerprint's vCPU had not run)"
        )
    return _cpuid_machine(
        spec=spec,
        name=name,
        kind="firecracker",
        table=table,
        cpuid_source=described,
        notes=notes,
        osxsave=True,
    )


# rr -------------------------------------------------------------------------------------


def rr_machine(
    spec: str,
    name: str,
    kind: str,
    xcr0: int,
    cpuid: Mapping[tuple[int, int], Regs],
    uses_faulting: bool,
    described: str,
    recorded_source: str | None = None,
) -> Machine:
    """The recording machine of an rr trace. Its XCR0 is rr's TraceReader::xcr0(): the
    header's, or CPUID.(0xD,0) EDX:EAX when that is 0 (all of it: rr does not mask it),
    or 3 without a record."""
    table = dict(cpuid)
    if xcr0:
        source = f"the XCR0 rr uses for the trace ({recorded_source or described})"
    else:
        sub0 = cpuid_record(table, XSAVE_LEAF, 0)
        xcr0 = 3 if sub0 is None else sub0[0] | sub0[3] << 32
        source = "rr's rule for a header without XCR0: CPUID.(0xD,0) EDX:EAX as recorded"
    if cpuid_record(table, XSAVE_LEAF, 0) is None:
        raise InputError(spec, "the trace records no CPUID leaf 0xD")
    # Records without sub-leaves (ecx_in 0xffffffff) answer any sub-leaf, as in rr.
    for (leaf, subleaf), regs in list(table.items()):
        if subleaf == NO_SUBLEAF:
            table.setdefault((leaf, 0), regs)
    return _cpuid_machine(
        spec=spec,
        name=name,
        kind=kind,
        table=table,
        cpuid_source=f"the CPUID rr recorded ({described})",
        xcr0=xcr0,
        xcr0_source=source,
        # The header's hasCpuidFaulting: the trace uses CPUID faulting, so the machine
        # that recorded it has it. Without it, whether the machine has it is not known.
        has_cpuid_faulting=True if uses_faulting else None,
        uses_cpuid_faulting=uses_faulting,
        adjust_ebx=False,
    )
