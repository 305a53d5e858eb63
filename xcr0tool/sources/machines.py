"""MACHINE arguments of `compat`: anything that describes a CPU's XSAVE layout, made
into a `model.machine.Machine`.

    host                  this machine: CPUID, XGETBV, /proc/cpuinfo
    NAME                  a built-in profile (intel, intel-client, amd-zen3, amd-zen4, ...)
    DUMP                  a CPUID dump: `cpuid -r` or AIDA64/InstLatx64 text
    LAYOUT.json           a layout file (`layout --json`, `host --save`)
    CORE[@TID]            an ELF core: its NT_X86_XSAVE_LAYOUT note (or the layout guessed
                          as `decode` does) and the XCR0 and in-use state of its threads
    FINGERPRINT.json      a Firecracker CPU fingerprint (the guest's CPUID)
    FINGERPRINT+TEMPLATE  that fingerprint with a Firecracker custom CPU template applied
    TRACEINFO.json        `rr traceinfo` output
    TRACE_DIR             an rr trace directory: its `version` header, and the in-use
                          components of every frame of `events` with an XSAVE image
    cpuinfo.img           CRIU's cpuinfo image; a CRIU image directory holding one, or
                          one core-TID.img beside it: also each thread's in-use state

Names are tried first (host, then the profiles), then files. Each machine's XCR0 is the
one its source recorded (XGETBV, a core's XCR0 word, an rr header) or else what Linux
would set: CPUID.(0xD,0) EDX:EAX & 0xE02FF; its `xcr0_source` says which.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from xcr0tool.arch.components import describe_mask
from xcr0tool.arch.offsets import XSTATE_BV, read_u64
from xcr0tool.errors import InputError, LayoutError
from xcr0tool.files.compressed import format_of
from xcr0tool.files.input import check_readable_file, read_limited, reason
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
from xcr0tool.model.layout import LEGACY_BITS, Layout, layout_from_cpuid, layout_from_json
from xcr0tool.model.machine import (
    CRIU_WORD_LEAF1_ECX,
    CRIU_WORD_LEAF1_EDX,
    CRIU_WORD_SUB1_EAX,
    LEAF1_ECX_OSXSAVE,
    NO_SUBLEAF,
    XSAVE_LEAF,
    CpuidTable,
    CriuFacts,
    InUse,
    Machine,
    Regs,
    cpuid_record,
    criu_caps_from_words,
    criu_facts_from_cpuid,
    criu_mask_from_xcr0,
    leaf_0d_from_layout,
    linux_xcr0,
)

if TYPE_CHECKING:
    from xcr0tool.formats.rr import RrHeader

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


def resolve_machines(specs: list[str]) -> list[Machine]:
    return [resolve_machine(spec) for spec in specs]


def resolve_machine(spec: str) -> Machine:
    from xcr0tool.layouts.profiles import NAMES

    if spec == "host":
        return host_machine()
    if spec in NAMES:
        return profile_machine(spec)
    if not os.path.exists(spec):
        base, at, selector = spec.rpartition("@")
        if at and base and selector.isdigit() and os.path.exists(base):
            return _selected_machine(base, int(selector), spec)
        base, plus, template = spec.rpartition("+")
        if plus and base and template and os.path.exists(base):
            return firecracker_machine(base, template)
        raise InputError(
            spec,
            "no such file, and not host or a built-in profile (" + ", ".join(NAMES) + ")",
        )
    if os.path.isdir(spec):
        return _directory_machine(spec)
    check_readable_file(spec, "a machine description")
    if not os.path.isfile(spec):
        # A pipe (process substitution) or a FIFO: read once, as a core is read from a
        # stream (files.input), up to its notes.
        return core_machine(spec)
    head = _head(spec)
    if head[:4] == ELF_MAGIC or format_of(head) is not None:  # a core, or a compressed one
        return core_machine(spec)
    if head[:4] == CRIU_IMAGE_MAGIC:
        return _criu_image(spec, head[4:8])
    if head[:4] == CRIU_CPUINFO_MAGIC or os.path.basename(spec) == CRIU_CPUINFO:
        return criu_machine(spec)  # images v1.0 (no common magic), or not CRIU's: it says
    text = read_limited(spec, DESCRIPTION_LIMIT, "a machine description").decode("utf-8", "replace")
    if text.lstrip()[:1] in ("{", "["):
        return _json_machine(spec, text)
    return dump_machine(spec, text)


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


def _selected_machine(path: str, selector: int, spec: str) -> Machine:
    """PATH@N: one thread of a core (CORE@TID) or of a CRIU dump (CRIUDIR@TID), or one
    frame of an rr trace (TRACE@EVENT), as SOURCE names them."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, RR_VERSION)):
            return rr_trace_machine(path, event=selector, spec=spec)
        if os.path.isfile(os.path.join(path, CRIU_CPUINFO)):
            cpuinfo = os.path.join(path, CRIU_CPUINFO)
            return criu_machine(cpuinfo, spec=spec, threads_of=path, tid=selector)
        return _directory_machine(path)  # says what the directory is not
    check_readable_file(path, "a machine description")
    if _head(path)[:4] == ELF_MAGIC:
        return core_machine(spec)
    raise InputError(
        spec,
        "@N selects a thread of a core or a CRIU image directory, or a frame of an rr"
        f" trace, and {path} is none of them",
    )


def _directory_machine(path: str) -> Machine:
    if os.path.isfile(os.path.join(path, RR_VERSION)):
        return rr_trace_machine(path)
    if os.path.isfile(os.path.join(path, CRIU_CPUINFO)):
        return criu_machine(os.path.join(path, CRIU_CPUINFO), spec=path, threads_of=path)
    from xcr0tool.sources.criu import is_criu_dir

    if any(os.path.exists(os.path.join(path, name)) for name in RR_OTHER_FILES):
        raise InputError(
            path,
            f"an rr trace directory without its {RR_VERSION} file, the header that holds"
            " the recording machine's CPUID and XCR0",
        )
    if is_criu_dir(path):
        raise InputError(
            path,
            f"CRIU images without {CRIU_CPUINFO} (criu dump writes it only with --cpu-cap):"
            " nothing says the dumping machine's XSAVE features and sizes",
        )
    raise InputError(
        path,
        f"a directory, but not an rr trace (no {RR_VERSION} file) nor a CRIU image"
        f" directory (no {CRIU_CPUINFO})",
    )


def rr_trace_machine(path: str, event: int | None = None, spec: str | None = None) -> Machine:
    """The recording machine of an rr trace directory (its `version` header), with the
    in-use components of every frame that carries an XSAVE image (or of frame `event`)."""
    from xcr0tool.sources.rrtrace import read_trace_header

    header = read_trace_header(path)
    spec = spec or path
    machine = rr_machine(
        spec,
        _name(path),
        "rr-trace",
        header.xcr0,
        header.cpuid,
        header.has_cpuid_faulting,
        f"rr trace {path}, version {header.version}",
        f"{os.path.join(path, RR_VERSION)}: {header.xcr0_source}",
    )
    if event is None and not os.path.isfile(os.path.join(path, RR_EVENTS)):
        return replace(machine, notes=(*machine.notes, "no events file: no saved state read"))
    frames = tuple(_frames_in_use(path, header, event))
    if event is not None and not frames:
        raise InputError(
            spec, f"frame {event} of the events file carries no XSAVE data (or does not exist)"
        )
    return replace(machine, images=frames)


def _frames_in_use(path: str, header: RrHeader, event: int | None) -> Iterator[InUse]:
    """Each XSAVE frame's XSTATE_BV (or frame `event`'s), read from its bytes as the
    frames stream past: no image is kept or decoded, so memory stays flat whatever the
    trace's length."""
    from xcr0tool.sources.rrtrace import iter_xsave_frames

    for frame in iter_xsave_frames(path, header):
        assert frame.xsave is not None
        if event is not None and frame.index != event:
            if frame.index > event:
                return
            continue
        # PTRACE_GETREGSET NT_X86_XSTATE: the standard format, XSTATE_BV at byte 512; a
        # recorder without XSAVE gave the 512-byte FXSAVE area (x87 and SSE).
        data = frame.xsave
        in_use = read_u64(data, XSTATE_BV) if len(data) >= XSTATE_BV + 8 else LEGACY_BITS
        yield InUse(frame.tid, in_use, _frame_label(frame.tid, frame.index), frame.index)


def _frame_label(tid: int | None, event: int) -> str:
    return f"frame {event} (thread {tid})" if tid is not None else f"frame {event}"


# CRIU -----------------------------------------------------------------------------------


def _criu_image(path: str, second: bytes) -> Machine:
    """A file that starts with CRIU's IMG_COMMON_MAGIC (then `second`, the image's own
    magic): cpuinfo.img, or one core-TID.img (the thread's state, with the cpuinfo.img
    beside it)."""
    from xcr0tool.formats.criu import CORE_MAGIC, CPUINFO_MAGIC, MAGIC_NAMES

    magic = int.from_bytes(second, "little")
    if magic == CPUINFO_MAGIC:
        return criu_machine(path)
    folder = os.path.dirname(os.path.abspath(path))
    if magic == CORE_MAGIC:
        from xcr0tool.sources.criu import core_image_tid

        tid = core_image_tid(path)
        cpuinfo = os.path.join(folder, CRIU_CPUINFO)
        if not os.path.isfile(cpuinfo):
            raise InputError(
                path,
                f"a CRIU core image without {CRIU_CPUINFO} beside it (criu dump writes it"
                " only with --cpu-cap): nothing says the dumping machine's XSAVE features"
                " and sizes",
            )
        return criu_machine(cpuinfo, spec=path, threads_of=path, tid=tid)
    what = MAGIC_NAMES.get(magic, f"magic {magic:#010x}")
    raise InputError(
        path,
        f"a CRIU {what} image: a MACHINE is cpuinfo.img, a core-TID.img or their directory",
    )


def criu_machine(
    path: str, spec: str | None = None, threads_of: str | None = None, tid: int | None = None
) -> Machine:
    """The machine a CRIU dump was made on, from its cpuinfo.img (`path`): the xfeatures
    mask, xsave sizes, capability words, vendor, family and model compel recorded there.
    CRIU keeps no layout, so the layout is the built-in profile that fits the XCR0 and
    xsave_size, as for a core without a layout note. `threads_of`: the image directory
    (or one core-TID.img) whose threads' in-use state is checked too."""
    from xcr0tool.formats.criu import CAPABILITY_WORDS, VENDOR_AMD, VENDOR_INTEL
    from xcr0tool.layouts.profiles import PROFILES, guess_layout, profile_layout
    from xcr0tool.sources.criu import read_cpuinfo

    spec = spec or path
    info = read_cpuinfo(path)
    if not info.has_xfeatures:
        raise InputError(
            path, "no xfeatures_mask: the dumping machine's XSAVE features are not recorded"
        )
    # compel's mask never holds SSE or BNDREGS (see model.machine); XCR0 has SSE always,
    # BNDREGS with BNDCSR, and AMX, which compel's mask leaves out, when the size says so.
    xcr0 = info.xcr0
    layout = None
    # The dumping CPU's vendor's profiles first (CRIU records AMD for any non-Intel).
    prefix = "intel" if info.vendor_id == VENDOR_INTEL else "amd"
    ordered = sorted(PROFILES, key=lambda p: not p.name.startswith(prefix))
    candidates = [profile_layout(p.name) for p in ordered]
    for candidate in (xcr0, xcr0 | 0b11 << 17):
        try:
            layout = guess_layout(candidate, info.xsave_size, path, candidates)
            xcr0 = candidate
            break
        except LayoutError:
            continue
    if layout is None:
        raise InputError(
            path,
            f"no built-in layout has xsave_size {info.xsave_size} for XCR0 {xcr0:#x}"
            f" ({describe_mask(xcr0)}), and CRIU keeps no layout: compare a CPUID dump of"
            " the dumping machine instead",
        )
    notes = [
        f"CRIU keeps no layout: the built-in profile that fits XCR0 {xcr0:#x} and"
        f" xsave_size {info.xsave_size} is taken"
    ]
    # cpu_validate_cpuinfo and img_to_cpuinfo refuse these images whatever the host.
    refusal = None
    expected_words = CAPABILITY_WORDS.get(info.capability_ver)
    if info.vendor_id not in (VENDOR_INTEL, VENDOR_AMD):
        refusal = f"Unknown cpu vendor {info.vendor_id}"
    elif expected_words is None:
        refusal = f"Image carries unknown capability version {info.capability_ver}"
    elif len(info.capability) != expected_words:
        refusal = f"Image carries {len(info.capability)} words while {expected_words} expected"
    caps = criu_caps_from_words(info.capability) if refusal is None else None
    table: dict[tuple[int, int], Regs] = dict(leaf_0d_from_layout(layout))
    osxsave = None
    if caps is not None:
        # What compel read from CPUID and kept as capability words and family/model/stepping:
        # leaf 1 (EDX word 0, ECX word 4, EAX rebuilt) and CPUID.(0xD,1).EAX (word 10).
        words = info.capability
        table[(1, 0)] = (
            _signature(info.family, info.model, info.stepping),
            0,
            words[CRIU_WORD_LEAF1_ECX],
            words[CRIU_WORD_LEAF1_EDX],
        )
        table[(XSAVE_LEAF, 1)] = (words[CRIU_WORD_SUB1_EAX], 0, 0, 0)
        osxsave = bool(words[CRIU_WORD_LEAF1_ECX] & LEAF1_ECX_OSXSAVE)
    else:
        notes.append(
            f"cpuinfo.img's capability words are not CRIU's ({refusal}): its fpu/fxsr/"
            "osxsave/xsaves check, XSAVEC and family/model are not known"
        )
    criu = CriuFacts(
        info.xfeatures_mask,
        info.xsave_size,
        info.xsave_size_max,
        caps,
        f"{path} as recorded",
        refusal,
    )
    where = (info.model_id or info.vendor).strip()
    machine = Machine(
        source=spec,
        name=_criu_name(spec, path),
        kind="criu",
        xcr0=xcr0,
        xcr0_source=f"{CRIU_CPUINFO}'s xfeatures_mask {info.xfeatures_mask:#x} with x87 and SSE"
        + (" and BNDREGS" if xcr0 & 0b1000 else "")
        + (" and AMX (for xsave_size)" if xcr0 >> 17 & 1 else "")
        + " (compel's mask drops them)",
        cpuid=table,
        cpuid_source=f"{layout.source} (CRIU's {CRIU_CPUINFO}: {where})",
        osxsave=osxsave,
        criu=criu,
        notes=tuple(notes),
    )
    if threads_of is None:
        return machine
    saved, lost = _criu_threads_in_use(threads_of, tid)
    return replace(machine, images=saved, notes=(*machine.notes, *lost))


def _signature(family: int, model: int, stepping: int) -> int:
    """CPUID.1:EAX from the family, model and stepping compel computed from it
    (compel_cpuid, as the kernel's cpu_detect): exact in the fields rr compares
    (0xf0ff0: extended model, family, model) for every CPU with XSAVE (family >= 6)."""
    base_family = min(family, 0xF)
    extended_family = family - 0xF if family >= 0xF else 0
    base_model, extended_model = (model & 0xF, model >> 4 & 0xF) if family >= 6 else (model, 0)
    return (
        stepping & 0xF
        | base_model << 4
        | base_family << 8
        | extended_model << 16
        | (extended_family & 0xFF) << 20
    )


def _criu_name(spec: str, path: str) -> str:
    if spec != path:
        return _name(spec)
    return _name(os.path.dirname(os.path.abspath(path)))


def _criu_threads_in_use(path: str, tid: int | None) -> tuple[tuple[InUse, ...], list[str]]:
    """Each thread's in-use components as a restore would carry them: XSTATE_BV of the
    components CRIU kept (x87, SSE and a field per feature), and a note for state in use
    that CRIU did not keep (BNDREGS, which compel never saves; AMX, APX): lost at the
    dump."""
    from xcr0tool.sources.criu import read_threads

    saved = []
    lost: list[str] = []
    for thread in read_threads(path, tid):
        if thread.xstate_bv is None:  # no xsave entry: FXSAVE only
            saved.append(InUse(thread.tid, LEGACY_BITS, f"thread {thread.tid}"))
            continue
        kept = thread.saved_mask
        dropped = thread.xstate_bv & ~kept
        if dropped:
            lost.append(
                f"thread {thread.tid}'s XSTATE_BV {thread.xstate_bv:#x} has"
                f" {describe_mask(dropped)} in use, which CRIU does not keep: lost at the dump"
            )
        saved.append(InUse(thread.tid, thread.xstate_bv & kept, f"thread {thread.tid}"))
    return tuple(saved), lost


# Cores ----------------------------------------------------------------------------------


def core_machine(spec: str) -> Machine:
    """The machine a core was made on: its layout (the NT_X86_XSAVE_LAYOUT note, else the
    guess `decode` makes) and its threads' XCR0 word and in-use components."""
    from xcr0tool.sources.open import open_source

    result = open_source(spec, host_fallback=False)
    images = result.images
    layout = images[0].layout
    xcr0 = images[0].xcr0
    notes = list(result.warnings)
    others = sorted({image.xcr0 for image in images} - {xcr0})
    if others:
        notes.append(
            f"threads disagree on XCR0 ({', '.join(hex(x) for x in others)} besides"
            f" {xcr0:#x}): the first thread's is used"
        )
    if any(image.layout != layout for image in images):
        notes.append("threads were read with different layouts: the first thread's is used")
    saved = tuple(
        InUse(
            image.tid,
            image.xstate_bv,
            f"thread {image.tid}" if image.tid is not None else image.origin,
        )
        for image in images
    )
    table = leaf_0d_from_layout(layout)
    machine = Machine(
        spec,
        _name(spec),
        "core",
        xcr0,
        f"{images[0].origin}: {images[0].xcr0_source}",
        table,
        layout.source,
        images=saved,
    )
    notes.append("a core does not say whether the CPU has XSAVEC or XSAVES, nor its family")
    return _layout_only(machine, layout, notes)
