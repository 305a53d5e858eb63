"""Input sources: turn what the user named into XSAVE images.

    FILE         a raw XSAVE image (standard or compacted), or an ELF core (every thread)
    FILE@TID     one thread of an ELF core
    TRACE        an rr trace directory: every frame with XSAVE data (TRACE@EVENT: one frame)
    CRIUDIR      a CRIU image directory (CRIUDIR@TID: one thread), or one core-TID.img
    -            a raw image (or a core) on standard input; -@TID one thread of that core
    pid:N        every thread of a live process, through ptrace; pid:N@TID one thread
    self         XSAVE and XSAVEC snapshots of this tool's own thread; self@xsave and
                 self@xsavec one of them

A thread is chosen the same way for every kind (NAME@ID, or `thread=` which the CLI's
--thread gives), and an unknown one is refused alike, naming the ones there are.

Layout priority (every output names the one used): the core's NT_X86_XSAVE_LAYOUT note
(an rr trace's header CPUID), then --layout FILE or NAME, then a guess from XCR0 and the
image size. CRIU images carry no layout: --layout, or this machine's when cpuinfo.img's
sizes are its own (sources/criu.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

from xcr0tool.arch.xcr0 import check_xcr0
from xcr0tool.errors import HostUnavailable, InputError, LayoutError, UsageError
from xcr0tool.files.input import STDIN, FileInput, Input, open_input
from xcr0tool.layouts.choose import build_image
from xcr0tool.model.image import HostFallback, XsaveImage
from xcr0tool.model.layout import Layout, layout_from_note

if TYPE_CHECKING:
    from xcr0tool.sources.elfcore import CoreFile

ELF_MAGIC = b"\x7fELF"
CRIU_HEAD = (0x54564319).to_bytes(4, "little")  # IMG_COMMON_MAGIC (formats/criu.py)
RAW_LIMIT = 1 << 20  # no XSAVE image is near this; a bigger "raw" input is something else
# Outputs made from a live process's state are as private as the kernel's own cores,
# which it creates with mode 0600 (fs/coredump.c, do_coredump).
PROCESS_MODE = 0o600


class SourceKind(str, Enum):
    """What a source is (the JSON "kind")."""

    RAW = "raw"
    ELF_CORE = "elf-core"
    PROCESS = "process"
    SELF = "self"
    RR_TRACE = "rr-trace"
    CRIU = "criu-images"

    __str__ = str.__str__


@dataclass
class SourceResult:
    name: str  # as the user named it
    kind: SourceKind
    # A list, or an rr trace's frames read again at each iteration (TraceImages): a
    # consumer iterates, and holds no more images than it must.
    images: Sequence[XsaveImage]
    layout: Layout | None  # the layout shared by all images (None if they differ)
    details: dict[str, str] = field(default_factory=dict)  # machine, os, ...
    warnings: list[str] = field(default_factory=list)
    # The whole core behind the images (not for CORE@TID), to rewrite. Its bytes are read
    # from its input, which stays open only as long as opened_source's block.
    core: CoreFile | None = None
    # What NAME@ID selects for each image when it is not a tid (self's "xsave", "xsavec").
    snapshots: list[str] = field(default_factory=list)
    # The permission bits of the regular file behind the source (None: a pipe, nothing):
    # an output made from it is never more readable (files.output.write_output).
    file_mode: int | None = None

    def thread_ids(self) -> list[str]:
        """What NAME@ID (or --thread ID) selects, image by image; [] for a raw image."""
        if self.snapshots:
            return list(self.snapshots)
        if self.kind == "rr-trace":  # TRACE@EVENT: a frame's index
            known = getattr(self.images, "event_ids", None)  # TraceImages: none read again
            if known is not None:
                return [str(event) for event in known()]
            return [str(image.event) for image in self.images if image.event is not None]
        return [str(image.tid) for image in self.images if image.tid is not None]


# `self`'s images, in order: (selector, instruction, compacted).
SELF_SNAPSHOTS = (("xsave", "XSAVE", False), ("xsavec", "XSAVEC", True))


def split_thread(name: str) -> tuple[str, int | None]:
    """'core.123@4242' -> ('core.123', 4242) when the whole name is not itself a file."""
    path, sep, tid = name.rpartition("@")
    if sep and tid.isdigit() and not os.path.exists(name):
        return path, int(tid)
    return name, None


def parse_source(name: str) -> tuple[str, str | None]:
    """A SOURCE and the thread it names, if any: 'core@4242' -> ('core', '4242'),
    'pid:7@8' -> ('pid:7', '8'), 'self@xsavec' -> ('self', 'xsavec'), '-@5' -> ('-', '5').
    A file whose whole name holds an @ is that file."""
    for fixed in ("self", "-"):
        if name == fixed or name.startswith(f"{fixed}@"):
            return fixed, name[len(fixed) + 1 :] if name != fixed else None
    if name.startswith("pid:"):
        process, at, thread = name.partition("@")
        return process, thread if at else None
    path, tid = split_thread(name)
    return path, None if tid is None else str(tid)


def with_thread(name: str, thread: str | None) -> str:
    """SOURCE with --thread ID applied: NAME@ID. Naming the thread twice is refused,
    as it would be ambiguous which one was meant."""
    if thread is None:
        return name
    base, already = parse_source(name)
    if already is not None:
        raise UsageError(
            f"{name} already names thread {already}: give --thread or {base}@ID, not both"
        )
    return f"{name}@{thread}"


class RawInput(NamedTuple):  # NamedTuple, not a dataclass: cheaper to define at startup
    """A raw image's bytes, as the one reader read them (a file, or standard input)."""

    origin: str  # the file's name, or "<stdin>"
    data: bytes
    mode: int | None = None  # permission bits of the file it came from (None: a pipe)


class NamedInput(NamedTuple):
    """Any other source, opened by `images_of`: a core (`path`, a file or standard input
    spooled) or a thread of one, an rr trace or CRIU directory, a CRIU image file, a
    process, `self`."""

    name: str
    path: str
    tid: int | None
    kind: str = "core"  # core | directory | criu | process | self
    snapshot: str | None = None  # self@xsave, self@xsavec
    # A core's input, open while opened_input's block lasts: a stream (standard input,
    # a pipe, a compressed file) cannot be opened twice.
    opened: Input | None = None


@contextmanager
def opened_input(name: str) -> Iterator[RawInput | NamedInput]:
    """The one reader of what the user named: a raw image's bytes (a file, `-`, a pipe,
    compressed or not), read whole with a bound; a core, opened and read no further
    than its first bytes (it stays open while the block lasts); anything else by
    name."""
    base, thread = parse_source(name)
    if base.startswith("pid:"):
        yield NamedInput(name, name, None, "process")
        return
    if base == "self":
        yield NamedInput(name, base, None, "self", thread)
        return
    piped = base == "-"
    path = base
    if piped:
        tid = _stdin_tid(thread)
    else:
        tid = None if thread is None else int(thread)  # a path's @ID is digits (split_thread)
        if os.path.isdir(path):
            yield NamedInput(name, path, tid, "directory")
            return
    opened = open_input(path)
    try:
        origin = STDIN if piped else path
        raw = _raw_bytes(opened)
        if raw is None:
            opened.name = STDIN if piped else name  # errors name it as the user did
            yield NamedInput(opened.name, path, tid, "core", opened=opened)
            return
        if is_container(raw):
            if piped or not isinstance(opened, FileInput):
                raise InputError(origin, "a CRIU image: pass its file or directory, not a pipe")
            yield NamedInput(name, path, tid, "criu")
            return
        _no_thread_in_raw(origin, thread)
        yield RawInput(origin, raw, opened.mode)
    finally:
        opened.close()


def _raw_bytes(opened: Input) -> bytes | None:
    """A raw image's bytes, read whole (at most RAW_LIMIT); None for an ELF file, which
    is read note by note and never whole."""
    head = opened.read_upto(0, len(ELF_MAGIC))
    if head == ELF_MAGIC:
        return None
    data = opened.read_upto(0, RAW_LIMIT + 1)
    if len(data) > RAW_LIMIT:
        what = "" if opened.kind in ("file", "stream") else f" decompressed ({opened.kind})"
        raise InputError(
            opened.name, f"over {RAW_LIMIT} bytes{what} and not an ELF core: not an XSAVE image"
        )
    return data


def _stdin_tid(thread: str | None) -> int | None:
    """-@TID of a core piped in: a tid is a number."""
    if thread is not None and not thread.isdigit():
        raise InputError("<stdin>", f"no thread {thread}: a thread of a core is its tid")
    return None if thread is None else int(thread)


def images_of(found: NamedInput, explicit: Layout | None, xcr0: int | None = None) -> SourceResult:
    """The images of a core, a trace or CRIU directory, a CRIU image, a process or
    `self`."""
    if found.kind == "process":
        return _process(found.name, explicit, xcr0)
    if found.kind == "self":
        return _self(explicit, found.snapshot)
    if found.kind == "directory":
        return _directory(found.path, found.name, found.tid, explicit)
    if found.kind == "criu":
        return _criu(found.path, found.name, found.tid, explicit)
    return _core(found, explicit)


def open_source(
    name: str,
    *,
    layout_option: str | None = None,
    xcr0: int | None = None,
    host_fallback: bool = True,
) -> SourceResult:
    """The images of a source, as SOURCE is documented in the CLI."""
    with opened_source(
        name, layout_option=layout_option, xcr0=xcr0, host_fallback=host_fallback
    ) as result:
        return result


@contextmanager
def opened_source(
    name: str,
    *,
    layout_option: str | None = None,
    xcr0: int | None = None,
    host_fallback: bool = True,
) -> Iterator[SourceResult]:
    """open_source, with the input kept open while the block lasts, so that the result's
    core can be rewritten from it (a stream cannot be opened twice)."""
    if xcr0 is not None:
        check_xcr0(xcr0)  # refused before any input is read, alike in every command
    explicit = None
    if layout_option is not None:
        # Layout files (and json) are loaded only for --layout; without it a source's
        # layout is its own, or a guess.
        from xcr0tool.layouts.files import resolve_layout_option

        explicit = resolve_layout_option(layout_option)
    with opened_input(name) as found:
        if isinstance(found, RawInput):
            result = _raw(found.data, found.origin, explicit, xcr0, host_fallback)
            result.file_mode = found.mode
            yield result
        else:
            yield images_of(found, explicit, xcr0)


def _no_thread_in_raw(name: str, thread: str | None) -> None:
    if thread is not None:
        raise InputError(name, "@TID selects a thread of a core, and this is not an ELF core")


def read_input_file(path: str) -> bytes | None:
    """A raw image's bytes, read whole; None for an ELF file, which is read note by note
    and never whole. Anything wrong is one line naming the file."""
    with open_input(path) as opened:
        return _raw_bytes(opened)


def is_container(data: bytes) -> bool:
    """Bytes of a file that open_source reads as something other than a raw image (a CRIU
    image); ELF cores are told apart by read_input_file. The magic is compared here, not
    through sources.criu, so that a raw image's decode imports nothing of CRIU's."""
    return data[:4] == CRIU_HEAD


def _directory(path: str, name: str, tid: int | None, explicit: Layout | None) -> SourceResult:
    """An rr trace directory or a CRIU image directory; `tid` is TRACE@EVENT's frame index
    or CRIUDIR@TID's thread."""
    from xcr0tool.sources.criu import is_criu_dir
    from xcr0tool.sources.rrtrace import is_trace_dir, trace_images

    if is_trace_dir(path):
        images, layout, details, warnings = trace_images(path, name, tid, explicit)
        return SourceResult(name, SourceKind.RR_TRACE, images, layout, details, warnings)
    if is_criu_dir(path):
        return _criu(path, name, tid, explicit)
    raise InputError(
        path,
        "is a directory, not an rr trace (no version file) or a CRIU image directory"
        " (no core-TID.img)",
    )


def _criu(path: str, name: str, tid: int | None, explicit: Layout | None) -> SourceResult:
    from xcr0tool.sources.criu import criu_images

    images, layout, details, warnings = criu_images(path, name, tid, explicit)
    return SourceResult(name, SourceKind.CRIU, images, layout, details, warnings)


def host_fallback() -> HostFallback | None:
    """This machine's XCR0 and layout, for raw images that carry no XCR0; None when this
    machine cannot be asked."""
    try:
        from xcr0tool.sources.cpu import xgetbv

        return HostFallback(xgetbv(0), host_layout)
    except HostUnavailable:  # no XSAVE, not x86-64 Linux: the image must speak for itself
        return None


def _raw(
    data: bytes, name: str, layout: Layout | None, xcr0: int | None, use_host: bool
) -> SourceResult:
    host = host_fallback() if use_host and xcr0 is None and len(data) > 576 else None
    image = build_image(data, origin=name, layout=layout, xcr0=xcr0, host=host)
    return SourceResult(name, SourceKind.RAW, [image], image.layout)


def _core(found: NamedInput, explicit: Layout | None) -> SourceResult:
    from xcr0tool.sources.elfcore import read_core

    name, tid = found.name, found.tid
    core = read_core(found.path, name) if found.opened is None else read_core(found.opened)
    warnings = []
    layout = explicit
    if core.xsave_layout is not None:
        try:
            layout = layout_from_note(core.xsave_layout, f"{name} NT_X86_XSAVE_LAYOUT note")
        except LayoutError as exc:
            raise InputError(name, exc.problem) from None
        if explicit is not None:
            warnings.append(
                f"the layout given ({explicit.source}) is ignored: the core's"
                " NT_X86_XSAVE_LAYOUT note takes precedence"
            )
    threads = _only_thread(core.threads, tid, name, "core")
    long_mode = core.machine != "i386"
    images = []
    for thread in threads:
        label = f"{name} thread {thread.tid}" if thread.tid is not None else name
        data = thread.xstate if thread.xstate is not None else thread.fxsave
        if data is None:
            raise InputError(name, f"thread {thread.tid} has no NT_X86_XSTATE or NT_PRFPREG note")
        images.append(
            build_image(data, origin=label, layout=layout, tid=thread.tid, long_mode=long_mode)
        )
    if not images:
        raise InputError(name, "no threads (no NT_PRSTATUS note)")
    shared = images[0].layout if all(i.layout == images[0].layout for i in images) else None
    details = {"machine": core.machine, "os": core.os, "class": f"ELF{core.elf_class}"}
    whole = core if tid is None else None
    mode = found.opened.mode if found.opened is not None else None
    return SourceResult(
        name, SourceKind.ELF_CORE, images, shared, details, warnings, whole, file_mode=mode
    )


class _Thread(Protocol):
    @property
    def tid(self) -> int | None: ...


ThreadT = TypeVar("ThreadT", bound=_Thread)


def _only_thread(
    threads: list[ThreadT], tid: int | str | None, name: str, where: str
) -> list[ThreadT]:
    """All threads, or the one with this tid (one line naming the others if none)."""
    if tid is None:
        return threads
    chosen = [t for t in threads if t.tid == tid]
    if not chosen:
        known = ", ".join(str(t.tid) for t in threads)
        raise InputError(name, f"no thread {tid} in this {where} (threads: {known})")
    return chosen


def _process(name: str, layout: Layout | None, xcr0: int | None) -> SourceResult:
    from xcr0tool.sources.ptrace import read_process_xstate

    number, at, thread = name.removeprefix("pid:").partition("@")
    if not number.isdigit() or (at and not thread.isdigit()):
        raise InputError(
            name, "expected pid:N or pid:N@TID, with N a process id and TID one of its threads"
        )
    notes: list[str] = []  # threads that came and went during the read
    # Every thread is read and detached before any is chosen or decoded: an error below
    # leaves nothing attached.
    live = read_process_xstate(int(number), name, notes)
    live = _only_thread(live, int(thread) if at else None, name, "process")
    layout = layout or host_layout()
    images = [
        build_image(
            t.xstate, origin=f"pid:{number} thread {t.tid}", layout=layout, tid=t.tid, xcr0=xcr0
        )
        for t in live
    ]
    return SourceResult(
        name, SourceKind.PROCESS, images, layout, warnings=notes, file_mode=PROCESS_MODE
    )


def host_layout() -> Layout:
    """This machine's layout (sources/hostinfo.py: the one place it is made)."""
    from xcr0tool.sources.hostinfo import host_layout as made

    return made()


def _self(layout: Layout | None, which: str | None) -> SourceResult:
    """This thread saved twice, by XSAVE and by XSAVEC: self@xsave and self@xsavec."""
    from xcr0tool.sources.cpu import xgetbv, xsave_snapshot

    chosen = [s for s in SELF_SNAPSHOTS if which is None or s[0] == which]
    if not chosen:
        known = " or ".join(f"self@{s[0]} ({s[1]})" for s in SELF_SNAPSHOTS)
        raise InputError(f"self@{which}", f"no such snapshot of this thread: {known}")
    layout = layout or host_layout()
    xcr0 = xgetbv(0)
    images = [
        build_image(
            xsave_snapshot(compacted=compacted),
            origin=f"self@{selector}",
            layout=layout,
            xcr0=xcr0,
            xcr0_source="XGETBV",
        )
        for selector, _, compacted in chosen
    ]
    name = "self" if which is None else f"self@{which}"
    return SourceResult(name, SourceKind.SELF, images, layout, snapshots=[s[0] for s in chosen])
