"""Properties of the transforms over generated images and layouts.

Images are drawn for the built-in Intel (MPX, AVX-512, PKRU, AMX), Intel client, AMD
Zen 4 layouts and a synthetic APX layout (Intel's, with APX's R16-R31 at 960 where MPX
was), with any XCR0 those layouts allow, in the standard or the compacted format, with
random contents, random XSTATE_BV, and stale bytes wherever nothing is in use.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xcr0tool.arch import offsets
from xcr0tool.arch.components import COMPACTED_BIT, EXTENDED_START
from xcr0tool.layouts.choose import build_image
from xcr0tool.layouts.profiles import profile_layout
from xcr0tool.model.image import COMPACTED, STANDARD, XsaveImage, read_u64
from xcr0tool.model.layout import ComponentLayout, Layout, layout_from_components
from xcr0tool.ops import transforms

APX = 19


def apx_layout() -> Layout:
    """Intel's layout without MPX and with APX (component 19: 128 bytes at 960, in the
    space MPX left), as the APX specification places it."""
    intel = profile_layout("intel")
    entries = [entry for entry in intel.components if entry.id not in (3, 4)]
    entries.append(ComponentLayout(APX, 128, 960, False, False))
    return layout_from_components(entries, "synthetic APX layout (APX at 960)")


LAYOUTS = [
    profile_layout("intel"),
    profile_layout("intel-client"),
    profile_layout("amd-zen4"),
    apx_layout(),
]
# Components that come and go together in XCR0 (SDM vol. 1 §13.3).
GROUPS = {"mpx": 0b11 << 3, "avx512": 0b111 << 5, "pkru": 1 << 9, "amx": 0b11 << 17, "apx": 1 << 19}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def xcr0_values(draw: st.DrawFn, layout: Layout) -> int:
    """A value XCR0 can hold, of components the layout knows."""
    known = layout.known_mask()
    value = 0b1
    if draw(st.booleans()):
        value |= 0b10
        if draw(st.booleans()):
            value |= 0b100
    for name, group in GROUPS.items():
        needs_avx = name == "avx512"
        if group & known == group and (value & 0b100 or not needs_avx) and draw(st.booleans()):
            value |= group
    return value


@dataclass(frozen=True)
class Case:
    image: XsaveImage
    other_mask: int  # a second XCR0 value for the same layout


@st.composite
def images(draw: st.DrawFn, form: str | None = None) -> Case:
    layout = draw(st.sampled_from(LAYOUTS))
    xcr0 = draw(xcr0_values(layout))
    chosen = form or draw(st.sampled_from([STANDARD, COMPACTED]))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    if chosen == COMPACTED:
        # XSAVEC's RFBM: here a value XCR0 can hold, so that the image's XCR0 (read from
        # XCOMP_BV) can be masked
        space = xcr0 & draw(xcr0_values(layout))
        size = layout.compacted_size(space)
    else:
        size, space = layout.standard_size(xcr0), xcr0
    data = bytearray(rng.randbytes(size))
    mxcsr = draw(st.sampled_from([0x1F80, 0x1F80 | rng.getrandbits(6), 0x3F80, 0x9FC0]))
    struct.pack_into("<I", data, offsets.MXCSR, mxcsr)
    struct.pack_into("<Q", data, offsets.XSTATE_BV, space & draw(st.integers(0, 2**64 - 1)))
    data[offsets.XCOMP_BV : EXTENDED_START] = bytes(EXTENDED_START - offsets.XCOMP_BV)
    if chosen == COMPACTED:
        struct.pack_into("<Q", data, offsets.XCOMP_BV, space | COMPACTED_BIT)
    given = xcr0 if chosen == STANDARD else None
    image = build_image(bytes(data), origin="generated", layout=layout, xcr0=given)
    return Case(image, draw(xcr0_values(layout)))


state = transforms.canonical_state


def kept(full: dict[int, bytes], xcr0: int) -> dict[int, bytes]:
    """The state an image keeps under XCR0 = xcr0 (MXCSR and XMM go with SSE or AVX)."""
    return {i: value for i, value in full.items() if (xcr0 & 0b110 if i == 1 else xcr0 >> i & 1)}


@SETTINGS
@given(images(STANDARD))
def test_standard_compacted_standard_keeps_the_state(case: Case) -> None:
    image = case.image
    compacted = transforms.to_compacted(image)
    assert compacted.format == COMPACTED
    assert state(compacted) == state(image)
    back, dropped = transforms.to_standard(compacted)
    assert dropped == ()
    assert len(back.data) == len(image.data) == image.layout.standard_size(image.xcr0)
    assert state(back) == state(image)


@SETTINGS
@given(images(COMPACTED))
def test_compacted_standard_compacted_keeps_the_state(case: Case) -> None:
    image = case.image
    standard, _ = transforms.to_standard(image)
    assert standard.xcr0 == image.xcomp_bv & ~COMPACTED_BIT
    assert state(standard) == state(image)
    again = transforms.to_compacted(standard, image.xcomp_bv)
    assert again.data == transforms.to_compacted(image).data


@SETTINGS
@given(images(STANDARD), st.integers(0, 2**64 - 1))
def test_compacting_keeps_what_rfbm_names(case: Case, rfbm: int) -> None:
    image = case.image
    compacted = transforms.to_compacted(image, rfbm)
    saved = image.xcr0 & rfbm
    assert compacted.xcomp_bv == saved | COMPACTED_BIT
    assert compacted.xstate_bv & ~saved == 0
    assert len(compacted.data) == image.layout.compacted_size(saved)
    expected = {i: v for i, v in state(image).items() if i != 1 and saved >> i & 1}
    if saved & 0b10:
        expected[1] = state(image)[1]
    elif saved & 0b100:  # AVX without SSE: XRSTOR leaves MXCSR and the XMMs in init state
        expected[1] = transforms.MXCSR_INIT_BYTES + bytes(256)
    assert state(compacted) == expected


@SETTINGS
@given(images())
def test_mask_is_idempotent(case: Case) -> None:
    once, _ = transforms.mask(case.image, case.other_mask)
    twice, report = transforms.mask(once, case.other_mask)
    assert twice.data == once.data and twice.xcr0 == once.xcr0
    assert report.removed == 0 and report.size_before == report.size_after


@SETTINGS
@given(images(), st.data())
def test_masks_compose(case: Case, data: st.DataObject) -> None:
    image = case.image
    second = data.draw(xcr0_values(image.layout))
    for keep_size in (False, True):
        first, _ = transforms.mask(image, case.other_mask, keep_size)
        both, _ = transforms.mask(first, second, keep_size)
        direct, _ = transforms.mask(image, case.other_mask & second, keep_size)
        assert both.data == direct.data and both.xcr0 == direct.xcr0


@SETTINGS
@given(images())
def test_mask_keeps_exactly_the_masked_state(case: Case) -> None:
    image = case.image
    masked, report = transforms.mask(image, case.other_mask)
    xcr0 = image.xcr0 & case.other_mask
    assert masked.xcr0 == report.xcr0_after == xcr0
    assert masked.xstate_bv & ~(image.xstate_bv & case.other_mask) == 0  # nothing added
    if image.format == STANDARD:
        assert len(masked.data) == image.layout.standard_size(xcr0)
        assert read_u64(masked.data, offsets.SW_BYTES) == xcr0
    full = state(image)
    got = state(masked)
    assert {i: v for i, v in got.items() if i != 1} == {
        i: v for i, v in kept(full, xcr0).items() if i != 1
    }
    if xcr0 & 0b10 and 1 in full:
        assert got[1] == full[1]


@SETTINGS
@given(images(STANDARD))
def test_convert_and_mask_commute_from_standard(case: Case) -> None:
    image, mask = case.image, case.other_mask
    masked_first = transforms.to_compacted(transforms.mask(image, mask)[0])
    compacted_first = transforms.mask(transforms.to_compacted(image), mask)[0]
    assert masked_first.data == compacted_first.data
    assert masked_first.xcr0 == compacted_first.xcr0


@SETTINGS
@given(images(COMPACTED))
def test_convert_and_mask_commute_from_compacted(case: Case) -> None:
    image, mask = case.image, case.other_mask
    masked_first = transforms.to_standard(transforms.mask(image, mask)[0])[0]
    standard_first = transforms.mask(transforms.to_standard(image)[0], mask)[0]
    assert masked_first.data == standard_first.data


@SETTINGS
@given(images(STANDARD), st.sampled_from(LAYOUTS))
def test_relayout_round_trips(case: Case, target: Layout) -> None:
    image = case.image
    if image.xcr0 & ~target.known_mask():
        return
    moved = transforms.relayout(image, target)
    assert len(moved.data) == target.standard_size(image.xcr0)
    assert state(moved) == state(image)
    assert (
        transforms.relayout(moved, image.layout).data
        == transforms.relayout(image, image.layout).data
    )
