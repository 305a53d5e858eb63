#!/usr/bin/env python3
"""Benchmark reading an rr trace's events: throughput and peak memory. Not a test.

    python3 bench/bench_rr.py [--mib 256] [--xsave-every 50]
    python3 bench/bench_rr.py --whole 20000

Builds a trace of about MIB MiB of packed frames (uncompressed), as rr writes them
(tests/make_rr_trace.py: capnp's encoder, 64-word first segments, 1 MiB brotli blocks):
frames of syscalls with memory-write records, and every Nth a signal frame with an
11 KiB XSAVE image. Then reports, each in a fresh process:
1. the frame iterator (xcr0tool.formats.rr.iter_frames): MB/s of uncompressed events and
   of the file, frames/s, peak RSS;
2. `xcr0tool decode TRACE@LAST --json`: finding the last frame, wall time and peak RSS.

With --whole N: a trace of N frames with an 11 KiB XSAVE image (each after a syscall
frame), and the wall time and peak RSS of the commands that read every one of them:
decode (text, --json and --summary), diff TRACE TRACE, validate, and compat TRACE host
(which reads only each frame's XSTATE_BV as events streams past). decode streams: its
peak RSS stays flat in N (tests/unit/sources/test_rr_memory.py holds it).
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


def timed(*args: str) -> tuple[int, float, float]:
    """(exit status, seconds, peak RSS in MiB) of `xcr0tool ARGS` in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/env", "time", "-f", "%M", sys.executable, "-m", "xcr0tool", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    took = time.perf_counter() - start
    return proc.returncode, took, int(proc.stderr.strip().splitlines()[-1]) / 1024


def whole(frames: int) -> None:
    records = mk.host_cpuid_records()
    with tempfile.TemporaryDirectory(prefix="bench-rr-") as tmp:
        trace = Path(tmp) / "trace"
        size = mk.write_signal_trace(trace, records, frames)
        print(f"{frames} frames with a {size}-byte XSAVE image ({2 * frames} frames in all)")
        for args in (
            ["decode", str(trace)],
            ["decode", "--json", str(trace)],
            ["decode", "--summary", str(trace)],
            ["diff", str(trace), str(trace)],
            ["validate", str(trace)],
            ["compat", str(trace), "host"],
        ):
            status, took, rss = timed(*args)
            shown = " ".join(a if a != str(trace) else "TRACE" for a in args)
            print(f"{shown:<24} exit {status}  {took:6.2f} s  peak RSS {rss:6.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--xsave-every", type=int, default=50)
    parser.add_argument("--whole", type=int, metavar="N", help="N XSAVE frames, every command")
    args = parser.parse_args()
    if args.whole:
        whole(args.whole)
        return
    records = mk.host_cpuid_records()
    size = mk.leaf_0d(records)[0][1]
    image = mk.xsave_image(size)
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
        mk.write_repeated_events(trace / "events", unit, copies)
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
