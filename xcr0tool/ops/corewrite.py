"""Apply an image transform to a whole source: one raw image, or every thread of a core.

A core goes in, a core comes out: every thread's NT_X86_XSTATE is replaced by its
transformed image, the process's NT_X86_XSAVE_LAYOUT (when the core has one) is rewritten
for the new XCR0 and layout, and every other note and all memory keep their bytes
(corewriter.write_core). A raw image, or one thread of a core (CORE@TID), gives a raw image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xcr0tool.arch.components import component
from xcr0tool.errors import InputError, UsageError, XcrError
from xcr0tool.files.input import stdin_is_terminal
from xcr0tool.files.output import refuse_terminal as _refuse
from xcr0tool.files.output import stdout_is_terminal, write_binary
from xcr0tool.model.image import FXSAVE, XsaveImage
from xcr0tool.model.layout import note_from_layout
from xcr0tool.sources.open import SourceResult, opened_source

if TYPE_CHECKING:
    # elfcore (and construct, which it reads cores with) is imported only for a core.
    from xcr0tool.sources.elfcore import CoreFile

Transform = Callable[[XsaveImage], XsaveImage]


@dataclass
class Opened:
    result: SourceResult
    core: CoreFile | None  # set when the output is to be a whole core


def refuse_terminal(output: str | None) -> None:
    """Fail before any work when binary output would go to a terminal."""
    if (output is None or output == "-") and stdout_is_terminal():
        # The same refusal write_binary makes, made early: a core can take a while.
        _refuse()


@contextmanager
def open_input(
    name: str, *, layout_option: str | None = None, xcr0: int | None = None
) -> Iterator[Opened]:
    """The source's images and, for a whole core, the core to rewrite. A core read from
    standard input stays open (its spool too) until the block ends, so that it can be
    copied."""
    if name == "-" and stdin_is_terminal():
        raise UsageError(
            "standard input is a terminal: name a SOURCE or pipe an image or a core in"
        )
    with opened_source(name, layout_option=layout_option, xcr0=xcr0) as result:
        yield Opened(result, result.core)


def transform_images(opened: Opened, transform: Transform) -> list[XsaveImage]:
    """Every thread's image of a whole core transformed, or the source's one image.
    Refuses a core thread that has no NT_X86_XSTATE, and a source of several images
    (a raw output holds one)."""
    result = opened.result
    if opened.core is None:
        if len(result.images) != 1:
            raise UsageError(
                f"{result.name}: {len(result.images)} images ({result.kind}); a raw output"
                " holds one: pass a core, CORE@TID, or a raw image"
            )
        return [transform(result.images[0])]
    for thread, image in zip(opened.core.threads, result.images, strict=True):
        if thread.xstate is None or image.format == FXSAVE:
            raise InputError(
                result.name,
                f"thread {thread.tid} has no NT_X86_XSTATE note (only the FXSAVE area of"
                " NT_PRFPREG): there is no XSAVE image to rewrite",
            )
    return [transform(image) for image in result.images]


def write_result(opened: Opened, images: Sequence[XsaveImage], output: str | None) -> None:
    """A core with each thread's NT_X86_XSTATE replaced, or the one raw image; to -o FILE
    or stdout."""
    core = opened.core
    if core is None:
        write_binary(images[0].data, output, mode=opened.result.file_mode)
        return
    layout_note = None
    if core.xsave_layout is not None:
        first = images[0]
        if any(i.xcr0 != first.xcr0 or i.layout != first.layout for i in images):
            raise XcrError(
                f"{opened.result.name}: threads ended with different XCR0 or layouts; one"
                " NT_X86_XSAVE_LAYOUT cannot describe them"
            )
        layout_note = note_from_layout(first.layout, first.xcr0)
    from xcr0tool.sources.corewriter import write_core

    xstate = {index: image.data for index, image in enumerate(images)}
    # Straight to the output, standard output included: every check of the core's
    # layout is made before the first byte is written (corewriter.write_core).
    write_core(core, output, xstate=xstate, xsave_layout=layout_note)


def component_lines(
    verb: str, originals: Sequence[XsaveImage], component_ids: Iterable[int]
) -> list[str]:
    """One line per component, for stderr: what happened to it and whether it held state.

    'removed opmask (component 5): in use in 3 of 4 threads, its values are gone'
    """
    lines = []
    for i in component_ids:
        name = f"{component(i).name} (component {i})"
        in_use = sum(1 for image in originals if image.in_use(i))
        if len(originals) == 1:
            state = "in use, its values are gone" if in_use else "in its init state"
            lines.append(f"{verb} {name}: {state}")
        else:
            lost = ", their values are gone" if in_use else ""
            lines.append(f"{verb} {name}: in use in {in_use} of {len(originals)} threads{lost}")
    return lines
