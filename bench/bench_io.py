#!/usr/bin/env python3
"""Benchmark the file and stream layer: piped and compressed cores, sparse rewrites,
hostile cores. Not a test: it prints numbers (the tests hold the bounds).

    python3 bench/bench_io.py [--runs 5] [--dir DIR] [--skip-compressed]

1. `cat 1g.core | xcr0tool decode -` against `xcr0tool decode 1g.core` (goal: within
   3x), a core with 1 GiB of memory (sparse on disk, 1 GiB through the pipe).
2. `xcr0tool mask --xcr0 0x7 8g.core -o out` of a sparse 8 GiB core: time, and the
   output's size on disk (st_blocks) against the input's.
3. The hostile cores of tests/bigcores.py: exit status, the one stderr line, time and
   peak memory (each run under a 4 GiB address-space limit and a 60 s timeout).
4. Decoding a core compressed with zstd, xz, gzip and lz4 (the system tools), against
   the plain core: every format stops after the notes.

Times are medians of alternating runs; peak memory is the child's own ru_maxrss.
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
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import bigcores  # noqa: E402

# sys.executable itself, not its resolved path: a venv's python is a link to the base
# interpreter, which would run without the venv's packages.
XCR0TOOL = [sys.executable, "-m", "xcr0tool"]
LIMIT = 4 << 30


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def run_once(argv: Sequence[str] | str, shell: bool = False) -> tuple[float, int, int, str]:
    """Wall time, exit status, peak RSS (KiB) and stderr's last line of one run."""
    start = time.perf_counter()
    process = subprocess.Popen(
        argv,
        shell=shell,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_limits,  # noqa: PLW1509
    )
    assert process.stderr is not None
    try:
        err = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        process.stderr.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    lines = err.decode(errors="replace").strip().splitlines()
    return elapsed, process.returncode, usage.ru_maxrss, lines[-1] if lines else ""


def median_pair(a: Callable[[], float], b: Callable[[], float], runs: int) -> tuple[float, float]:
    """Median times of two commands, run in alternation."""
    ta, tb = [], []
    for _ in range(runs):
        ta.append(a())
        tb.append(b())
    return statistics.median(ta), statistics.median(tb)


def shell_line(*words: str) -> str:
    return " ".join(words)


def piped(directory: Path, runs: int) -> None:
    core = bigcores.with_memory(directory / "1g.core", bigcores.GIB, marks=(0,))
    tool = " ".join(XCR0TOOL)
    by_pipe, by_path = median_pair(
        lambda: run_once(f"cat {core} | {tool} decode -", shell=True)[0],
        lambda: run_once([*XCR0TOOL, "decode", str(core)])[0],
        runs,
    )
    print(
        f"1 GiB core piped: {by_pipe:.3f} s; by path: {by_path:.3f} s;"
        f" ratio {by_pipe / by_path:.2f} (goal <= 3)"
    )


def sparse_mask(directory: Path, runs: int) -> None:
    core = bigcores.with_memory(
        directory / "8g.core", 8 * bigcores.GIB, marks=(0, 3 * bigcores.GIB)
    )
    out = directory / "8g.masked"
    times = []
    for _ in range(max(1, runs // 2)):
        out.unlink(missing_ok=True)
        elapsed, code, rss, line = run_once(
            [*XCR0TOOL, "mask", "--xcr0", "0x7", str(core), "-o", str(out)]
        )
        if code:
            print(f"mask of a sparse 8 GiB core: exit {code}: {line}")
            return
        times.append(elapsed)
    src, dst = core.stat(), out.stat()
    print(
        f"mask of a sparse 8 GiB core: {statistics.median(times):.2f} s, peak {rss / 1024:.0f} MiB;"
        f" input {src.st_size} bytes / {src.st_blocks * 512} on disk,"
        f" output {dst.st_size} bytes / {dst.st_blocks * 512} on disk"
    )
    out.unlink()


def hostile(directory: Path) -> None:
    cores = {
        "p_align 2^63 in the notes (convert --layout intel)": bigcores.bad_align(
            directory / "a63.core", 1 << 63
        ),
        "p_align 2^50 in the notes (convert --layout intel)": bigcores.bad_align(
            directory / "a50.core", 1 << 50
        ),
        "PT_NOTE of 4 GiB in 8 GiB": bigcores.huge_note_segment(directory / "ns.core"),
        "one note of 4 GiB": bigcores.huge_note(directory / "n.core"),
        "PN_XNUM, 2^32-1 headers, 256 GiB": bigcores.many_phdrs(directory / "ph.core"),
    }
    for label, core in cores.items():
        if "convert" in label:
            out = directory / "out.core"
            argv = [*XCR0TOOL, "convert", "--layout", "intel", str(core), "-o", str(out)]
        else:
            argv = [*XCR0TOOL, "decode", str(core)]
        argv = ["timeout", "60", *argv]
        elapsed, code, rss, line = run_once(argv)
        size = ""
        if "convert" in label and (directory / "out.core").exists():
            info = (directory / "out.core").stat()
            size = f"; output {info.st_size} bytes"
            (directory / "out.core").unlink()
        print(f"{label}: exit {code}, {elapsed:.2f} s, peak {rss / 1024:.0f} MiB{size}: {line}")


def compressed(directory: Path, runs: int) -> None:
    core = bigcores.with_memory(directory / "c.core", 256 << 20, marks=(0, 128 << 20))
    tools = {
        "zst": ["zstd", "-q", "-f"],
        "xz": ["xz", "-k", "-f", "-T1"],
        "gz": ["gzip", "-k", "-f"],
        "lz4": ["lz4", "-q", "-f"],
    }
    plain = statistics.median(run_once([*XCR0TOOL, "decode", str(core)])[0] for _ in range(runs))
    print(f"plain core (256 MiB of memory): decode {plain:.3f} s")
    for suffix, tool in tools.items():
        if shutil.which(tool[0]) is None:
            print(f"{suffix}: {tool[0]} not installed")
            continue
        packed = directory / f"c.core.{suffix}"
        subprocess.run([*tool, str(core)] + ([str(packed)] if suffix == "lz4" else []), check=True)
        result = [run_once([*XCR0TOOL, "decode", str(packed)]) for _ in range(runs)]
        code, line = result[0][1], result[0][3]
        t = statistics.median(r[0] for r in result)
        rss = max(r[2] for r in result)
        piped_t = statistics.median(
            run_once(f"cat {packed} | {' '.join(XCR0TOOL)} decode -", shell=True)[0]
            for _ in range(runs)
        )
        status = "ok" if code == 0 else f"exit {code}: {line}"
        print(
            f"{suffix} ({packed.stat().st_size} bytes): by path {t:.3f} s, piped {piped_t:.3f} s,"
            f" peak {rss / 1024:.0f} MiB; {status}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", help="where to make the cores (default: a temporary directory)")
    parser.add_argument("--skip-compressed", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xcr0tool-bench-io-", dir=args.dir) as name:
        directory = Path(name)
        piped(directory, args.runs)
        sparse_mask(directory, args.runs)
        hostile(directory)
        if not args.skip_compressed:
            compressed(directory, args.runs)


if __name__ == "__main__":
    main()
