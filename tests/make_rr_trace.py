"""Build rr trace directories and CRIU image directories the way rr and CRIU write them.

rr: the Header and Frame messages are encoded by Cap'n Proto's own tool (`capnp encode
--packed`, Debian package capnproto) from rr's own schema, read in place from
``../shared/formats/rr/rr_trace.capnp`` (or $XCR0TOOL_RR_SCHEMA); frames are built with a
64-word first segment and no growth (`--segment-size=64`), as rr's write_frame starts
them, so frames with XSAVE data have several segments and far pointers. `events` is cut
into brotli blocks of {u32 compressed, u32 uncompressed} headers (CompressedWriter.h),
small enough that frames span blocks.

CRIU: images are written by CRIU's own encoder, `crit encode` (Debian package criu), from
the JSON that `crit decode` prints, filled with a real thread's state.

Nothing here reads an image with xcr0tool: the state put in comes from real cores.
Run as a script to write a small example trace:  python3 tests/make_rr_trace.py DIR
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coremaker import MadeCore

REPO = Path(__file__).resolve().parent.parent
NO_SUBLEAF = 0xFFFFFFFF
TRACE_VERSION = 85


class Unavailable(Exception):
    """A tool or file these builders need is missing; the message says which."""


def rr_schema() -> Path:
    env = os.environ.get("XCR0TOOL_RR_SCHEMA")
    path = Path(env) if env else REPO.parent / "shared" / "formats" / "rr" / "rr_trace.capnp"
    if not path.is_file():
        raise Unavailable(f"rr's schema is not at {path} (set XCR0TOOL_RR_SCHEMA)")
    return path


def require_capnp() -> str:
    tool = shutil.which("capnp")
    if tool is None:
        raise Unavailable("no capnp tool (apt-get install capnproto libcapnp-dev)")
    return tool


def require_crit() -> str:
    tool = shutil.which("crit")
    if tool is None:
        raise Unavailable("no crit, CRIU's image tool (apt-get install criu)")
    return tool


# CPUID ------------------------------------------------------------------------------------
CpuidRecords = list[tuple[int, int, tuple[int, int, int, int]]]  # (leaf, subleaf, regs)


def host_cpuid_records() -> CpuidRecords:
    """This machine's CPUID as rr records it (util.cc gather_cpuid_records): leaves 0 and 1
    without sub-leaf, leaf 7 sub-leaf 0, all 64 sub-leaves of leaf 0xD."""
    sys.path.insert(0, str(REPO))
    from xcr0tool.sources.cpu import cpuid

    records: CpuidRecords = [(0, NO_SUBLEAF, cpuid(0, 0)), (1, NO_SUBLEAF, cpuid(1, 0))]
    records.append((7, 0, cpuid(7, 0)))
    records += [(0xD, sub, cpuid(0xD, sub)) for sub in range(64)]
    return records


_AIDA = re.compile(
    r"^CPUID ([0-9A-F]{8}): ([0-9A-F]{8})-([0-9A-F]{8})-([0-9A-F]{8})-([0-9A-F]{8})"
    r"(?:\s*\[SL ([0-9A-F]+)\])?",
    re.IGNORECASE,
)


def dump_cpuid_records(path: Path) -> CpuidRecords:
    """An AIDA64/InstLatx64 dump's leaves 0, 1 and 0xD (sub-leaves it omits are zero, as
    the CPU returns them) as rr would have recorded them on that machine."""
    found: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _AIDA.match(line.strip())
        if not m:
            continue
        leaf = int(m.group(1), 16)
        sub = int(m.group(6), 16) if m.group(6) else NO_SUBLEAF
        regs = tuple(int(m.group(i), 16) for i in range(2, 6))
        found.setdefault((leaf, sub), regs)  # type: ignore[arg-type]
    records: CpuidRecords = [(leaf, NO_SUBLEAF, found[(leaf, NO_SUBLEAF)]) for leaf in (0, 1)]
    records += [(0xD, sub, found.get((0xD, sub), (0, 0, 0, 0))) for sub in range(64)]
    return records


def leaf_0d(records: CpuidRecords) -> dict[int, tuple[int, int, int, int]]:
    return {sub: regs for leaf, sub, regs in records if leaf == 0xD}


# Cap'n Proto text ---------------------------------------------------------------------------
def _data(raw: bytes) -> str:
    return f'0x"{raw.hex()}"'


def header_text(records: CpuidRecords, xcr0: int, *, faulting: bool = False) -> str:
    raw = b"".join(
        b"".join(v.to_bytes(4, "little") for v in (leaf, sub, *regs)) for leaf, sub, regs in records
    )
    return (
        f"(uuid = {_data(bytes(range(16)))}, bindToCpu = -1, syscallbufProtocolVersion = 0,"
        f" requiredForwardCompatibilityVersion = 0, nativeArch = x8664,"
        f" x86 = (hasCpuidFaulting = {str(faulting).lower()}, cpuidRecords = {_data(raw)},"
        f" xcr0 = {xcr0}), uname = (sysname = {_data(b'Linux')}))"
    )


@dataclass
class FrameSpec:
    tid: int
    xsave: bytes | None = None
    event: str = "sched = void"
    arch: str = "x8664"
    mem_writes: int = 0  # MemWrite records, to grow the frame past its first segment
    ticks: int = 1000


def frame_text(frame: FrameSpec) -> str:
    parts = [f"tid = {frame.tid}", f"ticks = {frame.ticks}", "monotonicSec = 1.5"]
    parts.append(f"arch = {frame.arch}")
    parts.append(f"registers = (raw = {_data(bytes(range(216)))})")
    if frame.xsave is not None:
        parts.append(f"extraRegisters = (raw = {_data(frame.xsave)})")
    if frame.mem_writes:
        writes = ", ".join(
            f"(tid = {frame.tid}, addr = {0x10000 + 64 * i}, size = 64,"
            f" holes = [(offset = 8, size = 8)])"
            for i in range(frame.mem_writes)
        )
        parts.append(f"memWrites = [{writes}]")
    parts.append(f"event = ({frame.event})")
    return "(" + ", ".join(parts) + ")"


SIGNAL_EVENT = (
    'signal = (siginfoArch = x8664, siginfo = 0x"0b000000", deterministic = false,'
    " disposition = userHandler)"
)
EXECVE_EVENT = "syscall = (arch = x8664, number = 59, state = exiting)"


def capnp_encode(type_name: str, texts: list[str], segment_size: int | None = None) -> bytes:
    """Packed messages, one per text, by capnp's own encoder from rr's schema."""
    tool = require_capnp()
    schema = rr_schema()
    cmd = [tool, "encode", "--packed", str(schema), type_name]
    if segment_size is not None:
        cmd.insert(3, f"--segment-size={segment_size}")
    proc = subprocess.run(
        cmd, input="\n".join(texts).encode(), capture_output=True, check=False, timeout=300
    )
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace")
        if "Import failed" in message:
            raise Unavailable(f"capnp cannot import what rr's schema needs: {message.strip()}")
        raise RuntimeError(f"capnp encode failed: {message[-2000:]}")
    return proc.stdout


# Trace directories ---------------------------------------------------------------------------
def brotli_blocks(data: bytes, block_size: int) -> bytes:
    """data cut every block_size bytes (as rr's CompressedWriter cuts them), each block
    compressed on its own behind {u32 compressed_length, u32 uncompressed_length}."""
    import brotli

    out = bytearray()
    for at in range(0, len(data), block_size):
        chunk = data[at : at + block_size]
        packed = brotli.compress(chunk, quality=5)
        out += len(packed).to_bytes(4, "little") + len(chunk).to_bytes(4, "little") + packed
    return bytes(out)


def block_header(compressed: int, uncompressed: int) -> bytes:
    return compressed.to_bytes(4, "little") + uncompressed.to_bytes(4, "little")


@dataclass
class Trace:
    path: Path
    frames: list[FrameSpec] = field(default_factory=list)
    packed_events: bytes = b""  # before compression


def write_trace(
    dest: Path,
    records: CpuidRecords,
    xcr0: int,
    frames: list[FrameSpec],
    *,
    block_size: int = 4096,
    segment_size: int | None = 64,
    version: int = TRACE_VERSION,
) -> Trace:
    """A trace directory: `version` and `events` (rr also writes mmaps, tasks, data and
    more, which a reader of XSAVE state never opens; empty ones are left as markers)."""
    dest.mkdir(parents=True, exist_ok=True)
    header = capnp_encode("Header", [header_text(records, xcr0)])
    (dest / "version").write_bytes(f"{version}\n".encode() + header)
    packed = capnp_encode("Frame", [frame_text(f) for f in frames], segment_size)
    (dest / "events").write_bytes(brotli_blocks(packed, block_size))
    for other in ("data", "mmaps", "tasks"):
        (dest / other).write_bytes(b"")
    return Trace(dest, frames, packed)


def write_repeated_events(path: Path, unit: bytes, copies: int) -> None:
    """An events file of `copies` times the packed frames of `unit`, in 1 MiB brotli
    blocks (rr's own block size), made block by block: big traces cost little to make."""
    import brotli

    with open(path, "wb") as out:
        block = bytearray()
        for _ in range(copies):
            block += unit
            while len(block) >= 1 << 20:
                chunk = bytes(block[: 1 << 20])
                del block[: 1 << 20]
                packed = brotli.compress(chunk, quality=1)
                out.write(block_header(len(packed), len(chunk)) + packed)
        if block:
            packed = brotli.compress(bytes(block), quality=1)
            out.write(block_header(len(packed), len(block)) + packed)


def xsave_image(size: int, xcr0: int = 3, in_use: int = 3) -> bytes:
    """A standard-form image of `size` bytes: x87 and SSE registers set, XSTATE_BV
    `in_use`, the kernel's XCR0 word `xcr0`."""
    image = bytearray(size)
    image[0:2] = (0x37F).to_bytes(2, "little")
    image[24:28] = (0x1F80).to_bytes(4, "little")
    image[32:416] = bytes(range(256)) + bytes(range(128))
    image[464:472] = xcr0.to_bytes(8, "little")
    image[512:520] = in_use.to_bytes(8, "little")
    return bytes(image)


def write_signal_trace(dest: Path, records: CpuidRecords, frames: int) -> int:
    """A trace of `frames` signal frames, each with an XSAVE image of this CPU's standard
    size (after an execve frame, each with memory writes), as bench/bench_rr.py --whole
    measures them. Returns the image size."""
    eax, size, _ecx, edx = leaf_0d(records)[0]
    xcr0 = (eax | edx << 32) & 0xE02FF  # what Linux sets here
    image = xsave_image(size, xcr0, xcr0 & 0xE7)  # AVX-512 in use where there is some
    specs = [
        FrameSpec(100, None, EXECVE_EVENT, mem_writes=3),
        FrameSpec(100, image, SIGNAL_EVENT, mem_writes=2),
    ]
    unit = capnp_encode("Frame", [frame_text(s) for s in specs], 64)
    dest.mkdir(parents=True, exist_ok=True)
    header = capnp_encode("Header", [header_text(records, xcr0)])
    (dest / "version").write_bytes(f"{TRACE_VERSION}\n".encode() + header)
    write_repeated_events(dest / "events", unit, frames)
    return size


def relocate(
    image: bytes,
    src: dict[int, tuple[int, int]],
    dst: dict[int, tuple[int, int]],
    dst_xcr0: int,
    dst_size: int,
) -> bytes:
    """A standard-format image moved to another machine's offsets, as that machine's
    kernel would have saved the same state: components of both XCR0s move, others are
    dropped, XSTATE_BV is cut to the new XCR0 and byte 464 holds it. Written here, from
    the offsets alone, so that the test does not trust xcr0tool's own convert."""
    out = bytearray(dst_size)
    out[:512] = image[:512]
    out[464:472] = dst_xcr0.to_bytes(8, "little")
    xstate_bv = int.from_bytes(image[512:520], "little") & dst_xcr0
    out[512:520] = xstate_bv.to_bytes(8, "little")
    for component, (size, offset) in src.items():
        if component in dst and dst_xcr0 >> component & 1:
            new_size, new_offset = dst[component]
            assert new_size == size
            out[new_offset : new_offset + size] = image[offset : offset + size]
    return bytes(out)


def offsets_from_leaf(table: dict[int, tuple[int, int, int, int]]) -> dict[int, tuple[int, int]]:
    """{component: (size, standard offset)} of the user components in a leaf 0xD table."""
    return {
        sub: (regs[0], regs[1])
        for sub, regs in table.items()
        if sub >= 2 and regs[0] and not regs[2] & 1
    }


# Real cores' state --------------------------------------------------------------------------
@dataclass
class CoreState:
    made: MadeCore
    xstate: dict[int, bytes]  # tid -> NT_X86_XSTATE
    offsets: dict[int, tuple[int, int]]  # component -> (size, offset), the core's own layout

    @property
    def xcr0(self) -> int:
        return int.from_bytes(next(iter(self.xstate.values()))[464:472], "little")


def core_state(made: MadeCore) -> CoreState:
    """Each thread's NT_X86_XSTATE and the core's layout, read without xcr0tool."""
    from coremaker import (
        NT_PRSTATUS,
        NT_X86_XSAVE_LAYOUT,
        NT_X86_XSTATE,
        read_notes,
        xsave_layout_records,
    )

    xstate: dict[int, bytes] = {}
    tid = None
    layout = None
    for note in read_notes(made.core):
        if note.name == "CORE" and note.type == NT_PRSTATUS:
            tid = int.from_bytes(note.desc[32:36], "little")
        elif note.name == "LINUX" and note.type == NT_X86_XSTATE and tid is not None:
            xstate[tid] = note.desc
        elif note.name == "LINUX" and note.type == NT_X86_XSAVE_LAYOUT:
            layout = xsave_layout_records(note.desc)
    if layout is None:  # kernels before 6.12: this machine's CPUID is the writer's
        layout = offsets_from_leaf(leaf_0d(host_cpuid_records()))
    return CoreState(made, xstate, layout)


# CRIU ----------------------------------------------------------------------------------------
def frames_for(state: CoreState, images: dict[int, bytes] | None = None) -> list[FrameSpec]:
    """For each thread: a syscall frame without XSAVE (with enough memory writes to spill
    past its first segment), then a signal frame with the thread's image."""
    frames = []
    for tid, image in (images or state.xstate).items():
        frames.append(FrameSpec(tid, None, EXECVE_EVENT, mem_writes=40))
        frames.append(FrameSpec(tid, image, SIGNAL_EVENT, mem_writes=12))
    return frames


def _words(data: bytes, size: int) -> list[int]:
    return [int.from_bytes(data[i : i + size], "little") for i in range(0, len(data), size)]


# component -> (crit JSON field, value size): criu/arch/x86/crtools.c assign_xsave
CRIU_FIELDS = {
    2: ("ymmh_space", 4),
    3: ("bndreg_state", 8),
    4: ("bndcsr_state", 8),
    5: ("opmask_reg", 8),
    6: ("zmm_upper", 8),
    7: ("hi16_zmm", 8),
    9: ("pkru", 4),
}
_GPREGS = [
    "r15",
    "r14",
    "r13",
    "r12",
    "bp",
    "bx",
    "r11",
    "r10",
    "r9",
    "r8",
    "ax",
    "cx",
    "dx",
    "si",
    "di",
    "orig_ax",
    "ip",
    "cs",
    "flags",
    "sp",
    "ss",
    "fs_base",
    "gs_base",
    "ds",
    "es",
    "fs",
    "gs",
]


def criu_core_json(image: bytes, offsets: dict[int, tuple[int, int]], xcr0: int) -> dict:
    """The core_entry crit decode prints for a thread whose PTRACE_GETREGSET image is
    `image` on a machine with these offsets and XCR0: crtools.c save_task_regs copies
    the FXSAVE fields and, for each feature of the CPU, the bytes at its offset.

    BNDREGS is never saved: compel clears bit 3 from its feature mask (criu.py's doc)."""
    u16 = lambda at: int.from_bytes(image[at : at + 2], "little")  # noqa: E731
    fpregs: dict[str, object] = {
        "cwd": u16(0),
        "swd": u16(2),
        "twd": u16(4),
        "fop": u16(6),
        "rip": int.from_bytes(image[8:16], "little"),
        "rdp": int.from_bytes(image[16:24], "little"),
        "mxcsr": int.from_bytes(image[24:28], "little"),
        "mxcsr_mask": int.from_bytes(image[28:32], "little"),
        "st_space": _words(image[32:160], 4),
        "xmm_space": _words(image[160:416], 4),
    }
    xsave: dict[str, object] = {"xstate_bv": int.from_bytes(image[512:520], "little")}
    for component, (name, size) in CRIU_FIELDS.items():
        if component == 3 or not xcr0 >> component & 1 or component not in offsets:
            continue
        length, offset = offsets[component]
        xsave[name] = _words(image[offset : offset + length], size)
    fpregs["xsave"] = xsave
    gpregs: dict[str, object] = dict.fromkeys(_GPREGS, "0x0")
    gpregs["mode"] = "NATIVE"
    return {
        "mtype": "X86_64",
        "thread_info": {"clear_tid_addr": "0x0", "gpregs": gpregs, "fpregs": fpregs},
    }


def crit_encode(data: dict, out: Path) -> None:
    tool = require_crit()
    src = out.with_suffix(".json")
    src.write_text(json.dumps(data))
    proc = subprocess.run(
        [tool, "encode", "-i", str(src), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    src.unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"crit encode failed: {proc.stderr[-2000:]}")


def write_criu_dir(
    dest: Path,
    threads: dict[int, bytes],
    offsets: dict[int, tuple[int, int]],
    xcr0: int,
    sizes: tuple[int, int] | None,
    *,
    vendor: str = "INTEL",
    cpuinfo: dict | None = None,
) -> Path:
    """core-TID.img for each thread, pstree.img, and cpuinfo.img when `sizes`
    (xsave_size, xsave_size_max) is given: xfeatures_mask as compel computes it, the
    other fields made up (19 zero capability words, the count CRIU's img_to_cpuinfo
    wants); or `cpuinfo`, a whole cpuinfo_x86_entry (compat_reference.cpu_dump_cpuinfo)."""
    dest.mkdir(parents=True, exist_ok=True)
    for tid, image in threads.items():
        crit_encode(
            {"magic": "CORE", "entries": [criu_core_json(image, offsets, xcr0)]},
            dest / f"core-{tid}.img",
        )
    tids = sorted(threads)
    crit_encode(
        {
            "magic": "PSTREE",
            "entries": [
                {"pid": tids[0], "ppid": 0, "pgid": tids[0], "sid": tids[0], "threads": tids}
            ],
        },
        dest / "pstree.img",
    )
    if cpuinfo is not None:
        crit_encode(
            {"magic": "CPUINFO", "entries": [{"x86_entry": [cpuinfo]}]}, dest / "cpuinfo.img"
        )
    elif sizes is not None:
        mask = xcr0 & 0x2FF & ~0x10A  # compel: XFEATURE_MASK_USER, ~(PT | XFEATURE_HDC)
        entry = {
            "vendor_id": vendor,
            "cpu_family": 6,
            "model": 143,
            "stepping": 8,
            "capability_ver": 2,
            "capability": [0] * 19,
            "model_id": "test CPU",
            "xfeatures_mask": mask,
            "xsave_size": sizes[0],
            "xsave_size_max": sizes[1],
        }
        crit_encode({"magic": "CPUINFO", "entries": [{"x86_entry": [entry]}]}, dest / "cpuinfo.img")
    return dest


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "example.rr-trace")
    recs = host_cpuid_records()
    sub0 = leaf_0d(recs)[0]
    size = sub0[1]
    image = bytearray(size)
    image[0:2] = (0x37F).to_bytes(2, "little")
    image[24:28] = (0x1F80).to_bytes(4, "little")
    image[464:472] = (sub0[0] | sub0[3] << 32).to_bytes(8, "little")
    image[512:520] = (3).to_bytes(8, "little")
    specs = [FrameSpec(100), FrameSpec(100, bytes(image), SIGNAL_EVENT, mem_writes=20)]
    write_trace(target, recs, 0, specs)
    print(target)
