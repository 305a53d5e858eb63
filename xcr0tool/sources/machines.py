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
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from xcr0tool.arch.components import describe_mask
from xcr0tool.arch.offsets import XSTATE_BV, read_u64
from xcr0tool.errors import InputError, LayoutError
from xcr0tool.files.compressed import format_of
from xcr0tool.files.input import check_readable_file, read_limited
from xcr0tool.model.layout import LEGACY_BITS
from xcr0tool.model.machine import (
    CRIU_WORD_LEAF1_ECX,
    CRIU_WORD_LEAF1_EDX,
    CRIU_WORD_SUB1_EAX,
    LEAF1_ECX_OSXSAVE,
    XSAVE_LEAF,
    CriuFacts,
    InUse,
    Machine,
    Regs,
    criu_caps_from_words,
    leaf_0d_from_layout,
)

if TYPE_CHECKING:
    from xcr0tool.formats.rr import RrHeader

from xcr0tool.sources.cpu_machines import (
    CRIU_CPUINFO,
    CRIU_CPUINFO_MAGIC,
    CRIU_IMAGE_MAGIC,
    DESCRIPTION_LIMIT,
    ELF_MAGIC,
    RR_EVENTS,
    RR_OTHER_FILES,
    RR_VERSION,
    _head,
    _json_machine,
    _layout_only,
    _name,
    dump_machine,
    firecracker_machine,
    host_machine,
    profile_machine,
    rr_machine,
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
