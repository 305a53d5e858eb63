"""`pid:N` through the command line: decode equals gdb reading the same stopped process,
every thread is released afterwards (after success, an error, and Ctrl-C), and a
refused attach is one line and exit 2 in every command that takes a source.

Two children: tests/progs/regs.c (coremaker.live_regs: seeded x87, SSE, AVX and
AVX-512 values gdb can be compared with) and tests/ptrace_child.py's child, whose workers count
in a shared file, so that "runs on" is seen, not assumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from clirunner import one_line_error, run
from coremaker import component_registers, live_regs
from gdb_oracle import (
    CONTRACT,
    decoded_registers,
    gdb_view,
    misplaced_components,
    missing_registers,
    register_diff,
)
from ptrace_child import SLOT_VFORK, Spawn, Tracer, host_isa, reader_held_by_vfork, value

from xcr0tool.cli.main import main
from xcr0tool.sources import cpu
from xcr0tool.sources.ptrace import read_process_xstate

pytestmark = [
    pytest.mark.skipif(not cpu.is_x86_64_linux(), reason="needs Linux on x86-64"),
    # One worker runs every test that attaches to a live process, one after another:
    # their children spin (counters, threads that come and go) and they give them
    # seconds to move, which two such tests side by side on a small machine may not.
    pytest.mark.xdist_group("ptrace"),
]


def decode_json(*args: str) -> dict[str, Any]:
    result = run("decode", "--json", *args)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def task_status(pid: int) -> dict[int, dict[str, str]]:
    """{tid: {field: value}} from /proc/PID/task/*/status."""
    out: dict[int, dict[str, str]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = {}
        for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            fields[key] = rest.strip()
        out[int(tid)] = fields
    return out


def assert_released(pid: int) -> None:
    """No thread traced, none left in a tracing stop."""
    for tid, fields in task_status(pid).items():
        assert fields["TracerPid"] == "0", f"thread {tid} is still traced"
        assert not fields["State"].startswith(("t", "T")), f"thread {tid}: {fields['State']}"


# ---------------------------------------------------------------- against gdb


@pytest.mark.gdb
def test_decode_pid_equals_gdb_for_every_thread(
    tmp_path: Path, regs_program: Path, gdb_available: tuple[int, int]
) -> None:
    with live_regs(tmp_path, 0x11BE, 4, program=regs_program) as live:
        out = decode_json(f"pid:{live.pid}")
        assert_released(live.pid)
        # gdb attaches after us: it could not if anything of ours were still attached
        view = gdb_view(pid=live.pid)
        assert_released(live.pid)

    assert (out["source"], out["kind"]) == (f"pid:{live.pid}", "process")
    ours = decoded_registers(out)
    assert list(ours) == live.run.tids  # main thread first, then by tid
    assert set(view.registers) == set(ours)
    for thread in out["threads"]:
        assert (thread["format"], thread["xcomp_bv"]) == ("standard", "0x0")
        assert thread["xcr0"] == hex(live.run.host.xcr0)
        assert thread["notes"] == []

    # gdb 13 reads AVX-512 state at Intel's offsets: on other layouts those registers
    # are compared with what the program loaded instead
    misread = set().union(*(component_registers(c) for c in misplaced_components(live.run.host)))
    trusted = {
        tid: {n: v for n, v in regs.items() if n not in misread and CONTRACT.match(n)}
        for tid, regs in view.registers.items()
    }
    assert not missing_registers(trusted, ours), missing_registers(trusted, ours)[:20]
    bad = register_diff(trusted, ours)
    assert not bad, f"{len(bad)} registers differ from gdb:\n" + "\n".join(bad[:40])
    assert not missing_registers(live.expected, ours)
    bad = register_diff(live.expected, ours)
    assert not bad, f"{len(bad)} registers differ from the program's:\n" + "\n".join(bad[:40])
    if misread:
        assert any(n in misread for regs in live.expected.values() for n in regs)


# ---------------------------------------------------------------- the process kind


def test_decode_pid_text_names_the_process_and_its_threads(spawn: Spawn) -> None:
    child = spawn(3)
    result = run("decode", f"pid:{child.pid}", "--reg", "xmm1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[:2] == [
        f"source: pid:{child.pid} (process, 3 threads)",
        "layout: this machine's CPUID leaf 0xD",
    ]
    for index in range(3):
        tid = child.workers[index]
        assert f"thread {tid}:" in lines
        xmm1 = value(index, 1, 0) | value(index, 1, 1) << 64
        at = lines.index(f"thread {tid}:")
        assert f"  xmm1 {xmm1:#x}" in lines[at:]
    child.assert_untraced()
    child.assert_runs_on()


def test_a_thread_id_reads_the_whole_process_and_says_so(spawn: Spawn) -> None:
    child = spawn(2)
    tid = child.workers[1]
    result = run("decode", f"pid:{tid}", "--reg", "mxcsr")
    assert result.returncode == 0
    assert result.stderr.decode() == (
        f"xcr0tool: warning: {tid} is a thread of process {child.pid}: reading every thread"
        f" of {child.pid}\n"
    )
    assert f"source: pid:{tid} (process, 2 threads)\n" in result.stdout.decode()


def test_extract_one_thread(spawn: Spawn, tmp_path: Path) -> None:
    child = spawn(3, "avx" if host_isa() != "sse" else "sse")
    tid = child.workers[2]
    by_option, by_at, first = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert (
        run("extract", f"pid:{child.pid}", "--thread", str(tid), "-o", str(by_option)).returncode
        == 0
    )
    assert run("extract", f"pid:{child.pid}@{tid}", "-o", str(by_at)).returncode == 0
    assert run("extract", f"pid:{child.pid}", "-o", str(first)).returncode == 0
    assert by_option.read_bytes() == by_at.read_bytes()
    image = by_option.read_bytes()
    assert len(image) == cpu.cpuid(0xD, 0)[1]
    assert int.from_bytes(image[464:472], "little") == cpu.xgetbv(0)  # the kernel's XCR0 word
    (thread,) = decode_json(str(by_option))["threads"]
    for r in range(16):
        want = value(2, r, 0) | value(2, r, 1) << 64
        assert int(thread["registers"][f"xmm{r}"], 16) == want
    (main_thread,) = decode_json(str(first))["threads"]
    assert int(main_thread["registers"]["xmm0"], 16) == value(0, 0, 0) | value(0, 0, 1) << 64
    child.assert_untraced()
    child.assert_runs_on()


# ---------------------------------------------------------------- errors release the process


def test_error_after_the_read_leaves_the_process_running(spawn: Spawn, tmp_path: Path) -> None:
    child = spawn(3)
    tids = ", ".join(str(child.workers[i]) for i in range(3))
    assert one_line_error(run("decode", f"pid:{child.pid}@1")) == (
        f"xcr0tool: pid:{child.pid}@1: no thread 1 in this process (threads: {tids})"
    )
    child.assert_untraced()
    child.assert_runs_on()
    # an XCR0 no XSETBV takes is refused before anything is read (arch/xcr0.py)
    assert one_line_error(run("decode", "--xcr0", hex(1 << 63 | 3), f"pid:{child.pid}")) == (
        f"xcr0tool: --xcr0: XCR0 {1 << 63 | 3:#x} (x87|sse|compacted) is not a value XCR0 can hold:"
        " bit 63 is XCOMP_BV's compacted-format flag, not an XCR0 bit"
    )
    child.assert_untraced()
    child.assert_runs_on()
    if not cpu.xgetbv(0) & 0b100:
        pytest.skip("XCR0 has no AVX here: every layout places this machine's images")
    # an error in the model, after every thread has been read and released: a layout
    # that places no extended component
    bare = tmp_path / "bare.json"
    bare.write_text('{"components": []}')
    line = one_line_error(run("decode", "--layout", str(bare), f"pid:{child.pid}"))
    assert line.startswith(f"xcr0tool: pid:{child.pid} thread {child.pid}: ")
    assert "does not know component 2 (ymm)" in line
    child.assert_untraced()
    child.assert_runs_on()


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("pid:", "expected pid:N or pid:N@TID, with N a process id and TID one of its threads"),
        ("pid:abc", "expected pid:N or pid:N@TID, with N a process id and TID one of its threads"),
        ("pid:12@x", "expected pid:N or pid:N@TID, with N a process id and TID one of its threads"),
        ("pid:0", "0 is not a process id"),
    ],
)
def test_malformed_pid(source: str, problem: str) -> None:
    assert one_line_error(run("decode", source)) == f"xcr0tool: {source}: {problem}"


CLI_READER = """
import os, sys
from xcr0tool.cli.main import main
pid = int(sys.argv[1])
try:
    main(["decode", "--reg", "mxcsr", f"pid:{pid}"])
    code = 0
except SystemExit as done:
    code = done.code
# looked at while this tracer still lives: its exit would detach everything anyway
tracers = {open(f"/proc/{pid}/task/{t}/status").read().split("TracerPid:")[1].split()[0]
           for t in os.listdir(f"/proc/{pid}/task")}
print("exit", code, ",".join(sorted(tracers)))
"""


@pytest.mark.slow
def test_sigint_during_the_read(spawn: Spawn) -> None:
    """Ctrl-C while attached: every thread is released, then exit 130, no traceback."""
    child, reader = reader_held_by_vfork(spawn, 2, CLI_READER)
    reader.send_signal(signal.SIGINT)
    reader.send_signal(signal.SIGINT)
    child.release_vfork()
    out, err = reader.communicate(timeout=30)
    assert out.splitlines()[-1] == "exit 130 0", (out, err)
    assert "Traceback" not in err
    assert "source:" not in out  # nothing was decoded
    child.assert_untraced()
    child.assert_runs_on()
    assert child.counter(SLOT_VFORK) == 1  # the vfork() finished as if nothing happened


# ---------------------------------------------------------------- refusals


def test_not_on_x86_64_linux(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cpu, "is_x86_64_linux", lambda: False)
    with pytest.raises(SystemExit) as done:
        main(["decode", "pid:1"])
    assert done.value.code == 2
    assert capsys.readouterr().err == (
        "xcr0tool: reading a live process needs Linux on x86-64 (a 64-bit Python)\n"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["decode"],
        ["extract"],
        ["mask", "--xcr0", "0x3"],
        ["convert", "--to", "compacted"],
        ["validate"],
        ["diff", "{source}"],
    ],
    ids=lambda c: c[0],
)
def test_already_traced_in_every_command(spawn: Spawn, tracer: Tracer, command: list[str]) -> None:
    child = spawn(2)
    other = tracer(child.pid)
    source = f"pid:{child.pid}"
    args = [a.format(source=source) for a in command]
    assert one_line_error(run(*args, source)) == (
        f"xcr0tool: {source}: already traced by pid {other} (tinytracer); detach it first"
    )
    assert child.status(child.pid, "TracerPid") == str(other)
    assert child.status(child.workers[1], "TracerPid") == "0"


def test_a_traced_thread_releases_the_others(spawn: Spawn, tracer: Tracer) -> None:
    child = spawn(4)
    victim = max(child.workers.values())  # seized last: the others are attached by then
    other = tracer(victim)
    assert one_line_error(run("decode", f"pid:{child.pid}")) == (
        f"xcr0tool: pid:{child.pid}: thread {victim} already traced by pid {other}"
        " (tinytracer); detach it first"
    )
    child.assert_released_but(victim)


def test_no_such_process() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert one_line_error(run("decode", f"pid:{gone.pid}")) == (
        f"xcr0tool: pid:{gone.pid}: no such process (ESRCH); check the pid"
    )


def test_library_and_cli_read_the_same_bytes(spawn: Spawn, tmp_path: Path) -> None:
    """The CLI adds nothing to what read_process_xstate returns: extract is byte-exact."""
    child = spawn(2)
    direct = {t.tid: t.xstate for t in read_process_xstate(child.pid, f"pid:{child.pid}")}
    for tid, data in direct.items():
        out = tmp_path / f"{tid}.xsave"
        assert run("extract", f"pid:{child.pid}@{tid}", "-o", str(out)).returncode == 0
        # the workers sit in a syscall loop: only the x87/SSE/vector state is compared
        assert out.read_bytes()[160:416] == data[160:416]
    child.assert_untraced()
