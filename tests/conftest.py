"""What every test may use: the shared helpers in tests/ importable from any directory
under it, programs built once per session, the CPU oracle, real cores, live children.

The tests are laid out by layer: unit/<package>/ (one package's modules through their
Python API), cli/ (the command line as a user meets it), oracles/ (xcr0tool against
gdb, the CPU, the kernel, and third-party data and tools), project/ (the whole package:
lint, layers, library surface, each fact once). The helpers they share live here in
tests/, beside this file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest


def _hypothesis_from_its_bytecode() -> None:
    """Hypothesis loads from its installed bytecode, not rewritten by pytest's assertion
    rewriting. pytest marks every module of a distribution that has a pytest plugin for
    rewriting, hypothesis's 80 with it; where no bytecode may be written
    (PYTHONDONTWRITEBYTECODE) it parses, rewrites and compiles them again in every
    process of every run: 2 s of CPU each, where collecting the whole suite takes 1.2 s.
    Hypothesis's asserts are its own invariants and fail alike; the tests' assertions
    are rewritten as ever. (pytest has no public switch for this: without the private
    set, nothing changes.)"""
    for hook in sys.meta_path:
        marked = getattr(hook, "_must_rewrite", None)
        if isinstance(marked, set):
            marked.difference_update({"hypothesis", "_hypothesis_ftz_detector"})


_hypothesis_from_its_bytecode()

from hypothesis import settings  # noqa: E402

# Test modules import the helpers by their bare names (coremaker, clirunner, ...); with
# the tests in sub-directories, tests/ itself must be on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cbuild  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

    from cpu_oracle import CpuOracle
    from ptrace_child import Spawn, Tracer

# Properties, not timings: a 2-core CI machine running gdb and gcc beside the suite must
# not fail an example for being slow. Failing examples are printed for reproduction.
settings.register_profile("xcr0tool", deadline=None, print_blob=True)
settings.load_profile("xcr0tool")


@pytest.fixture(scope="session", autouse=True)
def _shared_builds(tmp_path_factory: pytest.TempPathFactory) -> None:
    """C programs are built once per session: under pytest-xdist, in the directory all
    workers' temporary directories share (pytest-xdist's documented way to share
    session data), else in this session's own."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    cbuild.configure(shared / "builds")


# ---- BEGIN cpu_oracle fixture (tests/cpu_oracle.py) ---------------------------------------
@pytest.fixture(scope="session")
def cpu_oracle(request: pytest.FixtureRequest) -> CpuOracle:
    """This CPU as the XSAVE oracle; skips, with the reason, where it cannot be had."""
    from cpu_oracle import get_oracle

    cache = getattr(request.config, "cache", None)
    return get_oracle(cache.mkdir("xsave_oracle") if cache is not None else None)


# ---- END cpu_oracle fixture ---------------------------------------------------------------


# ---- BEGIN real cores (tests/coremaker.py, tests/gdb_oracle.py) ---------------------------
# Cores of tests/progs/regs.c made here, by the kernel and by gdb's gcore; every
# fixture skips with the host's reason when it cannot be had (no gcc, no gdb, no
# ptrace, cores piped to a handler, ...).
if TYPE_CHECKING:
    from collections.abc import Callable

    from coremaker import Host, MadeCore


@pytest.fixture(scope="session")
def regs_program() -> Path:
    """tests/progs/regs.c, compiled once per session (all workers)."""
    import coremaker

    key = coremaker.REGS_SOURCE.read_bytes() + cbuild.gcc_key()
    try:
        return cbuild.once("regs", key, coremaker.compile_regs)
    except coremaker.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def regs_host(regs_program: Path) -> Host:
    """This CPU and OS as regs.c sees them: ISA level, XCR0, CPUID 0xD layout."""
    import coremaker

    return coremaker.probe_host(regs_program)


@pytest.fixture(scope="session")
def gdb_available() -> tuple[int, int]:
    """gdb's (major, minor); skips when there is no gdb ($XCR0TOOL_GDB or gdb on PATH)."""
    import coremaker

    try:
        return coremaker.gdb_version()
    except coremaker.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def make_gcore(regs_program: Path, gdb_available: tuple[int, int]) -> Callable[..., MadeCore]:
    """make_gcore(tmp, seed, threads, **kw) -> MadeCore (core, program, expected)."""
    import coremaker

    def factory(tmp: Path, seed: int, threads: int, **kw: object) -> MadeCore:
        try:
            return coremaker.make_gcore(tmp, seed, threads, program=regs_program, **kw)
        except coremaker.Unavailable as exc:
            pytest.skip(str(exc))

    return factory


@pytest.fixture(scope="session")
def make_kernel_core(regs_program: Path) -> Callable[..., MadeCore]:
    """make_kernel_core(tmp, seed, threads, **kw) -> MadeCore (core, program, expected)."""
    import coremaker

    def factory(tmp: Path, seed: int, threads: int, **kw: object) -> MadeCore:
        try:
            return coremaker.make_kernel_core(tmp, seed, threads, program=regs_program, **kw)
        except coremaker.Unavailable as exc:
            pytest.skip(str(exc))

    return factory


# ---- END real cores -----------------------------------------------------------------------


# ---- BEGIN live children (tests/ptrace_child.py) -------------------------------------------
@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """spawn(threads, isa="sse", *extra) -> a running ptrace_child.Child, killed after."""
    import ptrace_child

    yield from ptrace_child.spawning(tmp_path)


@pytest.fixture
def tracer() -> Iterator[Tracer]:
    """tracer(tid) -> the pid of a tinytracer holding `tid`, killed after."""
    import ptrace_child

    yield from ptrace_child.tracing()


# ---- END live children ---------------------------------------------------------------------
