"""Register value -> text a person reads: an 80-bit float as gdb prints it (x87.py), the
fields of FSW and MXCSR, PKRU per key, the tile configuration. Presentation only: the
values come from registers.py; nothing here parses an image."""

from __future__ import annotations

from collections.abc import Callable

from xcr0tool.arch import legacy, tilecfg
from xcr0tool.arch.components import BY_NAME
from xcr0tool.render.x87 import x87_describe

_MXCSR_FLAGS = (
    ("IE", 0), ("DE", 1), ("ZE", 2), ("OE", 3), ("UE", 4), ("PE", 5), ("DAZ", 6),
    ("IM", 7), ("DM", 8), ("ZM", 9), ("OM", 10), ("UM", 11), ("PM", 12), ("FZ", 15),
)  # fmt: skip
_ROUNDING = ("nearest", "down", "up", "zero")
_FSW_FLAGS = (
    ("IE", 0), ("DE", 1), ("ZE", 2), ("OE", 3), ("UE", 4), ("PE", 5), ("SF", 6), ("ES", 7),
    ("C0", 8), ("C1", 9), ("C2", 10), ("C3", 14), ("B", 15),
)  # fmt: skip
_TAGS = ("valid", "zero", "special", "empty")


def flags(value: int, table: tuple[tuple[str, int], ...]) -> str:
    return " ".join(name for name, bit in table if value >> bit & 1)


def _fstat(value: int) -> str:
    return f"TOP={value >> 11 & 7} {flags(value, _FSW_FLAGS)}".rstrip()


def _fctrl(value: int) -> str:
    precision = ("single", "reserved", "double", "extended")[value >> 8 & 3]
    return f"{precision} precision, round {_ROUNDING[value >> 10 & 3]}, masks 0x{value & 0x3F:02x}"


def _ftag(value: int) -> str:
    tags = [_TAGS[value >> (2 * i) & 3] for i in range(8)]
    if all(t == "empty" for t in tags):
        return "all empty"
    return " ".join(f"R{i}:{t}" for i, t in enumerate(tags) if t != "empty")


def _mxcsr(value: int) -> str:
    return f"[ {flags(value, _MXCSR_FLAGS)} ] round {_ROUNDING[value >> 13 & 3]}"


def _pkru(value: int) -> str:
    keys = []
    for key in range(16):
        access, write = value >> (2 * key) & 1, value >> (2 * key + 1) & 1
        if access or write:
            keys.append(f"key{key}:{'AD' if access else ''}{'WD' if write else ''}")
    return " ".join(keys) or "all keys allow access"


def describe_tilecfg(value: int) -> str:
    cfg = tilecfg.decode(value.to_bytes(tilecfg.SIZE, "little"))
    if cfg.palette == 0:
        return "palette 0 (tiles not configured)"
    tiles = [
        f"tmm{i}:{rows}x{colsb}B"
        for i, (rows, colsb) in enumerate(zip(cfg.rows, cfg.colsb, strict=True))
        if i < tilecfg.TILES
    ]
    return f"palette {cfg.palette}, start_row {cfg.start_row}, " + " ".join(tiles)


def _describers() -> dict[str, Callable[[int], str]]:
    """Register name -> how its value reads, the names taken from the legacy-region table
    and the catalogue rows, not matched by prefix."""
    found: dict[str, Callable[[int], str]] = {
        name: x87_describe for _, name, _ in legacy.field("st").slots()
    }
    found.update(fstat=_fstat, fctrl=_fctrl, ftag=_ftag, mxcsr=_mxcsr)
    assert set(found) <= {r for row in legacy.fields() for _, _, r in row.slots() if r}
    found[BY_NAME["pkru"].fields[0].name] = _pkru
    found[BY_NAME["xtilecfg"].fields[0].name] = describe_tilecfg
    return found


_DESCRIBE = _describers()


def describe(name: str, value: int) -> str:
    """A short description of a register's value, or '' when the hex says it all."""
    describer = _DESCRIBE.get(name)
    return "" if describer is None else describer(value)
