"""MXCSR: when the XSAVE instructions load and store it. The one predicate for the model,
the transforms, diff and validate.

MXCSR belongs to two components, SSE and AVX, and the instructions treat it apart from
both (Intel SDM vol. 1 §13.7, §13.8 and vol. 2 XRSTOR/XSAVE/XSAVEC "Operation"). Each
statement here is measured on the CPU by tests/oracles/test_mxcsr_cpu.py:

- XRSTOR, standard form: loads MXCSR from byte 24 whenever RFBM[1] or RFBM[2] is set,
  whatever XSTATE_BV says (reserved bits then raise #GP even with SSE and AVX in init
  state); with neither, MXCSR is left as it was.
- XRSTOR, compacted form: loads MXCSR only when RFBM[1] and XSTATE_BV[1] are set (with
  RFBM[1] set and XSTATE_BV[1] clear the SDM has it set to 0x1F80).
- XSAVE (and XSAVEOPT): stores MXCSR and MXCSR_MASK whenever RFBM[1] or RFBM[2] is set.
- XSAVEC: stores them only with SSE, and saves SSE (XSTATE_BV[1] = 1) when RFBM[1] is set
  and either the XMM registers are in use or MXCSR is not 0x1F80; with RFBM = AVX alone
  it does not store MXCSR.
- FXRSTOR and FXSAVE always load and store it.

RFBM is XCR0 & EDX:EAX: an image saved under an XCR0 without SSE and AVX holds no MXCSR.
"""

from __future__ import annotations

from xcr0tool.arch.xcr0 import AVX, SSE

MXCSR_INIT = 0x1F80
MXCSR_MASK_DEFAULT = 0xFFBF  # SDM vol. 1 §10.5.1.2: a saved MXCSR_MASK of 0 means this
OWNERS = SSE | AVX  # the components whose request makes the standard form move MXCSR


def xrstor_loads_mxcsr(*, compacted: bool, rfbm: int, xstate_bv: int) -> bool:
    """Does XRSTOR load MXCSR from the image (rather than keep it, or set 0x1F80)?"""
    if compacted:
        return bool(rfbm & xstate_bv & SSE)
    return bool(rfbm & OWNERS)


def xsave_stores_mxcsr(rfbm: int) -> bool:
    """Do XSAVE and XSAVEOPT write MXCSR and MXCSR_MASK (bytes 24-31)?"""
    return bool(rfbm & OWNERS)


def xsavec_saves_sse(rfbm: int, *, xmm_in_use: bool, mxcsr: int) -> bool:
    """Does XSAVEC save SSE (write MXCSR, MXCSR_MASK and set XSTATE_BV[1])?"""
    return bool(rfbm & SSE) and (xmm_in_use or mxcsr != MXCSR_INIT)
