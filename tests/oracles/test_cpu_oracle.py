"""The CPU oracle checked against itself, the Intel SDM and the kernel.

Every fact other tests take from ``cpu_oracle`` is pinned here, each with a control
that would show a broken helper: an image that must not fault next to each one that
must, a buffer pre-filled with 0xAA to see which bytes an instruction really writes.
Only what the SDM guarantees is asserted; what varies between CPUs is left to the
oracle's callers.
"""

from __future__ import annotations

import ctypes
import errno
import random
import struct
from typing import TYPE_CHECKING

import pytest
from cpu_oracle import ALL_ONES, XCOMP_COMPACTED, OracleError, get_oracle

if TYPE_CHECKING:
    from cpu_oracle import CpuOracle

pytestmark = pytest.mark.cpu

XSTATE_BV = 512
XCOMP_BV = 520
FILL = 0xAA
FILL64 = int.from_bytes(bytes([FILL]) * 8, "little")
X87 = 1 << 0
SSE = 1 << 1
AVX = 1 << 2
PKRU = 1 << 9
AMX = (1 << 17) | (1 << 18)
# Components whose registers may hold any bytes without changing how the helper
# itself runs (unlike PKRU, MPX bounds configuration, AMX tile configuration):
# YMM_Hi128, opmask, ZMM_Hi256, Hi16_ZMM.
PLAIN_COMPONENTS = (2, 5, 6, 7)
# Byte ranges of the legacy region: the x87 state, MXCSR + MXCSR_MASK, XMM0-15.
X87_RANGES = ((0, 24), (32, 160))
MXCSR_RANGE = (24, 32)
XMM_RANGE = (160, 416)


def u16(b: bytes | bytearray, off: int) -> int:
    return int(struct.unpack_from("<H", b, off)[0])


def u32(b: bytes | bytearray, off: int) -> int:
    return int(struct.unpack_from("<I", b, off)[0])


def u64(b: bytes | bytearray, off: int) -> int:
    return int(struct.unpack_from("<Q", b, off)[0])


def put64(b: bytearray, off: int, value: int) -> None:
    struct.pack_into("<Q", b, off, value)


def bits(mask: int) -> list[int]:
    return [i for i in range(64) if mask >> i & 1]


def lowest_clear_bit(mask: int, start: int = 0) -> int:
    i = start
    while mask >> i & 1:
        i += 1
    return i


def init_image(o: CpuOracle, mxcsr: int = 0x1F80) -> bytes:
    """A standard image with every component in its init state (XSTATE_BV = 0).

    MXCSR is set because the standard form of XRSTOR loads it whenever RFBM[1] or
    RFBM[2] is set, whatever XSTATE_BV says.
    """
    img = bytearray(o.standard_size)
    struct.pack_into("<I", img, 24, mxcsr)
    return bytes(img)


def plain_components(o: CpuOracle) -> list[int]:
    return [i for i in PLAIN_COMPONENTS if o.xcr0 >> i & 1]


def loaded_image(o: CpuOracle, seed: int) -> bytes:
    """A CPU-made standard image with random x87 registers, XMM registers and plain
    extended components, all marked in use in XSTATE_BV."""
    rng = random.Random(seed)
    img = bytearray(o.xsave())
    for k in range(8):  # ST0-7: random normal extended-precision numbers
        mantissa = rng.getrandbits(63) | 1 << 63
        exponent = rng.randrange(1, 0x7FFF) | rng.getrandbits(1) << 15
        struct.pack_into("<QH", img, 32 + 16 * k, mantissa, exponent)
    img[4] = 0xFF  # abridged FTW: all eight registers valid
    img[XMM_RANGE[0] : XMM_RANGE[1]] = rng.randbytes(XMM_RANGE[1] - XMM_RANGE[0])
    xstate_bv = u64(img, XSTATE_BV) | X87 | SSE
    for i in plain_components(o):
        off, size = o.standard_offset(i), o.component_size(i)
        img[off : off + size] = rng.randbytes(size)
        xstate_bv |= 1 << i
    put64(img, XSTATE_BV, xstate_bv)
    return bytes(img)


def untouched(buf: bytes, start: int, end: int, fill: int = FILL) -> bool:
    return buf[start:end] == bytes([fill]) * (end - start)


# ----- what the oracle says about this CPU -----------------------------------------------


def test_xcr0_is_sane_and_enumerated(cpu_oracle: CpuOracle) -> None:
    o = cpu_oracle
    eax, _, _, edx = o.leaf_0d[0]
    supported = edx << 32 | eax
    assert o.xcr0 & X87, "XCR0[0] is always 1"
    assert o.xcr0 & ~supported == 0, "XCR0 enables only components CPUID.(0xD,0) lists"
    assert not (o.xcr0 & AVX and not o.xcr0 & SSE), "AVX needs SSE in XCR0"
    for i in bits(o.xcr0):
        if i >= 2:
            size, offset, ecx, _ = o.leaf_0d[i]
            assert size > 0 and offset >= 576, f"user component {i}"
            assert not ecx & 1, f"component {i} in XCR0 is a user component"


def test_xcr0_matches_the_kernel(cpu_oracle: CpuOracle) -> None:
    """XGETBV(0) in the helper equals what Linux says it put in XCR0.

    arch_prctl(ARCH_GET_XCOMP_SUPP) (Linux 5.16+; 0x1021 in asm/prctl.h) returns
    fpu_user_cfg.max_features | legacy_features: the kernel's user features, the user
    part of the value it writes to XCR0, AMX tile data included. (0x1022 is
    ARCH_GET_XCOMP_PERM, the process's permitted features: without tile data until
    ARCH_REQ_XCOMP_PERM asks for it.)
    """
    libc = ctypes.CDLL(None, use_errno=True)
    value = ctypes.c_uint64(0)
    sys_arch_prctl, arch_get_xcomp_supp = 158, 0x1021
    if libc.syscall(sys_arch_prctl, arch_get_xcomp_supp, ctypes.byref(value)) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS):
            pytest.skip("kernel without ARCH_GET_XCOMP_SUPP (Linux < 5.16)")
        raise OSError(err, "arch_prctl(ARCH_GET_XCOMP_SUPP)")
    assert value.value == cpu_oracle.xcr0 | X87 | SSE


def test_xinuse_is_within_xcr0(cpu_oracle: CpuOracle) -> None:
    if cpu_oracle.xinuse is None:
        pytest.skip("this CPU has no XGETBV with ECX = 1")
    assert cpu_oracle.xinuse & ~cpu_oracle.xcr0 == 0


def test_mxcsr_mask(cpu_oracle: CpuOracle) -> None:
    o = cpu_oracle
    # 0xFFBF is the mask of CPUs without DAZ; all others add bit 6.
    assert o.mxcsr_mask & 0xFFBF == 0xFFBF
    assert o.mxcsr_mask >> 32 == 0
    # XSAVE writes the same MXCSR_MASK as FXSAVE (the raw one: 0 on old CPUs).
    assert u32(o.xsave(), 28) == o.info["mxcsr_mask_raw"]


def test_standard_size_is_cpuid(cpu_oracle: CpuOracle) -> None:
    o = cpu_oracle
    ends = [o.standard_offset(i) + o.component_size(i) for i in bits(o.xcr0) if i >= 2]
    assert o.standard_size == max([576, *ends])
    assert o.leaf_0d[0][2] >= o.standard_size  # ECX: size for every supported component
    assert len(o.xsave()) == o.standard_size
    assert len(o.xrstor_then_xsave(o.xsave()) or b"") == o.standard_size


def _save_masks(o: CpuOracle) -> list[int | None]:
    masks: list[int | None] = [None, 0, X87, SSE, X87 | SSE]
    for i in bits(o.xcr0):
        masks += [1 << i, o.xcr0 & ~(1 << i)]
    return masks


def test_xsavec_size_and_xcomp_bv(cpu_oracle: CpuOracle) -> None:
    """XSAVEC: XCOMP_BV = (mask & XCR0) | bit 63, and the compacted size computed from
    CPUID is the size (the helper also checks that nothing is written past it)."""
    o = cpu_oracle
    for mask in _save_masks(o):
        rfbm = o.xcr0 & (ALL_ONES if mask is None else mask)
        image = o.xsavec(mask)
        assert u64(image, XCOMP_BV) == rfbm | XCOMP_COMPACTED, f"mask {mask}"
        assert u64(image, XSTATE_BV) & ~rfbm == 0, f"mask {mask}"
        assert len(image) == o.compacted_size(rfbm), f"mask {mask}"
    # CPUID.(0xD,1).EBX is the size XSAVES needs for XCR0 | IA32_XSS.
    assert o.compacted_size(o.xcr0) <= o.leaf_0d[1][1]


# ----- the CPU's own images ------------------------------------------------------------------


def test_xsave_snapshot(cpu_oracle: CpuOracle) -> None:
    o = cpu_oracle
    image = o.xsave()
    assert u64(image, XCOMP_BV) == 0
    assert u64(image, XSTATE_BV) & ~o.xcr0 == 0
    assert image[528:576] == bytes(48)
    # XCOMP_BV is 0 only because the buffer was: XSAVE writes no header byte but
    # XSTATE_BV, and of XSTATE_BV only the bits of RFBM; nor bytes 464-511.
    filled = o.xsave(fill=FILL)
    assert untouched(filled, 464, 512)
    assert untouched(filled, 520, 576)
    assert u64(filled, XSTATE_BV) & ~o.xcr0 == FILL64 & ~o.xcr0


def test_xsavec_snapshot(cpu_oracle: CpuOracle) -> None:
    o = cpu_oracle
    image = o.xsavec()
    assert u64(image, XCOMP_BV) == o.xcr0 | XCOMP_COMPACTED
    assert u64(image, XSTATE_BV) & ~o.xcr0 == 0
    # XSAVEC writes all of XSTATE_BV and XCOMP_BV, and no other header byte.
    filled = o.xsavec(fill=FILL)
    assert u64(filled, XCOMP_BV) == o.xcr0 | XCOMP_COMPACTED
    assert u64(filled, XSTATE_BV) & ~o.xcr0 == 0
    assert untouched(filled, 464, 512)
    assert untouched(filled, 528, 576)


# ----- when XRSTOR faults --------------------------------------------------------------------


def test_cpu_images_do_not_fault(cpu_oracle: CpuOracle) -> None:
    o = cpu_oracle
    for rfbm in (None, 0, X87, SSE, AVX, o.xcr0):
        assert not o.xrstor_faults(o.xsave(), rfbm)
        assert not o.xrstor_faults(init_image(o), rfbm)
        if o.has_xsavec:
            assert not o.xrstor_faults(o.xsavec(), rfbm)
    # Shorter input is zero-padded: all-zero is a valid standard image (MXCSR 0 is legal).
    assert not o.xrstor_faults(b"")


@pytest.mark.parametrize("value", [0x01, 0x40])
@pytest.mark.parametrize("offset", range(520, 536))
def test_standard_form_checks_header_bytes_520_to_535(
    cpu_oracle: CpuOracle, offset: int, value: int
) -> None:
    image = bytearray(cpu_oracle.xsave())
    image[offset] = value  # never bit 63 of XCOMP_BV: the image stays standard form
    assert cpu_oracle.xrstor_faults(bytes(image))


@pytest.mark.parametrize("offset", range(536, 576))
def test_standard_form_ignores_header_bytes_536_to_575(cpu_oracle: CpuOracle, offset: int) -> None:
    original = cpu_oracle.xsave()
    image = bytearray(original)
    image[offset] = 0xFF
    assert not cpu_oracle.xrstor_faults(bytes(image))
    restored = cpu_oracle.xrstor_then_xsave(bytes(image))
    assert restored is not None and restored[:464] == original[:464]


@pytest.mark.parametrize("offset", range(528, 576))
def test_compacted_form_checks_header_bytes_528_to_575(cpu_oracle: CpuOracle, offset: int) -> None:
    image = bytearray(cpu_oracle.xsavec())
    assert not cpu_oracle.xrstor_faults(bytes(image))
    image[offset] = 0x01
    assert cpu_oracle.xrstor_faults(bytes(image))


def test_xstate_bv_outside_xcr0_faults(cpu_oracle: CpuOracle) -> None:
    o = cpu_oracle
    for bit in {lowest_clear_bit(o.xcr0, 2), 62, 63}:
        image = bytearray(o.xsave())
        put64(image, XSTATE_BV, u64(image, XSTATE_BV) | 1 << bit)
        # Checked against XCR0, not RFBM: it faults whatever is restored.
        for rfbm in (None, X87, 0):
            assert o.xrstor_faults(bytes(image), rfbm), f"bit {bit}, rfbm {rfbm}"
    # Control: a bit in XCR0 but outside RFBM is fine.
    image = bytearray(o.xsave())
    put64(image, XSTATE_BV, u64(image, XSTATE_BV) | SSE)
    assert not o.xrstor_faults(bytes(image), X87)


def test_compacted_xcomp_bv_outside_xcr0_faults(cpu_oracle: CpuOracle) -> None:
    o = cpu_oracle
    base = o.xsavec()
    for bit in {lowest_clear_bit(o.xcr0, 2), 62}:
        image = bytearray(base)
        put64(image, XCOMP_BV, u64(image, XCOMP_BV) | 1 << bit)
        assert o.xrstor_faults(bytes(image)), f"bit {bit}"


def test_compacted_xstate_bv_outside_xcomp_bv_faults(cpu_oracle: CpuOracle) -> None:
    o = cpu_oracle
    image = bytearray(o.xsavec(X87 | SSE))
    put64(image, XSTATE_BV, X87 | SSE)
    assert not o.xrstor_faults(bytes(image))
    # Bits 0 and 1 count too: XCOMP_BV must have them when XSTATE_BV does.
    for xcomp_bv in (X87, SSE, 0):
        put64(image, XCOMP_BV, XCOMP_COMPACTED | xcomp_bv)
        assert o.xrstor_faults(bytes(image)), f"XCOMP_BV {xcomp_bv:#x}"
    if o.xcr0 & AVX:
        image = bytearray(o.xsavec(X87 | SSE))
        put64(image, XSTATE_BV, AVX)
        assert o.xrstor_faults(bytes(image))
        put64(image, XSTATE_BV, 0)
        assert not o.xrstor_faults(bytes(image))


def _reserved_mxcsr_bits(o: CpuOracle) -> list[int]:
    """The lowest MXCSR bit outside MXCSR_MASK, and bit 31."""
    return sorted({1 << lowest_clear_bit(o.mxcsr_mask), 1 << 31})


def test_mxcsr_reserved_bit_standard_form(cpu_oracle: CpuOracle) -> None:
    """Standard form: MXCSR is loaded (and checked) when RFBM[1] or RFBM[2] is set,
    whatever XSTATE_BV says."""
    o = cpu_oracle
    masks = [m for m in (X87, SSE, AVX, SSE | AVX, X87 | SSE, o.xcr0) if m & o.xcr0 == m]
    for bad in _reserved_mxcsr_bits(o):
        for xstate_bv in (o.xcr0, o.xcr0 & ~(SSE | AVX), 0):
            image = bytearray(o.xsave())
            put64(image, XSTATE_BV, xstate_bv)
            struct.pack_into("<I", image, 24, 0x1F80 | bad)
            for rfbm in masks:
                expected = bool(rfbm & (SSE | AVX))
                got = o.xrstor_faults(bytes(image), rfbm)
                assert got == expected, f"MXCSR bit {bad:#x} XSTATE_BV {xstate_bv:#x} {rfbm:#x}"


def test_mxcsr_reserved_bit_compacted_form(cpu_oracle: CpuOracle) -> None:
    """Compacted form: MXCSR is loaded only when RFBM[1] and XSTATE_BV[1] are set."""
    o = cpu_oracle
    masks = [m for m in (X87, SSE, AVX, SSE | AVX, o.xcr0) if m & o.xcr0 == m]
    for bad in _reserved_mxcsr_bits(o):
        for xstate_bv in (SSE, AVX, SSE | AVX, 0):
            if xstate_bv & ~o.xcr0:
                continue
            image = bytearray(o.xsavec())
            put64(image, XSTATE_BV, xstate_bv)
            struct.pack_into("<I", image, 24, 0x1F80 | bad)
            for rfbm in masks:
                expected = bool(rfbm & xstate_bv & SSE)
                got = o.xrstor_faults(bytes(image), rfbm)
                assert got == expected, f"MXCSR bit {bad:#x} XSTATE_BV {xstate_bv:#x} {rfbm:#x}"


def test_pkru_denying_pkey0(cpu_oracle: CpuOracle) -> None:
    """An image whose PKRU denies pkey 0 (all of the helper's memory): XRSTOR alone takes
    it and the helper lives on (it puts its own PKRU back before touching memory), so the
    verdict is the CPU's; a save after it is refused rather than mistaken for a fault."""
    o = cpu_oracle
    if not o.xcr0 & PKRU:
        pytest.skip(f"XCR0 {o.xcr0:#x} has no PKRU (bit 9): no protection keys to load")
    image = bytearray(o.xsave())
    put64(image, XSTATE_BV, u64(image, XSTATE_BV) | PKRU)
    struct.pack_into("<I", image, o.standard_offset(9), 0)
    assert o.xrstor_then_xsave(bytes(image)) is not None
    struct.pack_into("<I", image, o.standard_offset(9), 0x3)
    assert not o.xrstor_faults(bytes(image))
    with pytest.raises(OracleError, match="PKRU"):
        o.xrstor_then_xsave(bytes(image))
    # and XRSTOR's own faults still show through
    image[520] = 1  # XCOMP_BV bit 0 in a standard image: #GP
    assert o.xrstor_faults(bytes(image))


# ----- round trips ---------------------------------------------------------------------------


def test_round_trip_of_cpu_image(cpu_oracle: CpuOracle) -> None:
    o = cpu_oracle
    image = o.xsave()
    back = o.xrstor_then_xsave(image)
    assert back is not None
    assert back[:464] == image[:464] and back[512:] == image[512:]
    if o.has_xsavec:
        compacted = o.xsavec()
        assert o.xrstor_then_xsavec(compacted) == compacted


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_round_trip_of_loaded_registers(cpu_oracle: CpuOracle, seed: int) -> None:
    o = cpu_oracle
    image = loaded_image(o, seed)
    back = o.xrstor_then_xsave(image)
    assert back is not None
    for k in range(8):
        off = 32 + 16 * k
        assert back[off : off + 10] == image[off : off + 10], f"ST{k}"
    assert back[4] == 0xFF
    assert back[XMM_RANGE[0] : XMM_RANGE[1]] == image[XMM_RANGE[0] : XMM_RANGE[1]]
    assert u32(back, 24) == u32(image, 24)
    for i in plain_components(o):
        off, size = o.standard_offset(i), o.component_size(i)
        assert back[off : off + size] == image[off : off + size], f"component {i}"
    # Not in the init configuration, so XSTATE_BV must say "in use".
    loaded = X87 | SSE | sum(1 << i for i in plain_components(o))
    assert u64(back, XSTATE_BV) & loaded == loaded
    # Restoring only some components leaves the others as the helper had them.
    partial = o.xrstor_then_xsave(image, X87)
    assert partial is not None
    assert partial[32:160] == image[32:160]
    assert partial[XMM_RANGE[0] : XMM_RANGE[1]] != image[XMM_RANGE[0] : XMM_RANGE[1]]


def test_compacted_offsets_match_the_cpu(cpu_oracle: CpuOracle) -> None:
    """Standard image in, XSAVEC out: each component lands at compacted_offsets();
    and back: XRSTOR of the compacted image, XSAVE gives the standard bytes."""
    o = cpu_oracle
    if not o.has_xsavec:
        pytest.skip("this CPU has no XSAVEC")
    image = loaded_image(o, 7)
    plain = plain_components(o)
    masks = [o.xcr0] + [o.xcr0 & ~(1 << i) for i in plain]
    for mask in masks:
        compacted = o.xrstor_then_xsavec(image, None, mask)
        assert compacted is not None
        offsets = o.compacted_offsets(mask)
        for i in plain:
            if mask >> i & 1:
                size = o.component_size(i)
                src, dst = o.standard_offset(i), offsets[i]
                assert compacted[dst : dst + size] == image[src : src + size], f"{mask:#x} {i}"
        back = o.xrstor_then_xsave(compacted)
        assert back is not None
        for i in plain:
            off, size = o.standard_offset(i), o.component_size(i)
            if mask >> i & 1:
                assert back[off : off + size] == image[off : off + size], f"{mask:#x} {i}"
            else:  # not in XCOMP_BV, so not in XSTATE_BV: restored as init (zeros)
                assert back[off : off + size] == bytes(size), f"{mask:#x} {i}"
                assert not u64(back, XSTATE_BV) >> i & 1


# ----- what the save instructions write for components in their init state -----------------


def _regions(o: CpuOracle, rfbm: int) -> list[tuple[int, int]]:
    """Byte ranges that belong to the components of rfbm (MXCSR with SSE or AVX)."""
    regions: list[tuple[int, int]] = []
    if rfbm & X87:
        regions += X87_RANGES
    if rfbm & (SSE | AVX):
        regions.append(MXCSR_RANGE)
    if rfbm & SSE:
        regions.append(XMM_RANGE)
    for i in bits(rfbm):
        if i >= 2:
            off = o.standard_offset(i)
            regions.append((off, off + o.component_size(i)))
    return regions


def test_xsave_writes_init_values_without_init_optimisation(cpu_oracle: CpuOracle) -> None:
    """XSAVE saves every component of RFBM, in init state or not (SDM 13.7): after an
    XRSTOR of an all-init image, XSAVE writes the init values."""
    o = cpu_oracle
    out = o.xrstor_then_xsave(init_image(o), fill=FILL)
    assert out is not None
    # x87 init: FCW 0x037F, FSW 0, abridged FTW 0 (all empty), FOP/FIP/FDP 0, ST0-7 0.
    assert u16(out, 0) == 0x037F
    assert u16(out, 2) == 0 and out[4] == 0 and u16(out, 6) == 0
    assert u64(out, 8) == 0 and u64(out, 16) == 0
    for k in range(8):
        assert out[32 + 16 * k : 42 + 16 * k] == bytes(10), f"ST{k}"
    assert u32(out, 24) == 0x1F80
    assert u32(out, 28) == o.info["mxcsr_mask_raw"]
    assert out[XMM_RANGE[0] : XMM_RANGE[1]] == bytes(256)
    for i in bits(o.xcr0 & ~AMX):
        if i == 9:
            # PKRU is bytes 3:0 of its 8-byte component (SDM vol. 1 §13.5.7); bytes 7:4
            # hold no state. Measured: a Sapphire Rapids-class Xeon writes the 4 PKRU bytes
            # only and leaves bytes 7:4 as the buffer had them.
            off = o.standard_offset(i)
            assert out[off : off + 4] == bytes(4), "PKRU"
            assert out[off + 4 : off + 8] in (bytes(4), bytes([FILL]) * 4), "PKRU bytes 7:4"
        elif i >= 2:
            off, size = o.standard_offset(i), o.component_size(i)
            assert out[off : off + size] == bytes(size), f"component {i}"
    xstate_bv = u64(out, XSTATE_BV)
    assert xstate_bv & o.xcr0 == 0
    assert xstate_bv & ~o.xcr0 == FILL64 & ~o.xcr0
    assert untouched(out, 464, 512)
    assert untouched(out, 520, 576)


def test_xsave_writes_only_rfbm(cpu_oracle: CpuOracle) -> None:
    """XSAVE writes the components of RFBM and MXCSR/MXCSR_MASK only when RFBM has SSE
    or AVX; everything else keeps the buffer's bytes, bytes 416-511 included (the XSAVE
    feature set does not use them, SDM 13.4.1) and the header but XSTATE_BV[RFBM]."""
    o = cpu_oracle
    masks = {m & o.xcr0 for m in (0, X87, SSE, AVX, X87 | AVX, o.xcr0 & ~0b111, o.xcr0)}
    for mask in sorted(masks):
        out = o.xrstor_then_xsave(init_image(o), None, mask, fill=FILL)
        assert out is not None
        written = bytearray([FILL]) * len(out)
        for start, end in _regions(o, mask):
            written[start:end] = out[start:end]
        written[XSTATE_BV : XSTATE_BV + 8] = out[XSTATE_BV : XSTATE_BV + 8]
        assert out == bytes(written), f"RFBM {mask:#x}"
        assert u64(out, XSTATE_BV) == FILL64 & ~mask, f"RFBM {mask:#x}"
        if mask & (SSE | AVX):
            assert u32(out, 24) == 0x1F80, f"RFBM {mask:#x}"
        else:
            assert untouched(out, *MXCSR_RANGE), f"RFBM {mask:#x}"
        if mask & X87:
            assert u16(out, 0) == 0x037F


def test_xsavec_writes_nothing_for_init_components(cpu_oracle: CpuOracle) -> None:
    """XSAVEC saves component i only if RFBM[i] and XINUSE[i] (SDM 13.10): after an
    all-init XRSTOR it writes XSTATE_BV = 0 and XCOMP_BV, and nothing else, not even
    FCW or MXCSR."""
    o = cpu_oracle
    if not o.has_xsavec:
        pytest.skip("this CPU has no XSAVEC")
    for mask in (None, X87 | SSE, o.xcr0 & ~0b11):
        rfbm = o.xcr0 & (ALL_ONES if mask is None else mask)
        out = o.xrstor_then_xsavec(init_image(o), None, mask, fill=FILL)
        assert out is not None
        assert u64(out, XSTATE_BV) == 0
        assert u64(out, XCOMP_BV) == rfbm | XCOMP_COMPACTED
        assert untouched(out, 0, XSTATE_BV), f"{rfbm:#x}"
        assert untouched(out, 528, len(out)), f"{rfbm:#x}"


def test_xsavec_saves_sse_when_mxcsr_is_not_default(cpu_oracle: CpuOracle) -> None:
    """XMM registers in init state but MXCSR != 0x1F80: XSAVEC saves SSE state and sets
    XSTATE_BV[1] (else the compacted XRSTOR, which then sets MXCSR to 0x1F80, would
    lose it); XSAVE writes that MXCSR too."""
    o = cpu_oracle
    mxcsr = 0x3F80  # rounding toward -inf; legal on every CPU
    saved = o.xrstor_then_xsave(init_image(o, mxcsr))
    assert saved is not None and u32(saved, 24) == mxcsr
    if not o.has_xsavec:
        pytest.skip("this CPU has no XSAVEC")
    out = o.xrstor_then_xsavec(init_image(o, mxcsr), fill=FILL)
    assert out is not None
    assert u64(out, XSTATE_BV) & SSE
    assert u32(out, 24) == mxcsr
    assert out[XMM_RANGE[0] : XMM_RANGE[1]] == bytes(256)
    assert untouched(out, 0, 24)  # x87 is in init state: not written
    # XSAVEC left the fill in header bytes 528-575, so XRSTOR would fault on ``out``;
    # from a zeroed buffer the image restores MXCSR.
    assert o.xrstor_faults(out)
    zeroed = o.xrstor_then_xsavec(init_image(o, mxcsr))
    assert zeroed is not None
    back = o.xrstor_then_xsave(zeroed)
    assert back is not None and u32(back, 24) == mxcsr


def test_xsaveopt_always_writes_mxcsr(cpu_oracle: CpuOracle) -> None:
    """The init and modified optimisations do not apply to MXCSR; XSAVEOPT writes it
    when RFBM has SSE or AVX (SDM 13.9)."""
    o = cpu_oracle
    if not o.has_xsaveopt:
        pytest.skip("this CPU has no XSAVEOPT")
    for mask in (SSE, AVX, X87):
        if mask & ~o.xcr0:
            continue
        out = o.xrstor_then_xsaveopt(init_image(o), None, mask, fill=FILL)
        assert out is not None
        if mask & (SSE | AVX):
            assert u32(out, 24) == 0x1F80 and u32(out, 28) == o.info["mxcsr_mask_raw"]
        else:
            assert untouched(out, *MXCSR_RANGE)


def test_oracle_is_built_once(cpu_oracle: CpuOracle) -> None:
    assert get_oracle() is cpu_oracle
    assert cpu_oracle.binary.is_file()
