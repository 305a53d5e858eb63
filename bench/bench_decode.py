#!/usr/bin/env python3
"""Benchmark decode: startup, whole-core throughput, terminals, pipes and peak memory,
as ratios against tools everyone has (the bare interpreter, gdb, readelf). Not a test: it
prints numbers, and at the end every ratio beside its goal.

    python3 bench/bench_decode.py [--threads 300] [--gib 1] [--runs 15] [--skip-memory]

Every ratio is measured in alternating pairs (A, B, A, B, ...) and is the median of the
per-pair ratios, so that load from elsewhere on the machine hits both sides alike. The
interpreter is `sys.executable` itself, the real binary (never a `python3` found on PATH,
which may be a version manager's shell shim that costs more than Python's own start).
When xcr0tool is an editable install (`pip install -e`, as in development and CI), that
interpreter imports the install's path finder at every start, `-c pass` included
(pathlib, urllib.parse, importlib.util: about as long again as Python's own start),
which would hide startup costs in the baseline. The benchmark then runs the same binary
from a scratch venv whose one .pth names this repository and the dependencies'
site-packages as plain paths: what site.py sees of a regular install.

1. Startup: a one-thread `decode --json` (goal <= 6x the bare interpreter) and `--help`
   (goal <= 5x); the import cost of what a small decode loads.
2. Every register of every thread of a kernel core with N threads as JSON, against
   gdb's `thread apply all info all-registers` (goal: at least 20x faster) and
   `readelf -n` (which only lists the notes).
3. The same core shown on a terminal (a pty) against a pipe (goal <= 2x).
4. A core with >= 1 GiB of memory piped into `decode -` against the same by path (goal
   <= 3x), and peak memory (max RSS) decoding it (goal <= 80 MiB).
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

from coremaker import compile_regs, make_big_memory_core, make_kernel_core  # noqa: E402

# The interpreter timed, XCR0TOOL[0]: sys.executable, or see plain_interpreter().
XCR0TOOL = [sys.executable, "-m", "xcr0tool"]
RESULTS: list[tuple[str, float, str]] = []  # (what, ratio, goal) for the closing table


def _once(argv: Sequence[str], *, stdin_path: Path | None = None, pty: bool = False) -> float:
    """Wall time of one run, output discarded (or drained from a pty)."""
    start = time.perf_counter()
    if pty:
        _run_on_pty(argv)
    elif stdin_path is not None:
        with stdin_path.open("rb") as stdin:
            subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, check=True)
    else:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def _run_on_pty(argv: Sequence[str]) -> None:
    """Run with stdout on a pseudo-terminal of 200x50, reading everything it prints."""
    import pty as ptys

    leader, follower = ptys.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = {**os.environ, "PAGER": "cat", "TERM": "xterm-256color"}
    proc = subprocess.Popen(argv, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    while True:
        try:
            if not os.read(leader, 1 << 16):
                break
        except OSError:  # EIO: the child closed the terminal
            break
    os.close(leader)
    if proc.wait() != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv)


def paired_ratio(
    a: Callable[[], float], b: Callable[[], float], runs: int
) -> tuple[float, float, float]:
    """(median A seconds, median B seconds, median of per-pair A/B) over alternating runs."""
    a(), b()  # warm caches, bytecode and the page cache
    times_a, times_b, ratios = [], [], []
    for _ in range(runs):
        ta, tb = a(), b()
        times_a.append(ta)
        times_b.append(tb)
        ratios.append(ta / tb)
    return statistics.median(times_a), statistics.median(times_b), statistics.median(ratios)


def compare(
    what: str,
    a: Callable[[], float],
    b: Callable[[], float],
    runs: int,
    *,
    goal: str,
    invert: bool = False,
    names: tuple[str, str] = ("", ""),
) -> float:
    """Print and record A against B; `invert` reports B/A ("x faster")."""
    ta, tb, ratio = paired_ratio(a, b, runs)
    shown = 1 / ratio if invert else ratio
    label = names[0] or "A"
    other = names[1] or "B"
    print(f"  {label:<56} {ta * 1000:9.1f} ms")
    print(f"  {other:<56} {tb * 1000:9.1f} ms")
    print(f"  -> {what}: {shown:.2f}x (goal {goal})")
    RESULTS.append((what, shown, goal))
    return shown


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
        [XCR0TOOL[0], "-c", probe, *argv], capture_output=True, text=True, check=True
    )
    return int(out.stdout) / 1024


def report(name: str, seconds: float, baseline: float | None = None, label: str = "") -> None:
    ratio = f"  {seconds / baseline:5.2f}x {label}" if baseline else ""
    print(f"  {name:<58} {seconds * 1000:9.1f} ms{ratio}")


def startup(core: Path, runs: int) -> None:
    print(f"1. startup ({XCR0TOOL[0]})")
    bare = [XCR0TOOL[0], "-c", "pass"]
    compare(
        "decode --json of a one-thread core / bare interpreter",
        lambda: _once([*XCR0TOOL, "decode", "--json", str(core)]),
        lambda: _once(bare),
        runs,
        goal="<= 6x",
        names=("xcr0tool decode --json CORE (1 thread)", "interpreter -c pass"),
    )
    compare(
        "--help / bare interpreter",
        lambda: _once([*XCR0TOOL, "--help"]),
        lambda: _once(bare),
        runs,
        goal="<= 5x",
        names=("xcr0tool --help", "interpreter -c pass"),
    )
    for module in ("click", "construct", "rich.console"):
        report(
            f"interpreter -c 'import {module}'",
            timed([XCR0TOOL[0], "-c", f"import {module}"], runs),
            timed(bare, runs),
            "bare interpreter",
        )
    imported = subprocess.run(
        [XCR0TOOL[0], "-X", "importtime", "-m", "xcr0tool", "decode", "--json", str(core)],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    heavy = sorted(
        {line.split("|")[-1].strip().split(".")[0] for line in imported.splitlines() if "|" in line}
        & {"rich", "elftools", "hypothesis", "construct", "click", "json", "decimal"}
    )
    print(f"  top-level packages a small decode --json imports: {', '.join(heavy)}")


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
    ours = [*XCR0TOOL, "decode", "--json", str(core)]
    readelf = shutil.which("readelf")
    if readelf:
        compare(
            "decode --json / readelf -n (which decodes no register)",
            lambda: _once(ours),
            lambda: _once([readelf, "-n", str(core)]),
            runs,
            goal="none: context",
            names=("xcr0tool decode --json CORE", "readelf -n CORE"),
        )
    gdb = shutil.which("gdb")
    if gdb is None:
        print("  gdb not installed: no comparison")
        return
    command = [gdb, "-batch", "-nx", "-q", "-ex", "thread apply all info all-registers"]
    compare(
        f"gdb / xcr0tool on {core.name} (x faster)",
        lambda: _once(ours),
        lambda: _once([*command, "-c", str(core)]),
        max(1, runs // 3),
        goal=">= 20x",
        invert=True,
        names=("xcr0tool decode --json CORE", "gdb thread apply all info all-registers"),
    )


def terminal(core: Path, runs: int) -> None:
    print("3. the many-thread core on a terminal (a pty, 200x50) against a pipe")
    view = [*XCR0TOOL, "decode", str(core)]
    # The same text both ways: every thread, no pager.
    full = [*view, "--all", "--no-pager"] if _has_option("--all") else view
    compare(
        "decode on a terminal / in a pipe (every thread)",
        lambda: _once(full, pty=True),
        lambda: _once(full),
        runs,
        goal="<= 2x",
        names=("xcr0tool decode CORE on a pty", "xcr0tool decode CORE | (discarded)"),
    )


def _has_option(option: str) -> bool:
    helped = subprocess.run(
        [*XCR0TOOL, "decode", "--help"], capture_output=True, text=True, check=False
    )
    return option in helped.stdout


def memory(tmp: Path, gib: int, program: Path) -> None:
    print(f"4. a core with >= {gib} GiB of memory segments: piped, and peak memory")
    made = make_big_memory_core(tmp, gib, program=program)
    size = made.core.stat().st_size
    print(f"  core: {size / (1 << 30):.2f} GiB")
    by_path = [*XCR0TOOL, "decode", "--json", str(made.core)]
    piped = [*XCR0TOOL, "decode", "--json", "-"]
    compare(
        "decode - of a piped core / decode CORE by path",
        lambda: _once(piped, stdin_path=made.core),
        lambda: _once(by_path),
        3,
        goal="<= 3x",
        names=("xcr0tool decode --json - < CORE", "xcr0tool decode --json CORE"),
    )
    print(f"  interpreter -c pass: {max_rss_mib([XCR0TOOL[0], '-c', 'pass']):.1f} MiB")
    for args in (["decode"], ["decode", "--json"]):
        rss = max_rss_mib([*XCR0TOOL, *args, str(made.core)])
        print(f"  xcr0tool {' '.join(args)} CORE: max RSS {rss:.1f} MiB (goal <= 80 MiB)")
    made.core.unlink()


def editable_install() -> bool:
    """Is xcr0tool installed in editable mode (PEP 610's direct_url.json says so)?"""
    import importlib.metadata
    import json

    try:
        direct_url = importlib.metadata.distribution("xcr0tool").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return False
    return bool(json.loads(direct_url or "{}").get("dir_info", {}).get("editable"))


def plain_interpreter(tmp: Path, runs: int) -> str:
    """sys.executable, or for an editable install the same binary in a scratch venv that
    finds this repository and the dependencies by plain paths (no finder to import)."""
    if not editable_install():
        return sys.executable
    import site
    import venv

    scratch = tmp / "plain-venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(scratch)
    python = str(scratch / "bin" / "python")
    found = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    paths = [str(REPO), *site.getsitepackages()]
    (Path(found) / "xcr0tool-bench.pth").write_text("\n".join(paths) + "\n")
    editable = timed([sys.executable, "-c", "pass"], runs)
    plain = timed([python, "-c", "pass"], runs)
    print(
        f"xcr0tool is an editable install: its finder makes every start of {sys.executable}"
        f" {editable * 1000:.1f} ms ({plain * 1000:.1f} ms without it); timing {python},"
        " the same binary, which finds the repository by a plain path"
    )
    return python


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
        XCR0TOOL[0] = plain_interpreter(tmp, options.runs)
        program = compile_regs(tmp / "build")
        one = make_kernel_core(tmp, seed=1, threads=1, program=program).core
        startup(one, options.runs)
        many = make_kernel_core(tmp, seed=2, threads=options.threads, program=program).core
        throughput(many, options.threads, max(3, options.runs // 3))
        terminal(many, max(3, options.runs // 3))
        if not options.skip_memory:
            memory(tmp, options.gib, program)
    print("\nratios (each the median of alternating pairs):")
    for what, ratio, goal in RESULTS:
        print(f"  {ratio:8.2f}x  {what:<64} goal {goal}")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"(benchmark driver max RSS {usage.ru_maxrss / 1024:.1f} MiB)")


if __name__ == "__main__":
    main()
