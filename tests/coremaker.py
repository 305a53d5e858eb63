"""Make real ELF cores of tests/progs/regs.c, and say what their registers must hold.

Used by the tests (through fixtures in conftest.py), by bench/ and by
tests/make_fixtures.py. Nothing here imports xcr0tool: this is the view from
outside that the decoder is checked against.

regs.c loads values drawn from splitmix64 seeded with (seed, thread index);
``expected_registers`` draws the same values here, so a change to the draw
order must be made in both places.

Anything this host cannot do (no compiler, no ptrace, cores piped away, ...)
raises ``Unavailable`` with a sentence that says why; the fixtures turn it into
a skip.

From bench/ (or any script), put tests/ on sys.path first:

    sys.path.insert(0, str(REPO / "tests"))
    from coremaker import make_big_memory_core, make_kernel_core
    core = make_kernel_core(tmp, seed=1, threads=300).core  # compiles regs.c itself
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

REGS_SOURCE = Path(__file__).resolve().parent / "progs" / "regs.c"

# The ISA levels regs.c knows, in order.
ISA_LEVELS = ("sse", "avx", "avx512f", "avx512bw")

# Where gdb 13 and older put each component, whatever the CPU: they know only
# Intel's standard layout (gdb 14 learnt to ask CPUID for live processes).
INTEL_STANDARD_OFFSETS = {2: 576, 3: 960, 4: 1024, 5: 1088, 6: 1152, 7: 1664, 9: 2688}

_MASK64 = (1 << 64) - 1


class Unavailable(Exception):
    """This host cannot make the core asked for; the message says why."""


# --------------------------------------------------------------------------
# The program


def compile_regs(dest_dir: Path, cc: str | None = None) -> Path:
    """Compile regs.c into dest_dir/regs and return its path."""
    cc = cc or os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise Unavailable(f"no C compiler: {cc!r} is not on PATH")
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / "regs"
    # -O1 as the program is written for; no -m flags: AVX-512 lives in asm text
    # only, so the binary runs on any x86-64 CPU.
    cmd = [cc, "-O1", "-Wall", "-pthread", "-o", str(out), str(REGS_SOURCE)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise Unavailable(f"{cc} could not build regs.c: {proc.stderr.strip()[:500]}")
    return out


@dataclass(frozen=True)
class Host:
    """What regs.c found out about this CPU and OS (from CPUID and XGETBV)."""

    cpu_isa: str
    xcr0: int
    # component id -> (size, standard offset), from CPUID leaf 0xD
    layout: dict[int, tuple[int, int]]
    vendor: str = ""
    pku: bool = False  # PKRU is there to load (CPUID OSPKE and XCR0 bit 9)

    def has(self, isa: str) -> bool:
        return ISA_LEVELS.index(self.cpu_isa) >= ISA_LEVELS.index(isa)


@dataclass(frozen=True)
class Run:
    """What one run of regs printed before loading its registers."""

    host: Host
    isa: str
    tids: list[int]  # index 0 is the main thread, whose tid is the pid
    seed: int

    @property
    def pid(self) -> int:
        return self.tids[0]


def _parse_host(lines: list[str]) -> Host:
    cpu_isa = ""
    vendor = ""
    pku = False
    xcr0 = 0
    layout: dict[int, tuple[int, int]] = {}
    for line in lines:
        word, _, rest = line.partition(" ")
        if word == "vendor":
            vendor = rest.strip()
        elif word == "cpu":
            cpu_isa = rest.strip()
        elif word == "pku":
            pku = rest.strip() == "1"
        elif word == "xcr0":
            xcr0 = int(rest, 16)
        elif word == "xsave":
            cid, size, offset = (int(x) for x in rest.split())
            layout[cid] = (size, offset)
    if cpu_isa not in ISA_LEVELS:
        raise RuntimeError(f"regs printed no usable 'cpu' line: {lines!r}")
    return Host(cpu_isa, xcr0, layout, vendor, pku)


def probe_host(program: Path) -> Host:
    """Ask regs (not Python, which cannot run CPUID) what this host supports."""
    proc = subprocess.run(
        [str(program), "probe"], capture_output=True, text=True, check=True, timeout=30
    )
    return _parse_host(proc.stdout.splitlines())


def _parse_run(lines: list[str], seed: int, threads: int) -> Run:
    host = _parse_host(lines)
    isa = ""
    tids: dict[int, int] = {}
    for line in lines:
        word, _, rest = line.partition(" ")
        if word == "isa":
            isa = rest.strip()
        elif word == "tid":
            index, tid = (int(x) for x in rest.split())
            tids[index] = tid
    if isa not in ISA_LEVELS or sorted(tids) != list(range(threads)):
        raise RuntimeError(f"regs printed an incomplete header: {lines!r}")
    return Run(host, isa, [tids[i] for i in range(threads)], seed)


# --------------------------------------------------------------------------
# The values regs.c loads (keep in step with make_plan() in regs.c)


class _SplitMix64:
    def __init__(self, state: int) -> None:
        self.state = state & _MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)


def _ext(sign: int, exp: int, mant: int) -> int:
    """An 80-bit x87 value as the integer its 10 little-endian bytes make."""
    return (sign << 79) | ((exp & 0x7FFF) << 64) | (mant & _MASK64)


def x87_tag(value: int) -> int:
    """The 2-bit tag of a non-empty x87 register: 0 valid, 1 zero, 2 special.

    The rule of the FSAVE tag word, as gdb's i387_tag and the kernel's
    twd_fxsr_to_i387 apply it.
    """
    exp = (value >> 64) & 0x7FFF
    mant = value & _MASK64
    integer = mant >> 63
    if exp == 0x7FFF:
        return 2
    if exp == 0:
        return 1 if mant == 0 else 2
    return 0 if integer else 2


@dataclass(frozen=True)
class Plan:
    zmm: list[int]  # 32 values of 512 bits
    k: list[int]  # 8 values of 64 bits
    fill: list[int]  # 8 x87 values, pushed then popped: the empty slots
    push: list[int]  # 8 x87 values, the first npush stay on the stack
    npush: int
    fcw: int
    mxcsr: int
    pkru: int


def make_plan(seed: int, index: int) -> Plan:
    rng = _SplitMix64(seed ^ (((index + 1) * 0xD1B54A32D192ED03) & _MASK64))
    zmm = []
    for _ in range(32):
        v = 0
        for j in range(8):
            v |= rng.next() << (64 * j)
        zmm.append(v)
    k = [rng.next() for _ in range(8)]
    fill = []
    for _ in range(8):
        m, e = rng.next(), rng.next()
        fill.append(_ext((e >> 6) & 1, 0x3FFF - 32 + (e & 63), m | (1 << 63)))
    npush = 4 + rng.next() % 3
    rot = rng.next() % 5
    push = []
    for j in range(8):
        m, e = rng.next(), rng.next()
        sign = (e >> 6) & 1
        category = (j + rot) % 5
        if category == 0:  # normal
            push.append(_ext(sign, 0x3FFF - 32 + (e & 63), m | (1 << 63)))
        elif category == 1:  # zero
            push.append(_ext(sign, 0, 0))
        elif category == 2:  # denormal
            push.append(_ext(sign, 0, (m & ~(1 << 63)) | 1))
        elif category == 3:  # infinity
            push.append(_ext(sign, 0x7FFF, 1 << 63))
        else:  # quiet NaN
            push.append(_ext(sign, 0x7FFF, (3 << 62) | (m & ((1 << 62) - 1))))
    d = rng.next()
    pc = (0, 2, 3)[d % 3]
    fcw = 0x0040 | 0x3F | (pc << 8) | (((d >> 8) & 3) << 10)
    d = rng.next()
    mxcsr = (
        0x1F80
        | (d & 0x3F)
        | (((d >> 8) & 3) << 13)
        | (((d >> 10) & 1) << 15)
        | (((d >> 11) & 1) << 6)
    )
    # key 0 stays open: all of the process's memory carries it
    pkru = rng.next() & 0xFFFFFFFC
    return Plan(zmm, k, fill, push, npush, fcw, mxcsr, pkru)


def expected_registers(seed: int, index: int, isa: str, pku: bool = False) -> dict[str, int]:
    """The registers thread `index` of a run with `seed` loads, by gdb's names.

    Values are the register's bytes read as one little-endian integer. Only
    what the run sets is listed: for instance an "avx" run says nothing of
    zmm, and fiseg/fioff/foseg/fooff/fop are left out because AMD CPUs save
    them only while an x87 exception is pending. PKRU is loaded when the host
    has it (`pku`, Host.pku).
    """
    plan = make_plan(seed, index)
    regs: dict[str, int] = {}
    # x87: fill[i] went to physical register 7-i and was popped; push[j] went
    # to physical register 7-j. TOP = 8 - npush.
    top = 8 - plan.npush
    physical: list[int] = [0] * 8
    valid = [False] * 8
    for i, value in enumerate(plan.fill):
        physical[7 - i] = value
    for j in range(plan.npush):
        physical[7 - j] = plan.push[j]
        valid[7 - j] = True
    for i in range(8):
        regs[f"st{i}"] = physical[(top + i) % 8]
    ftag = 0
    for p in range(8):
        tag = x87_tag(physical[p]) if valid[p] else 3
        ftag |= tag << (2 * p)
    regs["fctrl"] = plan.fcw
    # fninit cleared the condition codes and fld/fstp of these operands raise
    # nothing, so only TOP is set.
    regs["fstat"] = top << 11
    regs["ftag"] = ftag
    regs["mxcsr"] = plan.mxcsr

    level = ISA_LEVELS.index(isa)
    mask128 = (1 << 128) - 1
    mask256 = (1 << 256) - 1
    for n in range(16):
        regs[f"xmm{n}"] = plan.zmm[n] & mask128
    if level >= ISA_LEVELS.index("avx"):
        for n in range(16):
            regs[f"ymm{n}"] = plan.zmm[n] & mask256
    if level >= ISA_LEVELS.index("avx512f"):
        for n in range(32):
            regs[f"zmm{n}"] = plan.zmm[n]
            regs[f"ymm{n}"] = plan.zmm[n] & mask256
            regs[f"xmm{n}"] = plan.zmm[n] & mask128
        # kmovw (AVX512F alone) writes 16 bits and zeroes the rest
        kmask = _MASK64 if isa == "avx512bw" else 0xFFFF
        for n in range(8):
            regs[f"k{n}"] = plan.k[n] & kmask
    if pku:
        regs["pkru"] = plan.pkru
    return regs


def expected_for_run(run: Run) -> dict[int, dict[str, int]]:
    """{tid: {register: value}}, in thread-index order (the main thread first)."""
    return {
        tid: expected_registers(run.seed, i, run.isa, run.host.pku)
        for i, tid in enumerate(run.tids)
    }


# --------------------------------------------------------------------------
# Which registers sit in which XSAVE component (to reason about layouts)


def component_registers(component: int) -> set[str]:
    """gdb register names whose value comes, at least in part, from `component`."""
    if component == 0:
        return {f"st{i}" for i in range(8)} | {
            "fctrl",
            "fstat",
            "ftag",
            "fiseg",
            "fioff",
            "foseg",
            "fooff",
            "fop",
        }
    if component == 1:
        return (
            {f"xmm{n}" for n in range(16)}
            | {f"ymm{n}" for n in range(16)}
            | {f"zmm{n}" for n in range(16)}
            | {"mxcsr"}
        )
    if component == 2:
        return {f"ymm{n}" for n in range(16)} | {f"zmm{n}" for n in range(16)}
    if component == 3:
        return {f"bnd{n}raw" for n in range(4)} | {f"bnd{n}" for n in range(4)}
    if component == 4:
        return {"bndcfgu", "bndstatus"}
    if component == 5:
        return {f"k{n}" for n in range(8)}
    if component == 6:
        return {f"zmm{n}" for n in range(16)}
    if component == 7:
        return (
            {f"zmm{n}" for n in range(16, 32)}
            | {f"ymm{n}" for n in range(16, 32)}
            | {f"xmm{n}" for n in range(16, 32)}
        )
    if component == 9:
        return {"pkru"}
    return set()


def misplaced_by_old_gdb(host: Host) -> set[int]:
    """Components gdb 13 and older read (live) and write (gcore) at the wrong place.

    They assume Intel's standard offsets; on CPUs that pack the layout (AMD Zen
    puts the opmask at 832, not 1088) every component past the difference is
    taken from, and written to, the wrong bytes.
    """
    return {
        cid
        for cid, (_size, offset) in host.layout.items()
        if cid in INTEL_STANDARD_OFFSETS and INTEL_STANDARD_OFFSETS[cid] != offset
    }


# --------------------------------------------------------------------------
# Running regs


def _clean_env() -> dict[str, str]:
    # The moral equivalent of `env -i`: nothing of this machine's environment
    # reaches the program, so none of it can end up in its core.
    return {}


def _fresh_dir(tmp: Path, prefix: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=tmp))


def _stage_program(program: Path, workdir: Path) -> Path:
    # A copy beside the core: the program runs as ./regs, so its argv and
    # prpsinfo name no directory of this machine.
    staged = workdir / "regs"
    shutil.copy2(program, staged)
    return staged


def _read_header(stream: IO[str], until: str | None, timeout: float) -> list[str]:
    """Read lines until `until` (or EOF when None), giving up after `timeout`."""
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    buf = ""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"regs did not finish its header in {timeout:.0f} s: {lines!r}")
            if not sel.select(left):
                continue
            chunk = os.read(stream.fileno(), 65536).decode()
            if not chunk:
                if buf:
                    lines.append(buf)
                if until is not None:
                    raise RuntimeError(f"regs exited before printing {until!r}: {lines!r}")
                return lines
            buf += chunk
            *done, buf = buf.split("\n")
            lines.extend(done)
            if until is not None and until in lines:
                return lines
    finally:
        sel.close()


@dataclass
class LiveRegs:
    """A running regs process whose threads all hold their values."""

    proc: subprocess.Popen[str]
    run: Run
    program: Path
    workdir: Path
    expected: dict[int, dict[str, int]] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.contextmanager
def live_regs(
    tmp: Path,
    seed: int,
    threads: int,
    *,
    program: Path,
    isa: str = "auto",
    timeout: float = 60.0,
) -> Iterator[LiveRegs]:
    """Start regs in gcore mode, wait for "ready", yield it, kill it."""
    workdir = _fresh_dir(tmp, "live-")
    staged = _stage_program(program, workdir)
    argv = ["./regs", str(seed), str(threads), "gcore", f"--isa={isa}"]
    proc = subprocess.Popen(
        argv,
        executable=str(staged),
        cwd=workdir,
        env=_clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        try:
            lines = _read_header(proc.stdout, "ready", timeout)
        except RuntimeError:
            proc.wait(timeout=10)
            err = proc.stderr.read() if proc.stderr else ""
            if proc.returncode == 3:
                raise Unavailable(f"regs cannot run here: {err.strip()}") from None
            raise
        run = _parse_run(lines, seed, threads)
        yield LiveRegs(proc, run, program, workdir, expected_for_run(run))
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@dataclass(frozen=True)
class MadeCore:
    """A core and what it must show. Unpacks as (core, program, expected)."""

    core: Path
    program: Path
    expected: dict[int, dict[str, int]]  # {tid: {register: value}}, main thread first
    run: Run
    writer: str  # "linux" or "gdb X.Y" (gcore)

    def __iter__(self) -> Iterator[object]:
        return iter((self.core, self.program, self.expected))


# --------------------------------------------------------------------------
# gcore


def gdb_binary() -> str:
    """The gdb to use: $XCR0TOOL_GDB, else gdb on PATH."""
    return os.environ.get("XCR0TOOL_GDB", "gdb")


def gdb_version(gdb: str | None = None) -> tuple[int, int]:
    """gdb's (major, minor): asked once per process for each gdb (every gdb_view and
    gcore needs it, and each `gdb --version` costs a gdb start)."""
    gdb = gdb or gdb_binary()
    found = shutil.which(gdb)
    if found is None:
        raise Unavailable(f"no gdb: {gdb!r} is not on PATH")
    return _gdb_version(gdb, found)


@functools.cache
def _gdb_version(gdb: str, found: str) -> tuple[int, int]:
    out = subprocess.run(
        [gdb, "--version"], capture_output=True, text=True, check=False, timeout=60
    ).stdout
    m = re.search(r"(\d+)\.(\d+)", out.splitlines()[0] if out else "")
    if not m:
        raise Unavailable(f"cannot tell the version of {gdb!r}: {out[:200]!r}")
    return int(m.group(1)), int(m.group(2))


def make_gcore(
    tmp: Path,
    seed: int,
    threads: int,
    *,
    program: Path | None = None,
    isa: str = "auto",
    gdb: str | None = None,
    timeout: float = 300.0,
) -> MadeCore:
    """A core of a live regs process written by gdb's gcore."""
    gdb = gdb or gdb_binary()
    version = gdb_version(gdb)
    tmp = Path(tmp)
    program = program or compile_regs(_fresh_dir(tmp, "build-"))
    with live_regs(tmp, seed, threads, program=program, isa=isa) as live:
        core = live.workdir / "core.gcore"
        # no debuginfod: nothing is to be fetched
        quiet = ["-batch", "-nx", "-q", "-iex", "set debuginfod enabled off"]
        proc = subprocess.run(
            [gdb, *quiet, "-p", str(live.pid), "-ex", f"gcore {core}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=_gdb_env(),
        )
        if not core.exists():
            text = (proc.stdout + proc.stderr).strip()
            if "ptrace" in text or "Operation not permitted" in text:
                raise Unavailable(f"gdb cannot attach to a process here: {text[-400:]}")
            raise RuntimeError(f"gcore wrote no core: {text[-2000:]}")
        return MadeCore(
            core, live.program, live.expected, live.run, f"gdb {version[0]}.{version[1]}"
        )


def _gdb_env() -> dict[str, str]:
    env = dict(os.environ)
    # gdb must not page, colour or look for debuginfod servers
    env.pop("DEBUGINFOD_URLS", None)
    env["TERM"] = "dumb"
    return env


# --------------------------------------------------------------------------
# Kernel cores


def _core_pattern() -> tuple[str, bool]:
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    try:
        uses_pid = Path("/proc/sys/kernel/core_uses_pid").read_text().strip() == "1"
    except OSError:
        uses_pid = False
    return pattern, uses_pid


def _core_globs(pattern: str, uses_pid: bool, pid: int, workdir: Path) -> list[Path]:
    """Where the kernel may have put the core: core_pattern expanded as far as we can."""
    known = {
        "%": "%",
        "p": str(pid),
        "P": str(pid),
        "i": str(pid),
        "I": str(pid),
        "e": "regs",
        "s": str(int(signal.SIGABRT)),
        "u": str(os.getuid()),
        "g": str(os.getgid()),
        "h": socket.gethostname(),
    }
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%" and i + 1 < len(pattern):
            spec = pattern[i + 1]
            out.append(known.get(spec, "*"))
            i += 2
        else:
            out.append("*" if ch in "*?[" else ch)
            i += 1
    expanded = "".join(out)
    if uses_pid and "%p" not in pattern:
        expanded += f".{pid}"
    candidates = [workdir / expanded] if not expanded.startswith("/") else [Path(expanded)]
    # the plain names, whatever the pattern says
    candidates += [workdir / "core", workdir / f"core.{pid}"]
    return candidates


def _find_core(candidates: list[Path]) -> Path | None:
    for cand in candidates:
        for hit in sorted(glob.glob(str(cand))):
            path = Path(hit)
            if path.is_file() and path.stat().st_size > 0:
                return path
    return None


def make_kernel_core(
    tmp: Path,
    seed: int,
    threads: int,
    *,
    program: Path | None = None,
    isa: str = "auto",
    touch_mib: int = 0,
    timeout: float = 600.0,
) -> MadeCore:
    """A core written by the kernel when regs sends itself SIGABRT.

    The program runs as `bash -c 'ulimit -c unlimited; exec ./regs ...'` with an
    empty environment in a fresh directory under `tmp`.
    """
    pattern, uses_pid = _core_pattern()
    if pattern.startswith("|"):
        raise Unavailable(
            f"core_pattern pipes cores to a handler ({pattern.split()[0]}), not to a file"
        )
    bash = shutil.which("bash")
    if bash is None:
        raise Unavailable("no bash to raise the core size limit in")
    tmp = Path(tmp)
    program = program or compile_regs(_fresh_dir(tmp, "build-"))
    workdir = _fresh_dir(tmp, "kcore-")
    _stage_program(program, workdir)
    args = [str(seed), str(threads), "abort", f"--isa={isa}"]
    if touch_mib:
        args.append(f"--touch-mib={touch_mib}")
    proc = subprocess.run(
        [bash, "-c", 'ulimit -c unlimited || exit 97; exec ./regs "$@"', "regs", *args],
        cwd=workdir,
        env=_clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if proc.returncode == 97:
        raise Unavailable(f"cannot raise the core size limit: {proc.stderr.strip()}")
    if proc.returncode == 3:
        raise Unavailable(f"regs cannot run here: {proc.stderr.strip()}")
    if proc.returncode != -signal.SIGABRT:
        raise RuntimeError(
            f"regs ended with {proc.returncode}, not SIGABRT: {proc.stderr.strip()[-1000:]}"
        )
    run = _parse_run(proc.stdout.splitlines(), seed, threads)
    core = _find_core(_core_globs(pattern, uses_pid, run.pid, workdir))
    if core is None:
        raise Unavailable(
            f"the kernel wrote no core file (core_pattern {pattern!r}, "
            f"core_uses_pid {int(uses_pid)}): cores may be disabled or sent elsewhere"
        )
    if core.parent != workdir:
        moved = workdir / core.name
        shutil.move(str(core), moved)
        core = moved
    return MadeCore(core, program, expected_for_run(run), run, "linux")


def make_big_memory_core(
    tmp: Path, gib: int = 1, *, program: Path | None = None, seed: int = 1, threads: int = 1
) -> MadeCore:
    """A kernel core of a process that wrote to every page of `gib` GiB first.

    For the peak-memory benchmark: the core file is larger than `gib` GiB.
    """
    made = make_kernel_core(tmp, seed, threads, program=program, touch_mib=gib * 1024)
    size = made.core.stat().st_size
    if size < gib << 30:
        raise RuntimeError(f"core of {size} bytes is smaller than the {gib} GiB touched")
    return made


# --------------------------------------------------------------------------
# A minimal ELF note reader, so that facts about a core can be checked without
# xcr0tool (which is what is under test)

NT_PRSTATUS = 1
NT_PRFPREG = 2
NT_PRPSINFO = 3
NT_AUXV = 6
NT_FILE = 0x46494C45
NT_SIGINFO = 0x53494749
NT_X86_XSTATE = 0x202
NT_X86_SHSTK = 0x204
NT_X86_XSAVE_LAYOUT = 0x205


@dataclass(frozen=True)
class Note:
    name: str
    type: int
    desc: bytes


def read_notes(core: Path) -> list[Note]:
    """Every note of every PT_NOTE segment of a little-endian ELF64 core, in order."""
    notes: list[Note] = []
    with open(core, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            raise ValueError(f"{core}: not a little-endian ELF64 file")
        phoff = struct.unpack_from("<Q", header, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, _flags, offset, _va, _pa, filesz = struct.unpack("<IIQQQQ", f.read(40))
            if p_type != 4:  # PT_NOTE
                continue
            f.seek(offset)
            data = f.read(filesz)
            pos = 0
            while pos + 12 <= len(data):
                namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
                name = data[pos + 12 : pos + 12 + namesz].rstrip(b"\0").decode("latin-1")
                desc_at = pos + 12 + ((namesz + 3) & ~3)
                notes.append(Note(name, ntype, data[desc_at : desc_at + descsz]))
                pos = desc_at + ((descsz + 3) & ~3)
    return notes


def xsave_layout_records(desc: bytes) -> dict[int, tuple[int, int]]:
    """NT_X86_XSAVE_LAYOUT: {component: (size, offset)} from its 16-byte records."""
    out = {}
    for pos in range(0, len(desc) - len(desc) % 16, 16):
        cid, size, offset, _flags = struct.unpack_from("<IIII", desc, pos)
        out[cid] = (size, offset)
    return out
