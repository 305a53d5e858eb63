"""A CRIU image directory (or one core-TID.img) as a source.

CRIU keeps each thread's FPU state as per-component protobuf fields, not as an XSAVE
image (xcr0tool.formats.criu), so each thread is rebuilt as the standard-format image
PTRACE_GETREGSET would have given, against a layout that must be stated:

1. --layout NAME|FILE when given;
2. else this machine's CPUID leaf 0xD when cpuinfo.img's XSAVE sizes are this machine's
   (the check CRIU's own restore makes: criu/arch/x86/cpu.c cpu_validate_features);
3. else a refusal that names what is missing.

XCR0 is the set of components the image holds (CRIU writes a field for each feature of
the dumping CPU: crtools.c save_task_regs), with BNDREGS wherever BNDCSR is (compel
drops it, see formats/criu.py). State CRIU does not keep (AMX, APX, anything newer) is
absent from the rebuilt image, and the image says so: it is not in its init state.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

from xcr0tool.arch.components import bits, component
from xcr0tool.errors import HostUnavailable, InputError, LayoutError
from xcr0tool.files.input import read_limited
from xcr0tool.formats.criu import (
    IMAGE_LIMIT,
    IMG_COMMON_MAGIC,
    KEPT_MASK,
    CriuCpuinfo,
    CriuThread,
    decode_core,
    decode_cpuinfo,
    decode_pstree,
    standard_image,
)
from xcr0tool.layouts.choose import build_image
from xcr0tool.model.image import XsaveImage
from xcr0tool.model.layout import Layout, layout_from_cpuid

__all__ = ["CriuCpuinfo", "criu_images", "is_criu_dir", "read_cpuinfo", "read_threads"]

_CORE_NAME = re.compile(r"^core-(\d+)\.img$")
# cpuinfo.img is one entry of some 200 bytes (19 capability words, a model name): read
# with a bound of its own, far below a core image's.
CPUINFO_LIMIT = 64 << 10
# Components newer than CRIU's fields that a layout may list: said to be absent by name.
_NOT_KEPT_NOTE = "CRIU keeps no state for them: absent from the image, not in init state"


def is_criu_image(head: bytes) -> bool:
    """Bytes that start like a CRIU image (images v1.1: IMG_COMMON_MAGIC first)."""
    return head[:4] == IMG_COMMON_MAGIC.to_bytes(4, "little")


def is_criu_dir(path: str) -> bool:
    """A directory with at least one core-TID.img."""
    if not os.path.isdir(path):
        return False
    try:
        return any(_CORE_NAME.match(entry) for entry in os.listdir(path))
    except OSError:
        return False


def read_cpuinfo(path: str) -> CriuCpuinfo:
    """cpuinfo.img: `path` is the file, or the image directory holding it."""
    if os.path.isdir(path):
        path = os.path.join(path, "cpuinfo.img")
    data = read_limited(path, CPUINFO_LIMIT, "a CRIU cpuinfo.img")
    return decode_cpuinfo(data, path)


def _core_files(path: str) -> list[tuple[int, str]]:
    """(tid, file) of every core-TID.img in a directory, by tid."""
    found = []
    for entry in os.listdir(path):
        m = _CORE_NAME.match(entry)
        if m:
            found.append((int(m.group(1)), os.path.join(path, entry)))
    return sorted(found)


def core_image_tid(path: str) -> int:
    """The thread a core-TID.img holds, by its name (0 for another name, as CRIU's own
    naming is the only record of it outside pstree.img)."""
    match = _CORE_NAME.match(os.path.basename(path))
    return int(match.group(1)) if match else 0


def read_threads(path: str, tid: int | None = None) -> list[CriuThread]:
    """The threads of a CRIU image directory (in pstree.img's order where there is one),
    or of one core-TID.img; `tid` keeps one."""
    if not os.path.isdir(path):
        file_tid = core_image_tid(path)
        data = read_limited(path, IMAGE_LIMIT, "a CRIU core image")
        thread = decode_core(data, path, file_tid)
        if tid is not None and tid != file_tid:
            raise InputError(path, f"no thread {tid}: this is the image of thread {file_tid}")
        return [thread]
    files = _core_files(path)
    order = _pstree_order(path)
    if order:
        rank = {t: i for i, t in enumerate(order)}
        files.sort(key=lambda item: (rank.get(item[0], len(rank)), item[0]))
    if tid is not None:
        chosen = [item for item in files if item[0] == tid]
        if not chosen:
            known = ", ".join(str(t) for t, _ in files)
            raise InputError(path, f"no core-{tid}.img in this directory (threads: {known})")
        files = chosen
    threads = []
    for file_tid, file in files:
        data = read_limited(file, IMAGE_LIMIT, "a CRIU core image")
        threads.append(decode_core(data, file, file_tid))
    return threads


def _pstree_order(path: str) -> list[int]:
    """Every thread pstree.img lists, process by process (none without the file)."""
    pstree = os.path.join(path, "pstree.img")
    if not os.path.isfile(pstree):
        return []
    data = read_limited(pstree, IMAGE_LIMIT, "a CRIU pstree.img")
    return [t for threads in decode_pstree(data, pstree).values() for t in threads]


def _choose_layout(
    name: str, cpuinfo: CriuCpuinfo | None, explicit: Layout | None
) -> tuple[Layout, list[str]]:
    if explicit is not None:
        return explicit, []
    if cpuinfo is None:
        raise InputError(
            name,
            "the dumping machine's layout is unknown: no cpuinfo.img beside the core"
            " images and no --layout; pass --layout NAME|FILE (a profile or a CPUID dump"
            " of the dumping machine)",
        )
    from xcr0tool.sources.cpu import leaf_0d

    try:
        leaves = leaf_0d()
    except HostUnavailable as exc:
        raise InputError(
            name, f"cpuinfo.img cannot be checked against this machine ({exc}); pass --layout"
        ) from None
    here = (leaves.get(0, (0, 0, 0, 0))[1], leaves.get(0, (0, 0, 0, 0))[2])
    if (cpuinfo.xsave_size, cpuinfo.xsave_size_max) != here:
        raise InputError(
            name,
            f"the dumping machine's layout is unknown: cpuinfo.img says XSAVE sizes"
            f" {cpuinfo.xsave_size}/{cpuinfo.xsave_size_max} (CPUID.(0xD,0) EBX/ECX), this"
            f" machine's are {here[0]}/{here[1]}; pass --layout NAME|FILE (a profile or a"
            " CPUID dump of the dumping machine)",
        )
    layout = layout_from_cpuid(
        leaves,
        f"this machine's CPUID leaf 0xD (its XSAVE sizes {here[0]}/{here[1]} are cpuinfo.img's)",
    )
    return layout, []


def criu_images(
    path: str, name: str, tid: int | None, explicit: Layout | None
) -> tuple[list[XsaveImage], Layout, dict[str, str], list[str]]:
    """(images, layout, details, warnings) of a CRIU image directory or core-TID.img."""
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    cpuinfo_path = os.path.join(folder, "cpuinfo.img")
    cpuinfo = read_cpuinfo(cpuinfo_path) if os.path.isfile(cpuinfo_path) else None
    threads = read_threads(path, tid)
    if not threads:
        raise InputError(name, "no core-TID.img in this directory")
    layout, warnings = _choose_layout(name, cpuinfo, explicit)
    label = os.path.isdir(path)  # one image of a directory is named by its thread
    images = [_image(thread, name, label, layout, cpuinfo) for thread in threads]
    details = {"format": "CRIU images"}
    if cpuinfo is not None:
        details["dumped_on"] = f"dumped on {cpuinfo.model_id or cpuinfo.vendor}".strip()
    return images, layout, details, warnings


def _image(
    thread: CriuThread, name: str, label: bool, layout: Layout, cpuinfo: CriuCpuinfo | None
) -> XsaveImage:
    origin = f"{name} thread {thread.tid}" if label else name
    notes = []
    # User components the layout has and CRIU has no field for: unknown, not init.
    unkept = [i for i in bits(layout.known_mask() & ~KEPT_MASK) if not layout.require(i).supervisor]
    if unkept:
        names = ", ".join(f"{i} ({component(i).name})" for i in unkept)
        notes.append(f"the layout has components {names}: {_NOT_KEPT_NOTE}")
    lost: list[int] = []
    if thread.xstate_bv is None:  # no xsave entry: a CPU without OSXSAVE, FXSAVE only
        data = thread.legacy
        xcr0 = 0b11
        source = "FXSAVE fields only (no xsave entry)"
    else:
        xcr0 = thread.saved_mask
        if xcr0 & 0b10000:
            xcr0 |= 0b1000  # BNDREGS goes with BNDCSR; compel never saves it
        source = "the components CRIU saved (one field per feature of the dumping CPU)"
        if cpuinfo is not None and cpuinfo.has_xfeatures and cpuinfo.xcr0 != xcr0:
            notes.append(
                f"cpuinfo.img's xfeatures_mask {cpuinfo.xfeatures_mask:#x} (XCR0"
                f" {cpuinfo.xcr0:#x} with x87, SSE and BNDREGS) differs from the components"
                f" saved ({xcr0:#x})"
            )
        try:
            offsets = layout.standard_offsets(xcr0)
            size = layout.standard_size(xcr0)
        except LayoutError as exc:
            raise InputError(origin, f"cannot rebuild the image: {exc}") from None
        data, lost = standard_image(thread, offsets, size, xcr0)
        if lost:
            names = ", ".join(f"{i} ({component(i).name})" for i in lost)
            notes.append(f"XSTATE_BV had components {names} in use: {_NOT_KEPT_NOTE}")
    if thread.cet is not None:
        notes.append(
            f"CET state saved beside the image: IA32_U_CET {thread.cet[0]:#x},"
            f" IA32_PL3_SSP {thread.cet[1]:#x} (a supervisor component, no standard offset)"
        )
    image = build_image(
        data,
        origin=origin,
        layout=layout,
        tid=thread.tid,
        long_mode=thread.long_mode,
        xcr0=xcr0,
        xcr0_source=source,
    )
    absent = sum(1 << i for i in {*unkept, *lost})
    return replace(image, notes=(*image.notes, *notes), absent=absent)
