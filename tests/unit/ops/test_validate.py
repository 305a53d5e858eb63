"""`xcr0tool validate`: the kernel paths (--as linux-ptrace, --as sigreturn) against the
kernel itself, the surprises, the rule table, JSON, and bad input.

Two C programs are compiled at test time:
- PTRACE_ORACLE stops a child and hands a buffer to PTRACE_SETREGSET(NT_X86_XSTATE),
  printing what the kernel says: the oracle for --as linux-ptrace.
- SIGFRAME raises SIGUSR1; its handler optionally spoils the fpstate of its own signal
  frame (uc_mcontext.fpregs), writes it to a file (extended_size bytes, magic2
  included) and returns. Whether rt_sigreturn then restores a mark put in ymm0's upper
  half, resets it (the FXSAVE-only fallback), or kills the program (SIGSEGV) is the
  oracle for --as sigreturn.
"""

from __future__ import annotations

import errno
import json
import platform
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cbuild import compile_c
from clirunner import one_line_error, run
from images import make_image, put, u64

from xcr0tool.arch.components import COMPACTED_BIT
from xcr0tool.arch.offsets import FP_XSTATE_MAGIC1 as MAGIC1
from xcr0tool.arch.offsets import FP_XSTATE_MAGIC2 as MAGIC2
from xcr0tool.arch.offsets import MXCSR, SW_BYTES, XCOMP_BV, XSTATE_BV
from xcr0tool.cli.commands.validate import CHECK_CHOICES
from xcr0tool.ops.validate import CHECKS, RULES, SEVERITIES

FX_ONLY = (
    "rt_sigreturn then restores x87 and SSE only (FXRSTOR of bytes 0-511) and resets every"
    " other component to its init state"
)

PTRACE_ORACLE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#define NT_X86_XSTATE 0x202
static unsigned char buf[1 << 17];
int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    pid_t child = fork();
    if (child < 0) return 3;
    if (child == 0) {
        if (ptrace(PTRACE_TRACEME, 0, 0, 0) != 0) _exit(9);
        raise(SIGSTOP);
        _exit(0);
    }
    int status;
    if (waitpid(child, &status, 0) != child || !WIFSTOPPED(status)) {
        fprintf(stderr, "the child could not be traced\n");
        return 3;
    }
    struct iovec iov = {buf, sizeof buf};
    int rc = 0;
    if (!strcmp(argv[1], "get")) {
        if (ptrace(PTRACE_GETREGSET, child, NT_X86_XSTATE, &iov) != 0) {
            perror("PTRACE_GETREGSET");
            rc = 3;
        } else {
            fwrite(buf, 1, iov.iov_len, stdout);
        }
    } else {
        iov.iov_len = fread(buf, 1, sizeof buf, stdin);
        if (ptrace(PTRACE_SETREGSET, child, NT_X86_XSTATE, &iov) == 0) printf("0\n");
        else printf("%d\n", errno);
    }
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    return rc;
}
"""

SIGFRAME = r"""
#define _GNU_SOURCE
#include <cpuid.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static const char *out_path;
static const char *mode;
static uint32_t ymm_offset;
static int handled;

static void put32(unsigned char *at, uint32_t v) { memcpy(at, &v, 4); }

static void handler(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)info;
    unsigned char *fp = (unsigned char *)((ucontext_t *)context)->uc_mcontext.fpregs;
    uint32_t magic1, extended_size, xstate_size;
    memcpy(&magic1, fp + 464, 4);
    memcpy(&extended_size, fp + 468, 4);
    memcpy(&xstate_size, fp + 480, 4);
    if (ymm_offset) { /* a mark in ymm0's upper half: loaded only if the kernel takes it */
        memset(fp + ymm_offset, 0x5a, 16);
        fp[512] |= 4;
    }
    if (!strcmp(mode, "magic1")) fp[464] ^= 1;
    else if (!strcmp(mode, "magic2")) fp[xstate_size] ^= 1;
    else if (!strcmp(mode, "xstate-size-big")) put32(fp + 480, extended_size + 64);
    else if (!strcmp(mode, "xstate-size-small")) put32(fp + 480, 512);
    else if (!strcmp(mode, "extended-size-small")) put32(fp + 468, xstate_size - 4);
    else if (!strcmp(mode, "mxcsr")) put32(fp + 24, 0x1f80u | 1u << 31);
    else if (!strcmp(mode, "magic1-mxcsr")) { put32(fp + 24, 0x1f80u | 1u << 31); fp[464] ^= 1; }
    else if (!strcmp(mode, "xstate-bv")) fp[519] |= 0x40;
    else if (!strcmp(mode, "xstate-size-xcr0")) {
        /* xstate_size = the standard size of all of XCR0 (CPUID.(0xD,0).EBX), magic2
         * there and not where it was: more than the task's fpstate->user_size where
         * XCR0 has AMX tile data the task never asked for; the same size elsewhere. */
        unsigned a0, b0, c0, d0;
        __cpuid_count(0xd, 0, a0, b0, c0, d0);
        put32(fp + xstate_size, 0);
        xstate_size = b0;
        extended_size = b0 + 4;
        put32(fp + 480, xstate_size);
        put32(fp + 468, extended_size);
        put32(fp + xstate_size, 0x46505845u);
    }
    size_t size = magic1 == 0x46505853 ? extended_size : 512;
    int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, fp, size) != (ssize_t)size) _exit(4);
    close(fd);
    handled = 1;
}

int main(int argc, char **argv)
{
    if (argc != 3) return 2;
    out_path = argv[1];
    mode = argv[2];
    unsigned a, b, c, d;
    int avx = __get_cpuid(1, &a, &b, &c, &d) && (c >> 28 & 1) && (c >> 27 & 1)
              && __get_cpuid_count(0xd, 2, &a, &b, &c, &d) && a == 256;
    if (avx) ymm_offset = b;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO;
    if (!strcmp(mode, "xstate-size-xcr0")) {
        /* the handler writes past the frame: on an alternate stack with room above */
        static unsigned char alt[1 << 18] __attribute__((aligned(64)));
        stack_t ss = {.ss_sp = alt, .ss_size = sizeof alt / 2, .ss_flags = 0};
        if (sigaltstack(&ss, NULL) != 0) return 5;
        sa.sa_flags |= SA_ONSTACK;
    }
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    unsigned char upper[32] = {0};
    long nr = SYS_tgkill;
    if (avx) /* signal and read ymm0 in one asm statement: no library code in between */
        __asm__ volatile("vpxor %%xmm0, %%xmm0, %%xmm0\n\tsyscall\n\tvmovdqu %%ymm0, %1"
                         : "+a"(nr), "=m"(upper)
                         : "D"((long)getpid()), "S"((long)gettid()), "d"((long)SIGUSR1)
                         : "rcx", "r11", "xmm0", "memory");
    else
        raise(SIGUSR1);
    if (!handled) return 3;
    printf("%s\n", !avx ? "unknown" : upper[16] == 0x5a ? "restored" : "reset");
    return 0;
}
"""


def _compile(name: str, source: str) -> Path:
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(
            f"the kernel oracles need x86-64 Linux, not {sys.platform}/{platform.machine()}"
        )
    return compile_c(name, source, "-Wall", purpose=f"no C compiler to build the {name} oracle")


@pytest.fixture(scope="module")
def ptrace_oracle() -> Path:
    return _compile("ptrace_oracle", PTRACE_ORACLE)


@pytest.fixture(scope="module")
def sigframe_program() -> Path:
    return _compile("sigframe", SIGFRAME)


def validate_json(*args: str, stdin: bytes | None = None) -> tuple[int, dict[str, Any]]:
    proc = run("validate", *args, "--json", stdin=stdin)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    return proc.returncode, json.loads(proc.stdout)


# The rule table ----------------------------------------------------------------------------
def test_rules_are_data_with_sources() -> None:
    ids = [rule.id for rule in RULES]
    assert len(ids) == len(set(ids))
    stages = {"xrstor", "xrstors", "fxrstor", "linux-ptrace", "sigframe", "surprise"}
    for rule in RULES:
        assert rule.severity in SEVERITIES
        assert rule.stages and rule.stages <= stages
        assert rule.source.startswith(("Intel SDM", "Linux ")), rule.source
        assert rule.summary
    assert set(CHECKS) == {"cpu", "linux-ptrace", "sigreturn"}
    assert CHECK_CHOICES == CHECKS


# --as linux-ptrace, against the kernel -----------------------------------------------------
def _kernel_setregset(oracle: Path, buffer: bytes) -> int:
    proc = subprocess.run(
        [str(oracle), "set"], input=buffer, capture_output=True, check=False, timeout=60
    )
    if proc.returncode == 3:
        pytest.skip(f"ptrace is not allowed here: {proc.stderr.decode().strip()}")
    assert proc.returncode == 0, proc
    return int(proc.stdout)


@pytest.fixture(scope="module")
def regset(ptrace_oracle: Path) -> bytes:
    """PTRACE_GETREGSET(NT_X86_XSTATE) of a stopped child: what the kernel hands out."""
    proc = subprocess.run([str(ptrace_oracle), "get"], capture_output=True, check=False)
    if proc.returncode == 3:
        pytest.skip(f"ptrace is not allowed here: {proc.stderr.decode().strip()}")
    assert proc.returncode == 0 and len(proc.stdout) >= 576
    return proc.stdout


def _outside_xcr0(data: bytes) -> int:
    xcr0 = u64(data, SW_BYTES)
    return next(bit for bit in (3, 4, 9, 17, 19, 62) if not xcr0 >> bit & 1)


PTRACE_CASES: list[tuple[str, Any, str | None]] = [
    ("unchanged", lambda d: d, None),
    ("software bytes 464-511", lambda d: d[:472] + b"\xee" * 40 + d[512:], None),
    ("legacy reserved 416-463", lambda d: d[:416] + b"\x11" * 48 + d[464:], None),
    ("64 bytes longer", lambda d: d + bytes(64), None),  # clamped: see the next test
    ("4 bytes longer", lambda d: d + bytes(4), "ptrace-size"),
    ("8 bytes shorter", lambda d: d[:-8], "ptrace-size"),
    ("64 bytes shorter", lambda d: d[:-64], "ptrace-size"),
    (
        "XCOMP_BV compacted",
        lambda d: put(d, XCOMP_BV, "<Q", u64(d, SW_BYTES) | COMPACTED_BIT),
        "ptrace-xcomp-bv",
    ),
    ("XCOMP_BV low bit", lambda d: put(d, XCOMP_BV, "<Q", 1), "ptrace-xcomp-bv"),
    ("header byte 528", lambda d: put(d, 528, "<B", 1), "ptrace-header-reserved"),
    ("header byte 540", lambda d: put(d, 540, "<B", 1), "ptrace-header-reserved"),
    ("header byte 575", lambda d: put(d, 575, "<B", 0x80), "ptrace-header-reserved"),
    (
        "XSTATE_BV outside XCR0",
        lambda d: put(d, XSTATE_BV, "<Q", u64(d, XSTATE_BV) | 1 << _outside_xcr0(d)),
        "ptrace-xfeatures",
    ),
    (
        "MXCSR bit 31, x87 in use only",
        lambda d: put(put(d, MXCSR, "<I", 0x80001F80), XSTATE_BV, "<Q", 1),
        "ptrace-mxcsr-reserved",
    ),
    (
        "MXCSR bit 31, SSE in use",
        lambda d: put(put(d, MXCSR, "<I", 0x80001F80), XSTATE_BV, "<Q", 2),
        "ptrace-mxcsr-reserved",
    ),
    (
        "MXCSR bit 31, all init",
        lambda d: put(put(d, MXCSR, "<I", 0x80001F80), XSTATE_BV, "<Q", 0),
        None,
    ),
]


@pytest.mark.parametrize("case", PTRACE_CASES, ids=lambda c: c[0])
def test_linux_ptrace_matches_the_kernel(
    ptrace_oracle: Path, regset: bytes, tmp_path: Path, case: tuple[str, Any, str | None]
) -> None:
    name, mutate, rule = case
    buffer = mutate(regset)
    kernel = _kernel_setregset(ptrace_oracle, buffer)
    path = tmp_path / "regset.bin"
    path.write_bytes(buffer)
    code, out = validate_json(str(path), "--as", "linux-ptrace")
    (image,) = out["images"]
    rules = {f["rule"] for f in image["findings"] if f["severity"] == "reject"}
    assert (kernel == 0) == image["accepted"], f"{name}: kernel {errno.errorcode.get(kernel)}"
    assert code == (0 if kernel == 0 else 1)
    if rule is not None:
        assert rule in rules
        want = errno.EFAULT if name.endswith("shorter") else errno.EINVAL
        assert kernel == want, f"{name}: kernel says {errno.errorcode.get(kernel)}"


def test_linux_ptrace_longer_buffer_is_clamped(
    ptrace_oracle: Path, regset: bytes, tmp_path: Path
) -> None:
    """ptrace_regset() cuts iov_len down to the regset size: the kernel takes a longer
    buffer and ignores its tail, even a tail that would be refused in the header."""
    buffer = regset + b"\xff" * 64
    assert _kernel_setregset(ptrace_oracle, buffer) == 0
    path = tmp_path / "long.bin"
    path.write_bytes(buffer)
    code, out = validate_json(str(path), "--as", "linux-ptrace")
    assert code == 0
    (finding,) = out["images"][0]["findings"]
    size = len(regset)
    assert (finding["rule"], finding["severity"], finding["offset"]) == (
        "ptrace-size-longer",
        "warning",
        size,
    )
    assert finding["message"].endswith(f"the kernel takes the first {size} and ignores the last 64")


def test_kernel_core_threads_pass_linux_ptrace(tmp_path: Path, make_kernel_core: Any) -> None:
    made = make_kernel_core(tmp_path, 3, 2)
    code, out = validate_json(str(made.core), "--as", "linux-ptrace")
    assert code == 0
    assert {i["tid"] for i in out["images"]} == set(made.expected)
    assert all(i["accepted"] for i in out["images"])


# --as sigreturn, against the kernel ---------------------------------------------------------
def _signal_frame(program: Path, tmp: Path, mode: str) -> tuple[bytes, str]:
    """The frame as the handler left it, and what rt_sigreturn did with it: "restored",
    "reset" (the FXSAVE-only fallback), "SIGSEGV", or "unknown" (no AVX to see it)."""
    out = tmp / f"frame-{mode}.bin"
    proc = subprocess.run(
        [str(program), str(out), mode], capture_output=True, text=True, check=False, timeout=60
    )
    outcome = "SIGSEGV" if proc.returncode == -signal.SIGSEGV else proc.stdout.strip()
    assert outcome in ("restored", "reset", "unknown", "SIGSEGV"), proc
    return out.read_bytes(), outcome


VERDICT_OF = {"restored": "accepted", "reset": "rejected", "SIGSEGV": "would fault"}


@pytest.mark.parametrize(
    "mode",
    [
        "keep",
        "magic1",
        "magic2",
        "xstate-size-big",
        "xstate-size-small",
        "extended-size-small",
        "mxcsr",
        "magic1-mxcsr",
        "xstate-bv",
        "xstate-size-xcr0",
    ],
)
def test_sigreturn_matches_the_kernel(sigframe_program: Path, tmp_path: Path, mode: str) -> None:
    frame, outcome = _signal_frame(sigframe_program, tmp_path, mode)
    path = tmp_path / "frame.bin"
    path.write_bytes(frame)
    code, out = validate_json(str(path), "--as", "sigreturn")
    (image,) = out["images"]
    if outcome == "unknown":
        pytest.skip("no AVX: cannot tell a restored frame from the FXSAVE-only fallback")
    assert image["verdict"] == VERDICT_OF[outcome], image["findings"]
    assert code == (0 if outcome == "restored" else 1)


def _messages(out: dict[str, Any], rule_prefix: str = "sigframe") -> list[str]:
    return [f["message"] for f in out["images"][0]["findings"] if f["rule"].startswith(rule_prefix)]


def test_sigreturn_messages(sigframe_program: Path, tmp_path: Path) -> None:
    frame, _ = _signal_frame(sigframe_program, tmp_path, "keep")
    assert struct.unpack_from("<I", frame, 464)[0] == MAGIC1
    extended, xfeatures, xstate_size = struct.unpack_from("<IQI", frame, 468)
    assert len(frame) == extended == xstate_size + 4
    assert struct.unpack_from("<I", frame, xstate_size)[0] == MAGIC2
    path = tmp_path / "frame.bin"

    def check(data: bytes) -> tuple[list[str], dict[str, Any]]:
        path.write_bytes(data)
        _, out = validate_json(str(path), "--as", "sigreturn")
        return _messages(out), out

    messages, out = check(frame)
    assert messages == []
    assert out["images"][0]["accepted"]
    assert f"RFBM = xfeatures {xfeatures:#x}" in " ".join(out["images"][0]["notes"])

    messages, _ = check(put(frame, 464, "<I", MAGIC1 ^ 0x100))
    assert messages == [f"magic1 is {MAGIC1 ^ 0x100:#010x}, not {MAGIC1:#010x}: {FX_ONLY}"]

    messages, _ = check(put(frame, xstate_size, "<I", 0))
    assert messages == [
        f"magic2 at byte {xstate_size} (xstate_size) is 0x00000000, not {MAGIC2:#010x}: {FX_ONLY}"
    ]

    messages, _ = check(frame[:xstate_size])
    assert messages == [
        f"no magic2: it would be at byte {xstate_size} (xstate_size), past the end of the"
        f" {xstate_size}-byte buffer: {FX_ONLY}"
    ]

    messages, _ = check(put(frame, 480, "<I", 512))
    assert messages == [
        f"xstate_size 512 is below 576, the legacy region and XSAVE header: {FX_ONLY}"
    ]

    big = extended + 64
    messages, out = check(put(frame, 480, "<I", big))
    source = out["images"][0]["user_size_source"]
    assert messages == [
        f"xstate_size {big} exceeds the kernel's user xstate size {xstate_size} ({source}):"
        f" {FX_ONLY}",
        f"xstate_size {big} exceeds extended_size {extended}: {FX_ONLY}",
    ]

    messages, _ = check(put(frame, 468, "<I", xstate_size - 4))
    assert messages == [
        f"xstate_size {xstate_size} exceeds extended_size {xstate_size - 4}: {FX_ONLY}"
    ]


# Surprises -----------------------------------------------------------------------------------
def test_stale_bytes(tmp_path: Path) -> None:
    image = make_image(xstate_bv=0xE7 & ~(1 << 5))  # opmask init, its 64 bytes random
    path = tmp_path / "stale.bin"
    path.write_bytes(image)
    code, out = validate_json(str(path), "--layout", "amd-zen4")
    assert code == 0
    (finding,) = [f for f in out["images"][0]["findings"] if f["rule"] == "stale-bytes"]
    count = sum(1 for b in image[832:896] if b)
    assert finding["severity"] == "warning"
    assert (finding["offset"], finding["value"]) == (832, f"{count} non-zero bytes")
    assert finding["message"] == (
        f"opmask is in init state (XSTATE_BV[5] = 0) but {count} of its 64 bytes are not"
        " zero: they are ignored, init values load instead"
    )


def test_top_ftw_mismatch(tmp_path: Path) -> None:
    image = make_image(xstate_bv=0xE7)
    image = put(put(bytes(image), 2, "<H", 0), 4, "<B", 0x80)  # TOP 0, R7 valid
    path = tmp_path / "x87.bin"
    path.write_bytes(image)
    code, out = validate_json(str(path), "--layout", "amd-zen4")
    assert code == 0
    findings = [f for f in out["images"][0]["findings"] if f["rule"] == "x87-top-ftw"]
    assert [(f["offset"], f["value"], f["message"]) for f in findings] == [
        (
            4,
            "TOP=0 FTW=0x80",
            "TOP is 0 but the abridged FTW 0x80 marks R7 valid: a stack of 1 from R0 up would"
            " be R0; the stack has holes",
        )
    ]
    # the stack from TOP up is fine: R7 valid with TOP 7
    path.write_bytes(put(image, 2, "<H", 7 << 11))
    _, out = validate_json(str(path), "--layout", "amd-zen4")
    assert not [f for f in out["images"][0]["findings"] if f["rule"] == "x87-top-ftw"]


def test_invalid_tilecfg(tmp_path: Path) -> None:
    """AMX in Intel's layout (TILECFG at 2752); no AMX is needed to check the bytes."""
    xcr0 = 0x602E7
    image = bytearray(11008)
    struct.pack_into("<HHBxH", image, 0, 0x037F, 0, 0, 0)
    struct.pack_into("<II", image, 24, 0x1F80, 0xFFFF)
    struct.pack_into("<Q", image, 464, xcr0)
    struct.pack_into("<Q", image, 512, 1 << 17)
    cfg = 2752
    image[cfg] = 1  # palette 1
    struct.pack_into("<H", image, cfg + 16, 80)  # tmm0: 80 bytes a row, over 64
    image[cfg + 48] = 4
    image[cfg + 49] = 3  # tmm1: rows but no bytes a row
    image[cfg + 48 + 9] = 1  # tile 9: palette 1 has 8
    path = tmp_path / "amx.bin"
    path.write_bytes(image)
    code, out = validate_json(str(path), "--layout", "intel", "--xcr0", hex(xcr0))
    assert code == 0
    findings = [f for f in out["images"][0]["findings"] if f["rule"] == "tilecfg-invalid"]
    tail = "; LDTILECFG would #GP on it, and what XRSTOR does with it has not been checked on a CPU"
    assert [(f["offset"], f["value"], f["message"]) for f in findings] == [
        (cfg + 16, "80", f"TILECFG: tmm0 has 80 bytes a row, over 64{tail}"),
        (cfg + 18, "3x0B", f"TILECFG: tmm1 has rows or bytes a row, not both{tail}"),
        (cfg + 34, "1x0B", f"TILECFG: tile 9 configured; palette 1 has 8{tail}"),
    ]
    path.write_bytes(put(bytes(image), cfg, "<B", 2))
    _, out = validate_json(str(path), "--layout", "intel", "--xcr0", hex(xcr0))
    messages = [
        f["message"] for f in out["images"][0]["findings"] if f["rule"] == "tilecfg-invalid"
    ]
    assert messages == [f"TILECFG: palette 2: only 0 and 1 are defined{tail}"]


def test_supervisor_components(tmp_path: Path) -> None:
    """An XSAVES image (CET_U, component 11): XRSTOR faults on it, XRSTORS with IA32_XSS
    holding CET_U loads it."""
    xcomp = 1 << 63 | 1 << 11 | 0xE7
    image = bytearray(576 + 256 + 64 + 512 + 1024 + 16)
    struct.pack_into("<II", image, 24, 0x1F80, 0xFFFF)
    struct.pack_into("<QQ", image, 512, 1 << 11 | 0b10, xcomp)
    path = tmp_path / "xsaves.bin"
    path.write_bytes(image)
    args = (str(path), "--layout", "amd-zen4", "--xcr0", "0xe7")
    code, out = validate_json(*args)
    assert code == 1
    rules = [(f["rule"], f["severity"]) for f in out["images"][0]["findings"]]
    assert ("xcomp-bv-outside-xcr0", "fault") in rules
    assert ("supervisor-under-xrstor", "warning") in rules
    code, out = validate_json(*args, "--instruction", "xrstors", "--xss", "0x800")
    assert code == 0, out
    assert out["images"][0]["xss_source"] == "given"
    code, out = validate_json(*args, "--instruction", "xrstors", "--xss", "0")
    assert code == 1


def test_xrstors_refuses_the_standard_form(tmp_path: Path) -> None:
    path = tmp_path / "std.bin"
    path.write_bytes(make_image())
    code, out = validate_json(str(path), "--instruction", "xrstors", "--xss", "0")
    assert code == 1
    assert [f["rule"] for f in out["images"][0]["findings"]] == ["xrstors-standard-form"]


def test_fxsave_area_is_checked_as_fxrstor(tmp_path: Path) -> None:
    area = bytearray(512)
    struct.pack_into("<II", area, 24, 0x1F80 | 1 << 31, 0xFFFF)
    path = tmp_path / "fx.bin"
    path.write_bytes(area)
    code, out = validate_json(str(path))
    (image,) = out["images"]
    assert (code, image["format"], image["instruction"]) == (1, "fxsave", "fxrstor")
    assert [f["rule"] for f in image["findings"]] == ["mxcsr-reserved"]


# Output, exit statuses, bad input -------------------------------------------------------------
def test_text_output_and_exit_statuses(tmp_path: Path) -> None:
    good = tmp_path / "good.bin"
    good.write_bytes(make_image())
    proc = run("validate", str(good))
    assert proc.returncode == 0
    assert proc.stdout.decode().splitlines()[-1] == "accepted"
    bad = tmp_path / "bad.bin"
    bad.write_bytes(put(make_image(), 528, "<B", 1))
    proc = run("validate", str(bad), "--layout", "amd-zen4", "--xcr0", "0xe7")
    assert proc.returncode == 1
    text = proc.stdout.decode()
    assert f"{bad}: would fault" in text
    assert (
        "fault standard-header-reserved (byte 528, value 0x0000000000000001): header bytes 16-23"
        " (bytes 528-535) hold 0x1"
    ) in text
    assert "rule: Intel SDM vol. 2, XRSTOR, #GP(0): standard form and bytes 23:8" in text
    assert text.splitlines()[-1] == "1 of 1 image not accepted (cpu)"
    # from standard input too
    assert run("validate", "-", stdin=bad.read_bytes()).returncode == 1


def test_json_schema(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(put(make_image(), 24, "<I", 0x1F80 | 1 << 31))
    code, out = validate_json(str(path), "--rfbm", "0x3", "--mxcsr-mask", "0xffbf")
    assert code == 1
    assert set(out) == {"schema", "check", "accepted", "images", "warnings"}
    (image,) = out["images"]
    assert set(image) == {
        "origin", "tid", "size", "format", "verdict", "accepted", "instruction", "xcr0",
        "xcr0_source", "xss", "xss_source", "rfbm", "mxcsr_mask", "mxcsr_mask_source",
        "user_size", "user_size_source", "notes", "findings",
    }  # fmt: skip
    assert (image["rfbm"], image["mxcsr_mask"], image["mxcsr_mask_source"]) == (
        "0x3",
        "0xffbf",
        "given",
    )
    assert image["xcr0"] == "0xe7" and image["xcr0_source"] == "the image's XCR0 word at byte 464"
    (finding,) = image["findings"]
    assert set(finding) == {"rule", "severity", "offset", "value", "message", "source"}
    assert (finding["rule"], finding["offset"], finding["value"]) == (
        "mxcsr-reserved",
        24,
        "0x80001f80",
    )


def test_missing_file(tmp_path: Path) -> None:
    line = one_line_error(run("validate", str(tmp_path / "nope")))
    assert line == f"xcr0tool: {tmp_path / 'nope'}: no such file"


def test_directory(tmp_path: Path) -> None:
    line = one_line_error(run("validate", str(tmp_path)))
    assert line == (
        f"xcr0tool: {tmp_path}: is a directory, not an rr trace (no version file) or a CRIU"
        " image directory (no core-TID.img)"
    )


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty: no XSAVE image"),
        (b"\0" * 100, "100 bytes is too small for an XSAVE image"),
    ],
    ids=["empty", "100 bytes"],
)
def test_not_an_image(tmp_path: Path, data: bytes, problem: str) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(data)
    assert problem in one_line_error(run("validate", str(path)))
    assert problem in one_line_error(run("validate", "-", stdin=data))


def test_elf_on_stdin() -> None:
    # validate reads standard input with the one source reader: as decode does.
    line = one_line_error(run("validate", "-", stdin=b"\x7fELF" + bytes(1000)))
    assert line == one_line_error(run("decode", "-", stdin=b"\x7fELF" + bytes(1000)))
    assert line.startswith("xcr0tool: <stdin>: ")


def test_thread_of_a_raw_image(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(make_image())
    line = one_line_error(run("validate", f"{path}@12"))
    assert line.endswith("@TID selects a thread of a core, and this is not an ELF core")


@pytest.mark.parametrize(
    "args", [["--xcr0", "banana"], ["--as", "windows"], ["--instruction", "fxrstor"]], ids=str
)
def test_bad_options(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(make_image())
    proc = run("validate", str(path), *args)
    assert proc.returncode == 2
    assert b"Traceback" not in proc.stderr


def test_read_error_names_the_file() -> None:
    # /proc/self/mem is a file that passes every check and fails at the first read (EIO).
    line = one_line_error(run("validate", "/proc/self/mem"))
    assert line == "xcr0tool: /proc/self/mem: input/output error"
