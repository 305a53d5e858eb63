"""`xcr0tool host` against this CPU as a C helper reads it, /proc/cpuinfo and the layout
round trip; `decode self`; and the rendering of a host whose CPUID contradicts itself.

The C helper is tests/cpuid_helper.py's (CPUID through <cpuid.h>, XGETBV and FXSAVE through inline
asm, compiled at test time): it shares no code with the tool's hand-assembled stubs.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from clirunner import one_line_error, run
from cpuid_helper import ZEN4, Oracle, cpuinfo_cpu0, helper_oracle, needs_xsave

from xcr0tool.cli.main import main
from xcr0tool.layouts.files import load_layout_file
from xcr0tool.model.layout import layout_from_cpuid
from xcr0tool.render.host import XSAVE_FLAGS
from xcr0tool.sources import cpu, hostinfo
from xcr0tool.sources.hostinfo import HostInfo, XsaveSupport

pytestmark = [
    pytest.mark.cpu,
    pytest.mark.skipif(not cpu.is_x86_64_linux(), reason="needs Linux on x86-64"),
]


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    return helper_oracle()


COMPACTED = 1 << 63


def host_json(*args: str) -> dict[str, Any]:
    result = run("host", "--json", *args)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def compacted_offsets(
    leaves: dict[tuple[int, int], tuple[int, int, int, int]], xcr0: int
) -> dict[int, int]:
    """SDM vol. 1 §13.4.3, from the helper's sub-leaves: what XSAVEC of XCR0 writes."""
    offsets = {0: 0, 1: 160}
    at = 576
    for i in range(2, 63):
        if xcr0 >> i & 1:
            size, _, ecx, _ = leaves[(0xD, i)]
            if ecx & 2:
                at = (at + 63) & ~63
            offsets[i] = at
            at += size
    return offsets


# ---------------------------------------------------------------- against the C helper


def test_leaf_0d_equals_c_helper(oracle: Oracle) -> None:
    needs_xsave()
    out = host_json()
    shown = {
        entry["subleaf"]: tuple(int(entry[r], 16) for r in ("eax", "ebx", "ecx", "edx"))
        for entry in out["leaf_0d"]
    }
    assert [e["subleaf"] for e in out["leaf_0d"]] == sorted(shown)
    for sub in range(64):
        regs = oracle.leaves[(0xD, sub)]
        if any(regs):
            assert shown.pop(sub) == regs, f"sub-leaf {sub}"
    assert shown == {}, f"sub-leaves the helper reads as all zero: {sorted(shown)}"


def test_components_equal_c_helper(oracle: Oracle) -> None:
    needs_xsave()
    out = host_json()
    xcr0 = oracle.xcr0
    assert xcr0 is not None
    compacted = compacted_offsets(oracle.leaves, xcr0)
    rows = {row["id"]: row for row in out["components"]}
    described = {
        sub for (leaf, sub), regs in oracle.leaves.items() if leaf == 0xD and sub >= 2 and regs[0]
    }
    assert set(rows) == {0, 1} | described
    for i in described:
        eax, ebx, ecx, _ = oracle.leaves[(0xD, i)]
        row = rows[i]
        assert row["size"] == eax
        assert row["supervisor"] == bool(ecx & 1)
        assert row["offset"] == (None if ecx & 1 else ebx)
        assert row["aligned"] == bool(ecx & 2)
        assert row["xfd"] == bool(ecx & 4)
        assert row["compacted_offset"] == compacted.get(i), f"component {i}"
        assert (row["state"] == "xcr0") == bool(xcr0 >> i & 1)


def test_xcr0_sizes_and_instructions_equal_c_helper(oracle: Oracle) -> None:
    needs_xsave()
    out = host_json()
    sub0, sub1 = oracle.leaves[(0xD, 0)], oracle.leaves[(0xD, 1)]
    xcr0 = oracle.xcr0
    assert xcr0 is not None
    assert out["xcr0"] == hex(xcr0)
    assert out["xcr0_capable"] == hex(sub0[3] << 32 | sub0[0])
    assert out["xss_capable"] == hex(sub1[3] << 32 | sub1[2])
    layout = {i: oracle.leaves[(0xD, i)] for i in range(2, 63) if xcr0 >> i & 1}
    compacted_end = max(
        [576] + [compacted_offsets(oracle.leaves, xcr0)[i] + layout[i][0] for i in layout]
    )
    assert out["sizes"] == {
        "standard_xcr0": sub0[1],
        "standard_max": sub0[2],
        "compacted_xcr0_xss": sub1[1],
        "compacted_xcr0": compacted_end,
    }
    assert out["instructions"] == {
        name: bool(sub1[0] >> bit & 1)
        for bit, name in enumerate(("xsaveopt", "xsavec", "xgetbv1", "xsaves", "xfd"))
    }
    assert out["mxcsr_mask"] == hex(oracle.mxcsr_mask or 0xFFBF)
    if out["xinuse"] is not None:
        assert int(out["xinuse"], 16) & ~xcr0 == 0
    if out["xss"] is not None:
        assert out["xss_candidates"] == [out["xss"]]
        assert int(out["xss"], 16) & ~int(out["xss_capable"], 16) == 0


def test_agrees_with_proc_cpuinfo() -> None:
    needs_xsave()
    out = host_json()
    proc = cpuinfo_cpu0()
    flags = set(proc["flags"].split())
    assert out["cpu"]["vendor"] == proc["vendor_id"]
    assert out["cpu"]["family"] == int(proc["cpu family"])
    assert out["cpu"]["model"] == int(proc["model"])
    assert out["cpu"]["stepping"] == int(proc["stepping"])
    if out["cpu"]["brand"]:
        assert out["cpu"]["brand"] == proc["model name"]
    assert out["kernel"]["cpuinfo_flags"] == {flag: flag in flags for flag in XSAVE_FLAGS}
    for name, present in out["instructions"].items():
        if name != "xfd":  # the kernel names XFD only where it uses it
            assert present == (name in flags), name
    xcr0 = int(out["xcr0"], 16)
    assert ("avx" in flags) == (xcr0 & 0b110 == 0b110)
    assert ("avx512f" in flags) == (xcr0 & 0xE0 == 0xE0)
    assert ("ospke" in flags) == bool(xcr0 & 1 << 9)
    if out["kernel"]["xcomp_supp"] is not None:
        assert out["kernel"]["xcomp_supp"] == out["xcr0"]
        assert int(out["kernel"]["xcomp_perm"], 16) & ~xcr0 == 0
    assert out["inconsistencies"] == hostinfo.gather_host_info().inconsistencies


def test_plain_text_in_a_pipe_shows_the_table() -> None:
    needs_xsave()
    out = host_json()
    result = run("host")
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "\x1b" not in text
    assert f"XCR0: {out['xcr0']} (" in text
    for entry in out["leaf_0d"]:
        regs = "  ".join(f"{int(entry[r], 16):#010x}" for r in ("eax", "ebx", "ecx", "edx"))
        assert re.search(rf"^ +{entry['subleaf']}  {regs}$", text, re.M), entry
    for row in out["components"]:
        standard = "-" if row["offset"] is None else str(row["offset"])
        compacted = "-" if row["compacted_offset"] is None else str(row["compacted_offset"])
        pattern = rf"^ +{row['id']}  {row['name']} +{row['size']} +{standard} +{compacted}  "
        assert re.search(pattern, text, re.M), row
    assert re.search(r"^inconsistencies: none$|^inconsistencies:$", text, re.M)


# ---------------------------------------------------------------- --save and --layout


def test_save_round_trips_through_layout(tmp_path: Path) -> None:
    needs_xsave()
    saved = tmp_path / "this-host.json"
    out = host_json("--save", str(saved))
    assert os.listdir(tmp_path) == ["this-host.json"]  # written whole, no temporary left

    data = json.loads(saved.read_text())
    assert data["schema"] == 1
    proc = cpuinfo_cpu0()
    brand = f" ({out['cpu']['brand']})" if out["cpu"]["brand"] else ""
    assert data["source"] == (
        f"CPUID leaf 0xD of {proc['vendor_id']} family {proc['cpu family']} model"
        f" {proc['model']} stepping {proc['stepping']}{brand}"
    )
    assert data["machine"] == out["cpu"]
    assert data["xcr0"] == out["xcr0"]

    loaded = load_layout_file(str(saved))
    assert loaded.source == f"layout file {saved} ({data['source']})"
    here = layout_from_cpuid(cpu.leaf_0d(), "here")
    assert loaded.components == here.components
    assert (loaded.xcr0_capable, loaded.xss_capable) == (here.xcr0_capable, here.xss_capable)

    via_file = json.loads(run("layout", "--layout", str(saved), "--json").stdout)
    via_cpuid = json.loads(run("layout", "--json").stdout)
    assert via_file["components"] == via_cpuid["components"] == data["components"]


def test_decode_with_a_saved_layout(tmp_path: Path) -> None:
    needs_xsave()
    saved = tmp_path / "this-host.json"
    assert run("host", "--save", str(saved)).returncode == 0
    image = tmp_path / "snapshot.xsave"
    image.write_bytes(cpu.xsave_snapshot(compacted=False))
    result = run("decode", "--json", "--layout", str(saved), str(image))
    assert result.returncode == 0, result.stderr
    with_file = json.loads(result.stdout)
    assert with_file["layout"]["source"].startswith(f"layout file {saved} (CPUID leaf 0xD of ")
    # the snapshot has no XCR0 word: by default this machine's own layout is used
    default = json.loads(run("decode", "--json", str(image)).stdout)
    assert default["layout"]["source"] == "this machine's CPUID leaf 0xD"
    assert with_file["threads"][0]["registers"] == default["threads"][0]["registers"]
    assert with_file["threads"][0]["components"] == default["threads"][0]["components"]


def test_save_where_nothing_can_be_written(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "host.json"
    assert one_line_error(run("host", "--save", str(target))) == (
        f"xcr0tool: {target}: cannot write here: no such file or directory"
    )


# ---------------------------------------------------------------- decode self


def test_decode_self_shows_standard_and_compacted() -> None:
    needs_xsave()
    if not cpu.cpuid(0xD, 1)[0] & 0b10:
        pytest.skip("no XSAVEC on this CPU (CPUID.(0xD,1).EAX[1] = 0)")
    host = host_json()
    result = run("decode", "--json", "self")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["source"], out["kind"]) == ("self", "self")
    standard, compacted = out["threads"]
    xcr0 = cpu.xgetbv(0)
    for image in (standard, compacted):
        assert image["tid"] is None
        assert image["xcr0"] == hex(xcr0)
        assert image["xcr0_source"] == "XGETBV"
        assert image["notes"] == []
    assert (standard["format"], standard["xcomp_bv"]) == ("standard", "0x0")
    assert standard["size"] == host["sizes"]["standard_xcr0"]
    assert (compacted["format"], compacted["xcomp_bv"]) == ("compacted", hex(xcr0 | COMPACTED))
    assert compacted["size"] == host["sizes"]["compacted_xcr0"]
    placed = {c["id"]: c["offset"] for c in compacted["components"]}
    expected = {c["id"]: c["compacted_offset"] for c in host["components"] if c["state"] == "xcr0"}
    assert placed == expected
    text = run("decode", "self", "--reg", "mxcsr").stdout.decode()
    assert text.startswith("source: self (self, 2 images)\n")
    assert "\nself@xsave:\n" in text and "\nself@xsavec:\n" in text
    one = json.loads(run("decode", "--json", "self", "--thread", "xsavec").stdout)
    assert [t["format"] for t in one["threads"]] == ["compacted"]
    assert one["source"] == "self@xsavec"


def test_off_x86_64_linux(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Elsewhere a clear message (the check is the platform's, so pretend it failed)."""
    monkeypatch.setattr(cpu, "is_x86_64_linux", lambda: False)
    for args in (["host"], ["decode", "self"]):
        with pytest.raises(SystemExit) as done:
            main(args)
        assert done.value.code == 2
        assert capsys.readouterr().err == (
            "xcr0tool: reading this CPU needs Linux on x86-64 (a 64-bit Python);"
            f" this is {sys.platform} on {platform.machine()}\n"
        )


# ---------------------------------------------------------------- a host that contradicts itself

# Zen 4's leaf 0xD, plus the AMX sub-leaves a hypervisor enumerates though XCR0 may not
# hold them, and a CPUID.(0xD,1).EBX that no IA32_XSS explains.
TROUBLED = {**ZEN4, 1: (0xF, 2500, 0x1800, 0), 17: (64, 2752, 2, 0), 18: (8192, 2816, 6, 0)}


def troubled_host() -> HostInfo:
    return HostInfo(
        vendor="AuthenticAMD",
        family=25,
        model=17,
        stepping=1,
        brand="AMD EPYC",
        xcr0=0xE7,
        xinuse=None,
        leaf_0d=TROUBLED,
        supports=XsaveSupport(True, True, False, True, False),
        xss_capable=0x1800,
        mxcsr_mask=0xFFFF,
        cpuinfo_flags=[],
        xcomp_supp=None,
        xcomp_perm=None,
        inconsistencies=hostinfo.find_inconsistencies(TROUBLED, 0xE7, []),
    )


TROUBLED_TEXT = """\
cpu: AuthenticAMD family 25 model 17 stepping 1 (AMD EPYC)
XCR0: 0xe7 (x87|sse|ymm|opmask|zmm_hi256|hi16_zmm), XGETBV 0
XINUSE: not available (no XGETBV with ECX=1)
XCR0 may hold: 0xe7 (x87|sse|ymm|opmask|zmm_hi256|hi16_zmm), CPUID.(0xD,0) EDX:EAX
IA32_XSS may hold: 0x1800 (cet_u|cet_s), CPUID.(0xD,1) EDX:ECX
IA32_XSS: unknown: no value fits CPUID.(0xD,1).EBX
instructions: XSAVEOPT yes, XSAVEC yes, XGETBV1 no, XSAVES yes, XFD no
sizes: XSAVE of XCR0 2432 (CPUID.(0xD,0).EBX), all user components 2432 (ECX), \
XSAVES of XCR0|IA32_XSS 2500 (CPUID.(0xD,1).EBX), XSAVEC of XCR0 2432
MXCSR_MASK: 0xffff
/proc/cpuinfo: unreadable
arch_prctl: ARCH_GET_XCOMP_SUPP not known (< 5.16), ARCH_GET_XCOMP_PERM not known (< 5.16)

CPUID leaf 0xD:
  sub-leaf         EAX         EBX         ECX         EDX
         0  0x000000e7  0x00000980  0x00000980  0x00000000
         1  0x0000000f  0x000009c4  0x00001800  0x00000000
         2  0x00000100  0x00000240  0x00000000  0x00000000
         5  0x00000040  0x00000340  0x00000000  0x00000000
         6  0x00000200  0x00000380  0x00000000  0x00000000
         7  0x00000400  0x00000580  0x00000000  0x00000000
        11  0x00000010  0x00000000  0x00000001  0x00000000
        12  0x00000018  0x00000000  0x00000001  0x00000000
        17  0x00000040  0x00000ac0  0x00000002  0x00000000
        18  0x00002000  0x00000b00  0x00000006  0x00000000

components (compacted: offset in an XSAVEC image of XCR0):
  id  name       size  standard  compacted  aligned  kind        xfd  state
   0  x87         160         0          0  no       user        no   XCR0
   1  sse         256       160        160  no       user        no   XCR0
   2  ymm         256       576        576  no       user        no   XCR0
   5  opmask       64       832        832  no       user        no   XCR0
   6  zmm_hi256   512       896        896  no       user        no   XCR0
   7  hi16_zmm   1024      1408       1408  no       user        no   XCR0
  11  cet_u        16         -          -  no       supervisor  no   IA32_XSS?
  12  cet_s        24         -          -  no       supervisor  no   IA32_XSS?
  17  xtilecfg     64      2752          -  yes      user        no   not listed
  18  xtiledata  8192      2816          -  yes      user        yes  not listed

inconsistencies:
  - CPUID leaf 0xD enumerates sub-leaves 17, 18 for components that neither \
CPUID.(0xD,0) EDX:EAX (0xe7) nor CPUID.(0xD,1) EDX:ECX (0x1800) lists
  - CPUID.(0xD,1).EBX is 2500 but no IA32_XSS within 0x1800 makes the compacted size \
of XCR0|IA32_XSS equal it; for XCR0 0xe7 alone it is 2432 (IA32_XSS itself cannot be \
read in user mode)
"""


def test_troubled_host_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(hostinfo, "gather_host_info", troubled_host)
    main(["host"])
    assert capsys.readouterr().out == TROUBLED_TEXT


def test_troubled_host_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(hostinfo, "gather_host_info", troubled_host)
    main(["host", "--json"])
    out = json.loads(capsys.readouterr().out)
    states = {row["id"]: row["state"] for row in out["components"]}
    assert states == {
        0: "xcr0", 1: "xcr0", 2: "xcr0", 5: "xcr0", 6: "xcr0", 7: "xcr0",
        11: "unknown", 12: "unknown", 17: "unlisted", 18: "unlisted",
    }  # fmt: skip
    assert (out["xss"], out["xss_candidates"], out["xinuse"]) == (None, [], None)
    assert out["kernel"] == {"cpuinfo_flags": None, "xcomp_supp": None, "xcomp_perm": None}
    assert out["inconsistencies"] == troubled_host().inconsistencies
    assert len(out["inconsistencies"]) == 2
