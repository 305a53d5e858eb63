"""CRIU image files: a thread's FPU state (core-TID.img), the dumping CPU (cpuinfo.img), the
process tree (pstree.img).

Facts, each checked against CRIU's source (checkpoint-restore/criu):
- Framing (criu/image.c img_write_magic, pb_write_one): u32 IMG_COMMON_MAGIC (or
  IMG_SERVICE_MAGIC; absent in images v1.0, which pycriu also reads), u32 the image's own
  magic (criu/include/magic.h), then entries, each a u32 length and a protobuf message.
- core_entry (images/core.proto): thread_info 2 -> thread_info_x86 (core-x86.proto):
  gpregs 2 (its mode 28: 1 NATIVE, 2 COMPAT), fpregs 3 -> user_x86_fpregs_entry: cwd 1,
  swd 2, twd 3 (the abridged tag byte), fop 4, rip 5, rdp 6, mxcsr 7, mxcsr_mask 8,
  st_space 9 (32 u32), xmm_space 10 (64 u32), xsave 13 -> user_x86_xsave_entry:
  xstate_bv 1, ymmh_space 2 (64 u32), bndreg_state 3 (8 u64), bndcsr_state 4 (8 u64),
  opmask_reg 5 (8 u64), zmm_upper 6 (64 u64), hi16_zmm 7 (128 u64), pkru 8 (2 u32),
  cet 9 {cet 1, ssp 2}.
- These are per-component copies of the dumping thread's standard-format XSAVE area
  (criu/arch/x86/crtools.c save_task_regs, assign_xsave: each field is written when the
  dumping CPU has the feature, memcpy from its standard offset, sizes checked equal). So
  an image can be rebuilt against any layout, but AMX, APX and any later component are
  simply not there.
- cpuinfo_entry x86_entry 1 -> cpuinfo_x86_entry: vendor_id 1, cpu_family 2, model 3,
  stepping 4, capability_ver 5, capability 6 (repeated u32), model_id 7, xfeatures_mask 8,
  xsave_size 9, xsave_size_max 10 (criu/arch/x86/cpu.c cpu_dump_cpuinfo; the values are
  compel's, compel/arch/x86/src/lib/cpu.c compel_cpuid and compel_fpuid: family and model
  as the kernel computes them from CPUID.1:EAX; the capability words are compel's
  x86_capability, version 2 with 19 words (NCAPINTS_V2; version 1 had 12), word 0
  CPUID.1:EDX, word 4 CPUID.1:ECX, word 10 CPUID.(0xD,1):EAX, ... as enum cpuid_leafs in
  compel's uapi/asm/cpu.h numbers them; xfeatures_mask CPUID.(0xD,0) EDX:EAX less the
  features whose CPUID flag is clear, & XFEATURE_MASK_USER & ~XFEATURE_MASK_SUPERVISOR;
  sizes CPUID.(0xD,0) EBX and ECX).
  XFEATURE_MASK_SUPERVISOR is (XFEATURE_MASK_PT | XFEATURE_HDC) there: HDC's number (10),
  not its mask, so bits 1 (SSE) and 3 (BNDREGS) are cleared too. The mask in cpuinfo.img
  therefore lacks SSE, and CRIU never saves BNDREGS.
- pstree_entry: pid 1, ppid 2, pgid 3, sid 4, threads 5.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from xcr0tool.errors import InputError
from xcr0tool.formats.protobuf import Fields, ProtobufError

IMG_COMMON_MAGIC = 0x54564319
IMG_SERVICE_MAGIC = 0x55105940
CORE_MAGIC = 0x55053847
CPUINFO_MAGIC = 0x61404013
PSTREE_MAGIC = 0x50273030
MAGIC_NAMES = {CORE_MAGIC: "CORE", CPUINFO_MAGIC: "CPUINFO", PSTREE_MAGIC: "PSTREE"}

IMAGE_LIMIT = 16 << 20  # a core image is a few KiB; a pstree of a big container some MiB

# core_entry and below (field numbers)
_CORE_MTYPE, _CORE_THREAD_INFO = 1, 2
_MTYPE_X86_64 = 1
_TI_GPREGS, _TI_FPREGS = 2, 3
_GPREGS_MODE = 28
_MODE_COMPAT = 2
_FP_CWD, _FP_SWD, _FP_TWD, _FP_FOP, _FP_RIP, _FP_RDP = 1, 2, 3, 4, 5, 6
_FP_MXCSR, _FP_MXCSR_MASK, _FP_ST, _FP_XMM, _FP_XSAVE = 7, 8, 9, 10, 13
_XS_XSTATE_BV, _XS_CET = 1, 9
_CET_CET, _CET_SSP = 1, 2

# component -> (field, value width in bits, count): the protobuf fields that hold it, as
# crtools.c's assign_xsave copies them (struct sizes from compel's uapi/asm/fpu.h).
XSAVE_FIELDS: dict[int, tuple[int, str, int, int]] = {
    2: (2, "ymmh_space", 32, 64),
    3: (3, "bndreg_state", 64, 8),
    4: (4, "bndcsr_state", 64, 8),
    5: (5, "opmask_reg", 64, 8),
    6: (6, "zmm_upper", 64, 64),
    7: (7, "hi16_zmm", 64, 128),
    9: (8, "pkru", 32, 2),
}
KEPT_MASK = 0b11 | sum(1 << i for i in XSAVE_FIELDS)  # what a CRIU image can hold

# cpuinfo_x86_entry
_CPUINFO_X86 = 1
_CI_VENDOR, _CI_FAMILY, _CI_MODEL, _CI_STEPPING, _CI_MODEL_ID = 1, 2, 3, 4, 7
_CI_CAPABILITY_VER, _CI_CAPABILITY = 5, 6
_CI_XFEATURES, _CI_XSAVE_SIZE, _CI_XSAVE_SIZE_MAX = 8, 9, 10
VENDORS = {0: "unknown", 1: "GenuineIntel", 2: "AuthenticAMD"}
VENDOR_INTEL, VENDOR_AMD = 1, 2
# img_to_cpuinfo's ncapints[]: how many capability words each capability_ver carries
# (compel's NCAPINTS_V1 and NCAPINTS_V2).
CAPABILITY_WORDS = {1: 12, 2: 19}
# A cpuinfo.img lists at most this many words: CRIU writes 19; more is not CRIU's.
_CAPABILITY_LIMIT = 64

_PSTREE_PID, _PSTREE_THREADS = 1, 5


@dataclass(frozen=True)
class CriuCpuinfo:
    """cpuinfo.img: what CRIU recorded of the dumping CPU (cpuinfo_x86_entry)."""

    xfeatures_mask: int  # as stored: compel's mask, which lacks bits 1 and 3 (module doc)
    xsave_size: int  # CPUID.(0xD,0).EBX of the dumping CPU
    xsave_size_max: int  # CPUID.(0xD,0).ECX
    vendor: str = "unknown"
    family: int = 0
    model: int = 0
    stepping: int = 0
    model_id: str = ""
    # 0 when an old image lacks the field (CRIU then takes this machine's value: cpu.c)
    has_xfeatures: bool = True
    vendor_id: int = 0  # as stored: 1 INTEL, 2 AMD (CRIU writes AMD for any non-Intel)
    capability_ver: int = 0  # 2 since CRIU 3.11 (19 words), 1 before (12 words)
    capability: tuple[int, ...] = ()  # compel's x86_capability words, as stored

    @property
    def xcr0(self) -> int:
        """The XCR0 the dumping kernel ran with, as far as the mask tells: with x87 and SSE,
        and BNDREGS wherever BNDCSR is (the two go together: SDM §13.3)."""
        mask = self.xfeatures_mask | 0b11
        if mask & 0b10000:
            mask |= 0b1000
        return mask


@dataclass(frozen=True)
class CriuThread:
    """One core-TID.img: the thread's x87/SSE legacy area and the extended components
    CRIU saved, each as the bytes of its standard-format space."""

    tid: int
    long_mode: bool  # gpregs.mode is not COMPAT
    legacy: bytes  # 512 bytes: the FXSAVE area (bytes 416-511 zero)
    xstate_bv: int | None  # None: no xsave entry (a CPU without OSXSAVE)
    components: Mapping[int, bytes] = field(default_factory=dict)
    cet: tuple[int, int] | None = None  # (IA32_U_CET, IA32_PL3_SSP) when saved

    @property
    def saved_mask(self) -> int:
        """x87, SSE and the components this image has bytes for."""
        return 0b11 | sum(1 << i for i in self.components)


def read_image(path: str, name: str, magic: int) -> list[tuple[memoryview, int]]:
    """The entries of a CRIU image file: (message bytes, offset in the file)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(IMAGE_LIMIT + 1)
    except OSError as exc:
        raise InputError(name, (exc.strerror or str(exc)).lower()) from None
    if len(data) > IMAGE_LIMIT:
        raise InputError(name, f"over {IMAGE_LIMIT >> 20} MiB: not a CRIU image this tool reads")
    return split_entries(data, name, magic)


def split_entries(data: bytes, name: str, magic: int) -> list[tuple[memoryview, int]]:
    want = MAGIC_NAMES.get(magic, hex(magic))
    if len(data) < 4:
        raise InputError(name, f"{len(data)} bytes: too short for a CRIU image")
    first = int.from_bytes(data[:4], "little")
    pos = 4
    if first in (IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC):
        if len(data) < 8:
            raise InputError(name, "truncated: the image magic is missing")
        first = int.from_bytes(data[4:8], "little")
        pos = 8
    if first != magic:
        seen = MAGIC_NAMES.get(first)
        what = f" ({seen})" if seen else ""
        raise InputError(
            name,
            f"not a CRIU {want} image: magic {first:#010x}{what} at byte {pos - 4},"
            f" expected {magic:#010x}",
        )
    view = memoryview(data)
    entries = []
    while pos < len(data):
        if pos + 4 > len(data):
            raise InputError(name, f"truncated: an entry length at byte {pos}")
        size = int.from_bytes(data[pos : pos + 4], "little")
        if size > len(data) - pos - 4:
            raise InputError(
                name,
                f"truncated: the entry at byte {pos} claims {size} bytes,"
                f" {len(data) - pos - 4} are left",
            )
        entries.append((view[pos + 4 : pos + 4 + size], pos + 4))
        pos += 4 + size
    return entries


def decode_core(data: bytes, name: str, tid: int) -> CriuThread:
    """A core-TID.img's bytes as the thread's FPU state."""
    entries = split_entries(data, name, CORE_MAGIC)
    if len(entries) != 1:
        raise InputError(name, f"{len(entries)} core entries, CRIU writes one")
    message, at = entries[0]
    try:
        return _thread(Fields(message, at), name, tid)
    except ProtobufError as exc:
        raise InputError(name, str(exc)) from None


def _require(fields: Fields | None, what: str, name: str) -> Fields:
    if fields is None:
        raise InputError(name, f"no {what}")
    return fields


def _thread(core: Fields, name: str, tid: int) -> CriuThread:
    mtype = core.scalar(_CORE_MTYPE)
    if mtype != _MTYPE_X86_64:
        raise InputError(name, f"core_entry.mtype is {mtype}, not X86_64 (1): no XSAVE state")
    info = _require(core.message(_CORE_THREAD_INFO), "core_entry.thread_info (x86)", name)
    gpregs = info.message(_TI_GPREGS)
    mode = None if gpregs is None else gpregs.scalar(_GPREGS_MODE)
    fp = _require(info.message(_TI_FPREGS), "thread_info.fpregs: CRIU saved no FPU state", name)
    legacy = bytearray(512)
    for number, offset, size in (
        (_FP_CWD, 0, 2),
        (_FP_SWD, 2, 2),
        (_FP_TWD, 4, 2),
        (_FP_FOP, 6, 2),
        (_FP_RIP, 8, 8),
        (_FP_RDP, 16, 8),
        (_FP_MXCSR, 24, 4),
        (_FP_MXCSR_MASK, 28, 4),
    ):
        value = fp.scalar(number, 0, 8 * size)
        assert value is not None
        legacy[offset : offset + size] = value.to_bytes(size, "little")
    # crtools.c valid_xsave_frame: fewer than 32 / 64 words is "Corruption in FPU ... area".
    for number, label, offset, count in (
        (_FP_ST, "st_space", 32, 32),
        (_FP_XMM, "xmm_space", 160, 64),
    ):
        words = fp.repeated(number, 32)
        if len(words) < count:
            raise InputError(
                name, f"fpregs.{label} has {len(words)} values, CRIU needs {count} (corrupt)"
            )
        packed = b"".join(w.to_bytes(4, "little") for w in words[:count])
        legacy[offset : offset + 4 * count] = packed
    xsave = fp.message(_FP_XSAVE)
    components: dict[int, bytes] = {}
    xstate_bv = None
    cet = None
    if xsave is not None:
        xstate_bv = xsave.scalar(_XS_XSTATE_BV, 0)
        for component, (number, label, bits, count) in XSAVE_FIELDS.items():
            values = xsave.repeated(number, bits)
            if not values:
                continue  # the dumping CPU lacks the feature (restore_fpu: "not present")
            if len(values) != count:
                raise InputError(
                    name,
                    f"xsave.{label} has {len(values)} values, CRIU writes {count}"
                    f" ({count * bits // 8} bytes)",
                )
            components[component] = b"".join(v.to_bytes(bits // 8, "little") for v in values)
        saved_cet = xsave.message(_XS_CET)
        if saved_cet is not None:
            cet = (saved_cet.scalar(_CET_CET, 0) or 0, saved_cet.scalar(_CET_SSP, 0) or 0)
    return CriuThread(tid, mode != _MODE_COMPAT, bytes(legacy), xstate_bv, components, cet)


def decode_cpuinfo(data: bytes, name: str) -> CriuCpuinfo:
    entries = split_entries(data, name, CPUINFO_MAGIC)
    if len(entries) != 1:
        raise InputError(name, f"{len(entries)} cpuinfo entries, CRIU writes one")
    message, at = entries[0]
    try:
        x86 = Fields(message, at).messages(_CPUINFO_X86)
        if len(x86) != 1:
            # criu/arch/x86/cpu.c cpu_validate_cpuinfo refuses the same
            raise InputError(name, f"{len(x86)} x86 entries, CRIU needs exactly one")
        entry = x86[0]
        size = entry.scalar(_CI_XSAVE_SIZE, bits=32)
        size_max = entry.scalar(_CI_XSAVE_SIZE_MAX, bits=32)
        mask = entry.scalar(_CI_XFEATURES)
        if size is None or size_max is None:
            raise InputError(
                name, "no xsave_size or xsave_size_max: an image from before CRIU 3.11"
            )
        return CriuCpuinfo(
            xfeatures_mask=mask or 0,
            xsave_size=size,
            xsave_size_max=size_max,
            vendor=VENDORS.get(entry.scalar(_CI_VENDOR, 0) or 0, "unknown"),
            family=entry.scalar(_CI_FAMILY, 0, 32) or 0,
            model=entry.scalar(_CI_MODEL, 0, 32) or 0,
            stepping=entry.scalar(_CI_STEPPING, 0, 32) or 0,
            model_id=entry.text(_CI_MODEL_ID) or "",
            has_xfeatures=mask is not None,
            vendor_id=entry.scalar(_CI_VENDOR, 0) or 0,
            capability_ver=entry.scalar(_CI_CAPABILITY_VER, 0, 32) or 0,
            capability=_capability_words(entry, name),
        )
    except ProtobufError as exc:
        raise InputError(name, str(exc)) from None


def _capability_words(entry: Fields, name: str) -> tuple[int, ...]:
    words = entry.repeated(_CI_CAPABILITY, 32)
    if len(words) > _CAPABILITY_LIMIT:
        raise InputError(
            name,
            f"{len(words)} capability words; CRIU writes {max(CAPABILITY_WORDS.values())}",
        )
    return tuple(words)


def decode_pstree(data: bytes, name: str) -> dict[int, list[int]]:
    """{pid: its threads} of every process in pstree.img."""
    out: dict[int, list[int]] = {}
    try:
        for message, at in split_entries(data, name, PSTREE_MAGIC):
            entry = Fields(message, at)
            pid = entry.scalar(_PSTREE_PID, 0, 32) or 0
            out[pid] = entry.repeated(_PSTREE_THREADS, 32) or [pid]
    except ProtobufError as exc:
        raise InputError(name, str(exc)) from None
    return out


def standard_image(
    thread: CriuThread, offsets: Mapping[int, int], size: int, xcr0: int
) -> tuple[bytes, list[int]]:
    """The standard-format XSAVE image of the thread, as PTRACE_GETREGSET would give it on
    a machine with these offsets and XCR0 (XCR0 word at byte 464): the image, and the
    components whose XSTATE_BV bit was set but whose bytes CRIU did not keep (cleared)."""
    image = bytearray(size)
    image[:512] = thread.legacy
    image[464:472] = xcr0.to_bytes(8, "little")
    for component, data in thread.components.items():
        if xcr0 >> component & 1:
            at = offsets[component]
            image[at : at + len(data)] = data
    xstate_bv = 0b11 if thread.xstate_bv is None else thread.xstate_bv
    lost = [i for i in range(2, 64) if xstate_bv >> i & 1 and i not in thread.components]
    kept = xstate_bv & xcr0 & (thread.saved_mask)
    image[512:520] = kept.to_bytes(8, "little")
    return bytes(image), lost
