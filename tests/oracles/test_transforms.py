"""The transforms against the CPU, real cores and the rules they encode.

The CPU is the oracle (tests/cpu_oracle.py): for images the CPU itself saved, and for
the xstate notes of cores the kernel wrote here,
- `to_compacted(image, X)` is byte for byte what XSAVEC with RFBM X writes after an
  XRSTOR of the image, and holds the same state;
- `to_standard` of the CPU's compacted image holds the state of the original, and the
  CPU loads it back to that state;
- `mask(image, M)` is byte for byte, outside bytes 464-511, what XSAVE with RFBM M
  writes after an XRSTOR of the image, cut to the standard size of M (the CPU writes
  nothing past it).
"""

from __future__ import annotations

import json
import random
import struct
from typing import TYPE_CHECKING

import pytest
from images import CET_U, LBR, PASID, image_for, xsaves_image
from paths import FIXTURES

from xcr0tool.arch import offsets
from xcr0tool.arch.components import COMPACTED_BIT, LEGACY_SIZE, SUPERVISOR_MASK
from xcr0tool.errors import InputError, UsageError
from xcr0tool.layouts.choose import build_image
from xcr0tool.layouts.profiles import profile_layout
from xcr0tool.model.image import COMPACTED, STANDARD, XsaveImage, read_u64
from xcr0tool.model.layout import Layout, layout_from_cpuid
from xcr0tool.model.registers import register_map
from xcr0tool.ops import transforms
from xcr0tool.sources.open import open_source

if TYPE_CHECKING:
    from collections.abc import Callable

    from coremaker import MadeCore
    from cpu_oracle import CpuOracle

PLAIN_COMPONENTS = (2, 5, 6, 7)  # any bytes load without changing how the helper runs
SW_BYTES = slice(offsets.SW_BYTES, LEGACY_SIZE)


def outside_sw_bytes(data: bytes) -> bytes:
    return data[: SW_BYTES.start] + data[SW_BYTES.stop :]


# ----- images the CPU made ------------------------------------------------------------


def cpu_layout(o: CpuOracle) -> Layout:
    return layout_from_cpuid(o.leaf_0d, "this CPU's CPUID leaf 0xD")


def random_state(o: CpuOracle, seed: int) -> bytes:
    """A standard image the CPU saved after loading random x87, SSE and plain extended
    state, with a random choice of components left in their init state."""
    rng = random.Random(seed)
    image = bytearray(o.xsave())
    for k in range(8):  # ST0-7: normal extended-precision numbers
        mantissa = rng.getrandbits(63) | 1 << 63
        exponent = rng.randrange(1, 0x7FFF) | rng.getrandbits(1) << 15
        struct.pack_into("<QH", image, offsets.ST0 + offsets.ST_STRIDE * k, mantissa, exponent)
    struct.pack_into("<H", image, offsets.FCW, 0x037F | rng.getrandbits(2) << 10)
    image[offsets.ABRIDGED_FTW] = rng.getrandbits(8)
    mxcsr = (0x1F80 | rng.getrandbits(6) | rng.getrandbits(2) << 13) & o.mxcsr_mask
    struct.pack_into("<I", image, offsets.MXCSR, mxcsr if rng.random() < 0.8 else 0x1F80)
    image[offsets.XMM0 : offsets.XMM0 + 256] = rng.randbytes(256)
    xstate_bv = read_u64(image, offsets.XSTATE_BV)
    for i in (0, 1, *PLAIN_COMPONENTS):
        if not o.xcr0 >> i & 1:
            continue
        if i >= 2:
            offset, size = o.standard_offset(i), o.component_size(i)
            image[offset : offset + size] = rng.randbytes(size)
        xstate_bv = xstate_bv | 1 << i if rng.random() < 0.7 else xstate_bv & ~(1 << i)
    struct.pack_into("<Q", image, offsets.XSTATE_BV, xstate_bv)
    saved = o.xrstor_then_xsave(bytes(image))
    assert saved is not None, "the CPU refused a randomised image"
    return saved


def cpu_image(o: CpuOracle, data: bytes, origin: str = "cpu") -> XsaveImage:
    return build_image(data, origin=origin, layout=cpu_layout(o), xcr0=o.xcr0)


def rfbm_choices(o: CpuOracle) -> list[int]:
    wanted = [o.xcr0, 0x1, 0x2, 0x3, 0x4, 0x7, 0x5, o.xcr0 & ~0b10, o.xcr0 & ~0b111]
    return sorted({m & o.xcr0 for m in wanted})


SEEDS = range(12)


@pytest.mark.cpu
@pytest.mark.parametrize("seed", SEEDS)
def test_compacted_is_what_xsavec_writes(cpu_oracle: CpuOracle, seed: int) -> None:
    o = cpu_oracle
    original = random_state(o, seed)
    image = cpu_image(o, original)
    for rfbm in rfbm_choices(o):
        cpu = o.xrstor_then_xsavec(original, None, rfbm)
        assert cpu is not None
        ours = transforms.to_compacted(image, rfbm)
        assert ours.data == cpu, f"RFBM {rfbm:#x}"
        assert transforms.canonical_state(ours) == transforms.canonical_state(
            cpu_image(o, cpu, "xsavec")
        )


@pytest.mark.cpu
@pytest.mark.parametrize("seed", SEEDS)
def test_standard_from_the_cpus_compacted_image_keeps_the_state(
    cpu_oracle: CpuOracle, seed: int
) -> None:
    o = cpu_oracle
    original = random_state(o, seed)
    compacted = o.xrstor_then_xsavec(original)
    assert compacted is not None
    ours, dropped = transforms.to_standard(cpu_image(o, compacted, "xsavec"))
    assert dropped == ()
    assert (ours.format, len(ours.data)) == (STANDARD, o.standard_size)
    assert read_u64(ours.data, offsets.SW_BYTES) == o.xcr0  # the XCR0 word, as the kernel writes it
    want = transforms.canonical_state(cpu_image(o, original))
    assert transforms.canonical_state(ours) == want
    # The CPU loads our image to that same state.
    reloaded = o.xrstor_then_xsave(ours.data)
    assert reloaded is not None
    assert transforms.canonical_state(cpu_image(o, reloaded)) == want


@pytest.mark.cpu
@pytest.mark.parametrize("seed", SEEDS)
def test_mask_is_xrstor_then_xsave_with_that_rfbm(cpu_oracle: CpuOracle, seed: int) -> None:
    o = cpu_oracle
    original = random_state(o, seed)
    check_mask_against_cpu(o, cpu_image(o, original))


def check_mask_against_cpu(o: CpuOracle, image: XsaveImage) -> None:
    layout = cpu_layout(o)
    for rfbm in sorted({0x1, 0x3, 0x7 & o.xcr0, o.xcr0}):
        ours, report = transforms.mask(image, rfbm)
        cpu = o.xrstor_then_xsave(image.data, None, rfbm)
        assert cpu is not None
        size = layout.standard_size(rfbm)
        assert len(ours.data) == size == report.size_after, f"mask {rfbm:#x}"
        assert cpu[size:] == bytes(len(cpu) - size), "the CPU wrote past the standard size"
        assert outside_sw_bytes(ours.data) == outside_sw_bytes(cpu[:size]), f"mask {rfbm:#x}"
        assert read_u64(ours.data, offsets.SW_BYTES) == rfbm


def keep_size_pairs(o: CpuOracle, layout: Layout) -> list[tuple[int, int]]:
    """(XCR0, smaller XCR0) pairs of this CPU whose standard sizes differ: an image of
    the first masked with --keep-size to the second is longer than the second needs."""
    from xcr0tool.arch.xcr0 import least_xcr0

    wanted = (o.xcr0, o.xcr0 & ~(0b11 << 17), 0x2E7, 0xE7, 0x207, 0x7, 0x3)
    # least_xcr0 of a subset of a valid XCR0 stays inside it (its groups are whole).
    values = sorted({least_xcr0(o.xcr0 & m) for m in wanted})
    return [
        (big, small)
        for big in values
        for small in values
        if small & ~big == 0 and layout.standard_size(small) < layout.standard_size(big)
    ]


@pytest.mark.cpu
@pytest.mark.parametrize("seed", range(3))
def test_keep_size_image_is_read_where_the_cpu_loads_it(cpu_oracle: CpuOracle, seed: int) -> None:
    """`mask --keep-size` output read back without a layout (the guess from its XCR0 word
    and its size, layouts/choose.py, as every command reads it) gives the registers the
    CPU holds after loading it. Images of XCR0 X are what XSAVE with RFBM X writes, cut
    to X's standard size, with X at byte 464 as the kernel writes it; masked to Y with
    --keep-size, they are byte for byte what XSAVE with RFBM Y writes into a buffer of
    that size (XSAVE places each component at its standard offset, whatever the buffer's
    length, and writes nothing else); XRSTOR then XSAVE of that buffer holds the
    registers decode shows. On an Intel CPU with AVX-512 and PKRU this includes the
    2696-byte image of XCR0 0x2e7 masked to 0xe7 (issue 8), which only Intel's layout
    has room for in that size."""
    from xcr0tool.layouts.profiles import PROFILES

    o = cpu_oracle
    layout = cpu_layout(o)
    placed = [
        big
        for big in {big for big, _ in keep_size_pairs(o, layout)}
        if any(
            profile_layout(p.name).known_mask() & big == big
            and profile_layout(p.name).standard_offsets(big) == layout.standard_offsets(big)
            for p in PROFILES
        )
    ]
    pairs = [(big, small) for big, small in keep_size_pairs(o, layout) if big in placed]
    if not pairs:
        pytest.skip(
            f"this CPU (XCR0 {o.xcr0:#x}) has no two XCR0 values of different standard sizes"
            " that a built-in profile places as it does: a guess cannot be checked here"
        )
    original = random_state(o, seed)
    for big, small in pairs:
        saved = o.xrstor_then_xsave(original, None, big)
        assert saved is not None
        base = bytearray(saved[: layout.standard_size(big)])
        struct.pack_into("<Q", base, offsets.SW_BYTES, big)  # the kernel's XCR0 word
        image = build_image(bytes(base), origin=f"xcr0-{big:#x}", layout=None)
        assert image.layout.standard_offsets(big) == layout.standard_offsets(big)
        kept, _ = transforms.mask(image, small, keep_size=True)
        cpu = o.xrstor_then_xsave(bytes(base), None, small)
        assert cpu is not None
        what = f"XCR0 {big:#x} ({len(base)} bytes) masked to {small:#x}"
        assert len(kept.data) == len(base), what
        assert outside_sw_bytes(kept.data) == outside_sw_bytes(cpu[: len(base)]), what
        # Read back as a new input: no layout given, XCR0 from the word at byte 464.
        again = build_image(kept.data, origin="kept", layout=None)
        assert again.xcr0 == small, what
        assert again.layout.standard_offsets(small) == layout.standard_offsets(small), (
            what,
            again.layout.source,
        )
        loaded = o.xrstor_then_xsave(kept.data, None, None)
        assert loaded is not None
        truth = build_image(loaded, origin="cpu", layout=layout, xcr0=o.xcr0)
        wanted = register_map(truth)
        ours = register_map(again)
        assert ours == {name: wanted[name] for name in ours}, what


@pytest.fixture(scope="module")
def kernel_core(
    make_kernel_core: Callable[..., MadeCore], tmp_path_factory: pytest.TempPathFactory
) -> MadeCore:
    return make_kernel_core(tmp_path_factory.mktemp("kcore"), 0x7A5C0DE, 3)


@pytest.mark.cpu
def test_kernel_core_against_the_cpu(cpu_oracle: CpuOracle, kernel_core: MadeCore) -> None:
    """The xstate notes of a core this machine's kernel wrote: compacted output holds
    the state XSAVEC gives, masks are what XSAVE with that RFBM writes."""
    o = cpu_oracle
    result = open_source(str(kernel_core.core))
    assert len(result.images) == 3
    for image in result.images:
        assert image.xcr0 == o.xcr0, "a core of this machine has its XCR0"
        for rfbm in rfbm_choices(o):
            cpu = o.xrstor_then_xsavec(image.data, None, rfbm)
            assert cpu is not None
            ours = transforms.to_compacted(image, rfbm)
            cpu_state = transforms.canonical_state(cpu_image(o, cpu, "xsavec"))
            assert transforms.canonical_state(ours) == cpu_state, f"RFBM {rfbm:#x}"
        check_mask_against_cpu(o, image)
        back, _ = transforms.to_standard(transforms.to_compacted(image))
        assert transforms.canonical_state(back) == transforms.canonical_state(image)


# ----- XCR0 rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (0x6, "bit 0 (x87) is always set"),
        (0x5, "AVX (bit 2) needs SSE (bit 1)"),
        (0xF, "MPX BNDREGS and BNDCSR (bits 3 and 4) go together"),
        (0x27, "AVX-512 opmask, ZMM_Hi256 and Hi16_ZMM (bits 5, 6 and 7) go together"),
        (0xC7, "AVX-512 opmask, ZMM_Hi256 and Hi16_ZMM (bits 5, 6 and 7) go together"),
        (0xE3, "AVX-512 (bits 5-7) needs AVX (bit 2)"),
        (0x20207, "AMX XTILECFG and XTILEDATA (bits 17 and 18) go together"),
        (0x807, "supervisor components belong to IA32_XSS, never to XCR0"),
        (1 << 63 | 7, "bit 63 is XCOMP_BV's compacted-format flag, not an XCR0 bit"),
    ],
)
def test_check_xcr0_names_the_rule(value: int, rule: str) -> None:
    with pytest.raises(UsageError) as caught:
        transforms.check_xcr0(value)
    assert str(caught.value).endswith(f"is not a value XCR0 can hold: {rule}")
    assert str(caught.value).startswith(f"--xcr0: XCR0 {value:#x} (")


@pytest.mark.parametrize("value", [0x1, 0x3, 0x7, 0x19, 0x1F, 0xE7, 0x2E7, 0x602E7, 0x80207])
def test_check_xcr0_accepts_what_cpus_use(value: int) -> None:
    transforms.check_xcr0(value)


def test_check_xcr0_message() -> None:
    with pytest.raises(
        UsageError, match=r"^--xcr0: XCR0 0x5 \(x87\|ymm\) is not a value XCR0 can hold"
    ):
        transforms.check_xcr0(0x5)


# ----- built-in layouts (no CPU needed) -----------------------------------------------


def test_amd_intel_relayout_moves_opmask_zmm_and_pkru() -> None:
    amd, intel = profile_layout("amd-zen4"), profile_layout("intel")
    zen4 = image_for(amd, 0x2E7, seed=1)
    moved = transforms.relayout(zen4, intel)
    assert (len(zen4.data), len(moved.data)) == (2440, 2696)
    for i, (amd_offset, intel_offset, size) in {
        5: (832, 1088, 64),
        6: (896, 1152, 512),
        7: (1408, 1664, 1024),
        9: (2432, 2688, 8),
    }.items():
        assert (
            moved.data[intel_offset : intel_offset + size]
            == zen4.data[amd_offset : amd_offset + size]
        ), f"component {i}"
    assert moved.data[:1088] == zen4.data[:832] + bytes(1088 - 832)  # the MPX hole is zeros
    assert register_map(moved) == register_map(zen4)
    assert transforms.relayout(moved, amd).data == zen4.data


def test_relayout_of_a_real_amd_core_gives_the_programs_registers() -> None:
    """The Zen 4 kernel core fixture, moved to Intel's offsets (what gdb 13 and rr on
    Skylake expect), still holds every register the program loaded."""
    import coremaker

    made_by = json.loads((FIXTURES / "linux-amd-avx512bw-4t.gdb.json").read_text())["made_by"]
    core = str(FIXTURES / "linux-amd-avx512bw-4t.core")
    for index, tid in enumerate(made_by["tids"]):
        (image,) = open_source(f"{core}@{tid}").images
        intel = transforms.relayout(image, profile_layout("intel"))
        assert len(intel.data) == 2688
        expected = coremaker.expected_registers(made_by["seed"], index, made_by["isa"])
        shown = register_map(intel)
        assert {name: shown[name] for name in expected} == expected
        assert transforms.relayout(intel, image.layout).data == image.data


def test_compacted_alignment_with_amx() -> None:
    """XTILECFG and XTILEDATA are 64-byte aligned when compacted (CPUID.(0xD,17/18).ECX[1]
    on Sapphire Rapids): after YMM and PKRU (576 + 256 + 8 = 840), XTILECFG goes to 896."""
    intel = profile_layout("intel")
    image = image_for(intel, 0x602E7, seed=2)
    compacted = transforms.to_compacted(image, 0x60207)
    placed = {2: 576, 9: 832, 17: 896, 18: 960}
    assert compacted.format == COMPACTED
    assert compacted.xcomp_bv == 0x60207 | COMPACTED_BIT
    assert len(compacted.data) == 960 + 8192
    for i, offset in placed.items():
        size = intel.require(i).size
        standard = intel.require(i).standard_offset
        assert standard is not None
        assert compacted.data[offset : offset + size] == image.data[standard : standard + size]
    bare = transforms.to_compacted(image, 0x60003)  # 576 is aligned already
    assert bare.xstate_bv == 0x60003
    assert bare.data[576:640] == image.data[2752:2816]
    assert bare.data[640 : 640 + 8192] == image.data[2816 : 2816 + 8192]


def test_compacted_output_leaves_init_components_unwritten() -> None:
    amd = profile_layout("amd-zen4")
    # AVX, ZMM_Hi256 and Hi16_ZMM in use; x87, SSE and opmask in their init state
    image = image_for(amd, 0xE7, seed=3, xstate_bv=0xC4)
    assert struct.unpack_from("<I", image.data, offsets.MXCSR) != (0x1F80,)
    compacted = transforms.to_compacted(image)
    data = compacted.data
    assert compacted.xstate_bv == 0xC6  # + SSE: MXCSR is not 0x1F80
    assert data[0:24] == bytes(24) and data[32:160] == bytes(128)  # x87 not written
    assert data[160:416] == bytes(256)  # SSE saved for MXCSR, XMM registers in init state
    assert data[24:28] == image.data[24:28]
    assert data[416:576] == bytes(48 * 2) + data[512:528] + bytes(48)
    opmask = 576 + 256
    assert data[opmask : opmask + 64] == bytes(64)
    back, _ = transforms.to_standard(compacted)
    assert back.data[0:2] == b"\x7f\x03"  # x87 written as its init values
    assert transforms.canonical_state(back) == transforms.canonical_state(image)


# ----- supervisor components (XSAVES images) ------------------------------------------


def test_supervisor_components_are_refused() -> None:
    image = xsaves_image(0x2E7 | 1 << CET_U | 1 << LBR)
    assert image.xcr0 == 0x2E7
    with pytest.raises(InputError) as caught:
        transforms.to_standard(image)
    assert str(caught.value) == (
        "xsaves.bin: supervisor components pasid (component 10, init), cet_u (component 11,"
        " in use), lbr (component 15, in use) cannot go into the standard format: it has no"
        " place for them (CPUID.(0xD,i).EBX = 0; only XSAVES and XRSTORS, at CPL 0, read and"
        " write them); pass --drop-supervisor to leave them out"
    )


def test_drop_supervisor_keeps_the_user_state() -> None:
    image = xsaves_image(0x2E7 | 1 << CET_U | 1 << LBR)
    standard, dropped = transforms.to_standard(image, drop_supervisor=True)
    assert dropped == (PASID, CET_U, LBR)
    assert (len(standard.data), standard.xcr0, standard.xstate_bv) == (2696, 0x2E7, 0x2E7)
    state = transforms.canonical_state(image)
    assert transforms.canonical_state(standard) == {
        i: value for i, value in state.items() if not SUPERVISOR_MASK >> i & 1
    }


def test_compacting_and_masking_keep_supervisor_components() -> None:
    image = xsaves_image(0x2E7 | 1 << CET_U)
    again = transforms.to_compacted(image)
    assert again.xcomp_bv == image.xcomp_bv
    masked, report = transforms.mask(image, 0x7)
    assert masked.xcomp_bv == 0x7 | 1 << PASID | 1 << CET_U | 1 << LBR | COMPACTED_BIT
    assert report.removed == 0x2E0
    state = transforms.canonical_state(masked)
    assert state[CET_U] == transforms.canonical_state(image)[CET_U]


# ----- mask reports -------------------------------------------------------------------


def test_mask_reports_and_never_adds() -> None:
    image = image_for(profile_layout("amd-zen4"), 0xE7, seed=4, xstate_bv=0xA7)
    masked, report = transforms.mask(image, 0x207)
    assert report.xcr0_before == 0xE7 and report.xcr0_after == 0x7
    assert report.removed == 0xE0 and report.removed_in_use == 0xA0
    assert report.absent == 0x200
    assert (report.size_before, report.size_after) == (2432, 832)
    assert masked.xcr0 == 0x7 and masked.xstate_bv == 0x7
    kept, _ = transforms.mask(image, 0x207, keep_size=True)
    assert len(kept.data) == 2432 and kept.data[832:] == bytes(2432 - 832)
    assert kept.data[:832] == masked.data
    with pytest.raises(UsageError, match="AVX-512 opmask, ZMM_Hi256 and Hi16_ZMM"):
        transforms.mask(image, 0x3F)


def test_keep_sw_bytes() -> None:
    image = image_for(profile_layout("intel"), 0xE7, seed=5)
    marked = build_image(
        image.data[:464] + bytes(range(48)) + image.data[512:],
        origin="marked",
        layout=image.layout,
        xcr0=0xE7,
    )
    masked, _ = transforms.mask(marked, 0x7, keep_sw_bytes=True)
    assert masked.data[SW_BYTES] == bytes(range(48))
    masked, _ = transforms.mask(marked, 0x7)
    assert masked.data[SW_BYTES] == (7).to_bytes(8, "little") + bytes(40)


def test_truncated_image_is_refused() -> None:
    image = image_for(profile_layout("intel"), 0xE7, seed=6)
    short = XsaveImage(image.data[:1000], image.layout, "short.bin", 0xE7, "given")
    with pytest.raises(InputError, match=r"^short.bin: truncated: 1000 bytes, its components"):
        transforms.to_compacted(short)
