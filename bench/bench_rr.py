#!/usr/bin/env python3
"""Benchmark reading an rr trace's events: throughput and peak memory. Not a test.

    python3 bench/bench_rr.py [--mib 256] [--xsave-every 50]

Builds a trace of about MIB MiB of packed frames (uncompressed), as rr writes them
(tests/make_rr_trace.py: capnp's encoder, 64-word first segments, 1 MiB brotli blocks):
frames of syscalls with memory-write records, and every Nth a signal frame with an
11 KiB XSAVE image. Then reports, each in a fresh process:
1. the frame iterator (xcr0tool.formats.rr.iter_frames): MB/s of uncompressed events and
   of the file, frames/s, peak RSS;
2. `xcr0tool decode TRACE@LAST --json`: finding the last frame, wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import make_rr_trace as mk  # noqa: E402

ITERATE = """
import resource, sys, time
from xcr0tool.formats.rr import iter_frames
start = time.perf_counter()
frames = xsave = 0
for frame in iter_frames(sys.argv[1], xsave_size=int(sys.argv[2])):
    frames += 1
    xsave += frame.xsave is not None
took = time.perf_counter() - start
print(frames, xsave, took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--xsave-every", type=int, default=50)
    args = parser.parse_args()
    records = mk.host_cpuid_records()
    size = mk.leaf_0d(records)[0][1]
    image = bytearray(size)
    image[0:2] = (0x37F).to_bytes(2, "little")
    image[24:28] = (0x1F80).to_bytes(4, "little")
    image[32:416] = bytes(range(256)) + bytes(range(128))
    image[464:472] = (3).to_bytes(8, "little")
    image[512:520] = (3).to_bytes(8, "little")
    specs = [
        mk.FrameSpec(100 + i % 7, None, mk.EXECVE_EVENT, mem_writes=i % 20)
        for i in range(args.xsave_every - 1)
    ]
    specs.append(mk.FrameSpec(100, bytes(image), mk.SIGNAL_EVENT, mem_writes=5))
    unit = mk.capnp_encode("Frame", [mk.frame_text(s) for s in specs], 64)
    copies = max(1, (args.mib << 20) // len(unit))
    with tempfile.TemporaryDirectory(prefix="bench-rr-") as tmp:
        trace = Path(tmp) / "trace"
        trace.mkdir()
        header = mk.capnp_encode("Header", [mk.header_text(records, 3)])
        (trace / "version").write_bytes(b"85\n" + header)
        total = len(unit) * copies
        with open(trace / "events", "wb") as out:
            import brotli

            block = bytearray()
            for _ in range(copies):
                block += unit
                while len(block) >= 1 << 20:
                    chunk = bytes(block[: 1 << 20])
                    del block[: 1 << 20]
                    packed = brotli.compress(chunk, quality=1)
                    out.write(mk.block_header(len(packed), len(chunk)) + packed)
            if block:
                packed = brotli.compress(bytes(block), quality=1)
                out.write(mk.block_header(len(packed), len(block)) + packed)
        file_size = (trace / "events").stat().st_size
        print(f"events: {total / 1e6:.0f} MB packed frames, {file_size / 1e6:.1f} MB on disk,"
              f" {copies * len(specs)} frames")  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-c", ITERATE, str(trace / "events"), str(size)],
            capture_output=True, text=True, check=True, cwd=REPO,
        )  # fmt: skip
        frames, xsave, took, rss = proc.stdout.split()
        took_s = float(took)
        print(f"iter_frames: {frames} frames ({xsave} with XSAVE) in {took_s:.2f} s:"
              f" {total / 1e6 / took_s:.1f} MB/s of packed frames,"
              f" {file_size / 1e6 / took_s:.1f} MB/s of file, {int(frames) / took_s:.0f} frames/s,"
              f" peak RSS {int(rss) / 1024:.0f} MiB")  # fmt: skip
        last = copies * len(specs) - 1
        start = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/env", "time", "-f", "%M", sys.executable, "-m", "xcr0tool", "decode",
             f"{trace}@{last}", "--json"],
            capture_output=True, text=True, check=False, cwd=REPO,
        )  # fmt: skip
        took_s = time.perf_counter() - start
        rss_kib = proc.stderr.strip().splitlines()[-1]
        print(f"decode TRACE@{last} --json: exit {proc.returncode}, {took_s:.2f} s,"
              f" peak RSS {int(rss_kib) / 1024:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
