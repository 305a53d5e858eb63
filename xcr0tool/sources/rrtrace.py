"""An rr trace directory as a source: the recording machine's XCR0 and layout from the
`version` header, one image per frame of `events` that carries extra registers.

rr records the tracee's XSAVE image (PTRACE_GETREGSET NT_X86_XSTATE on the recording
machine) with signal, signal-handler, execve, sigreturn and pkey_alloc events; the header
holds that machine's CPUID leaf 0xD, all 64 sub-leaves. So a trace decodes with its
recorder's offsets wherever it is read: an AMD trace with AMD's on an Intel host.
Format facts: xcr0tool.formats.rr.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import overload

from xcr0tool.errors import InputError, LayoutError
from xcr0tool.files.input import check_readable_file
from xcr0tool.formats.rr import (
    ARCH_X86,
    RrFrame,
    RrHeader,
    iter_frames,
    read_header_file,
)
from xcr0tool.layouts.choose import build_image
from xcr0tool.model.image import XsaveImage
from xcr0tool.model.layout import Layout, layout_from_cpuid
from xcr0tool.model.reread import Reread

__all__ = [
    "RrHeader",
    "TraceImages",
    "is_trace_dir",
    "read_trace_header",
    "trace_images",
    "trace_layout",
]


def is_trace_dir(path: str) -> bool:
    """A directory rr wrote: it has a `version` file."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "version"))


def _version_path(path: str) -> str:
    if os.path.isdir(path):
        version = os.path.join(path, "version")
        if not os.path.exists(version):
            raise InputError(path, "not an rr trace directory: it has no version file")
        return version
    return path


def read_trace_header(path: str) -> RrHeader:
    """The header of the trace at `path` (its directory, or its `version` file)."""
    version = _version_path(path)
    check_readable_file(version, "an rr trace header")
    return read_header_file(version)


def trace_layout(header: RrHeader, name: str) -> Layout:
    """The recording machine's layout, from the header's CPUID leaf 0xD."""
    leaves = header.leaf_0d()
    if 0 not in leaves:
        raise InputError(name, "the trace header has no CPUID leaf 0xD: no XSAVE layout")
    return layout_from_cpuid(leaves, f"{name} header's CPUID leaf 0xD (the recording machine)")


def iter_xsave_frames(path: str, header: RrHeader) -> Iterator[RrFrame]:
    """The frames of the trace that carry an XSAVE image, streamed."""
    events = os.path.join(path, "events")
    check_readable_file(events, "an rr events file")
    for frame in iter_frames(events, xsave_size=header.xsave_size):
        if frame.xsave is not None:
            yield frame


def trace_images(
    path: str, name: str, event: int | None, explicit: Layout | None
) -> tuple[Sequence[XsaveImage], Layout, dict[str, str], list[str]]:
    """(images, layout, details, warnings) of the trace directory at `path`; `event`
    selects one frame by its index (TRACE@EVENT). Every frame's image is built here, so
    that a bad one is refused before any output; the images of a whole trace are then
    read again each time they are iterated (TraceImages), never held."""
    header = read_trace_header(path)
    layout = trace_layout(header, name)
    warnings = []
    if explicit is not None:
        warnings.append(
            f"the layout given ({explicit.source}) is ignored: the trace header's CPUID"
            " (the recording machine's) takes precedence"
        )
    images: Sequence[XsaveImage]
    if event is not None:
        images = _one_frame(path, header, layout, name, event)
    else:
        images = TraceImages(path, name, header, layout)
    details = {
        "trace_version": f"rr trace version {header.version}",
        "recorded_on": f"recorded on {header.vendor or 'an unnamed CPU'}",
    }
    return images, layout, details, warnings


def _one_frame(
    path: str, header: RrHeader, layout: Layout, name: str, event: int
) -> list[XsaveImage]:
    for frame in iter_xsave_frames(path, header):
        if frame.index == event:
            return [_image(frame, header, layout, name)]
        if frame.index > event:
            break
    raise InputError(
        name, f"frame {event} of the events file carries no XSAVE data (or does not exist)"
    )


class TraceImages(Reread[XsaveImage]):
    """Every frame's image of a trace, as a sequence that holds only their frame indices
    (and the first image): each iteration reads the events file again. A trace of 20,000
    signal frames is 20,000 XSAVE images of up to 11 KiB (AMX), and each image decoded or
    rendered costs more again: held, a whole-trace decode grew by tens of KiB a frame.
    The frames are checked once, when the sequence is made; if a later reading finds
    other frames (the trace was rewritten meanwhile), it is refused."""

    def __init__(self, path: str, name: str, header: RrHeader, layout: Layout) -> None:
        self._path, self._name, self._header, self._layout = path, name, header, layout
        self._events = array("q")  # each image's frame index: 8 bytes a frame
        first: XsaveImage | None = None
        self._held = 0
        for frame in iter_xsave_frames(path, header):
            image = _image(frame, header, layout, name)  # refuses a bad frame now
            self._events.append(frame.index)
            self._held |= sum(1 << i for i in image.offsets)
            if first is None:
                first = image
        if first is None:
            raise InputError(name, "no frame of the events file carries XSAVE data")
        self._first = first

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[XsaveImage]:
        yield self._first
        count = 1
        frames = iter_xsave_frames(self._path, self._header)
        next(frames, None)  # the first, held
        for frame in frames:
            if count >= len(self._events) or frame.index != self._events[count]:
                break
            yield _image(frame, self._header, self._layout, self._name)
            count += 1
        else:
            if count == len(self._events):
                return
        raise InputError(
            self._name, "the events file changed while it was read: its frames are not the same"
        )

    @overload
    def __getitem__(self, index: int) -> XsaveImage: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[XsaveImage]: ...
    def __getitem__(self, index: int | slice) -> XsaveImage | Sequence[XsaveImage]:
        if index == 0:  # held: a summary and the layout ask for it without a pass
            return self._first
        return super().__getitem__(index)

    def event_ids(self) -> list[int]:
        """Each image's frame index, without reading the events again."""
        return list(self._events)

    def held_components(self) -> int:
        """The components any image has space for, without reading the events again."""
        return self._held


def _image(frame: RrFrame, header: RrHeader, layout: Layout, name: str) -> XsaveImage:
    assert frame.xsave is not None
    origin = f"{name} frame {frame.index} ({frame.event}) thread {frame.tid}"
    try:
        image = build_image(
            frame.xsave,
            origin=origin,
            layout=layout,
            tid=frame.tid,
            long_mode=frame.arch != ARCH_X86,
            xcr0=header.xcr0,
            xcr0_source=f"rr trace header: {header.xcr0_source}",
        )
    except LayoutError as exc:
        raise InputError(origin, str(exc)) from None
    notes = list(image.notes)
    if len(frame.xsave) != header.xsave_size:
        notes.append(
            f"{len(frame.xsave)} bytes of XSAVE data, the header's CPUID.(0xD,0).EBX says"
            f" {header.xsave_size}: rr refuses to replay it (Invalid XSAVE data length)"
        )
    return replace(image, event=frame.index, notes=tuple(notes))
