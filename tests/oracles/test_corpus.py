"""Third-party cores, made on other machines and kernels, decoded against the values their
own projects' test suites assert (LLDB's TestLinuxCore.py, elfutils'
run-readelf-mixed-corenote.sh). Read in place from XCR0TOOL_CORPUS; never copied here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from clirunner import ok, run
from corpus_facts import LLDB_ST, LLDB_XMM

CORPUS = os.environ.get("XCR0TOOL_CORPUS")
pytestmark = pytest.mark.skipif(
    not CORPUS, reason="XCR0TOOL_CORPUS is not set (a directory of third-party cores)"
)


def decode(name: str) -> dict[str, Any]:
    path = Path(CORPUS or "") / name
    return json.loads(ok(run("decode", "--json", str(path))))


def little(spaced: str) -> int:
    return int.from_bytes(bytes.fromhex(spaced), "little")


@pytest.mark.parametrize(
    ("name", "fioff", "xmm_count"),
    [
        ("lldb-linux-fpr_sse_x86_64.core", 0x0040011E, 16),
        ("lldb-linux-fpr_sse_i386.core", 0x080480CC, 8),
    ],
)
def test_lldb_fpr_sse(name: str, fioff: int, xmm_count: int) -> None:
    decoded = decode(name)
    (thread,) = decoded["threads"]
    regs = {k: int(v, 16) for k, v in thread["registers"].items()}
    assert (thread["xcr0"], thread["xstate_bv"], thread["size"]) == ("0x7", "0x3", 832)
    assert (
        regs["fctrl"],
        regs["fstat"],
        regs["fop"],
        regs["fiseg"],
        regs["foseg"],
        regs["fooff"],
    ) == (0x37F, 0, 0, 0, 0, 0)
    assert regs["fioff"] == fioff
    assert regs["mxcsr"] == 0x1F80
    assert [regs[f"st{i}"] for i in range(8)] == [little(s) for s in LLDB_ST]
    # LLDB shows the abridged tag 0xff; gdb (and we) the full word: all eight valid
    # except st6 (+0, tag zero) which is physical register 6 with TOP 0.
    assert regs["ftag"] == 0x1 << 12
    for i, lane in enumerate(LLDB_XMM):
        broadcast = sum(lane << (32 * k) for k in range(4))
        assert regs[f"xmm{i}"] == broadcast
        assert regs[f"ymm{i}"] == broadcast  # AVX in init state: upper halves zero
    assert sum(name.startswith("xmm") for name in regs) == xmm_count
    assert decoded["details"]["machine"] == ("x86-64" if xmm_count == 16 else "i386")


def test_elfutils_x32() -> None:
    decoded = decode("elfutils-testfile-x32-core")
    assert decoded["details"] == {"machine": "x32", "os": "linux", "class": "ELF32"}
    (thread,) = decoded["threads"]
    regs = {k: int(v, 16) for k, v in thread["registers"].items()}
    assert thread["xstate_bv"] == "0x2"  # x87 in its init state
    assert regs["xmm0"] == 0xFF00
    assert regs["xmm1"] == int("2f" * 16, 16)
    assert regs["xmm3"] == 0xFF00000000000000
    assert regs["xmm4"] == 0xFF000000000000
    assert all(regs[f"xmm{i}"] == 0 for i in (2, *range(5, 16)))
    assert all(regs[f"st{i}"] == 0 for i in range(8))
    assert (regs["mxcsr"], regs["fctrl"], regs["fstat"], regs["ftag"]) == (0x1F80, 0x37F, 0, 0xFFFF)


def test_pyelftools_mpx_core() -> None:
    decoded = decode("pyelftools-core_linux32.elf")
    (thread,) = decoded["threads"]
    assert (thread["xcr0"], thread["xstate_bv"], thread["size"]) == ("0x1f", "0x0", 1088)
    offsets = {c["id"]: c["offset"] for c in thread["components"]}
    assert (offsets[3], offsets[4]) == (960, 1024)
    regs = {k: int(v, 16) for k, v in thread["registers"].items()}
    # Everything in its init state: init values, whatever bytes lie behind.
    assert regs["fctrl"] == 0x37F and regs["ftag"] == 0xFFFF and regs["mxcsr"] == 0x1F80
    assert all(regs[f"bnd{i}raw"] == 0 for i in range(4))
    assert regs["bndcfgu"] == regs["bndstatus"] == 0
    assert decoded["layout"]["source"].startswith(
        "guess from XCR0 0x1f and 1088 bytes: built-in profile intel"
    )
