"""The one MXCSR predicate (xcr0tool/arch/mxcsr.py) against this CPU, and its users.

Each function of arch/mxcsr.py is checked with the CPU oracle (tests/cpu_oracle.py):
XRSTOR, then XSAVE or XSAVEC, shows what was loaded and what is stored. A legal MXCSR
other than the helper's own 0x1F80 (0x3F80, rounding toward -inf) tells "loaded from
the image" from "left alone". Then the users of the predicate — the model (decode),
the transforms, diff, validate — are checked to give the CPU's answer for an image
saved under an XCR0 without SSE and AVX, where they used to disagree.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from clirunner import run

from xcr0tool.arch import mxcsr
from xcr0tool.arch.components import COMPACTED_BIT
from xcr0tool.arch.offsets import MXCSR, SW_BYTES, XCOMP_BV, XSTATE_BV
from xcr0tool.layouts.choose import build_image
from xcr0tool.layouts.profiles import profile_layout
from xcr0tool.model.registers import register_map
from xcr0tool.ops import transforms

if TYPE_CHECKING:
    from cpu_oracle import CpuOracle

X87, SSE, AVX = 1, 2, 4
LEGAL = 0x3F80  # not the helper's 0x1F80: loaded or not can be told apart
FILL = 0xAA


def u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 8], "little")


def standard(o: CpuOracle, xstate_bv: int, value: int = LEGAL) -> bytes:
    """XSAVE's own image of the helper, with XSTATE_BV and MXCSR set."""
    image = bytearray(o.xsave())
    struct.pack_into("<Q", image, XSTATE_BV, xstate_bv)
    struct.pack_into("<I", image, MXCSR, value)
    return bytes(image)


def masks(o: CpuOracle, *candidates: int) -> list[int]:
    return sorted({m & o.xcr0 for m in candidates})


@pytest.mark.cpu
def test_xrstor_standard_loads_mxcsr_as_predicted(cpu_oracle: CpuOracle) -> None:
    o = cpu_oracle
    for xstate_bv in (0, X87, SSE, AVX & o.xcr0, o.xcr0):
        for rfbm in masks(o, X87, SSE, AVX, SSE | AVX, X87 | SSE, o.xcr0):
            out = o.xrstor_then_xsave(standard(o, xstate_bv), rfbm)
            assert out is not None
            predicted = mxcsr.xrstor_loads_mxcsr(compacted=False, rfbm=rfbm, xstate_bv=xstate_bv)
            assert (u32(out, MXCSR) == LEGAL) == predicted, f"{xstate_bv:#x} {rfbm:#x}"


@pytest.mark.cpu
def test_xrstor_compacted_loads_mxcsr_as_predicted(cpu_oracle: CpuOracle) -> None:
    o = cpu_oracle
    if not o.has_xsavec:
        pytest.skip("this CPU has no XSAVEC (CPUID.(EAX=0DH,ECX=1):EAX[1] = 0)")
    for xstate_bv in (0, SSE, AVX & o.xcr0, (SSE | AVX) & o.xcr0):
        image = bytearray(o.xsavec())
        struct.pack_into("<Q", image, XSTATE_BV, xstate_bv)
        struct.pack_into("<I", image, MXCSR, LEGAL)
        for rfbm in masks(o, X87, SSE, AVX, SSE | AVX, o.xcr0):
            out = o.xrstor_then_xsave(bytes(image), rfbm)
            assert out is not None
            predicted = mxcsr.xrstor_loads_mxcsr(compacted=True, rfbm=rfbm, xstate_bv=xstate_bv)
            assert (u32(out, MXCSR) == LEGAL) == predicted, f"{xstate_bv:#x} {rfbm:#x}"


@pytest.mark.cpu
def test_xsave_stores_mxcsr_as_predicted(cpu_oracle: CpuOracle) -> None:
    o = cpu_oracle
    loaded = standard(o, o.xcr0)
    for rfbm in masks(o, 0, X87, SSE, AVX, X87 | AVX, o.xcr0 & ~0b111, o.xcr0):
        out = o.xrstor_then_xsave(loaded, None, rfbm, fill=FILL)
        assert out is not None
        stored = u32(out, MXCSR) == LEGAL
        untouched = out[MXCSR : MXCSR + 8] == bytes([FILL]) * 8
        assert stored == mxcsr.xsave_stores_mxcsr(rfbm), f"{rfbm:#x}"
        assert untouched != stored, f"{rfbm:#x}"


@pytest.mark.cpu
def test_xsavec_saves_sse_as_predicted(cpu_oracle: CpuOracle) -> None:
    o = cpu_oracle
    if not o.has_xsavec:
        pytest.skip("this CPU has no XSAVEC (CPUID.(EAX=0DH,ECX=1):EAX[1] = 0)")
    for value in (0x1F80, LEGAL):
        for xmm_in_use in (False, True):
            image = bytearray(standard(o, SSE if xmm_in_use else 0, value))
            if xmm_in_use:
                image[160:176] = bytes(range(1, 17))
            for rfbm in masks(o, X87, SSE, AVX, SSE | AVX, o.xcr0):
                out = o.xrstor_then_xsavec(bytes(image), None, rfbm, fill=FILL)
                assert out is not None
                saved = bool(u64(out, XSTATE_BV) & SSE)
                predicted = mxcsr.xsavec_saves_sse(rfbm, xmm_in_use=xmm_in_use, mxcsr=value)
                what = f"MXCSR {value:#x} XMM {'in use' if xmm_in_use else 'init'} {rfbm:#x}"
                assert saved == predicted, what
                assert (u32(out, MXCSR) == value) == predicted, what


# ---------------------------------------------------------------- an image of XCR0 0x1


def x87_only_image(value: int = 0x9F80) -> bytes:
    """A standard image saved under XCR0 0x1 (x87 only) whose bytes 24-27 hold 0x9f80:
    no XRSTOR under that XCR0 loads them."""
    image = bytearray(576)
    struct.pack_into("<H", image, 0, 0x037F)
    struct.pack_into("<II", image, MXCSR, value, 0xFFFF)
    struct.pack_into("<Q", image, SW_BYTES, 0x1)
    struct.pack_into("<Q", image, XSTATE_BV, 0x1)
    return bytes(image)


def test_model_transforms_and_diff_agree_on_an_x87_only_image(tmp_path: Path) -> None:
    data = x87_only_image()
    image = build_image(data, origin="x87", layout=profile_layout("intel"))
    assert not image.mxcsr_loaded
    compacted = transforms.to_compacted(image)
    assert compacted.xcomp_bv == 0x1 | COMPACTED_BIT
    assert register_map(image)["mxcsr"] == register_map(compacted)["mxcsr"] == 0x1F80
    assert transforms.canonical_state(image) == transforms.canonical_state(compacted)
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(data)
    assert run("convert", "--to", "compacted", str(a), "-o", str(b)).returncode == 0
    assert u64(b.read_bytes(), XCOMP_BV) == 0x1 | COMPACTED_BIT
    proc = run("diff", str(a), str(b))
    assert proc.returncode == 0, proc.stdout.decode()


@pytest.mark.cpu
def test_the_cpu_agrees_an_x87_only_image_and_its_compacted_form_are_one_state(
    cpu_oracle: CpuOracle,
) -> None:
    """XRSTOR under RFBM = x87 (as under XCR0 0x1) of the image and of its compacted form
    leave the same state: neither loads the 0x9f80 at byte 24."""
    o = cpu_oracle
    if not o.has_xsavec:
        pytest.skip("this CPU has no XSAVEC (CPUID.(EAX=0DH,ECX=1):EAX[1] = 0)")
    value = 0x9F80 & o.mxcsr_mask
    data = x87_only_image(value)
    image = build_image(data, origin="x87", layout=profile_layout("intel"))
    compacted = transforms.to_compacted(image)
    from_standard = o.xrstor_then_xsave(data, X87)
    from_compacted = o.xrstor_then_xsave(compacted.data, X87)
    assert from_standard is not None and from_compacted is not None
    assert from_standard == from_compacted
    assert u32(from_standard, MXCSR) == 0x1F80 != value


def test_validate_takes_the_same_predicate() -> None:
    """validate's mxcsr_loaded and the model's are the one function's answers."""
    from xcr0tool.ops.validate import XRSTOR, make_target, mxcsr_loaded, subject_from_bytes

    data = x87_only_image()
    subject = subject_from_bytes(data, "x87", profile_layout("intel"))
    assert subject.image is not None
    for rfbm in (0x1, 0x3, 0x5, 0x7, (1 << 64) - 1):
        target = make_target(subject, instruction=XRSTOR, xcr0=0x7, rfbm=rfbm)
        predicted = mxcsr.xrstor_loads_mxcsr(
            compacted=False, rfbm=rfbm & 0x7, xstate_bv=subject.xstate_bv
        )
        assert mxcsr_loaded(subject, target) == predicted, f"{rfbm:#x}"
