#!/usr/bin/env python3
"""Benchmark decode: startup, whole-core throughput and peak memory, as ratios against
tools everyone has (a bare python start, gdb, readelf). Not a test: it prints numbers.

    python3 bench/bench_decode.py [--threads 300] [--gib 1] [--runs 15] [--skip-memory]

1. A small decode: `xcr0tool decode CORE` of a one-thread core in a pipe, against
   `python3 -c pass` (goal: at most 6x). Also `--help`, and the import cost of what
   a small decode loads.
2. Every register of every thread of a kernel core with N threads as JSON, against
   gdb's `thread apply all info all-registers` (goal: at least 20x faster) and
   `readelf -n` (which only lists the notes).
3. Peak memory (max RSS) of decoding a core with at least 1 GiB of memory segments
   (goal: at most 80 MiB).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from coremaker import compile_regs, make_big_memory_core, make_kernel_core  # noqa: E402

XCR0TOOL = [sys.executable, "-m", "xcr0tool"]


def timed(argv: Sequence[str], runs: int) -> float:
    """Median wall time of a command, output discarded, in seconds."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def max_rss_mib(argv: Sequence[str]) -> float:
    """Peak resident memory of one run of a command (its own RUSAGE_CHILDREN)."""
    probe = (
        "import resource, subprocess, sys;"
        "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True
    )
    return int(out.stdout) / 1024


def report(name: str, seconds: float, baseline: float | None = None, label: str = "") -> None:
    ratio = f"  {seconds / baseline:5.2f}x {label}" if baseline else ""
    print(f"  {name:<58} {seconds * 1000:9.1f} ms{ratio}")


def startup(core: Path, runs: int) -> None:
    print("1. startup")
    bare = timed([sys.executable, "-c", "pass"], runs)
    report("python3 -c pass", bare)
    report("xcr0tool --help", timed([*XCR0TOOL, "--help"], runs), bare, "bare python")
    small = timed([*XCR0TOOL, "decode", str(core)], runs)
    report("xcr0tool decode CORE (1 thread, plain text)", small, bare, "bare python (goal <= 6x)")
    report(
        "xcr0tool decode --json CORE",
        timed([*XCR0TOOL, "decode", "--json", str(core)], runs),
        bare,
        "bare python",
    )
    for module in ("click", "construct", "rich.console"):
        report(
            f"python3 -c 'import {module}'",
            timed([sys.executable, "-c", f"import {module}"], runs),
            bare,
            "bare python",
        )
    imported = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "xcr0tool", "decode", str(core)],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    heavy = sorted(
        {line.split("|")[-1].strip().split(".")[0] for line in imported.splitlines() if "|" in line}
        & {"rich", "elftools", "hypothesis", "construct", "click", "json", "decimal"}
    )
    print(f"  top-level packages a small decode imports: {', '.join(heavy)}")


def throughput(core: Path, threads: int, runs: int) -> None:
    print(f"2. every register of every thread of a {threads}-thread kernel core")
    _throughput(core, runs)
    # gdb 13 and older know only Intel's offsets: on an AMD-layout core they refuse the
    # XSTATE note and show the FXSAVE registers alone, a third of the work. The same core
    # moved into Intel's layout is one they read whole.
    intel = core.with_name(core.name + ".intel")
    subprocess.run(
        [
            *XCR0TOOL,
            "convert",
            "--to",
            "standard",
            "--layout",
            "intel",
            str(core),
            "-o",
            str(intel),
        ],
        check=True,
    )
    print("   the same core in Intel's standard layout (what gdb 13 reads whole):")
    _throughput(intel, runs)


def _throughput(core: Path, runs: int) -> None:
    ours = timed([*XCR0TOOL, "decode", "--json", str(core)], runs)
    report("xcr0tool decode --json CORE", ours)
    readelf = shutil.which("readelf")
    if readelf:
        notes = timed([readelf, "-n", str(core)], runs)
        report("readelf -n CORE (lists notes, decodes no register)", notes)
        print(f"  xcr0tool / readelf -n: {ours / notes:.2f}x the time")
    gdb = shutil.which("gdb")
    if gdb:
        command = [
            gdb,
            "-batch",
            "-nx",
            "-q",
            "-ex",
            "thread apply all info all-registers",
            "-c",
            str(core),
        ]
        theirs = timed(command, max(1, runs // 5))
        report("gdb -batch -ex 'thread apply all info all-registers'", theirs)
        print(f"  gdb / xcr0tool: {theirs / ours:.1f}x faster (goal >= 20x)")
    else:
        print("  gdb not installed: no comparison")


def memory(tmp: Path, gib: int, program: Path) -> None:
    print(f"3. peak memory on a core with >= {gib} GiB of memory segments")
    made = make_big_memory_core(tmp, gib, program=program)
    size = made.core.stat().st_size
    print(f"  core: {size / (1 << 30):.2f} GiB")
    print(f"  python3 -c pass: {max_rss_mib([sys.executable, '-c', 'pass']):.1f} MiB")
    for args in (["decode"], ["decode", "--json"]):
        rss = max_rss_mib([*XCR0TOOL, *args, str(made.core)])
        print(f"  xcr0tool {' '.join(args)} CORE: max RSS {rss:.1f} MiB (goal <= 80 MiB)")
    made.core.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=300)
    parser.add_argument("--gib", type=int, default=1)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--skip-memory", action="store_true")
    options = parser.parse_args()
    os.environ.setdefault("NO_COLOR", "1")
    # Installed packages carry compiled bytecode; measure that, not a compile per run.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "xcr0tool")], check=True)
    with tempfile.TemporaryDirectory(prefix="xcr0tool-bench-") as scratch:
        tmp = Path(scratch)
        program = compile_regs(tmp / "build")
        one = make_kernel_core(tmp, seed=1, threads=1, program=program).core
        startup(one, options.runs)
        many = make_kernel_core(tmp, seed=2, threads=options.threads, program=program).core
        throughput(many, options.threads, max(3, options.runs // 3))
        if not options.skip_memory:
            memory(tmp, options.gib, program)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"(benchmark driver max RSS {usage.ru_maxrss / 1024:.1f} MiB)")


if __name__ == "__main__":
    main()
