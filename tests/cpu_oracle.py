"""This CPU as the test oracle for XSAVE images.

Tests check our transforms against what the hardware does: ``get_oracle()`` builds
``tests/progs/xsave_oracle.c`` with gcc (once per session, cached by a hash of the
source and flags) and each method runs it in a child process.  The helper runs the
64-bit forms of the instructions (XRSTOR64, XSAVE64, ...), as the Linux kernel does.

A fault of XRSTOR (#GP) reaches user mode as SIGSEGV; the helper does not catch it,
and a child killed by SIGSEGV is reported here as "XRSTOR faulted".  XSAVES and
XRSTORS are not offered: they are CPL-0 instructions and always #GP in user mode.

Masks (``rfbm``, ``save_rfbm``) are the EDX:EAX operand; the CPU ANDs them with
XCR0 itself.  ``None`` means all ones, so every XCR0 component.  Images shorter than
the helper's 128 KiB buffer are zero-padded.  ``xrstor_faults`` takes any image: the
helper puts its own PKRU back (WRPKRU from a register) right after XRSTOR, before any
data access.  The save-after-restore methods refuse, with OracleError, an image that
would load a PKRU value denying pkey 0 (the save into the helper's own memory would
then die, and its death would look like an XRSTOR fault).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import pytest

SOURCE = Path(__file__).resolve().parent / "progs" / "xsave_oracle.c"
CFLAGS: tuple[str, ...] = ("-O1", "-std=gnu11", "-mgeneral-regs-only", "-Wall", "-Wextra")
RUN_TIMEOUT = 10.0
COMPILE_TIMEOUT = 120.0
ALL_ONES = (1 << 64) - 1
XCOMP_COMPACTED = 1 << 63
MAX_IMAGE = 128 * 1024  # the helper's input buffer

_EXIT_REASONS = {
    2: "bad arguments",
    3: "the CPU or OS lacks what the operation needs",
    4: "the instruction wrote past the size computed from CPUID leaf 0xD",
    5: "image larger than the helper's buffer",
    6: "refused: the image loads a PKRU value denying pkey 0, which the helper's own "
    "memory uses, so nothing can be saved after it; clear PKRU bits 1:0 in the image",
}


class OracleError(RuntimeError):
    """The helper failed in a way that is not an XRSTOR fault."""


class CpuOracle:
    """What this CPU says about XSAVE images; see the module docstring."""

    binary: Path
    info: dict[str, Any]
    vendor: str
    xcr0: int
    xinuse: int | None
    mxcsr_mask: int
    has_xsaveopt: bool
    has_xsavec: bool
    has_xgetbv1: bool
    has_xsaves: bool
    standard_size: int
    leaf_0d: dict[int, tuple[int, int, int, int]]

    def __init__(self, binary: Path, info: dict[str, Any]) -> None:
        self.binary = binary
        self.info = info
        self.vendor = str(info["vendor"])
        self.xcr0 = int(info["xcr0"])
        xinuse = info.get("xinuse")
        self.xinuse = None if xinuse is None else int(xinuse)
        self.mxcsr_mask = int(info["mxcsr_mask"])
        self.has_xsaveopt = bool(info["xsaveopt"])
        self.has_xsavec = bool(info["xsavec"])
        self.has_xgetbv1 = bool(info["xgetbv1"])
        self.has_xsaves = bool(info["xsaves"])
        self.leaf_0d = {
            int(k): (int(v[0]), int(v[1]), int(v[2]), int(v[3])) for k, v in info["leaf_0d"].items()
        }
        self.standard_size = self.leaf_0d[0][1]

    def __repr__(self) -> str:
        return (
            f"CpuOracle(vendor={self.vendor!r}, xcr0={self.xcr0:#x}, "
            f"standard_size={self.standard_size}, has_xsavec={self.has_xsavec})"
        )

    # ----- layout, from CPUID leaf 0xD -------------------------------------------------

    def component_size(self, i: int) -> int:
        """CPUID.(0xD,i).EAX for a component i >= 2 (0 when not enumerated)."""
        return self.leaf_0d.get(i, (0, 0, 0, 0))[0]

    def standard_offset(self, i: int) -> int:
        """CPUID.(0xD,i).EBX: the standard-format offset (0 for supervisor components)."""
        return self.leaf_0d.get(i, (0, 0, 0, 0))[1]

    def aligned_when_compacted(self, i: int) -> bool:
        return bool(self.leaf_0d.get(i, (0, 0, 0, 0))[2] & 2)

    def compacted_offsets(self, xcomp_bv: int) -> dict[int, int]:
        """Offsets of the components i >= 2 of XCOMP_BV[62:0] in the compacted format."""
        offsets: dict[int, int] = {}
        offset = 576
        for i in range(2, 63):
            if xcomp_bv >> i & 1:
                if self.aligned_when_compacted(i):
                    offset = (offset + 63) & ~63
                offsets[i] = offset
                offset += self.component_size(i)
        return offsets

    def compacted_size(self, xcomp_bv: int) -> int:
        offsets = self.compacted_offsets(xcomp_bv)
        if not offsets:
            return 576
        last = max(offsets)
        return offsets[last] + self.component_size(last)

    # ----- running the helper ------------------------------------------------------------

    def _run(self, args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                [str(self.binary), *args],
                input=stdin,
                capture_output=True,
                timeout=RUN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise OracleError(f"xsave_oracle {' '.join(args)} timed out") from e

    @staticmethod
    def _fail(args: list[str], proc: subprocess.CompletedProcess[bytes]) -> OracleError:
        rc = proc.returncode
        if rc < 0:
            what = f"killed by {signal.Signals(-rc).name}"
        else:
            what = f"exit {rc} ({_EXIT_REASONS.get(rc, 'unknown')})"
        err = proc.stderr.decode(errors="replace").strip()
        return OracleError(f"xsave_oracle {' '.join(args)}: {what}: {err}")

    @staticmethod
    def _mask(mask: int | None) -> str:
        if mask is None:
            return hex(ALL_ONES)
        if not 0 <= mask <= ALL_ONES:
            raise ValueError(f"mask {mask:#x} is not a 64-bit value")
        return hex(mask)

    @staticmethod
    def _check_image(image: bytes) -> bytes:
        image = bytes(image)
        if len(image) > MAX_IMAGE:
            raise ValueError(f"image of {len(image)} bytes; the helper takes at most {MAX_IMAGE}")
        return image

    def _need(self, feature: str) -> None:
        if feature == "xsavec" and not self.has_xsavec:
            pytest.skip("this CPU has no XSAVEC (CPUID.(EAX=0DH,ECX=1):EAX[1] = 0)")
        if feature == "xsaveopt" and not self.has_xsaveopt:
            pytest.skip("this CPU has no XSAVEOPT (CPUID.(EAX=0DH,ECX=1):EAX[0] = 0)")

    def _xrstor_then(
        self, save: str, image: bytes, rfbm: int | None, save_rfbm: int | None, fill: int
    ) -> bytes | None:
        if not 0 <= fill <= 0xFF:
            raise ValueError("fill is a byte value")
        args = [f"xrstor-{save}", self._mask(rfbm), self._mask(save_rfbm), str(fill)]
        proc = self._run(args, self._check_image(image))
        if proc.returncode == -signal.SIGSEGV:
            return None
        if proc.returncode != 0:
            raise self._fail(args, proc)
        return proc.stdout

    def _save(self, save: str, save_rfbm: int | None, fill: int) -> bytes:
        if not 0 <= fill <= 0xFF:
            raise ValueError("fill is a byte value")
        args = [save, self._mask(save_rfbm), str(fill)]
        proc = self._run(args)
        if proc.returncode != 0:
            raise self._fail(args, proc)
        return proc.stdout

    # ----- the oracle ----------------------------------------------------------------------

    def xrstor_faults(self, image: bytes, rfbm: int | None = None) -> bool:
        """Does XRSTOR of ``image`` (zero-padded to the helper's buffer) raise #GP?"""
        args = ["xrstor", self._mask(rfbm)]
        proc = self._run(args, self._check_image(image))
        if proc.returncode == -signal.SIGSEGV:
            return True
        if proc.returncode != 0:
            raise self._fail(args, proc)
        return False

    def xrstor_then_xsave(
        self,
        image: bytes,
        rfbm: int | None = None,
        save_rfbm: int | None = None,
        *,
        fill: int = 0,
    ) -> bytes | None:
        """XRSTOR ``image``, then XSAVE into a buffer of ``fill`` bytes.

        Returns the standard-size buffer, or None when XRSTOR faulted.
        """
        return self._xrstor_then("xsave", image, rfbm, save_rfbm, fill)

    def xrstor_then_xsavec(
        self,
        image: bytes,
        rfbm: int | None = None,
        save_rfbm: int | None = None,
        *,
        fill: int = 0,
    ) -> bytes | None:
        """XRSTOR ``image``, then XSAVEC; the buffer is compacted_size(RFBM|bit 63) long."""
        self._need("xsavec")
        return self._xrstor_then("xsavec", image, rfbm, save_rfbm, fill)

    def xrstor_then_xsaveopt(
        self,
        image: bytes,
        rfbm: int | None = None,
        save_rfbm: int | None = None,
        *,
        fill: int = 0,
    ) -> bytes | None:
        """XRSTOR ``image``, then XSAVEOPT (to another buffer: no modified optimisation)."""
        self._need("xsaveopt")
        return self._xrstor_then("xsaveopt", image, rfbm, save_rfbm, fill)

    def xsave(self, save_rfbm: int | None = None, *, fill: int = 0) -> bytes:
        """XSAVE of the helper's own state, standard format, standard size."""
        return self._save("xsave", save_rfbm, fill)

    def xsavec(self, save_rfbm: int | None = None, *, fill: int = 0) -> bytes:
        """XSAVEC of the helper's own state."""
        self._need("xsavec")
        return self._save("xsavec", save_rfbm, fill)

    def xsaveopt(self, save_rfbm: int | None = None, *, fill: int = 0) -> bytes:
        """XSAVEOPT of the helper's own state."""
        self._need("xsaveopt")
        return self._save("xsaveopt", save_rfbm, fill)


# ----- building ------------------------------------------------------------------------------


class _Session:
    """What get_oracle() found, kept for the rest of the process."""

    oracle: CpuOracle | None = None
    skip_reason: str | None = None


def _skip(reason: str) -> NoReturn:
    _Session.skip_reason = reason
    pytest.skip(reason)


def _default_cache_dir() -> Path:
    env = os.environ.get("XCR0TOOL_ORACLE_DIR")
    if env:
        return Path(env)
    return Path(tempfile.gettempdir()) / f"xcr0tool-oracle-{os.getuid()}"


def _private_dir(path: Path) -> Path:
    """``path`` if it is a directory of ours that others cannot write, else a fresh one."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
        if st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return path
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="xcr0tool-oracle-"))


def _build(cache_dir: Path) -> Path:
    cc = os.environ.get("CC", "gcc")
    cc_path = shutil.which(cc)
    if cc_path is None:
        _skip(f"no C compiler ({cc}): the CPU oracle compiles {SOURCE.name} at test time")
    source = SOURCE.read_bytes()
    digest = hashlib.sha256()
    for part in (source, " ".join(CFLAGS).encode(), cc_path.encode()):
        digest.update(part)
        digest.update(b"\0")
    directory = _private_dir(cache_dir)
    binary = directory / f"xsave_oracle-{digest.hexdigest()[:16]}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    tmp = directory / f".{binary.name}.{os.getpid()}.tmp"
    try:
        proc = subprocess.run(
            [cc_path, *CFLAGS, "-o", str(tmp), str(SOURCE)],
            capture_output=True,
            timeout=COMPILE_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise OracleError(
                f"{cc} failed to build {SOURCE.name}:\n{proc.stderr.decode(errors='replace')}"
            )
        os.replace(tmp, binary)
    finally:
        tmp.unlink(missing_ok=True)
    return binary


def get_oracle(cache_dir: Path | None = None) -> CpuOracle:
    """The CPU oracle, built once per session.

    Skips (pytest.skip) with the reason when this is not x86-64 Linux, when there is
    no C compiler, or when the CPU or the OS does not offer XSAVE.  A failing build is
    an error, not a skip.
    """
    if _Session.oracle is not None:
        return _Session.oracle
    if _Session.skip_reason is not None:
        pytest.skip(_Session.skip_reason)
    machine = platform.machine().lower()
    if not sys.platform.startswith("linux") or machine not in ("x86_64", "amd64"):
        _skip(f"the CPU oracle needs x86-64 Linux, not {sys.platform}/{machine}")
    binary = _build(cache_dir if cache_dir is not None else _default_cache_dir())
    proc = subprocess.run(
        [str(binary), "info"], capture_output=True, timeout=RUN_TIMEOUT, check=False
    )
    if proc.returncode != 0:
        raise OracleError(f"xsave_oracle info: exit {proc.returncode}: {proc.stderr!r}")
    info = json.loads(proc.stdout)
    if not info["xsave"]:
        _skip("this CPU has no XSAVE (CPUID.1:ECX[26] = 0)")
    if not info["osxsave"]:
        _skip("the OS has not enabled XSAVE (CPUID.1:ECX[27] OSXSAVE = 0)")
    if "leaf_0d" not in info:
        _skip("CPUID has no leaf 0xD")
    _Session.oracle = CpuOracle(binary, info)
    return _Session.oracle
