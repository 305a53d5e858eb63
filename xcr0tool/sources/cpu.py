"""CPUID, XGETBV and XSAVE/XSAVEC of the calling thread, in-process, through ctypes.

Python has no way to execute these instructions, and xcr0tool must not need a compiler
or a helper binary at run time. So this module writes four tiny System V x86-64
functions into an anonymous page, makes the page executable and calls them through
ctypes. The page is built on first use (importing this module costs nothing) and
kept for the life of the process.

Everything here is for Linux on x86-64 only; elsewhere every function that runs an
instruction raises `HostUnavailable`. `syscall` is here too, for the other in-process readers
(ptrace, arch_prctl), which share this module's one handle on the C library.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import platform
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xcr0tool.errors import HostUnavailable, UsageError

if TYPE_CHECKING:
    from xcr0tool.model.layout import Layout, Leaf0D

# ---------------------------------------------------------------------------
# Machine code. Assembled by hand; each line gives the bytes and the instruction
# (Intel syntax). Only caller-saved registers are clobbered except RBX, which
# CPUID overwrites and the ABI says we must preserve.
# ---------------------------------------------------------------------------

# void cpuid(uint32 leaf /*edi*/, uint32 subleaf /*esi*/, uint32 out[4] /*rdx*/)
_CPUID_CODE = bytes.fromhex(
    "53"  #           push rbx            ; callee-saved, CPUID writes it
    "4989d0"  #       mov  r8, rdx        ; keep `out`: CPUID writes RDX
    "89f8"  #         mov  eax, edi       ; leaf
    "89f1"  #         mov  ecx, esi       ; sub-leaf
    "0fa2"  #         cpuid
    "418900"  #       mov  [r8], eax
    "41895804"  #     mov  [r8+4], ebx
    "41894808"  #     mov  [r8+8], ecx
    "4189500c"  #     mov  [r8+12], edx
    "5b"  #           pop  rbx
    "c3"  #           ret
)

# uint64 xgetbv(uint32 index /*edi*/)
_XGETBV_CODE = bytes.fromhex(
    "89f9"  #         mov  ecx, edi       ; XCR number
    "0f01d0"  #       xgetbv              ; EDX:EAX = XCR[ECX]
    "48c1e220"  #     shl  rdx, 32
    "4809d0"  #       or   rax, rdx       ; XGETBV zero-extended EAX into RAX
    "c3"  #           ret
)

# void xsave(void *area /*rdi*/, uint64 rfbm /*rsi*/), and the same for xsavec.
# The REX.W forms (XSAVE64/XSAVEC64) store FIP/FDP as 64-bit offsets, which is what
# the kernel uses and what NT_X86_XSTATE holds; the legacy forms store FCS/FDS instead.
_RFBM_TO_EDX_EAX = (
    "4889f0"  #       mov  rax, rsi       ; RFBM low half in EAX
    "4889f2"  #       mov  rdx, rsi
    "48c1ea20"  #     shr  rdx, 32        ; RFBM high half in EDX
)
_XSAVE_CODE = bytes.fromhex(
    _RFBM_TO_EDX_EAX
    + "480fae27"  #   xsave64 [rdi]
    + "c3"  #         ret
)
_XSAVEC_CODE = bytes.fromhex(
    _RFBM_TO_EDX_EAX
    + "480fc727"  #   xsavec64 [rdi]
    + "c3"  #         ret
)

# Each stub starts on its own 64-byte slot of the page.
_SLOT = 64
_PAGE = 4096

_PROT_READ = 0x1
_PROT_WRITE = 0x2
_PROT_EXEC = 0x4
_MAP_PRIVATE = 0x02
_MAP_ANONYMOUS = 0x20
_MAP_FAILED = ctypes.c_void_p(-1).value

_CPUID_T = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))
_XGETBV_T = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint32)
_XSAVE_T = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64)

# CPUID bits this module depends on.
_LEAF1_ECX_OSXSAVE = 1 << 27  # the OS set CR4.OSXSAVE: XGETBV and XSAVE* are usable
_XSAVE_LEAF = 0xD
_SUB1_EAX_XSAVEC = 1 << 1
_SUB1_EAX_XGETBV1 = 1 << 2


def is_x86_64_linux() -> bool:
    """True when this process is 64-bit code on Linux on an x86-64 CPU."""
    return (
        sys.platform.startswith("linux")
        and platform.machine().lower() in ("x86_64", "amd64")
        # a 32-bit Python on a 64-bit kernel reports x86_64 too, but cannot run our code
        and ctypes.sizeof(ctypes.c_void_p) == 8
    )


def _require_platform() -> None:
    if not is_x86_64_linux():
        raise HostUnavailable(
            "reading this CPU needs Linux on x86-64 (a 64-bit Python); this is "
            f"{sys.platform} on {platform.machine() or 'an unknown machine'}"
        )


@dataclass
class _Stubs:
    page: int  # never unmapped: the stubs live as long as the process
    cpuid: Callable[..., Any]
    xgetbv: Callable[..., Any]
    xsave: Callable[..., Any]
    xsavec: Callable[..., Any]


_lock = threading.Lock()
_built: list[_Stubs] = []  # at most one entry, built on first use


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library already loaded in this process, errno kept for ctypes.get_errno."""
    handle = ctypes.CDLL(None, use_errno=True)
    handle.syscall.restype = ctypes.c_long
    return handle


def syscall(number: int, *args: Any) -> int:
    """syscall(2) with ctypes arguments: 0, or the errno it failed with.

    Raw, not through glibc's wrappers: ptrace(2)'s plays errno games with the PEEK*
    requests, and not every glibc has one for arch_prctl(2).
    """
    ctypes.set_errno(0)
    if libc().syscall(ctypes.c_long(number), *args) != -1:
        return 0
    return ctypes.get_errno() or errno.EIO


def _build_stubs() -> _Stubs:
    mmap = libc().mmap
    mmap.restype = ctypes.c_void_p
    mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    mprotect = libc().mprotect
    mprotect.restype = ctypes.c_int
    mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

    page = mmap(None, _PAGE, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)
    if page is None or page == _MAP_FAILED:
        err = ctypes.get_errno()
        raise HostUnavailable(f"cannot map a page for the CPU stubs: errno {err}")
    codes = (_CPUID_CODE, _XGETBV_CODE, _XSAVE_CODE, _XSAVEC_CODE)
    slots = [page + i * _SLOT for i in range(len(codes))]
    for at, code in zip(slots, codes, strict=True):
        ctypes.memmove(at, code, len(code))
    cpuid_at, xgetbv_at, xsave_at, xsavec_at = slots
    # Write first, then flip to read+execute: never writable and executable at once,
    # which hardened kernels (SELinux execmem, PaX) refuse.
    if mprotect(page, _PAGE, _PROT_READ | _PROT_EXEC) != 0:
        err = ctypes.get_errno()
        raise HostUnavailable(
            f"cannot make the CPU stub page executable (mprotect errno {err}); "
            "a security policy forbids executable anonymous memory in this process"
        )
    return _Stubs(
        page=page,
        cpuid=_CPUID_T(cpuid_at),
        xgetbv=_XGETBV_T(xgetbv_at),
        xsave=_XSAVE_T(xsave_at),
        xsavec=_XSAVE_T(xsavec_at),
    )


def _get_stubs() -> _Stubs:
    _require_platform()
    if not _built:
        with _lock:
            if not _built:
                _built.append(_build_stubs())
    return _built[0]


def cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    """Execute CPUID with EAX=leaf, ECX=subleaf; return (EAX, EBX, ECX, EDX)."""
    if not (0 <= leaf < 1 << 32 and 0 <= subleaf < 1 << 32):
        raise UsageError(f"CPUID leaf and sub-leaf are 32-bit values: {leaf:#x}, {subleaf:#x}")
    stubs = _get_stubs()
    out = (ctypes.c_uint32 * 4)()
    stubs.cpuid(leaf, subleaf, out)
    return (out[0], out[1], out[2], out[3])


def _require_osxsave() -> None:
    if not cpuid(1)[2] & _LEAF1_ECX_OSXSAVE:
        raise HostUnavailable(
            "this CPU or OS has not enabled XSAVE (CPUID.1:ECX.OSXSAVE[bit 27] is 0): "
            "there is no XCR0 and no XSAVE image to take"
        )


def _max_basic_leaf() -> int:
    return cpuid(0)[0]


def _sub1_eax() -> int:
    if _max_basic_leaf() < _XSAVE_LEAF:
        return 0
    return cpuid(_XSAVE_LEAF, 1)[0]


def xgetbv(index: int) -> int:
    """Read extended control register `index`: 0 is XCR0, 1 is XINUSE.

    Any other index would raise #GP, which kills the process, so it is refused here;
    XGETBV 1 is only executed when CPUID.(0xD,1).EAX[2] says it exists.
    """
    _require_platform()
    if index not in (0, 1):
        raise UsageError(f"XGETBV index {index} is not defined (0 = XCR0, 1 = XINUSE)")
    _require_osxsave()
    if index == 1 and not _sub1_eax() & _SUB1_EAX_XGETBV1:
        raise HostUnavailable("this CPU has no XGETBV with ECX=1 (CPUID.(0xD,1).EAX[2] is 0)")
    return int(_get_stubs().xgetbv(index))


def leaf_0d() -> dict[int, tuple[int, int, int, int]]:
    """Every non-zero sub-leaf 0..63 of CPUID leaf 0xD, as {sub-leaf: (EAX, EBX, ECX, EDX)}."""
    if _max_basic_leaf() < _XSAVE_LEAF:
        raise HostUnavailable(
            "this CPU has no CPUID leaf 0xD (its highest basic leaf is below 0xD)"
        )
    table: dict[int, tuple[int, int, int, int]] = {}
    for sub in range(64):
        regs = cpuid(_XSAVE_LEAF, sub)
        if any(regs):
            table[sub] = regs
    return table


def table_layout(table: Leaf0D) -> Layout:
    """A CPUID leaf 0xD table as a Layout, whose size algorithm is the one there is
    (model/layout.py)."""
    from xcr0tool.model.layout import layout_from_cpuid

    return layout_from_cpuid(table, "CPUID leaf 0xD")


def standard_size(table: Leaf0D, mask: int, layout: Layout | None = None) -> int:
    """Size of a standard-format image holding the user components in `mask`: the end of
    the furthest component (Layout.standard_size). Supervisor components, which have no
    standard offset, and components without a sub-leaf are skipped."""
    layout = layout or table_layout(table)
    return layout.standard_size(mask & layout.user_mask())


def compacted_size(table: Leaf0D, mask: int, layout: Layout | None = None) -> int:
    """Size of a compacted image whose XCOMP_BV is `mask` (Layout.compacted_size, SDM vol.
    1 §13.4.3); components without a sub-leaf take no space."""
    layout = layout or table_layout(table)
    return layout.compacted_size(mask & layout.known_mask())


def xsave_snapshot(compacted: bool, rfbm: int | None = None) -> bytes:
    """XSAVE (standard) or XSAVEC (compacted) of the calling thread's own state.

    `rfbm` defaults to XCR0; bits outside XCR0 are dropped, exactly as the CPU does
    (RFBM = XCR0 AND EDX:EAX). The standard image is CPUID.(0xD,0).EBX bytes long (all
    of XCR0); the compacted one is as long as the components in RFBM need. The state
    is that of the Python thread inside the ctypes call, so its vector registers hold
    whatever the interpreter left there.
    """
    _require_osxsave()
    if rfbm is not None and rfbm < 0:
        raise UsageError(f"RFBM is an unsigned 64-bit mask, not {rfbm}")
    table = leaf_0d()
    xcr0 = xgetbv(0)
    mask = xcr0 if rfbm is None else rfbm & xcr0
    stubs = _get_stubs()
    if compacted:
        if not table.get(1, (0, 0, 0, 0))[0] & _SUB1_EAX_XSAVEC:
            raise HostUnavailable("this CPU has no XSAVEC (CPUID.(0xD,1).EAX[1] is 0)")
        size = compacted_size(table, mask)
        fn = stubs.xsavec
    else:
        size = table[0][1]
        fn = stubs.xsave
    # XSAVE* fault (#GP) on an area not aligned to 64 bytes, and XSAVE leaves parts of
    # the area unwritten (bytes 464-511, the header after XSTATE_BV, components outside
    # RFBM), so over-allocate, align by hand and start from zeros.
    raw = ctypes.create_string_buffer(size + 64)
    base = (ctypes.addressof(raw) + 63) & ~63
    fn(base, mask)
    return ctypes.string_at(base, size)
