"""XSAVE images made here, with random contents, for tests in any layer.

make_image: a standard amd-zen4 image (XCR0 0xe7 by default) as raw bytes; image_for: a
model image of any layout with every component of XCR0 in use; xsaves_image: an
XSAVES-format image with supervisor components. Nothing here reads an image back: the
tests do that with the code under test.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

from xcr0tool.arch import offsets
from xcr0tool.arch.components import COMPACTED_BIT
from xcr0tool.arch.offsets import FCW, MXCSR, SW_BYTES, XMM0, XSTATE_BV
from xcr0tool.layouts.choose import build_image
from xcr0tool.layouts.profiles import profile_layout
from xcr0tool.model.image import FCW_INIT, MXCSR_INIT, XsaveImage
from xcr0tool.model.layout import Layout
from xcr0tool.ops import transforms

XCR0 = 0xE7  # x87 | SSE | AVX | AVX-512
LAYOUT = "amd-zen4"
PASID, CET_U, LBR = 10, 11, 15  # supervisor components of xsaves_image


def make_image(seed: int = 1, xstate_bv: int = XCR0 & ~1, xcr0: int = XCR0) -> bytearray:
    """A standard image for `xcr0` in the amd-zen4 layout, every byte of the XMM
    registers and extended components random, XCR0 in the word at 464."""
    layout = profile_layout(LAYOUT)
    image = bytearray(layout.standard_size(xcr0))
    rng = random.Random(seed)
    struct.pack_into("<HH", image, FCW, FCW_INIT, 0)
    struct.pack_into("<II", image, MXCSR, MXCSR_INIT, 0xFFFF)
    image[XMM0 : XMM0 + 256] = rng.randbytes(256)
    for i, offset in layout.standard_offsets(xcr0).items():
        if i >= 2:
            size = layout.require(i).size
            image[offset : offset + size] = rng.randbytes(size)
    struct.pack_into("<Q", image, SW_BYTES, xcr0)
    struct.pack_into("<Q", image, XSTATE_BV, xstate_bv)
    return image


def image_for(layout: Layout, xcr0: int, seed: int, xstate_bv: int | None = None) -> XsaveImage:
    """A standard image with random contents, every component of xcr0 in use."""
    rng = random.Random(seed)
    size = layout.standard_size(xcr0)
    data = bytearray(rng.randbytes(size))
    struct.pack_into("<I", data, offsets.MXCSR, 0x1F80 | rng.getrandbits(6))
    data[416:576] = bytes(160)
    struct.pack_into("<Q", data, offsets.SW_BYTES, xcr0)
    struct.pack_into("<Q", data, offsets.XSTATE_BV, xcr0 if xstate_bv is None else xstate_bv)
    # Init-state components hold their init values, as the kernel and XSAVE write them.
    image = build_image(bytes(data), origin=f"random {seed}", layout=layout, xcr0=xcr0)
    return transforms.relayout(image, layout)


def xsaves_image(in_use: int) -> XsaveImage:
    """An XSAVES-format image of the intel profile with PASID, CET_U and arch LBR."""
    intel = profile_layout("intel")
    xcomp_bv = 0x2E7 | 1 << PASID | 1 << CET_U | 1 << LBR
    rng = random.Random(xcomp_bv)
    data = bytearray(rng.randbytes(intel.compacted_size(xcomp_bv)))
    struct.pack_into("<I", data, offsets.MXCSR, 0x1F80)
    data[416:576] = bytes(160)
    struct.pack_into("<QQ", data, offsets.XSTATE_BV, in_use, xcomp_bv | COMPACTED_BIT)
    return build_image(bytes(data), origin="xsaves.bin", layout=intel)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    """`data` in tmp_path/name; its path as a string, for a command line."""
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return str(path)


def put(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    """A copy of `data` with `value` packed at `offset` (struct format `fmt`)."""
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def u64(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<Q", data, offset)[0])
