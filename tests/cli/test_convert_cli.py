"""`xcr0tool convert` and `xcr0tool mask` as a user meets them: pipelines, cores in and
out, terminals refused, every rejected input with its message, and gdb reading the
cores they write."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from clirunner import ok, one_line_error, run, stderr_lines
from images import image_for, xsaves_image
from paths import FIXTURES

from xcr0tool.arch.offsets import XCOMP_BV
from xcr0tool.layouts.profiles import profile_layout
from xcr0tool.model.image import read_u64
from xcr0tool.sources.elfcore import read_core

if TYPE_CHECKING:
    from collections.abc import Callable

    from coremaker import MadeCore

FIXTURE_CORE = FIXTURES / "linux-amd-avx512bw-4t.core"
TERMINAL = "xcr0tool: refusing to write binary data to a terminal: pass -o FILE or pipe the output"


def run_with_stdout(
    *args: str, stdout: int, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """As a program, with stdout on the file descriptor given (a pty)."""
    return subprocess.run(
        [sys.executable, "-m", "xcr0tool", *args],
        input=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        check=False,
        timeout=120,
    )


def decoded_thread(data: bytes) -> dict[str, Any]:
    """The one thread of `decode --json -` of a raw image."""
    (thread,) = json.loads(ok(run("decode", "--json", "-", stdin=data)))["threads"]
    return cast("dict[str, Any]", thread)


def registers(data: bytes) -> dict[str, int]:
    return {name: int(value, 16) for name, value in decoded_thread(data)["registers"].items()}


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.fixture
def zen4_image(tmp_path: Path) -> Path:
    """A 2432-byte standard image of the AMD Zen 4 layout, XCR0 0xe7, all in use."""
    path = tmp_path / "zen4.bin"
    path.write_bytes(image_for(profile_layout("amd-zen4"), 0xE7, seed=11).data)
    return path


@pytest.fixture(scope="module")
def kernel_core(
    make_kernel_core: Callable[..., MadeCore], tmp_path_factory: pytest.TempPathFactory
) -> MadeCore:
    return make_kernel_core(tmp_path_factory.mktemp("kcore"), 0xC0DE, 3)


# ----- pipelines ----------------------------------------------------------------------


def test_extract_mask_decode_pipeline() -> None:
    """xcr0tool extract core | xcr0tool mask --xcr0 0x7 | xcr0tool decode -"""
    extracted = ok(run("extract", str(FIXTURE_CORE)))
    masked = run("mask", "--xcr0", "0x7", stdin=extracted)
    assert len(ok(masked)) == 832
    assert stderr_lines(masked) == [
        f"xcr0tool: warning: removed {name} (component {i}): in use, its values are gone"
        for i, name in ((5, "opmask"), (6, "zmm_hi256"), (7, "hi16_zmm"))
    ]
    thread = decoded_thread(masked.stdout)
    assert (thread["xcr0"], thread["xstate_bv"], thread["size"]) == ("0x7", "0x7", 832)
    before = registers(extracted)
    after = registers(masked.stdout)
    assert {name: before[name] for name in after} == after
    assert not any(name.startswith(("zmm", "k")) for name in after)


def test_source_defaults_to_stdin(zen4_image: Path) -> None:
    data = zen4_image.read_bytes()
    assert ok(run("mask", "--xcr0", "0x7", stdin=data)) == ok(
        run("mask", "--xcr0", "0x7", str(zen4_image))
    )
    assert ok(run("convert", "--to", "compacted", stdin=data)) == ok(
        run("convert", "--to", "compacted", "-", stdin=data)
    )


def test_compacted_and_back(zen4_image: Path, tmp_path: Path) -> None:
    compacted = tmp_path / "c.bin"
    ok(run("convert", "--to", "compacted", str(zen4_image), "-o", str(compacted)))
    data = compacted.read_bytes()
    assert len(data) == 2432  # Zen 4's compacted offsets are its standard ones
    assert read_u64(data, XCOMP_BV) == 0xE7 | 1 << 63
    back = ok(run("convert", "--layout", "amd-zen4", str(compacted)))
    assert back == zen4_image.read_bytes()
    small = ok(run("convert", "--to", "compacted", "--xcomp-bv", "0x7", str(zen4_image)))
    assert (len(small), read_u64(small, XCOMP_BV)) == (832, 0x7 | 1 << 63)


def test_compacted_to_standard_names_the_layout_it_chose(zen4_image: Path) -> None:
    """A compacted image holds no standard offsets: without --layout, this machine's."""
    from xcr0tool.errors import XcrError
    from xcr0tool.sources.open import host_layout

    compacted = ok(run("convert", "--to", "compacted", str(zen4_image)))
    result = run("convert", "-", stdin=compacted)
    try:
        size = host_layout().standard_size(0xE7)
    except XcrError:
        line = one_line_error(result)
        assert line.startswith(
            "xcr0tool: <stdin>: a compacted image has no standard offsets, and this machine"
        ) and line.endswith(": pass --layout"), line
        return
    assert len(ok(result)) == size
    assert stderr_lines(result) == [
        "xcr0tool: warning: standard offsets from this machine's CPUID leaf 0xD (--layout to choose)"
    ]


def test_compacted_to_standard_without_a_host_names_the_image(
    zen4_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine that cannot be asked (not x86-64 Linux, no CPUID leaf 0xD): the one line
    names the image as the user typed it, says why, and asks for --layout; nothing is
    written (issue 8: every bad-input error names its input)."""
    from xcr0tool.errors import HostUnavailable
    from xcr0tool.sources import hostinfo

    compacted = tmp_path / "img.xsavec"
    ok(run("convert", "--to", "compacted", str(zen4_image), "-o", str(compacted)))

    def no_host() -> None:
        raise HostUnavailable("not x86-64 Linux")

    monkeypatch.setattr(hostinfo, "host_layout", no_host)
    out = tmp_path / "out.bin"
    result = run("convert", "--to", "standard", str(compacted), "-o", str(out))
    assert one_line_error(result) == (
        f"xcr0tool: {compacted}: a compacted image has no standard offsets, and this machine"
        " cannot be asked (not x86-64 Linux): pass --layout"
    )
    assert not out.exists()
    # --layout is the way out the line names.
    ok(run("convert", "--layout", "amd-zen4", str(compacted), "-o", str(out)))
    assert out.read_bytes() == zen4_image.read_bytes()


def test_amd_intel_relayout_round_trip(zen4_image: Path) -> None:
    intel = ok(run("convert", "--from-layout", "amd-zen4", "--layout", "intel", str(zen4_image)))
    assert len(intel) == 2688
    assert intel[1088 : 1088 + 64] == zen4_image.read_bytes()[832 : 832 + 64]  # k0-k7
    back = run("convert", "--from-layout", "intel", "--layout", "amd-zen4", "-", stdin=intel)
    assert ok(back) == zen4_image.read_bytes()
    assert registers(intel) == registers(zen4_image.read_bytes())


def test_mask_notes_what_the_image_lacks(zen4_image: Path) -> None:
    result = run("mask", "--xcr0", "0x2e7", str(zen4_image))
    assert ok(result) == zen4_image.read_bytes()
    assert stderr_lines(result) == [
        "xcr0tool: warning: the image has no pkru (XCR0 0xe7): masking never adds a feature"
    ]


def test_keep_size(zen4_image: Path) -> None:
    data = ok(run("mask", "--xcr0", "0x3", "--keep-size", str(zen4_image)))
    assert len(data) == 2432 and data[576:] == bytes(2432 - 576)


# ----- supervisor components ----------------------------------------------------------


def test_supervisor_components_refused_then_dropped(tmp_path: Path) -> None:
    path = tmp_path / "xsaves.bin"
    path.write_bytes(xsaves_image(0x2E7 | 1 << 11 | 1 << 15).data)
    refused = one_line_error(run("convert", "--layout", "intel", str(path)))
    assert refused == (
        f"xcr0tool: {path}: supervisor components pasid (component 10, init), cet_u"
        " (component 11, in use), lbr (component 15, in use) cannot go into the standard"
        " format: it has no place for them (CPUID.(0xD,i).EBX = 0; only XSAVES and XRSTORS,"
        " at CPL 0, read and write them); pass --drop-supervisor to leave them out"
    )
    dropped = run("convert", "--layout", "intel", "--drop-supervisor", str(path))
    assert len(ok(dropped)) == 2696
    assert stderr_lines(dropped) == [
        "xcr0tool: warning: dropped supervisor component pasid (component 10): in its init state",
        "xcr0tool: warning: dropped supervisor component cet_u (component 11): in use, its values are gone",
        "xcr0tool: warning: dropped supervisor component lbr (component 15): in use, its values are gone",
    ]


# ----- refusals -----------------------------------------------------------------------


def on_terminal(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run with stdout on a pseudo-terminal."""
    leader, follower = pty.openpty()
    try:
        return run_with_stdout(*args, stdin=stdin, stdout=follower)
    finally:
        os.close(follower)
        os.close(leader)


@pytest.mark.parametrize("command", [["mask", "--xcr0", "0x7"], ["convert"]])
def test_binary_output_to_a_terminal_is_refused(command: list[str], zen4_image: Path) -> None:
    for source in (str(zen4_image), str(FIXTURE_CORE)):
        result = on_terminal(*command, source)
        assert result.returncode == 2
        assert stderr_lines(result) == [TERMINAL]


def test_stdin_terminal_is_refused() -> None:
    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "xcr0tool", "mask", "--xcr0", "0x7"],
            stdin=follower,
            capture_output=True,
            check=False,
            timeout=60,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert one_line_error(result) == (
        "xcr0tool: standard input is a terminal: name a SOURCE or pipe an image or a core in"
    )


REJECTIONS = [
    (
        ["mask", "--xcr0", "0x5"],
        "--xcr0: XCR0 0x5 (x87|ymm) is not a value XCR0 can hold: AVX (bit 2) needs SSE (bit 1)",
    ),
    (
        ["mask", "--xcr0", "0x27"],
        "--xcr0: XCR0 0x27 (x87|sse|ymm|opmask) is not a value XCR0 can hold: AVX-512 opmask,"
        " ZMM_Hi256 and Hi16_ZMM (bits 5, 6 and 7) go together",
    ),
    (
        ["mask", "--xcr0", "0xe3"],
        "--xcr0: XCR0 0xe3 (x87|sse|opmask|zmm_hi256|hi16_zmm) is not a value XCR0 can hold:"
        " AVX-512 (bits 5-7) needs AVX (bit 2)",
    ),
    (
        ["mask", "--xcr0", "0x6"],
        "--xcr0: XCR0 0x6 (sse|ymm) is not a value XCR0 can hold: bit 0 (x87) is always set",
    ),
    (["convert", "--xcomp-bv", "0x7"], "--xcomp-bv applies to --to compacted"),
    (
        ["convert", "--to", "compacted", "--drop-supervisor"],
        "--drop-supervisor applies to --to standard",
    ),
    (
        ["convert", "--to", "compacted", "--keep-sw-bytes"],
        "--keep-sw-bytes applies to --to standard",
    ),
]


@pytest.mark.parametrize(("args", "message"), REJECTIONS)
def test_rejections(args: list[str], message: str, zen4_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    before = digest(zen4_image)
    assert one_line_error(run(*args, str(zen4_image), "-o", str(out))) == f"xcr0tool: {message}"
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zen4.bin"]  # no temporary left
    assert digest(zen4_image) == before


def test_rejected_inputs(tmp_path: Path, zen4_image: Path) -> None:
    missing = tmp_path / "nope"
    assert one_line_error(run("mask", "--xcr0", "7", str(missing))) == (
        f"xcr0tool: {missing}: no such file"
    )
    core = str(FIXTURE_CORE)
    assert one_line_error(run("convert", "--to", "compacted", core, "-o", str(tmp_path / "x"))) == (
        f"xcr0tool: {core}: a core's NT_X86_XSTATE is always in the standard format (the"
        " kernel and gdb read no other); convert one thread (CORE@TID)"
    )
    amx = tmp_path / "amx.bin"
    amx.write_bytes(image_for(profile_layout("intel"), 0x602E7, seed=12).data)
    message = one_line_error(
        run("convert", "--from-layout", "intel", "--layout", "amd-zen4", str(amx))
    )
    assert message == (
        f"xcr0tool: {amx}: the layout (built-in profile amd-zen4 (CPUID of K19_Genoa_01))"
        " does not know component 17 (xtilecfg)"
    )
    unwritable = tmp_path / "no-such-dir" / "out.bin"
    assert one_line_error(run("mask", "--xcr0", "7", str(zen4_image), "-o", str(unwritable))) == (
        f"xcr0tool: {unwritable}: cannot write here: no such file or directory"
    )
    assert not unwritable.parent.exists()


# ----- whole cores --------------------------------------------------------------------


def test_core_in_core_out(kernel_core: MadeCore, tmp_path: Path) -> None:
    source = kernel_core.core
    before = digest(source)
    out = tmp_path / "masked.core"
    result = run("mask", "--xcr0", "0x7", str(source), "-o", str(out))
    ok(result)
    assert digest(source) == before
    original, masked = read_core(str(source)), read_core(str(out))
    assert [t.tid for t in masked.threads] == [t.tid for t in original.threads]
    for old, new in zip(original.threads, masked.threads, strict=True):
        assert new.xstate is not None and old.xstate is not None
        assert len(new.xstate) == 832
        assert new.xstate[:464] == old.xstate[:464]  # legacy region unchanged
        assert new.xstate[576:832] == old.xstate[576:832]  # YMM_Hi128 unchanged
        assert new.fpregs == old.fpregs
    assert masked.xsave_layout == (2).to_bytes(4, "little") + (256).to_bytes(4, "little") + (
        576
    ).to_bytes(4, "little") + bytes(4)
    # The same core through a pipe, and from standard input
    piped = run("mask", "--xcr0", "0x7", str(source))
    assert ok(piped) == out.read_bytes()
    from_stdin = run("mask", "--xcr0", "0x7", "-", stdin=source.read_bytes())
    assert ok(from_stdin) == out.read_bytes()
    # One thread of a core gives a raw image
    tid = original.threads[1].tid
    one = ok(run("mask", "--xcr0", "0x7", f"{source}@{tid}"))
    assert one == masked.threads[1].xstate


def test_core_output_never_overwrites_its_input(kernel_core: MadeCore, tmp_path: Path) -> None:
    copy = tmp_path / "core"
    copy.write_bytes(kernel_core.core.read_bytes())
    before = digest(copy)
    message = one_line_error(run("mask", "--xcr0", "0x7", str(copy), "-o", str(copy)))
    assert message == f"xcr0tool: {copy}: is the input core; write the new core elsewhere"
    assert digest(copy) == before


@pytest.mark.gdb
def test_gdb_reads_the_masked_and_the_relaid_out_core(
    kernel_core: MadeCore, gdb_available: tuple[int, int], tmp_path: Path
) -> None:
    """gdb shows the masked core's registers: x87, SSE and AVX as the program loaded them,
    no ZMM, no opmask. And a core moved to Intel's layout shows every register the
    program loaded, wherever this CPU put them (gdb 13 knows only Intel's offsets)."""
    from coremaker import component_registers
    from gdb_oracle import gdb_view

    masked = tmp_path / "masked.core"
    ok(run("mask", "--xcr0", "0x7", str(kernel_core.core), "-o", str(masked)))
    intel = tmp_path / "intel.core"
    ok(run("convert", "--layout", "intel", str(kernel_core.core), "-o", str(intel)))
    avx_view = gdb_view(kernel_core.program, masked)
    intel_view = gdb_view(kernel_core.program, intel)
    mask256 = (1 << 256) - 1
    # what XCR0 0x7 keeps: x87, SSE and AVX registers (zmm0-15 share bytes with them but
    # are not shown without ZMM_Hi256); opmask, Hi16_ZMM, PKRU, ... are gone
    kept = (component_registers(0) | component_registers(1) | component_registers(2)) - {
        f"zmm{n}" for n in range(16)
    }
    for tid, expected in kernel_core.expected.items():
        shown = avx_view.registers[tid]
        assert not [name for name in shown if name.startswith(("zmm", "k"))]
        assert "pkru" not in shown
        want = {
            name: value & mask256 if name.startswith("ymm") else value
            for name, value in expected.items()
            if name in kept
        }
        assert {name: shown.get(name) for name in want} == want, tid
        everything = intel_view.registers[tid]
        assert {name: everything.get(name) for name in expected} == expected, tid
