"""Choosing the layout an image is read with (the policy above the model).

An explicit layout (a core's NT_X86_XSAVE_LAYOUT note, --layout) wins; an image this
machine could have saved takes this machine's; otherwise a guess from XCR0 and the image
size among the built-in profiles, which names itself and refuses when two fit but
disagree. The size of a standard image is its buffer's, which may have been made for a
larger XCR0 (profiles.guess_layout with buffer=True): every command reads an image
through here, so decode, diff, validate, convert and mask agree on its layout.
"""

from __future__ import annotations

from xcr0tool.arch.components import COMPACTED_BIT, EXTENDED_START, bits, is_extended
from xcr0tool.errors import LayoutError
from xcr0tool.model.image import (
    FXSAVE,
    HostFallback,
    Recognised,
    XsaveImage,
    assemble,
    recognise,
)
from xcr0tool.model.layout import LEGACY_BITS, Layout


def build_image(
    data: bytes,
    *,
    origin: str,
    layout: Layout | None,
    tid: int | None = None,
    long_mode: bool = True,
    xcr0: int | None = None,
    xcr0_source: str | None = None,
    host: HostFallback | None = None,
) -> XsaveImage:
    """Recognise `data`, choose its layout and return the model.

    `layout`: an explicit layout (core note, --layout); None means the host's when the
    image is this machine's by its size, else a guess that names itself."""
    found = recognise(data, origin=origin, xcr0=xcr0, xcr0_source=xcr0_source, host=host)
    chosen = layout or found.host_layout or choose_layout(found)
    return assemble(found, chosen, tid=tid, long_mode=long_mode)


def choose_layout(found: Recognised) -> Layout:
    """The built-in layout that fits what the image's bytes say, or the one-line refusal."""
    from xcr0tool.layouts.profiles import guess_layout

    try:
        if found.format == FXSAVE:
            return guess_layout(LEGACY_BITS, EXTENDED_START, found.origin)
        if found.format == "compacted":
            return _guess_compacted(found.xcomp_bv, found.origin)
        return _guess_standard(found.xcr0 | LEGACY_BITS, found.areas, found.origin)
    except LayoutError as exc:
        raise found.refusal(exc.problem) from None


def _guess_standard(xcr0: int, sizes: list[int], origin: str) -> Layout:
    """The guess for the first of `sizes` that a built-in layout fits; else the error the
    first size gets."""
    from xcr0tool.layouts.profiles import guess_layout

    first: LayoutError | None = None
    for size in sizes:
        try:
            return guess_layout(xcr0, size, origin, buffer=True)
        except LayoutError as exc:
            first = first or exc
    assert first is not None  # sizes is never empty
    raise first


def _guess_compacted(xcomp_bv: int, origin: str) -> Layout:
    """Compacted images need only sizes and alignment, which every vendor shares for user
    components; take the first profile that knows every component listed."""
    from xcr0tool.layouts.profiles import PROFILES, profile_layout

    wanted = xcomp_bv & ~COMPACTED_BIT
    for profile in PROFILES:
        layout = profile_layout(profile.name)
        if wanted & ~layout.known_mask() == 0:
            return layout.with_source(
                f"sizes and alignment of {layout.source} (a compacted image needs no offsets)"
            )
    intel = profile_layout("intel")
    unknown = [i for i in bits(wanted) if is_extended(i) and intel.get(i) is None]
    raise LayoutError(
        origin,
        f"no built-in layout knows components {unknown} of XCOMP_BV {xcomp_bv:#x};"
        " pass --layout FILE",
    )
