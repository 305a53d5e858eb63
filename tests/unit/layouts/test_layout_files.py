"""--layout FILE whatever the file claims: one line naming the file, exit 2, bounded time
and memory; and CPUID dumps that lack a sub-leaf sub-leaf 0 proves exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xcr0tool.errors import InputError
from xcr0tool.formats.cpuid_dump import parse_cpuid_dump
from xcr0tool.layouts.files import load_layout_file
from xcr0tool.model.layout import layout_from_cpuid

CORPUS = os.environ.get("XCR0TOOL_CPUID_CORPUS")
needs_corpus = pytest.mark.skipif(
    not CORPUS, reason="XCR0TOOL_CPUID_CORPUS is not set (a directory of real CPUID dumps)"
)


def layout_cli(path: str) -> subprocess.CompletedProcess[str]:
    """`xcr0tool layout --layout PATH` with a 256 MiB address-space cap: a reader that
    loads a huge claim whole dies instead of passing."""
    code = (
        "import resource, sys;"
        "resource.setrlimit(resource.RLIMIT_AS, (256 << 20, 256 << 20));"
        "from xcr0tool.cli.main import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "layout", "--layout", path],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def component(**fields: object) -> str:
    body = ", ".join(f'"{k}": {v}' for k, v in fields.items())
    return '{"components": [{' + body + "}]}"


BAD_JSON = [
    (
        "infinite",
        component(id=2, size="1e999", offset=576),
        "component 0 needs integer 'id' and 'size'",
    ),
    ("float", component(id=2, size=256.0, offset=576), "component 0 needs integer 'id' and 'size'"),
    ("4301 digits", component(id=2, size="9" * 4301, offset=576), "not usable JSON"),
    ("nested", "[" * 100_000 + "]" * 100_000, "not usable JSON: nested too deeply"),
    (
        "ymm of 16",
        component(id=2, size=16, offset=576),
        "component 0: component 2 (ymm): size 16, but the architecture fixes it at 256 bytes",
    ),
    (
        "size 2^64",
        component(id=19, size=2**64, offset=576),
        "component 0: component 19 (apx): size 18446744073709551616 is not between 1 and 65536",
    ),
    (
        "size 2^63",
        component(id=15, size=2**63, offset=576),
        "component 0: component 15 (lbr): size 9223372036854775808 is not between 1 and 65536",
    ),
    ("size negative", component(id=2, size=-256, offset=576), "is not between 1 and 65536"),
    ("size 512 MiB", component(id=15, size=512 << 20, offset=576), "is not between 1 and 65536"),
    (
        "offset 2^64",
        component(id=2, size=256, offset=2**64),
        "component 0: component 2 (ymm): offset 18446744073709551616 is outside the extended area (576 to 1048576 bytes)",
    ),
    (
        "offset negative",
        component(id=2, size=256, offset=-1),
        "offset -1 is outside the extended area",
    ),
    (
        "offset 512 MiB",
        component(id=2, size=256, offset=512 << 20),
        "offset 536870912 is outside the extended area",
    ),
    (
        "mask 2^64",
        '{"components": [], "xcr0_capable": 18446744073709551616}',
        "xcr0_capable int is not a 64-bit mask",
    ),
    (
        "bool id",
        component(id="true", size=256, offset=576),
        "component 0 needs integer 'id' and 'size'",
    ),
]


@pytest.mark.parametrize(("label", "content", "problem"), BAD_JSON, ids=[b[0] for b in BAD_JSON])
def test_bad_json_layouts_are_one_line(
    tmp_path: Path, label: str, content: str, problem: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    started = time.monotonic()
    result = layout_cli(str(path))
    assert time.monotonic() - started < 10
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"xcr0tool: {path}: ") or lines[0].startswith(
        f"xcr0tool: layout file {path}: "
    ), lines[0]
    assert problem in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_as_layout_reads_a_bounded_amount(device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist here")
    result = layout_cli(device)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"xcr0tool: {device}: over 4194304 bytes: too large for a layout file"
    ]


def test_aida_dump_starting_at_subleaf_1(tmp_path: Path) -> None:
    """The first line is sub-leaf 1, then an unlabelled line: no sub-leaf 0 to compare
    with (a KeyError once)."""
    path = tmp_path / "odd.txt"
    path.write_text(
        "CPUID 0000000D: 0000000F-00000340-00000000-00000000 [SL 01]\n"
        "CPUID 0000000D: 00000100-00000240-00000000-00000000\n"
    )
    result = layout_cli(str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"xcr0tool: {path}: no CPUID leaf 0xD sub-leaf 0 found (not a CPUID dump?)"
    ]


def test_cpuid_dump_with_an_impossible_size(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text(
        "0x0000000d 0x00: eax=0x00000007 ebx=0x00000340 ecx=0x00000340 edx=0x00000000\n"
        "0x0000000d 0x02: eax=0xffffffff ebx=0x00000240 ecx=0x00000000 edx=0x00000000\n"
    )
    result = layout_cli(str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"xcr0tool: {path}: component 2 (ymm): size 4294967295 is not between 1 and 65536"
    ]


def _dump_without(name: str, subleaf: int, zero: bool = False) -> str:
    """A real dump with one leaf 0xD sub-leaf dropped (or printed all zero), as some
    public InstLatx64 dumps are."""
    text = (Path(CORPUS or "") / name).read_text(errors="replace")
    label = re.compile(rf"^CPUID 0000000D: .*\[SL {subleaf:02X}\]", re.IGNORECASE)
    out = []
    for line in text.splitlines():
        if label.match(line):
            if not zero:
                continue
            out.append(f"CPUID 0000000D: 00000000-00000000-00000000-00000000 [SL {subleaf:02X}]")
            continue
        out.append(line)
    return "\n".join(out) + "\n"


INFERABLE = [
    ("GenuineIntel00306C3_Haswell_CPUID.txt", 2, True, "sub-leaf 2 inferred: 256 bytes at 576"),
    (
        "GenuineIntel00706E5_IceLakeY_CPUID.txt",
        9,
        False,
        "sub-leaf 9 inferred: 8 bytes ending at sub-leaf 0 ECX (2696)",
    ),
    (
        "GenuineIntel0050654_SkylakeX_CPUID.txt",
        4,
        False,
        "sub-leaf 4 inferred: 64 bytes beside sub-leaf 3",
    ),
    (
        "GenuineIntel0050654_SkylakeX_CPUID.txt",
        3,
        False,
        "sub-leaf 3 inferred: 64 bytes beside sub-leaf 4",
    ),
]


@needs_corpus
@pytest.mark.parametrize(("name", "subleaf", "zero", "said"), INFERABLE)
def test_missing_subleaf_is_inferred_as_the_cpu_has_it(
    tmp_path: Path, name: str, subleaf: int, zero: bool, said: str
) -> None:
    """The inferred component is exactly what the complete dump of the same CPU says."""
    path = tmp_path / name
    path.write_text(_dump_without(name, subleaf, zero))
    inferred = load_layout_file(str(path))
    assert said in inferred.source
    whole = Path(CORPUS or "") / name
    truth = layout_from_cpuid(parse_cpuid_dump(whole.read_text(errors="replace"), name), name)
    assert inferred.get(subleaf) == truth.get(subleaf)
    assert inferred.components == truth.components


@needs_corpus
def test_missing_subleaf_that_cannot_be_inferred_is_named(tmp_path: Path) -> None:
    name = "GenuineIntel00806F8_SapphireRapids_05_CPUID.txt"
    path = tmp_path / name
    path.write_text(_dump_without(name, 18))
    with pytest.raises(InputError) as caught:
        load_layout_file(str(path))
    assert str(caught.value) == (
        f"{path}: sub-leaf 0 says component 18 exists, but the dump lacks sub-leaf 18 (0x12)"
        " and its place cannot be inferred"
    )


def test_pkru_is_not_inferred_below_amx(tmp_path: Path) -> None:
    """PKRU ends at ECX only when no user component comes after it."""
    path = tmp_path / "amx.txt"
    path.write_text(
        "0x0000000d 0x00: eax=0x00060207 ebx=0x00002b00 ecx=0x00002b00 edx=0x00000000\n"
        "0x0000000d 0x02: eax=0x00000100 ebx=0x00000240 ecx=0x00000000 edx=0x00000000\n"
        "0x0000000d 0x11: eax=0x00000040 ebx=0x00000ac0 ecx=0x00000002 edx=0x00000000\n"
        "0x0000000d 0x12: eax=0x00002000 ebx=0x00000b00 ecx=0x00000006 edx=0x00000000\n"
    )
    with pytest.raises(
        InputError, match=r"lacks sub-leaf 9 \(0x9\) and its place cannot be inferred"
    ):
        load_layout_file(str(path))
