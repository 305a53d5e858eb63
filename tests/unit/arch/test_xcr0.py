"""One XCR0 rule table (xcr0tool/arch/xcr0.py), one answer from every command.

XSETBV is a CPL-0 instruction, so the CPU cannot be asked which values it refuses; the
rules are the SDM's (vol. 1 §13.3, vol. 2 XSETBV #GP), and every XCR0 real CPUs report
(the built-in profiles' CPUID dumps, this machine's XGETBV) keeps them. What a command
does with a value the table refuses is checked through the CLI: exit 2 and the same
reason text everywhere.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from clirunner import one_line_error, run
from hypothesis import given
from hypothesis import strategies as st
from images import make_image
from paths import FIXTURES

from xcr0tool.arch import xcr0
from xcr0tool.arch.components import SUPERVISOR_MASK
from xcr0tool.arch.offsets import SW_BYTES
from xcr0tool.errors import HostUnavailable, UsageError
from xcr0tool.layouts.profiles import PROFILES, profile_layout

PACKAGE = Path(xcr0.__file__).resolve().parent.parent
REFUSED = {
    0x27: "AVX-512 opmask, ZMM_Hi256 and Hi16_ZMM (bits 5, 6 and 7) go together",
    0x5: "AVX (bit 2) needs SSE (bit 1)",
    0x0: "bit 0 (x87) is always set",
    0x2: "bit 0 (x87) is always set",
}


def reason(value: int) -> str:
    text = xcr0.xcr0_reason(value)
    assert text is not None
    return text


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An amd-zen4 image of XCR0 0xe7: every refused value is XCR0 & MASK for mask."""
    path = tmp_path_factory.mktemp("xcr0") / "zen4.bin"
    path.write_bytes(make_image())
    return path


def commands(value: int, image: Path, out: Path) -> dict[str, list[str]]:
    word = f"{value:#x}"
    return {
        "layout": ["layout", "--layout", "amd-zen4", "--xcr0", word],
        "decode": ["decode", "--xcr0", word, str(image)],
        "mask": ["mask", "--xcr0", word, str(image), "-o", str(out)],
        "validate": ["validate", "--xcr0", word, str(image)],
        "convert": ["convert", "--xcr0", word, str(image), "-o", str(out)],
    }


@pytest.mark.parametrize("value", sorted(REFUSED))
def test_every_command_refuses_alike(value: int, image_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    expected = f"xcr0tool: --xcr0: {reason(value)}"
    assert reason(value).endswith(REFUSED[value])
    for name, args in commands(value, image_file, out).items():
        assert one_line_error(run(*args)) == expected, name
    assert not out.exists()


@pytest.mark.parametrize("value", [0x27, 0x5, 0x2, 0x807])
def test_a_word_at_byte_464_is_refused_alike(value: int, tmp_path: Path) -> None:
    """The kernel's XCR0 word counts as --xcr0 would: a value XCR0 cannot hold is refused
    by decode, convert, mask and diff, with the same reason text."""
    data = make_image()
    struct.pack_into("<Q", data, SW_BYTES, value)
    path = tmp_path / "word.bin"
    path.write_bytes(bytes(data))
    expected = (
        f"xcr0tool: {path}: the word at byte 464 is not an XCR0: {reason(value)};"
        " pass --xcr0 to say which XCR0 saved the image"
    )
    out = tmp_path / "out.bin"
    for args in (
        ["decode", str(path)],
        ["convert", "--to", "compacted", str(path), "-o", str(out)],
        ["mask", "--xcr0", "0x3", str(path), "-o", str(out)],
        ["diff", str(path), str(path)],
    ):
        assert one_line_error(run(*args)) == expected, args
    # --xcr0 says what the word cannot: the image decodes.
    assert run("decode", "--xcr0", "0xe7", "--layout", "amd-zen4", str(path)).returncode == 0


@pytest.mark.parametrize("value", sorted(REFUSED))
def test_compat_refuses_a_machine_xcr0_alike(value: int, tmp_path: Path) -> None:
    """compat takes a machine's XCR0 from its description: the same table, the same text."""
    proc = run("layout", "--layout", "amd-zen4", "--json")
    described = json.loads(proc.stdout) | {"xcr0": hex(value)}
    path = tmp_path / "machine.json"
    path.write_text(json.dumps(described))
    line = one_line_error(run("compat", str(path), "amd-zen4"))
    assert line.startswith(f"xcr0tool: {path}: {reason(value)} (XCR0 from ")


def test_a_zero_word_means_no_word(tmp_path: Path) -> None:
    """No XSAVE instruction writes bytes 464-511 (tests/oracles/test_cpu_oracle.py,
    test_xsave_writes_only_rfbm): 0 there is an image the CPU saved into a zeroed
    buffer, not XCR0 = 0; the XCR0 then comes from elsewhere, and says so."""
    data = make_image()
    struct.pack_into("<Q", data, SW_BYTES, 0)
    path = tmp_path / "zero.bin"
    path.write_bytes(bytes(data))
    proc = run("decode", "--json", "--layout", "amd-zen4", str(path))
    assert proc.returncode == 0, proc.stderr
    assert b"XCR0 word at byte 464" not in proc.stdout


def test_decode_xcr0_0_no_longer_becomes_3(image_file: Path) -> None:
    line = one_line_error(run("decode", "--xcr0", "0x0", str(image_file)))
    assert line == f"xcr0tool: --xcr0: {reason(0)}"


@pytest.mark.parametrize(
    "value", [0x1, 0x3, 0x7, 0x1F, 0xE7, 0x2E7, 0x2FF, 0x602E7, 0x80207, 0x2E7 | 1 << 19]
)
def test_what_cpus_use_is_accepted(value: int) -> None:
    xcr0.check_xcr0(value)
    assert xcr0.is_xcr0(value)


def test_every_profile_and_this_machine_keep_the_rules() -> None:
    """The XCR0-capable masks of the real CPUs behind the profiles, and this CPU's XCR0."""
    for profile in PROFILES:
        capable = profile_layout(profile.name).xcr0_capable
        assert capable is not None and xcr0.is_xcr0(capable), profile.name
    try:
        from xcr0tool.sources.cpu import xgetbv

        here = xgetbv(0)
    except HostUnavailable:
        return
    assert xcr0.is_xcr0(here), f"this CPU's XCR0 {here:#x}: {xcr0.xcr0_reason(here)}"


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_least_xcr0_is_an_xcr0_holding_the_mask(mask: int) -> None:
    least = xcr0.least_xcr0(mask)
    assert xcr0.is_xcr0(least)
    user = mask & ~SUPERVISOR_MASK & ~(1 << 63)
    assert least & user == user
    # least: no rule-keeping value between user and it
    assert xcr0.least_xcr0(least) == least


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_check_and_reason_agree(value: int) -> None:
    text = xcr0.xcr0_reason(value)
    if text is None:
        xcr0.check_xcr0(value)
    else:
        with pytest.raises(UsageError) as caught:
            xcr0.check_xcr0(value)
        assert str(caught.value) == f"--xcr0: {text}"


def test_the_rule_table_exists_once() -> None:
    """No second copy of the rules: their texts, and the phrase that refuses, appear in
    arch/xcr0.py only."""
    phrases = [rule.text for rule in xcr0.XCR0_RULES] + ["is not a value XCR0 can hold"]
    holders = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        for phrase in phrases
        if phrase in path.read_text()
    }
    assert holders == {"arch/xcr0.py"}


# ---------------------------------------------------------------- the one source reader

FIXTURE = FIXTURES / "linux-amd-avx512bw-4t.core"


def test_validate_reads_a_piped_core_as_decode_does() -> None:
    core = FIXTURE.read_bytes()
    piped = run("validate", "--json", "-", stdin=core)
    named = run("validate", "--json", str(FIXTURE))
    assert piped.returncode == named.returncode == 0, piped.stderr
    as_piped = json.loads(piped.stdout.decode().replace("<stdin>", str(FIXTURE)))
    assert as_piped == json.loads(named.stdout)
    decoded = json.loads(run("decode", "--json", "-", stdin=core).stdout)
    assert len(as_piped["images"]) == len(decoded["threads"]) == 4


# ---------------------------------------------------------------- mask --keep-size


@pytest.mark.parametrize("keep", ["0x3", "0x7"])
def test_mask_keep_size_output_decodes(keep: str, image_file: Path, tmp_path: Path) -> None:
    """mask's own help example: the kept bytes past XCR0's standard size are not read,
    since every built-in layout places x87, SSE and AVX alike."""
    kept, cut = tmp_path / "kept.bin", tmp_path / "cut.bin"
    assert (
        run("mask", "--xcr0", keep, "--keep-size", str(image_file), "-o", str(kept)).returncode == 0
    )
    assert run("mask", "--xcr0", keep, str(image_file), "-o", str(cut)).returncode == 0
    assert kept.stat().st_size == image_file.stat().st_size > cut.stat().st_size
    a = run("decode", "--json", str(kept))
    assert a.returncode == 0, a.stderr
    b = json.loads(run("decode", "--json", str(cut)).stdout)
    assert json.loads(a.stdout)["threads"][0]["registers"] == b["threads"][0]["registers"]
    assert run("diff", str(kept), str(cut)).returncode == 0


def test_validate_sets_a_word_that_is_no_xcr0_aside(tmp_path: Path) -> None:
    """XRSTOR ignores bytes 464-511 (tests/oracles/test_validate_cpu.py, "software-reserved bytes
    464-511"), so validate judges the image, not the word: the word's reason is said in
    the XCR0's source, with the one text, and the image is not refused."""
    data = make_image(xstate_bv=0x3)
    struct.pack_into("<Q", data, SW_BYTES, 0x27)
    path = tmp_path / "word.bin"
    path.write_bytes(bytes(data))
    proc = run("validate", "--json", str(path))
    assert proc.returncode == 0, proc.stdout
    (image,) = json.loads(proc.stdout)["images"]
    assert f"the word at byte 464 is not an XCR0: {reason(0x27)}" in image["xcr0_source"]
