"""In-process throughput of the image transforms (convert, mask), against a plain copy.

    python3 bench/bench_transforms.py [--images N] [--rounds R]

For each kind of image (Intel layout with XCR0 0xe7, 2688 bytes, and 0x2e7, 2696 bytes;
AMD Zen 4 layout with XCR0 0xe7, 2432 bytes) it makes N images with random contents and
random XSTATE_BV, then times each transform over all of them, R rounds, best round kept.
The baseline is `bytes(bytearray(data))`: the least any transform that returns new bytes
must cost. The goal for every transform is at least 50,000 images/s.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xcr0tool.arch import offsets
from xcr0tool.layouts.choose import build_image
from xcr0tool.layouts.profiles import profile_layout
from xcr0tool.model.image import XsaveImage
from xcr0tool.model.layout import Layout
from xcr0tool.ops import transforms

GOAL = 50_000  # images/s


def make_images(layout: Layout, xcr0: int, count: int, seed: int) -> list[XsaveImage]:
    rng = random.Random(seed)
    size = layout.standard_size(xcr0)
    images = []
    for n in range(count):
        data = bytearray(rng.randbytes(size))
        struct.pack_into("<I", data, offsets.MXCSR, 0x1F80 | rng.getrandbits(6))
        data[416:576] = bytes(160)
        struct.pack_into("<Q", data, offsets.SW_BYTES, xcr0)
        struct.pack_into("<Q", data, offsets.XSTATE_BV, rng.getrandbits(64) & xcr0 | 1)
        images.append(build_image(bytes(data), origin=f"bench {n}", layout=layout, xcr0=xcr0))
    return images


def rate(work: Callable[[XsaveImage], object], images: Sequence[XsaveImage], rounds: int) -> float:
    """Images per second, the best of `rounds` passes over all the images."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for image in images:
            work(image)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def bench(label: str, layout: Layout, xcr0: int, other: Layout, args: argparse.Namespace) -> bool:
    images = make_images(layout, xcr0, args.images, seed=xcr0)
    compacted = [transforms.to_compacted(image) for image in images]
    cases: list[tuple[str, Callable[[XsaveImage], object], Sequence[XsaveImage]]] = [
        ("copy bytes(bytearray(data))", lambda image: bytes(bytearray(image.data)), images),
        ("convert --to compacted", transforms.to_compacted, images),
        ("convert --to standard", transforms.to_standard, compacted),
        (f"convert --layout {other.name}", lambda i: transforms.relayout(i, other), images),
        ("mask --xcr0 0x7", lambda image: transforms.mask(image, 0x7), images),
        ("mask --xcr0 0x7 (compacted)", lambda image: transforms.mask(image, 0x7), compacted),
    ]
    size = len(images[0].data)
    print(f"\n{label}: {len(images)} images of {size} bytes, XCR0 {xcr0:#x}, {layout.source}")
    print(f"  {'operation':34} {'images/s':>12} {'MB/s':>8} {'vs copy':>8}  goal {GOAL:,}/s")
    baseline = 0.0
    ok = True
    for name, work, inputs in cases:
        per_second = rate(work, inputs, args.rounds)
        baseline = baseline or per_second
        verdict = "" if name.startswith("copy") else ("ok" if per_second >= GOAL else "BELOW")
        ok = ok and verdict != "BELOW"
        print(
            f"  {name:34} {per_second:12,.0f} {per_second * size / 1e6:8.1f}"
            f" {baseline / per_second:7.1f}x  {verdict}"
        )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; 'vs copy' = how many times slower than the copy")
    intel, amd = profile_layout("intel"), profile_layout("amd-zen4")
    ok = True
    for label, layout, xcr0, other in (
        ("Intel, AVX-512", intel, 0xE7, amd),
        ("Intel, AVX-512 and PKRU", intel, 0x2E7, amd),
        ("AMD Zen 4, AVX-512", amd, 0xE7, intel),
    ):
        ok = bench(label, layout, xcr0, other, args) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
