"""Signal frames: an fpstate copied out of a real signal handler decodes, and every way of
breaking its sw_bytes is explained (a note when the registers can still be shown, one
line and exit 2 when they cannot).

The frame comes from a C program compiled at test time: it loads known values into the
vector and opmask registers, sends itself SIGUSR1 in the same asm statement, and its
handler writes `uc_mcontext.fpregs` to a file, extended_size bytes long (the length
the kernel's sw_bytes give). Values are test_ptrace's `value`/`kvalue` pattern, for
"thread" INDEX (passed to the compiler).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cbuild import compile_c
from clirunner import one_line_error, run
from ptrace_child import host_isa, kvalue, value

from xcr0tool.arch.components import component, describe_mask
from xcr0tool.arch.xcr0 import is_xcr0, xcr0_reason
from xcr0tool.sources import cpu

pytestmark = pytest.mark.skipif(not cpu.is_x86_64_linux(), reason="needs Linux on x86-64")

INDEX = 7  # the "thread" number in the value pattern: any will do
MAGIC1, MAGIC2 = 0x46505853, 0x46505845

FRAME_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

static const char *out_path;
static int written = -1;

/* The fpstate the kernel put on the signal stack, as long as its sw_bytes say. */
static void on_usr1(int sig, siginfo_t *info, void *context) {
    (void)sig; (void)info;
    const unsigned char *fp = (const unsigned char *)((ucontext_t *)context)->uc_mcontext.fpregs;
    uint32_t magic1, extended_size;
    memcpy(&magic1, fp + 464, 4);
    memcpy(&extended_size, fp + 468, 4);
    size_t length = magic1 == 0x46505853u ? extended_size : 512;
    int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return;
    written = (int)write(fd, fp, length);
    close(fd);
}

static uint64_t vals[32 * 8] __attribute__((aligned(64)));
static uint64_t ks[8];

/* Load, then getpid, gettid, tgkill(SIGUSR1) in raw system calls: no C code runs
 * between the loads and the signal, so nothing can spill through a vector register. */
#define RAISE \
    "mov $39, %%eax\n\tsyscall\n\tmov %%eax, %%edi\n\t" \
    "mov $186, %%eax\n\tsyscall\n\tmov %%eax, %%esi\n\t" \
    "mov $234, %%eax\n\tmov $10, %%edx\n\tsyscall\n\t"
#define CLOBBERS "rax", "rcx", "rdx", "rdi", "rsi", "r11", "memory"
#define X(n) "movdqu " #n "*64(%0), %%xmm" #n "\n\t"
#define Y(n) "vmovdqu " #n "*64(%0), %%ymm" #n "\n\t"
#define Z(n) "vmovdqu64 " #n "*64(%0), %%zmm" #n "\n\t"
#define K(n) "kmovq " #n "*8(%1), %%k" #n "\n\t"
#define ALL16(m) m(0) m(1) m(2) m(3) m(4) m(5) m(6) m(7) \
                 m(8) m(9) m(10) m(11) m(12) m(13) m(14) m(15)
#define HIGH16(m) m(16) m(17) m(18) m(19) m(20) m(21) m(22) m(23) \
                  m(24) m(25) m(26) m(27) m(28) m(29) m(30) m(31)

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    out_path = argv[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);
    for (int r = 0; r < 32; r++)
        for (int q = 0; q < 8; q++)
            vals[r * 8 + q] = 0xA500000000000000ULL | (uint64_t)INDEX << 40
                            | (uint64_t)r << 24 | (uint64_t)q << 8 | 0x5A;
    for (int j = 0; j < 8; j++) ks[j] = 0xC0DE000000000000ULL | (uint64_t)INDEX << 16 | j;
    if (!strcmp(argv[2], "avx512"))
        __asm__ volatile(ALL16(Z) HIGH16(Z) K(0) K(1) K(2) K(3) K(4) K(5) K(6) K(7) RAISE
                         :: "r"(vals), "r"(ks) : CLOBBERS);
    else if (!strcmp(argv[2], "avx"))
        __asm__ volatile(ALL16(Y) RAISE :: "r"(vals), "r"(ks) : CLOBBERS);
    else
        __asm__ volatile(ALL16(X) RAISE :: "r"(vals), "r"(ks) : CLOBBERS);
    printf("written %d\n", written);
    return written > 0 ? 0 : 1;
}
"""


def expected_registers(isa: str) -> dict[str, int]:
    """What the program loaded, by gdb's names."""

    def joined(reg: int, quads: int) -> int:
        return sum(value(INDEX, reg, q) << (64 * q) for q in range(quads))

    quads = {"sse": 2, "avx": 4, "avx512": 8}[isa]
    names = {2: "xmm", 4: "ymm", 8: "zmm"}
    regs = {f"{names[quads]}{r}": joined(r, quads) for r in range(16)}
    if isa == "avx512":
        regs |= {f"zmm{r}": joined(r, 8) for r in range(16, 32)}
        regs |= {f"k{j}": kvalue(INDEX, j) for j in range(8)}
    return regs


@pytest.fixture(scope="module")
def frame_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(a real signal frame's fpstate, the register set loaded into it)."""
    work = tmp_path_factory.mktemp("sigframe")
    program = compile_c(
        "frame",
        FRAME_C,
        "-Wall",
        f"-DINDEX={INDEX}",
        purpose="cannot build the signal-frame program",
    )
    isa = host_isa()
    out = work / "frame.bin"
    subprocess.run([str(program), str(out), isa], check=True, capture_output=True)
    return out, isa


@pytest.fixture(scope="module")
def saved_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This machine's layout from `host --save`: a layout whose source does not depend on
    the profiles, so that messages can be compared whole."""
    path = tmp_path_factory.mktemp("layout") / "host.json"
    result = run("host", "--save", str(path))
    assert result.returncode == 0, result.stderr
    return path


def standard_size(saved_layout: Path, xcr0: int) -> int:
    """The standard-format size of `xcr0` in a layout file: the furthest end of its
    extended components (SDM vol. 1 §13.4.3), else legacy region and header."""
    components = json.loads(saved_layout.read_text())["components"]
    ends = [c["offset"] + c["size"] for c in components if c["id"] >= 2 and xcr0 >> c["id"] & 1]
    return max([576, *ends])


def layout_source(saved_layout: Path) -> str:
    """How decode names the layout `host --save` wrote: the file, then the machine."""
    return f"layout file {saved_layout} ({json.loads(saved_layout.read_text())['source']})"


def u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little")


def read_frame(frame_file: tuple[Path, str]) -> tuple[bytes, int, int]:
    """The frame's bytes, and the xstate_size and xfeatures its sw_bytes give."""
    data = frame_file[0].read_bytes()
    return data, u32(data, 480), int.from_bytes(data[472:480], "little")


def cut_short(end: int, xstate_size: int) -> str:
    """The note for a frame whose buffer ends at `end`, before its magic2."""
    return (
        f"signal frame: the buffer ends at {end} bytes, before magic2 at byte {xstate_size}"
        f" (xstate_size): the frame was cut short (a whole frame is extended_size,"
        f" {xstate_size + 4}, bytes)"
    )


def patched(data: bytes, at: int, word: int, width: int = 4) -> bytes:
    out = bytearray(data)
    out[at : at + width] = word.to_bytes(width, "little")
    return bytes(out)


def decode(path: Path, *args: str) -> dict[str, Any]:
    result = run("decode", "--json", *args, str(path))
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "frame.bin"
    path.write_bytes(data)
    return path


def assert_program_registers(thread: dict[str, Any], isa: str) -> None:
    """The decoded thread holds what the program loaded."""
    registers = {name: int(text, 16) for name, text in thread["registers"].items()}
    want = expected_registers(isa)
    assert {name: registers[name] for name in want} == want


# ---------------------------------------------------------------- a real frame


def test_real_frame_decodes_with_the_program_values(frame_file: tuple[Path, str]) -> None:
    path, isa = frame_file
    data, xstate_size, xfeatures = read_frame(frame_file)
    # what the kernel wrote (arch/x86/kernel/fpu/signal.c)
    assert u32(data, 464) == MAGIC1
    assert u32(data, 468) == len(data) == xstate_size + 4
    assert u32(data, xstate_size) == MAGIC2

    out = decode(path)
    (thread,) = out["threads"]
    assert out["kind"] == "raw"
    assert thread["format"] == "standard"
    assert thread["xcr0"] == hex(xfeatures)
    assert thread["xcr0_source"] == "signal frame sw_bytes xfeatures"
    assert xfeatures & ~cpu.xgetbv(0) == 0
    assert thread["notes"] == []
    assert thread["signal_frame"] == {
        "xfeatures": hex(xfeatures),
        "xstate_size": xstate_size,
        "extended_size": xstate_size + 4,
        "magic2": hex(MAGIC2),
        "magic2_ok": True,
    }
    # the kernel always sets x87 and SSE in a frame's XSTATE_BV (save_xstate_epilog)
    assert int(thread["xstate_bv"], 16) & 0b11 == 0b11
    assert out["layout"]["source"].startswith(
        f"guess from XCR0 {xfeatures:#x} and {xstate_size} bytes"
    )
    assert_program_registers(thread, isa)


def test_real_frame_text_shows_the_sw_bytes(frame_file: tuple[Path, str]) -> None:
    path, _ = frame_file
    _, xstate_size, xfeatures = read_frame(frame_file)
    result = run("decode", str(path), "--reg", "xmm0")
    assert result.returncode == 0, result.stderr
    assert (
        f"  signal frame: xfeatures {xfeatures:#x}, xstate_size {xstate_size},"
        f" extended_size {xstate_size + 4}, magic2 ok\n"
    ) in result.stdout.decode()
    assert "note:" not in result.stdout.decode()


# ---------------------------------------------------------------- broken frames that decode


def notes_of(path: Path, *args: str) -> list[str]:
    (thread,) = decode(path, *args)["threads"]
    notes: list[str] = thread["notes"]
    return notes


def test_wrong_magic2(frame_file: tuple[Path, str], tmp_path: Path, saved_layout: Path) -> None:
    data, size, _ = read_frame(frame_file)
    broken = write(tmp_path, patched(data, size, 0))
    assert notes_of(broken, "--layout", str(saved_layout)) == [
        f"signal frame: magic2 at byte {size} (xstate_size) is 0x00000000, not 0x46505845"
    ]
    text = run("decode", str(broken), "--reg", "xmm0").stdout.decode()
    assert "magic2 0x00000000 (wrong)\n" in text
    # the registers are still the program's
    (thread,) = decode(broken)["threads"]
    assert_program_registers(thread, frame_file[1])


def test_xstate_size_off_magic2(
    frame_file: tuple[Path, str], tmp_path: Path, saved_layout: Path
) -> None:
    data, size, xfeatures = read_frame(frame_file)
    # inside the frame, past the header, not where magic2 is: 64 bytes short of it
    at = size - 64
    assert at >= 576
    broken = write(tmp_path, patched(data, 480, at))
    assert notes_of(broken, "--layout", str(saved_layout)) == [
        f"signal frame: magic2 at byte {at} (xstate_size) is {u32(data, at):#010x}, not 0x46505845",
        f"signal frame: extended_size {size + 4} is not xstate_size + 4 ({at + 4})",
        f"signal frame: xstate_size {at}, but the standard format of XCR0 {xfeatures:#x}"
        f" is {size} bytes in this layout",
    ]
    # without --layout the guess still finds the area: extended_size less magic2
    assert decode(broken)["layout"]["source"].startswith(
        f"guess from XCR0 {xfeatures:#x} and {size} bytes"
    )


def test_xstate_size_past_the_end(
    frame_file: tuple[Path, str], tmp_path: Path, saved_layout: Path
) -> None:
    data, size, xfeatures = read_frame(frame_file)
    past = len(data) + 1000
    broken = write(tmp_path, patched(data, 480, past))
    assert notes_of(broken, "--layout", str(saved_layout)) == [
        f"signal frame: no magic2: xstate_size {past} points past the end of the"
        f" {size + 4}-byte buffer",
        f"signal frame: extended_size {size + 4} is not xstate_size + 4 ({past + 4})",
        f"signal frame: xstate_size {past}, but the standard format of XCR0 {xfeatures:#x}"
        f" is {size} bytes in this layout",
    ]
    (thread,) = decode(broken, "--layout", str(saved_layout))["threads"]
    assert thread["signal_frame"]["magic2"] is None


def test_xstate_size_below_the_header(
    frame_file: tuple[Path, str], tmp_path: Path, saved_layout: Path
) -> None:
    data, size, xfeatures = read_frame(frame_file)
    broken = write(tmp_path, patched(data, 480, 100))
    assert notes_of(broken, "--layout", str(saved_layout)) == [
        "signal frame: xstate_size 100 is below 576, the legacy region and XSAVE header",
        f"signal frame: extended_size {size + 4} is not xstate_size + 4 (104)",
        f"signal frame: xstate_size 100, but the standard format of XCR0 {xfeatures:#x}"
        f" is {size} bytes in this layout",
    ]


def test_extended_size_of_a_32_bit_frame(
    frame_file: tuple[Path, str], tmp_path: Path, saved_layout: Path
) -> None:
    data, size, _ = read_frame(frame_file)
    broken = write(tmp_path, patched(data, 468, size + 4 + 112))
    assert notes_of(broken, "--layout", str(saved_layout)) == [
        f"signal frame: extended_size {size + 116} is xstate_size + 4 + 112: a 32-bit"
        " frame's, whose XSAVE area follows a 112-byte fsave header"
    ]


def test_xfeatures_not_an_xcr0(
    frame_file: tuple[Path, str], tmp_path: Path, saved_layout: Path
) -> None:
    data, size, _ = read_frame(frame_file)
    broken = write(tmp_path, patched(data, 472, 0x4, width=8))
    (thread,) = decode(broken, "--layout", str(saved_layout))["threads"]
    # XCR0 then comes from XSTATE_BV; where the frame's xfeatures had a component not in
    # use (AMX TILECFG after a task that never ran AMX), its size is no longer xstate_size
    guess = int.from_bytes(data[512:520], "little") | 0b11
    assert (thread["xcr0"], thread["xcr0_source"]) == (
        hex(guess),
        "XSTATE_BV (the image has no XCR0 word)",
    )
    standard = standard_size(saved_layout, guess)
    size_note = (
        [
            f"signal frame: xstate_size {size}, but the standard format of XCR0 {guess:#x}"
            f" is {standard} bytes in this layout"
        ]
        if standard != size
        else []
    )
    assert thread["notes"] == [
        "signal frame: xfeatures 0x4 cannot be XCR0: bit 0 (x87) is clear",
        *size_note,
    ]


def test_frame_cut_to_its_legacy_region(frame_file: tuple[Path, str], tmp_path: Path) -> None:
    data, size, _ = read_frame(frame_file)
    (thread,) = decode(write(tmp_path, data[:512]))["threads"]
    assert thread["format"] == "fxsave"
    assert thread["notes"] == [cut_short(512, size)]


# ---------------------------------------------------------------- rejected: one line, exit 2


def test_broken_magic1_is_no_longer_a_frame(frame_file: tuple[Path, str], tmp_path: Path) -> None:
    data, size, _ = read_frame(frame_file)
    broken = write(tmp_path, patched(data, 464, 0))
    # The u64 at 464 is now extended_size << 32: no XCR0 (bit 0 clear), refused as
    # `--xcr0` would refuse it, with the one reason text (arch/xcr0.py).
    word = int.from_bytes(broken.read_bytes()[464:472], "little")
    assert one_line_error(run("decode", str(broken))) == (
        f"xcr0tool: {broken}: the word at byte 464 is not an XCR0: {xcr0_reason(word)};"
        " pass --xcr0 to say which XCR0 saved the image; not read as a signal frame: magic1"
        f" at byte 464 is 0x00000000, not 0x46505853, though magic2 sits at byte {size}"
        " (xstate_size)"
    )


def test_broken_magic1_decodes_when_told_xcr0_and_layout(
    frame_file: tuple[Path, str], tmp_path: Path, saved_layout: Path
) -> None:
    data, size, xfeatures = read_frame(frame_file)
    if not is_xcr0(xfeatures):
        pytest.skip(
            f"this kernel's frame holds xfeatures {xfeatures:#x}, which XCR0 cannot hold"
            " (XTILECFG without XTILEDATA: a task without AMX permission); --xcr0 refuses it"
        )
    broken = write(tmp_path, patched(data, 464, 0))
    (thread,) = decode(broken, "--layout", str(saved_layout), "--xcr0", hex(xfeatures))["threads"]
    assert "signal_frame" not in thread
    assert thread["notes"] == [
        "not read as a signal frame: magic1 at byte 464 is 0x00000000, not 0x46505853,"
        f" though magic2 sits at byte {size} (xstate_size)"
    ]


def test_frame_cut_short(frame_file: tuple[Path, str], tmp_path: Path, saved_layout: Path) -> None:
    data, size, xfeatures = read_frame(frame_file)
    end = size - 100  # past the header, short of the last component
    assert end > 576
    cut = write(tmp_path, data[:end])
    assert one_line_error(run("decode", "--layout", str(saved_layout), str(cut))) == (
        f"xcr0tool: {cut}: truncated: {describe_mask(xfeatures)} needs {size} bytes in the"
        f" standard format ({layout_source(saved_layout)}), the image has {end};"
        f" {cut_short(end, size)}"
    )


def test_frame_cut_inside_the_header(frame_file: tuple[Path, str], tmp_path: Path) -> None:
    data, size, _ = read_frame(frame_file)
    cut = write(tmp_path, data[:540])
    assert one_line_error(run("decode", str(cut))) == (
        f"xcr0tool: {cut}: 540 bytes is too small for an XSAVE image (legacy region and"
        f" header need 576); {cut_short(540, size)}"
    )


def test_xfeatures_with_a_stray_bit_fits_no_layout(
    frame_file: tuple[Path, str], tmp_path: Path, saved_layout: Path
) -> None:
    """xfeatures naming a component this machine's layout lacks: nothing can be placed."""
    data, _, xfeatures = read_frame(frame_file)
    absent = [i for i in (19, 18, 17, 9, 3, 4, 62) if not cpu.leaf_0d().get(i)]
    if not absent:
        pytest.skip("this CPU enumerates components 3, 4, 9, 17, 18, 19 and 62: none to add")
    missing = absent[0]
    wide = xfeatures | 1 << missing
    broken = write(tmp_path, patched(data, 472, wide, width=8))
    line = one_line_error(run("decode", "--layout", str(saved_layout), str(broken)))
    assert line == (
        f"xcr0tool: {broken}: the layout ({layout_source(saved_layout)}) does not know"
        f" component {missing} ({component(missing).name})"
    )
