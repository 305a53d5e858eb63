"""Layouts: where each state component sits, in the standard and the compacted format.

A layout is CPUID leaf 0xD in another shape: per component its size, its standard
offset (none for supervisor components), whether it is 64-byte aligned when compacted,
and whether it is a supervisor component. Every layout carries `source`, a phrase that
says where its numbers came from, and every output shows it.

Compacted offsets follow SDM vol. 1 §13.4.3: start at 576, walk the set bits of the
extended components of XCOMP_BV in ascending order, round up to 64 where the component
is aligned, place, add its size. This is the one size and offset algorithm: the host
readers (sources/cpu.py, hostinfo.py) go through it too.

A Layout is immutable and hashable (a frozen dataclass of tuples), so built-in profiles
can be cached and shared and plans keyed by layout. Two layouts are equal when they
place and size every component alike: `==` is the one way to say "same layout"; where
the numbers came from (source, name, notes, the capable masks) is not compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NamedTuple

from xcr0tool.arch import legacy
from xcr0tool.arch.components import (
    COMPACTED_BIT,
    EXTENDED_START,
    LEGACY_MASK,
    bits,
    component,
    extended_bits,
    is_extended,
)
from xcr0tool.errors import LayoutError

Leaf0D = Mapping[int, tuple[int, int, int, int]]  # sub-leaf -> (eax, ebx, ecx, edx)

LEGACY_BITS = LEGACY_MASK
# Bounds on what a layout may claim, whatever its source (a file, a dump, a core's note):
# the largest real component is AMX TILEDATA at 8 KiB and the largest real standard area
# 11008 bytes (Sapphire Rapids), so these are generous and still keep every size and
# offset computation small.
MAX_COMPONENT_SIZE = 1 << 16
MAX_AREA_SIZE = 1 << 20
_REMEMBERED = 1024  # masks a layout keeps the offsets of (a fuzzer tries many)
_SUPERVISOR_FLAG = 1  # CPUID.(0xD,i).ECX bit 0
_ALIGNED_FLAG = 2  # ECX bit 1
_XFD_FLAG = 4  # ECX bit 2


class ComponentLayout(NamedTuple):  # not a dataclass: cheap to define at every start
    id: int
    size: int
    standard_offset: int | None  # None: supervisor, no place in the standard format
    aligned: bool
    supervisor: bool
    xfd: bool = False

    @property
    def name(self) -> str:
        return component(self.id).name


# x87 and SSE always sit in the legacy region: their "offset" is where their registers
# start there (ST0, XMM0), their size the catalogue's.
LEGACY_COMPONENTS = (
    ComponentLayout(
        legacy.X87, component(legacy.X87).size, legacy.field("fcw").offset, False, False
    ),
    ComponentLayout(
        legacy.SSE, component(legacy.SSE).size, legacy.field("xmm").offset, False, False
    ),
)


@dataclass(frozen=True)
class Layout:
    source: str = field(compare=False)
    components: tuple[ComponentLayout, ...]  # extended components only, ascending id
    name: str | None = field(default=None, compare=False)  # a built-in profile's name
    xcr0_capable: int | None = field(default=None, compare=False)
    xss_capable: int | None = field(default=None, compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)
    _index: Mapping[int, ComponentLayout] = field(init=False, repr=False, compare=False, hash=False)

    _hash: int = field(init=False, repr=False, compare=False, hash=False)
    # Offsets and sizes already worked out, per (compacted?, mask) and per XCR0: every
    # thread of a core asks the same question of one layout.
    _offsets: dict[tuple[bool, int], dict[int, int]] = field(
        init=False, repr=False, compare=False, hash=False
    )
    _sizes: dict[int, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.components, key=lambda e: e.id))
        if any(not is_extended(e.id) for e in ordered):
            raise ValueError("a Layout lists extended components only")
        object.__setattr__(self, "components", ordered)
        object.__setattr__(self, "_index", MappingProxyType({e.id: e for e in ordered}))
        # Hashed once: transforms key their cached plans by layout, per image.
        object.__setattr__(self, "_hash", hash(ordered))
        object.__setattr__(self, "_offsets", {})
        object.__setattr__(self, "_sizes", {})

    def __hash__(self) -> int:
        return self._hash

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(self._index)

    def get(self, component_id: int) -> ComponentLayout | None:
        if not is_extended(component_id):
            return LEGACY_COMPONENTS[component_id]
        return self._index.get(component_id)

    def require(self, component_id: int) -> ComponentLayout:
        found = self.get(component_id)
        if found is None:
            raise LayoutError(
                None,
                f"the layout ({self.source}) does not know component {component_id}"
                f" ({component(component_id).name})",
            )
        return found

    def user_mask(self) -> int:
        """The components with a place in the standard format (user components)."""
        return LEGACY_BITS | sum(
            1 << e.id for e in self.components if e.standard_offset is not None
        )

    def known_mask(self) -> int:
        return LEGACY_BITS | sum(1 << i for i in self._index)

    def with_source(self, source: str) -> Layout:
        return replace(self, source=source)

    def _remembered(self, compacted: bool, mask: int) -> dict[int, int]:
        """The offsets for a mask, worked out once; a copy, the caller's to change."""
        offsets = self._offsets.get((compacted, mask))
        if offsets is None:
            offsets = self._compacted_offsets(mask) if compacted else self._standard_offsets(mask)
            if len(self._offsets) >= _REMEMBERED:
                self._offsets.clear()
            self._offsets[compacted, mask] = offsets
        return dict(offsets)

    # Standard format ---------------------------------------------------------------
    def standard_offsets(self, mask: int) -> dict[int, int]:
        """Standard offsets of the components in mask; supervisor components refused."""
        return self._remembered(False, mask)

    def _standard_offsets(self, mask: int) -> dict[int, int]:
        offsets = {}
        for i in bits(mask & ~COMPACTED_BIT):
            entry = self.require(i)
            if entry.standard_offset is None:
                raise LayoutError(
                    None,
                    f"component {i} ({entry.name}) is a supervisor component:"
                    " the standard format has no place for it",
                )
            offsets[i] = entry.standard_offset
        return offsets

    def standard_size(self, xcr0: int) -> int:
        """What XSAVE writes for XCR0 = xcr0, as CPUID.(0xD,0).EBX reports it."""
        size = self._sizes.get(xcr0)
        if size is None:
            ends = [
                offset + self.require(i).size
                for i, offset in self.standard_offsets(xcr0).items()
                if is_extended(i)
            ]
            size = max([EXTENDED_START, *ends])
            if len(self._sizes) >= _REMEMBERED:
                self._sizes.clear()
            self._sizes[xcr0] = size
        return size

    # Compacted format --------------------------------------------------------------
    def compacted_offsets(self, xcomp_bv: int) -> dict[int, int]:
        return self._remembered(True, xcomp_bv)

    def _compacted_offsets(self, xcomp_bv: int) -> dict[int, int]:
        offsets = {i: self.require(i).standard_offset or 0 for i in bits(xcomp_bv & LEGACY_BITS)}
        cursor = EXTENDED_START
        for i in bits(extended_bits(xcomp_bv)):
            entry = self.require(i)
            if entry.aligned:
                cursor = (cursor + 63) & ~63
            offsets[i] = cursor
            cursor += entry.size
        return offsets

    def compacted_size(self, xcomp_bv: int) -> int:
        ends = [EXTENDED_START] + [
            offset + self.require(i).size
            for i, offset in self.compacted_offsets(xcomp_bv).items()
            if is_extended(i)
        ]
        return max(ends)

    # Serialisation -----------------------------------------------------------------
    def entries(self) -> list[ComponentLayout]:
        return [*LEGACY_COMPONENTS, *self.components]

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "source": self.source,
            "components": [
                {
                    "id": e.id,
                    "name": e.name,
                    "size": e.size,
                    "offset": e.standard_offset,
                    "supervisor": e.supervisor,
                    "aligned": e.aligned,
                    "xfd": e.xfd,
                }
                for e in self.entries()
            ],
        }
        if self.xcr0_capable is not None:
            data["xcr0_capable"] = hex(self.xcr0_capable)
        if self.xss_capable is not None:
            data["xss_capable"] = hex(self.xss_capable)
        return data


def entry_flaw(entry: ComponentLayout) -> str | None:
    """Why no CPU can have this component layout; None if one can. A component is at most
    MAX_COMPONENT_SIZE bytes, sits after the header and ends inside MAX_AREA_SIZE, and is
    as large as the architecture fixes it (CPUID.(0xD,i).EAX of every real CPU equals the
    catalogue's size, but for architectural LBR, whose depth varies)."""
    if not 2 <= entry.id <= 62:
        return f"component {entry.id} is not an extended state component (2-62)"
    known = component(entry.id)
    label = f"component {entry.id} ({known.name})"
    if not 0 < entry.size <= MAX_COMPONENT_SIZE:
        return f"{label}: size {entry.size} is not between 1 and {MAX_COMPONENT_SIZE}"
    if known.fixed_size and known.size and entry.size != known.size:
        return f"{label}: size {entry.size}, but the architecture fixes it at {known.size} bytes"
    offset = entry.standard_offset
    if offset is None and not entry.supervisor:
        # CPUID.(0xD,i).EBX is 0 for supervisor components only (SDM vol. 1 §13.2).
        return f"{label}: no standard offset, which only a supervisor component lacks"
    if offset is not None and not EXTENDED_START <= offset <= MAX_AREA_SIZE - entry.size:
        return (
            f"{label}: offset {offset} is outside the extended area"
            f" ({EXTENDED_START} to {MAX_AREA_SIZE} bytes)"
        )
    return None


def layout_from_components(
    entries: Iterable[ComponentLayout], source: str, **extra: object
) -> Layout:
    """A layout of these components; LayoutError naming the first one no CPU can have."""
    entries = list(entries)
    for entry in entries:
        flaw = entry_flaw(entry) if is_extended(entry.id) else None
        if flaw is not None:
            raise LayoutError(source, flaw)
    return Layout(
        source,
        tuple(e for e in entries if is_extended(e.id)),
        **extra,  # type: ignore[arg-type]
    )


def layout_from_cpuid(leaves: Leaf0D, source: str, name: str | None = None) -> Layout:
    """A layout from CPUID leaf 0xD sub-leaves, as the CPU (or a dump of one) gives them."""
    entries = []
    for i, (eax, ebx, ecx, _edx) in sorted(leaves.items()):
        if not is_extended(i) or eax == 0:
            continue
        supervisor = bool(ecx & _SUPERVISOR_FLAG)
        entries.append(
            ComponentLayout(
                id=i,
                size=eax,
                standard_offset=None if supervisor else ebx,
                aligned=bool(ecx & _ALIGNED_FLAG),
                supervisor=supervisor,
                xfd=bool(ecx & _XFD_FLAG),
            )
        )
    sub0 = leaves.get(0)
    sub1 = leaves.get(1)
    return layout_from_components(
        entries,
        source,
        name=name,
        xcr0_capable=None if sub0 is None else sub0[0] | sub0[3] << 32,
        xss_capable=None if sub1 is None else sub1[2] | sub1[3] << 32,
    )


def layout_from_json(data: object, source: str) -> Layout:
    """A layout file as `xcr0tool layout --json` or `xcr0tool host --save` writes it. The
    file's own "source" (the machine it describes) is kept after where it was read from."""

    def refuse(problem: str) -> LayoutError:
        return LayoutError(source, f"not a layout file: {problem}")

    if not isinstance(data, dict) or not isinstance(data.get("components"), list):
        raise refuse('expected {"components": [...]}')
    entries = []
    for index, record in enumerate(data["components"]):
        if not isinstance(record, dict) or not all(
            _is_integer(record.get(key)) for key in ("id", "size")
        ):
            raise refuse(f"component {index} needs integer 'id' and 'size'")
        supervisor = bool(record.get("supervisor", False))
        offset = record.get("offset")
        if offset is not None and not _is_integer(offset):
            raise refuse(f"component {index}: offset {offset!r} is not an integer")
        entry = ComponentLayout(
            id=record["id"],
            size=record["size"],
            standard_offset=None if supervisor else offset,
            aligned=bool(record.get("aligned", False)),
            supervisor=supervisor,
            xfd=bool(record.get("xfd", False)),
        )
        if entry.id < len(LEGACY_COMPONENTS):  # x87, SSE: where the legacy region has them
            if not entry.id >= 0 or (entry.size, entry.standard_offset) != (
                LEGACY_COMPONENTS[entry.id].size,
                LEGACY_COMPONENTS[entry.id].standard_offset,
            ):
                raise refuse(f"component {index}: id {entry.id}, size {entry.size}")
            continue
        flaw = entry_flaw(entry)
        if flaw is not None:
            raise refuse(f"component {index}: {flaw}")
        entries.append(entry)
    masks = {}
    for key in ("xcr0_capable", "xss_capable"):
        value = data.get(key)
        masks[key] = None if value is None else _mask(value)
        if value is not None and masks[key] is None:
            shown = repr(value[:40]) if isinstance(value, str) else type(value).__name__
            raise refuse(f"{key} {shown} is not a 64-bit mask")
    described = data.get("source")
    if isinstance(described, str) and described:
        source = f"{source} ({described[:200]})"
    return layout_from_components(entries, source, **masks)


def _mask(value: object) -> int | None:
    """A 64-bit mask as layout files write it ("0x2e7", or a JSON integer); None if not."""
    if _is_integer(value):
        number = value
    elif isinstance(value, str) and len(value) <= 20:
        try:
            number = int(value, 0)
        except ValueError:
            return None
    else:
        return None
    return number if isinstance(number, int) and 0 <= number < 1 << 64 else None


def _is_integer(value: object) -> bool:
    """A JSON integer (not a bool, a float or a string)."""
    return isinstance(value, int) and not isinstance(value, bool)


def layout_from_note(descriptor: bytes, source: str) -> Layout:
    """NT_X86_XSAVE_LAYOUT (Linux 6.12+, arch/x86/kernel/fpu/xstate.c): 16-byte records
    {u32 type, u32 size, u32 offset, u32 flags} for each enabled extended user component.

    The note does not say which components are 64-byte aligned when compacted; that is
    taken from the catalogue (AMX, the only aligned user components on real CPUs).
    """
    if len(descriptor) % 16:
        raise LayoutError(
            source, f"{len(descriptor)} bytes is not a whole number of 16-byte records"
        )
    entries = []
    for at in range(0, len(descriptor), 16):
        kind, size, offset, _flags = (
            int.from_bytes(descriptor[at + k : at + k + 4], "little") for k in range(0, 16, 4)
        )
        if not is_extended(kind) or kind > 62 or size == 0 or offset < EXTENDED_START:
            raise LayoutError(
                source,
                f"record {at // 16} is not a user component"
                f" (type {kind}, size {size}, offset {offset})",
            )
        entries.append(ComponentLayout(kind, size, offset, component(kind).aligned, False))
    return layout_from_components(entries, source, notes=("alignment from the catalogue",))


def note_from_layout(layout: Layout, xcr0: int) -> bytes:
    """The NT_X86_XSAVE_LAYOUT descriptor the kernel would write for this XCR0."""
    out = bytearray()
    for i, offset in sorted(layout.standard_offsets(xcr0).items()):
        if is_extended(i):
            for word in (i, layout.require(i).size, offset, 0):
                out += word.to_bytes(4, "little")
    return bytes(out)
