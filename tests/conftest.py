from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from cpu_oracle import CpuOracle

# Properties, not timings: a 2-core CI machine running gdb and gcc beside the suite must
# not fail an example for being slow. Failing examples are printed for reproduction.
settings.register_profile("xcr0tool", deadline=None, print_blob=True)
settings.load_profile("xcr0tool")


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
    from pathlib import Path

    from coremaker import Host, MadeCore


@pytest.fixture(scope="session")
def regs_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/progs/regs.c, compiled once per session."""
    import coremaker

    try:
        return coremaker.compile_regs(tmp_path_factory.mktemp("regs-build"))
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
