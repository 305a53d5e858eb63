#!/usr/bin/env python3
"""A long fuzz campaign over every command: the cases of tests/test_fuzz.py, by the
million.

    python3 tools/fuzz_campaign.py --executions 1000000 --findings findings/
    python3 tools/fuzz_campaign.py --seconds 3600 --workers 2 --findings findings/

Each worker is a forked process that builds cases from (seed, number) and runs them in
its own interpreter through the console-script entry point (no process start per case),
under an address-space budget and an alarm. Every case that breaks the promise for bad
input (exit 0/1/2, one line naming the input, no traceback, bounded time and memory,
inputs untouched, outputs whole or absent) is sorted into a defect class by what broke
and where; the first case of each class is minimised (options dropped, bytes put back
as the seed had them) and written to FINDINGS/NN-class/ as the input, the seed it came
from, a command.sh that reproduces it and the report. A worker that dies (a signal, the
kernel's OOM killer) is restarted and its case recorded as a class of its own.

Progress goes to stderr every --progress seconds; summary.json and summary.txt in
FINDINGS give executions, executions per second and every class with its count.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import multiprocessing
import os
import random
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fuzzkit as fk

BATCH = 100


KINDS: list[str] | None = None  # --kinds, set before the workers fork


def make(seeds: fk.Seeds, commands: list[str], campaign_seed: int, number: int) -> fk.Case:
    """Case `number` of a campaign: the same on every run, in any worker."""
    chooser = fk.RandomChooser(random.Random(f"{campaign_seed}:{number}"))
    return fk.make_case(chooser, seeds, commands, kinds=KINDS)


def worker(
    index: int,
    count: int,
    seeds: fk.Seeds,
    commands: list[str],
    campaign_seed: int,
    start: int,
    stop: Any,
    current: Any,
    results: Any,
    scratch: str,
    limit: int,
) -> None:
    """Run cases start, start+count, ... and report counts and new classes in batches."""
    # Ctrl-C reaches the whole process group: the parent stops the workers, which finish
    # their case and report.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    seen: set[str] = set()
    done = 0
    classes: Counter[str] = Counter()
    found: list[tuple[str, int, str]] = []
    number = start
    scratch_dir = Path(tempfile.mkdtemp(prefix=f"worker{index}-", dir=scratch))
    while not stop.is_set() and number < limit:
        current.value = number
        verdict = fk.run_case(make(seeds, commands, campaign_seed, number), seeds, scratch_dir)
        done += 1
        if verdict.defects:
            classes[verdict.signature] += 1
            if verdict.signature not in seen:
                seen.add(verdict.signature)
                found.append((verdict.signature, number, verdict.report()))
        number += count
        if done == BATCH:
            results.put((index, done, dict(classes), found))
            done, found = 0, []
            classes.clear()
    results.put((index, done, dict(classes), found))
    results.put((index, None, {}, []))


def minimise(
    case: fk.Case,
    seeds: fk.Seeds,
    scratch: Path,
    target: str,
    budget: int = 200,
    seconds: float = 30,
) -> fk.Case:
    """The smallest change from the seed that still shows the same defect class:
    options dropped one by one, then runs of changed bytes put back as the seed had them
    (or, when the length changed, chunks cut away)."""
    runs = 0
    original = case
    deadline = time.monotonic() + seconds

    def same(candidate: fk.Case) -> bool:
        nonlocal runs
        runs += 1
        if time.monotonic() > deadline:
            runs = budget  # out of time: keep what is minimised so far
            return False
        return fk.run_case(candidate, seeds, scratch).signature == target

    def copy(**changes: Any) -> fk.Case:
        fields = dict(case.__dict__)
        fields.update(changes)
        return fk.Case(**fields)

    # Options: drop a flag, or a flag and its value, while the class stays.
    i = 1
    while i < len(case.argv) and runs < budget:
        token = case.argv[i]
        if token.startswith("-") and token != "-":
            for width in (2, 1):
                argv = case.argv[:i] + case.argv[i + width :]
                if fk.IN in argv or case.stdin or case.special:
                    candidate = copy(argv=argv)
                    if same(candidate):
                        case = candidate
                        break
            else:
                i += 1
            continue
        i += 1
    # Bytes: back to the seed where they can go.
    seed = case.seed.data
    if len(case.data) == len(seed):
        changed = [k for k in range(len(seed)) if seed[k] != case.data[k]]
        groups: list[list[int]] = []
        for k in changed:
            if groups and k - groups[-1][-1] <= 8:
                groups[-1].append(k)
            else:
                groups.append([k])
        for group in groups:
            if runs >= budget:
                break
            data = bytearray(case.data)
            for k in group:
                data[k] = seed[k]
            candidate = copy(data=bytes(data))
            if same(candidate):
                case = candidate
    else:
        chunk = max(len(case.data) // 2, 1)
        while chunk >= 1 and runs < budget:
            at = 0
            while at < len(case.data) and runs < budget:
                candidate = copy(data=case.data[:at] + case.data[at + chunk :])
                if same(candidate):
                    case = candidate
                else:
                    at += chunk
            chunk //= 2
    if case.data != original.data:
        kept = sum(1 for a, b in zip(case.data, seed, strict=False) if a != b)
        note = f"minimised: {kept} bytes differ from the seed, {len(case.data)} long (report.txt)"
        case = copy(steps=[*case.steps, note])
    if case.sparse_size:
        for size in (0, case.sparse_size // 2):
            candidate = copy(sparse_size=size)
            if runs < budget and same(candidate):
                case = candidate
                break
    return case


def write_reproducer(
    directory: Path, case: fk.Case, seeds: fk.Seeds, verdict: fk.Verdict, count: int
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    suffix = Path(case.seed.name).suffix or ".bin"
    if case.seed.member:  # a directory input (rr trace, CRIU images): the seed's files
        name = f"{fk.MARKUP}/input.d" if case.tty else "input.d"
        (directory / name).mkdir(parents=True, exist_ok=True)
        for member, content in case.seed.files:
            mutated = member == case.seed.member
            (directory / name / member).write_bytes(case.data if mutated else content)
        (directory / f"seed-{case.seed.member}").write_bytes(case.seed.data)
    else:
        name = f"{fk.MARKUP}/input{suffix}" if case.tty else f"input{suffix}"
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(case.data)
        (directory / f"seed{suffix}").write_bytes(case.seed.data)
    clean = {"image": seeds.clean_image, "core": seeds.clean_core, "layout": seeds.clean_layout}[
        case.clean_kind
    ]
    clean_name = "clean" + clean.suffix
    needs_clean = fk.CLEAN in case.argv
    if needs_clean:
        (directory / clean_name).write_bytes(clean.read_bytes())
    source = case.special or name
    argv = [
        a.replace(fk.IN, source).replace(fk.OUT, "out.bin").replace(fk.CLEAN, clean_name)
        for a in case.argv
    ]
    line = "xcr0tool " + shlex.join(argv)
    if case.stdin == "data":
        line += f" < {shlex.quote(source)}"
    elif case.stdin == "closed":
        line += " <&-"
    if case.tty:  # the defect needs rich output: run it on a (pseudo-)terminal
        line = f"script -qec {shlex.quote(line)} /dev/null"
    script = [
        "#!/bin/sh",
        "# Reproduces the defect below; run it in this directory.",
        'cd "$(dirname "$0")"',
    ]
    if case.sparse_size and case.seed.member:
        member = f"{name}/{case.seed.member}"
        script += [f"truncate -s {case.sparse_size} {shlex.quote(member)}   # a hole, no disk used"]
    elif case.sparse_size:
        script += [
            f"cp {shlex.quote(name)} sparse{suffix}",
            f"truncate -s {case.sparse_size} sparse{suffix}   # a hole, no disk used",
        ]
        line = line.replace(name, f"sparse{suffix}")
    script += ["rm -f out.bin", line, 'echo "exit status $?"', ""]
    (directory / "command.sh").write_text("\n".join(script))
    (directory / "command.sh").chmod(0o755)
    seed_diff = [
        f"seed {case.seed.name} ({len(case.seed.data)} bytes), input {len(case.data)} bytes"
    ]
    if len(case.data) == len(case.seed.data):
        seed_diff += [
            f"  byte {k:#x}: {case.seed.data[k]:#04x} -> {case.data[k]:#04x}"
            for k in range(len(case.data))
            if case.data[k] != case.seed.data[k]
        ][:64]
    report = [
        f"class: {verdict.signature}",
        f"seen {count} times",
        "",
        verdict.report(),
        "",
        *seed_diff,
    ]
    (directory / "report.txt").write_text("\n".join(report) + "\n")


def replay(args: argparse.Namespace, seeds: fk.Seeds, commands: list[str], scratch: Path) -> int:
    """--replay: cases of an earlier campaign again, each minimised and written."""
    found = 0
    for number in (int(n) for n in args.replay.split(",")):
        case = make(seeds, commands, args.seed, number)
        verdict = fk.run_case(case, seeds, scratch)
        print(f"case {number}: {verdict.signature or 'no defect'}", file=sys.stderr)
        if not verdict.defects:
            continue
        found += 1
        small = minimise(case, seeds, scratch, verdict.signature, seconds=args.minimise_seconds)
        again = fk.run_case(small, seeds, scratch)
        if again.signature != verdict.signature:
            small, again = case, verdict
        write_reproducer(
            args.findings / f"case-{number}-{slug(verdict.signature)}", small, seeds, again, 1
        )
    fk._remove_tree(scratch)
    return 1 if found else 0


def slug(signature: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", signature.lower()).strip("-")[:70]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--executions", type=int, default=1_000_000, help="cases to run (default 1,000,000)"
    )
    parser.add_argument(
        "--seconds", type=float, default=0, help="stop after this long (default: no limit)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="forked workers, one per core (default 2 at most)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="campaign seed: case N is the same for the same seed"
    )
    parser.add_argument(
        "--findings", type=Path, required=True, help="directory for reproducers and the summary"
    )
    parser.add_argument(
        "--replay",
        default="",
        help="case numbers, comma-separated: run, minimise and write just these (with the"
        " --seed and --kinds of the campaign that found them)",
    )
    parser.add_argument(
        "--kinds",
        default="",
        help=f"only these kinds of input, comma-separated (default: all of {', '.join(fk.KINDS)})",
    )
    parser.add_argument(
        "--minimise-seconds",
        type=float,
        default=30,
        help="time to minimise each class (default 30)",
    )
    parser.add_argument("--progress", type=float, default=30, help="seconds between progress lines")
    args = parser.parse_args()

    args.findings.mkdir(parents=True, exist_ok=True)
    shm = Path("/dev/shm")
    scratch_root = tempfile.mkdtemp(
        prefix="xcr0tool-fuzz-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    )
    # However the campaign ends (a second signal exits at once): its files go. Forked
    # workers leave through os._exit and do not run this.
    atexit.register(shutil.rmtree, scratch_root, True)
    global KINDS  # noqa: PLW0603 - read by make() in the forked workers
    wanted = args.kinds.split(",") if args.kinds else None
    tools = wanted is None or bool({"rr-trace", "criu-dir", "criu-image"} & set(wanted))
    seeds = fk.make_seeds(Path(scratch_root) / "seeds", with_tools=tools)
    KINDS = [kind for kind in wanted if seeds.by_kind.get(kind)] if wanted else None
    if wanted and not KINDS:
        parser.error(f"no seeds of kinds {args.kinds} here (kinds: {', '.join(fk.KINDS)})")
    commands = fk.command_names()
    if args.replay:
        return replay(args, seeds, commands, Path(scratch_root))
    print(
        f"seeds: {', '.join(f'{k} {len(v)}' for k, v in seeds.by_kind.items())};"
        f" commands: {', '.join(commands)}",
        file=sys.stderr,
    )

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    stop = context.Event()
    count = max(1, args.workers)
    currents = [context.Value("q", -1) for _ in range(count)]
    processes: list[Any] = [None] * count
    next_start = list(range(count))
    live = set(range(count))

    def launch(index: int) -> None:
        process = context.Process(
            target=worker,
            args=(
                index,
                count,
                seeds,
                commands,
                args.seed,
                next_start[index],
                stop,
                currents[index],
                results,
                scratch_root,
                args.executions,
            ),
            daemon=True,
        )
        process.start()
        processes[index] = process

    def finish(signum: int, frame: object) -> None:
        if stop.is_set():  # a second signal: no minimising, no summary
            sys.exit(130)
        stop.set()

    # SIGINT as well as SIGTERM: a shell starts a background job with SIGINT ignored.
    signal.signal(signal.SIGINT, finish)
    signal.signal(signal.SIGTERM, finish)
    for index in range(count):
        launch(index)
    started = time.monotonic()
    last_progress = started
    executions = 0
    classes: Counter[str] = Counter()
    first: dict[str, tuple[int, str]] = {}
    while live:
        with contextlib.suppress(Exception):
            index, done, batch, found = results.get(timeout=1)
            if done is None:
                live.discard(index)
                continue
            executions += done
            classes.update(batch)
            for signature, number, report in found:
                if signature not in first:
                    first[signature] = (number, report)
                    print(
                        f"new class [{len(first)}]: {signature}  (case {number})",
                        file=sys.stderr,
                    )
        for index in list(live):
            process = processes[index]
            if not process.is_alive() and process.exitcode not in (0, None):
                number = currents[index].value
                signature = f"worker died | exit {process.exitcode}"
                classes[signature] += 1
                first.setdefault(
                    signature,
                    (number, f"case {number} killed its worker (exit {process.exitcode})"),
                )
                print(f"worker {index} died on case {number}; restarting", file=sys.stderr)
                executions += 1
                next_start[index] = number + count
                launch(index)
        now = time.monotonic()
        if args.seconds and now - started > args.seconds:
            stop.set()
        if now - last_progress >= args.progress:
            last_progress = now
            rate = executions / (now - started)
            print(f"{executions} executions, {rate:.0f}/s, {len(first)} classes", file=sys.stderr)
            # So far, unminimised: what a campaign that is killed leaves behind.
            progress = {
                "executions": executions,
                "seconds": round(now - started, 1),
                "rate_per_second": round(rate, 1),
                "classes": [
                    {"class": c, "count": n, "case": first.get(c, (-1, ""))[0]}
                    for c, n in classes.most_common()
                ],
            }
            (args.findings / "progress.json").write_text(json.dumps(progress, indent=2) + "\n")
    for process in processes:
        process.join(timeout=30)
    elapsed = time.monotonic() - started
    rate = executions / elapsed if elapsed else 0.0
    print(
        f"done: {executions} executions in {elapsed:.0f} s ({rate:.0f}/s);"
        f" minimising {len(first)} classes",
        file=sys.stderr,
    )

    scratch = Path(tempfile.mkdtemp(prefix="minimise-", dir=scratch_root))
    summary: dict[str, Any] = {
        "executions": executions,
        "seconds": round(elapsed, 1),
        "rate_per_second": round(rate, 1),
        "workers": count,
        "seed": args.seed,
        "classes": [],
    }
    for rank, (signature, seen) in enumerate(classes.most_common(), 1):
        number, report = first.get(signature, (-1, ""))
        entry: dict[str, Any] = {"class": signature, "count": seen, "case": number}
        if number >= 0 and not signature.startswith("worker died"):
            case = make(seeds, commands, args.seed, number)
            small = minimise(case, seeds, scratch, signature, seconds=args.minimise_seconds)
            verdict = fk.run_case(small, seeds, scratch)
            if verdict.signature != signature:  # flaky (timing): keep the original
                small, verdict = case, fk.run_case(case, seeds, scratch)
            directory = args.findings / f"{rank:02d}-{slug(signature)}"
            write_reproducer(directory, small, seeds, verdict, seen)
            entry["reproducer"] = str(directory)
            entry["command"] = small.describe()
        else:
            entry["report"] = report
        summary["classes"].append(entry)
    (args.findings / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"{executions} executions in {elapsed:.0f} s, {rate:.0f}/s, {count} workers,"
        f" seed {args.seed}",
        "",
    ]
    lines += [
        f"{c['count']:8d}  {c['class']}\n          {c.get('command', c.get('report', ''))}"
        for c in summary["classes"]
    ]
    (args.findings / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)
    fk._remove_tree(Path(scratch_root))
    return 1 if classes else 0


if __name__ == "__main__":
    sys.exit(main())
