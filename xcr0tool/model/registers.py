"""Registers as gdb shows them, assembled from an image's components.

Names and assembly follow gdb's i387-tdep.c (i387_supply_xsave, i387_tag) and
amd64-tdep.c (amd64_supply_xsave): st0-st7 are the FXSAVE slots in stack order, ftag is
the full tag word computed from the abridged tag and the register contents, fiseg/foseg
are the 32 bits above FIP/FDP in 64-bit images and the 16-bit selectors in 32-bit ones,
fop keeps its 11 bits, ymmN/zmmN are built from xmmN and the upper halves. Each value is
the register's bytes read as one little-endian integer, as in `decode --json`.
Registers gdb does not know get plain names of their own (tmm0-7, r16-r31, u_cet, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import cache
from itertools import repeat
from operator import itemgetter
from typing import Literal, NamedTuple

from xcr0tool.arch import legacy
from xcr0tool.arch import offsets as at
from xcr0tool.arch.components import BY_NAME, CATALOGUE, component, is_extended
from xcr0tool.model.image import FCW_INIT, MXCSR_INIT, XsaveImage

TAG_VALID, TAG_ZERO, TAG_SPECIAL, TAG_EMPTY = 0, 1, 2, 3


class Register(NamedTuple):
    # A NamedTuple, not a dataclass: decode of a big core builds hundreds of thousands.
    name: str
    value: int
    size: int  # bytes
    component: int
    in_use: bool  # its component's XSTATE_BV bit (for MXCSR: SSE or AVX)


def st_tag(raw: int) -> int:
    """gdb's i387_tag: classify an 80-bit register for the full tag word."""
    exponent = raw >> 64 & 0x7FFF
    integer = raw >> 63 & 1
    fraction = raw & ((1 << 63) - 1)
    if exponent == 0x7FFF:
        return TAG_SPECIAL
    if exponent == 0:
        return TAG_ZERO if fraction == 0 and not integer else TAG_SPECIAL
    return TAG_VALID if integer else TAG_SPECIAL


def full_tag_word(abridged: int, fsw: int, stack: list[int]) -> int:
    """The 16-bit tag word from FXSAVE's abridged byte; `stack` is st0..st7."""
    top = fsw >> 11 & 7
    word = 0
    for physical in range(8):
        tag = st_tag(stack[(physical - top) % 8]) if abridged >> physical & 1 else TAG_EMPTY
        word |= tag << (2 * physical)
    return word


# The fast path -------------------------------------------------------------------------
# A core of hundreds of threads decodes every register of every thread. What registers an
# image has, and which bytes each is made of, depends only on its layout, format, XCR0,
# XCOMP_BV, XSTATE_BV, mode and size, which the threads of one core share: that is
# planned once (`_plan`, from the legacy-region table and the component catalogue, the
# tables formats/xsave.py builds its construct grammars from), and each image then costs
# a handful of C-level calls: gather the pieces, split them per register, read each as a
# little-endian integer. tests/unit/model/test_grammar.py checks the result against the
# construct grammars' own reading, on any bytes, for every format and state.
Piece = tuple[int | None, int]  # (offset in the image, bytes); None: init-state zeros


class _Spec(NamedTuple):
    """One register as the planner lays it out: its bytes, lowest first."""

    name: str
    pieces: tuple[Piece, ...]
    size: int
    component: int
    in_use: bool
    constant: int = 0  # its value when it has no pieces (an init value)


class _Plan(NamedTuple):
    names: tuple[str, ...]
    sizes: tuple[int, ...]
    components: tuple[int, ...]
    in_use: tuple[bool, ...]
    pad: bytes  # zeros put before the image, which the init-state pieces read
    gather: Callable[[bytes], tuple[bytes, ...]]  # every piece, in register order
    split: Callable[[bytes], tuple[bytes, ...]]  # each register's bytes of the gathered ones
    constants: tuple[tuple[int, int], ...]  # (index, init value) where it is not 0
    x87: tuple[int, int, int, slice] | None  # ftag, fstat, fop, st0-7: gdb's computations


def _slices(wanted: Sequence[slice]) -> Callable[[bytes], tuple[bytes, ...]]:
    """operator.itemgetter of slices, always answering a tuple (itemgetter of one item
    answers the item itself)."""
    if len(wanted) == 1:
        only = wanted[0]
        return lambda data: (data[only],)
    if not wanted:
        return lambda data: ()
    return itemgetter(*wanted)


def _specs(image: XsaveImage) -> list[_Spec]:
    """Every register of the image, in gdb's order where gdb has them, as pieces."""
    size = len(image.data)

    def read(offset: int, length: int) -> tuple[Piece, ...]:
        # Bytes past the end of the buffer read as zeros, as a short slice does.
        inside = max(0, min(length, size - offset))
        return ((offset, inside),) if inside else ()

    specs = _legacy_specs(image, read)
    # Vector registers are built from pieces: xmmN (SSE), its upper 128 bits (AVX), its
    # upper 256 bits (ZMM_Hi256), as gdb's i387_supply_xsave does; zmm16-31 (Hi16_ZMM)
    # are shown at three widths.
    vectors = [
        list(spec.pieces) for spec in specs if spec.component == legacy.SSE and spec.name != "mxcsr"
    ]
    present = image.offsets
    if YMM in present:
        specs.extend(_widened(image, YMM, vectors, read))
    for component_id in sorted(present):
        if is_extended(component_id) and not component(component_id).vector_piece:
            specs.extend(_component_specs(image, component_id, read))
    if ZMM_HI256 in present:
        specs.extend(_widened(image, ZMM_HI256, vectors, read))
    if HI16_ZMM in present and image.long_mode:  # zmm16-31 do not exist for 32-bit code
        offset = present[HI16_ZMM]
        in_use = image.in_use(HI16_ZMM)
        fields = component(HI16_ZMM).fields
        for width, length in _HI16_VIEWS:
            for field in fields:
                name = width + field.register_name.removeprefix("zmm")
                pieces = read(offset + field.offset, length) if in_use else ()
                specs.append(_Spec(name, pieces, length, HI16_ZMM, in_use))
    return specs


def _legacy_specs(image: XsaveImage, read: Callable[[int, int], tuple[Piece, ...]]) -> list[_Spec]:
    # The bytes and gdb names of the one legacy-region table (arch/legacy.py).
    x87 = image.in_use(legacy.X87)
    sse = image.in_use(legacy.SSE)
    long_mode = image.long_mode
    st = legacy.field("st", long_mode)
    specs = [
        _Spec(name, read(slot, st.size) if x87 else (), st.size, legacy.X87, x87)
        for slot, name, _ in st.slots()
    ]
    # gdb (i387_supply_fxsave): ftag is the full tag word computed from the abridged one
    # and the registers' contents (i387_tag), fop keeps its 11 bits (_read does both);
    # in init state, FCW and the tag word are their init values.
    control = _x87_control(long_mode)
    init = {"fctrl": FCW_INIT, "ftag": 0xFFFF}
    for name in legacy.X87_CONTROL_ORDER:
        offset, length, register_size = control[name]
        pieces = read(offset, length) if x87 else ()
        constant = 0 if x87 else init.get(name, 0)
        specs.append(_Spec(name, pieces, register_size, legacy.X87, x87, constant))
    xmm = legacy.field("xmm", long_mode)
    specs += [
        _Spec(name, read(slot, xmm.size) if sse else (), xmm.size, legacy.SSE, sse)
        for slot, name, _ in xmm.slots()
    ]
    row = legacy.field("mxcsr", long_mode)
    loaded = image.mxcsr_loaded
    pieces = read(row.offset, row.size) if loaded else ()
    in_use = sse or image.in_use(YMM)
    specs.append(_Spec("mxcsr", pieces, row.size, legacy.SSE, in_use, 0 if loaded else MXCSR_INIT))
    return specs


@cache
def _x87_control(long_mode: bool) -> dict[str, tuple[int, int, int]]:
    """gdb's x87 control registers: name -> (offset, bytes read, register size)."""
    return {
        row.register: (row.offset, row.size, row.register_size or row.size)
        for row in legacy.fields(long_mode)
        if row.component == legacy.X87 and row.repeat == 1 and row.register is not None
    }


def component_fields(image: XsaveImage, component_id: int) -> dict[str, int]:
    """An extended component's catalogue fields as little-endian integers: the reading
    grammar.component_grammar declares, by slicing (a test checks both agree)."""
    raw = image.component_bytes(component_id)
    return {
        f.name: int.from_bytes(raw[f.offset : f.offset + f.size], "little")
        for f in component(component_id).fields
        if f.offset + f.size <= len(raw)
    }


# The components whose fields are pieces of vector registers (catalogue rows with
# vector_piece), assembled the way gdb's i387_supply_xsave does.
YMM, ZMM_HI256, HI16_ZMM = (BY_NAME[name].id for name in ("ymm", "zmm_hi256", "hi16_zmm"))
# gdb shows each of zmm16-31 (Hi16_ZMM) at three widths too.
_HI16_VIEWS = (("xmm", 16), ("ymm", 32), ("zmm", 64))


def _widened(
    image: XsaveImage,
    component_id: int,
    vectors: list[list[Piece]],
    read: Callable[[int, int], tuple[Piece, ...]],
) -> Iterator[_Spec]:
    """The wider registers one piece component makes of `vectors` (the XMM registers, or
    what AVX made of them), which it widens in place: ymmN = xmmN | ymmNh << 128."""
    comp = component(component_id)
    offset = image.offsets[component_id]
    in_use = image.in_use(component_id)
    for pieces, field in zip(vectors, comp.fields, strict=False):  # 32-bit code: 8 of 16
        # Zeros up to the field's bit, where the register below it is in init state.
        below = sum(length for _, length in pieces)
        if below < field.shift // 8:
            pieces.append((None, field.shift // 8 - below))
        pieces.extend(read(offset + field.offset, field.size) if in_use else ())
        size = field.shift // 8 + field.size
        yield _Spec(field.register_name, tuple(pieces), size, component_id, in_use)


def _component_specs(
    image: XsaveImage, component_id: int, read: Callable[[int, int], tuple[Piece, ...]]
) -> Iterator[_Spec]:
    """Registers of one extended component: its catalogue fields, as its grammar reads
    them (TILECFG is one field, whose parts render/values.py shows); a component without
    fields is one register of all its bytes. Fields past the end of the buffer are left
    out, as component_fields leaves them."""
    comp = component(component_id)
    in_use = image.in_use(component_id)
    offset = image.offsets[component_id]
    space = image.size_of(component_id)
    if in_use:
        space = max(0, min(space, len(image.data) - offset))
    if not comp.fields:
        yield _Spec(comp.name, read(offset, space) if in_use else (), space, component_id, in_use)
        return
    for field in comp.fields:
        if field.offset + field.size <= space:
            pieces = read(offset + field.offset, field.size) if in_use else ()
            yield _Spec(field.name, pieces, field.size, component_id, in_use)


def _compile(specs: list[_Spec]) -> _Plan:
    """The plan of a list of registers: where each piece is, and what is set after."""
    pad = 0
    for i, spec in enumerate(specs):
        # High zeros add nothing to a little-endian value: only zeros below real bytes
        # are read (from the pad).
        pieces = list(spec.pieces)
        while pieces and pieces[-1][0] is None:
            pieces.pop()
        pad = max([pad, *(length for offset, length in pieces if offset is None)])
        specs[i] = spec._replace(pieces=tuple(pieces))
    gather: list[slice] = []
    split: list[slice] = []
    at = 0
    for spec in specs:
        start = at
        for offset, length in spec.pieces:
            begin = pad if offset is None else pad + offset
            gather.append(slice(0, length) if offset is None else slice(begin, begin + length))
            at += length
        split.append(slice(start, at))
    index = {spec.name: i for i, spec in enumerate(specs)}
    x87 = None
    if specs[index["ftag"]].pieces:
        x87 = (index["ftag"], index["fstat"], index["fop"], slice(index["st0"], index["st7"] + 1))
    return _Plan(
        tuple(spec.name for spec in specs),
        tuple(spec.size for spec in specs),
        tuple(spec.component for spec in specs),
        tuple(spec.in_use for spec in specs),
        bytes(pad),
        _slices(gather),
        _slices(split),
        tuple((i, spec.constant) for i, spec in enumerate(specs) if spec.constant),
        x87,
    )


_PLANS: dict[tuple[object, ...], _Plan] = {}
_MAX_PLANS = 256  # distinct layouts and states in one run; a few in practice


def _plan(image: XsaveImage) -> _Plan:
    # Everything _specs reads of the image but its bytes: its layout (equal layouts
    # place and size every component alike), format, the masks that choose offsets,
    # in-use bits and MXCSR's loading, the mode and the buffer's size.
    key = (
        image.layout,
        image.format,
        image.xcr0,
        image.xcomp_bv,
        image.xstate_bv,
        image.long_mode,
        len(image.data),
    )
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        plan = _PLANS[key] = _compile(_specs(image))
    return plan


def register_values(image: XsaveImage) -> tuple[tuple[str, ...], list[int]]:
    """Every register's name and value, in the order of `registers`: the hot path of
    decode --json of a big core (no Register object is made)."""
    plan, values = _read(image)
    return plan.names, values


def _read(image: XsaveImage) -> tuple[_Plan, list[int]]:
    plan = _plan(image)
    data = plan.pad + image.data if plan.pad else image.data
    little: repeat[Literal["little"]] = repeat("little")
    values = list(map(int.from_bytes, plan.split(b"".join(plan.gather(data))), little))
    for i, value in plan.constants:
        values[i] = value
    if plan.x87 is not None:
        ftag, fstat, fop, stack = plan.x87
        values[ftag] = full_tag_word(values[ftag], values[fstat], values[stack])
        values[fop] &= 0x7FF
    return plan, values


def registers(image: XsaveImage) -> list[Register]:
    """Every register of the image, in gdb's order where gdb has them."""
    plan, values = _read(image)
    return list(map(Register, plan.names, values, plan.sizes, plan.components, plan.in_use))


def register_names() -> list[str]:
    """Every name `registers` can give (what --reg matches), in its order for a 64-bit
    image that holds every catalogue component."""
    names = [name for _, name, _ in legacy.field("st").slots()]
    names += list(legacy.X87_CONTROL_ORDER)
    names += [name for _, name, _ in legacy.field("xmm").slots()] + ["mxcsr"]
    names += [f.register_name for f in component(YMM).fields]
    for comp in CATALOGUE:
        if is_extended(comp.id) and not comp.vector_piece:
            names += [f.name for f in comp.fields] if comp.fields else [comp.name]
    names += [f.register_name for f in component(ZMM_HI256).fields]
    hi16 = component(HI16_ZMM).fields
    names += [width + f.register_name.removeprefix("zmm") for width, _ in _HI16_VIEWS for f in hi16]
    return names


def stale_registers(image: XsaveImage) -> list[Register]:
    """What the bytes behind init-state components would read as, were they in use.
    XRSTOR ignores them; they are shown only when asked for, and labelled stale."""
    stale = image.stale_components()
    if not stale:
        return []
    data = bytearray(image.data)
    forced = image.xstate_bv | sum(1 << i for i in stale)
    data[at.XSTATE_BV : at.XSTATE_BV + 8] = forced.to_bytes(8, "little")
    as_if_in_use = replace(image, data=bytes(data))
    return [r for r in registers(as_if_in_use) if r.component in stale]


# Lanes: a vector register split the way gdb's views do (v4_float, v8_int32, ...), lane
# 0 lowest. Here, beside the registers, so that decode need not load diff for them.
LANES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "f32": 4, "f64": 8}
DEFAULT_LANES = "u32"


def lane_widths(size: int, kind: str) -> list[int]:
    """Byte widths of the lanes of a `size`-byte register, lane 0 (lowest) first; a
    register that is not a whole number of lanes ends in a narrower one."""
    width = LANES[kind]
    return [min(width, size - at) for at in range(0, size, width)]


def lanes_of(value: int, size: int, kind: str) -> list[int]:
    out = []
    shift = 0
    for width in lane_widths(size, kind):
        out.append(value >> shift & ((1 << 8 * width) - 1))
        shift += 8 * width
    return out


def select(regs: Sequence[Register], patterns: Sequence[str]) -> list[Register]:
    """The registers whose names match any of the globs (--reg 'zmm*'); all without any."""
    if not patterns:
        return list(regs)
    import fnmatch  # only for --reg: most runs match no glob

    return [r for r in regs if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]


def register_map(image: XsaveImage) -> dict[str, int]:
    return dict(zip(*register_values(image), strict=True))
