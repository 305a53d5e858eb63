"""AMX tile configuration (XTILECFG, state component 17): the 64 bytes, decoded once.

Intel SDM vol. 1 §13.5.12 and vol. 2 LDTILECFG ("Description" and its #GP conditions):
byte 0 palette, byte 1 start_row, bytes 2-15 reserved, bytes 16-47 colsb[16] (u16,
bytes per row), bytes 48-63 rows[16] (u8). Palette 1 has 8 tiles (tmm0-7) of at most
16 rows of 64 bytes. The grammar (formats/xsave.py xtilecfg), validate's tilecfg rule
and decode's description all read it through `decode`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

SIZE = 64
PALETTE, START_ROW = 0, 1
RESERVED = (2, 16)
COLSB, ROWS = 16, 48  # colsb: 16 u16, rows: 16 u8
SLOTS = 16
TILES = 8  # palette 1: tmm0-7
MAX_ROWS = 16
MAX_COLSB = 64


class TileConfig(NamedTuple):
    palette: int
    start_row: int
    reserved: bytes
    colsb: tuple[int, ...]
    rows: tuple[int, ...]
    raw: bytes


def decode(raw: bytes) -> TileConfig:
    """The configuration in the first 64 bytes of `raw` (zero-padded if shorter)."""
    data = bytes(raw[:SIZE]).ljust(SIZE, b"\0")
    return TileConfig(
        palette=data[PALETTE],
        start_row=data[START_ROW],
        reserved=data[RESERVED[0] : RESERVED[1]],
        colsb=tuple(
            int.from_bytes(data[COLSB + 2 * i : COLSB + 2 * i + 2], "little") for i in range(SLOTS)
        ),
        rows=tuple(data[ROWS : ROWS + SLOTS]),
        raw=data,
    )


def problems(cfg: TileConfig) -> Iterator[tuple[int, str, str]]:
    """(offset in TILECFG, value, what is wrong) for each reason LDTILECFG would #GP."""
    if cfg.palette == 0:
        if any(cfg.raw[1:]):
            yield 0, "palette 0", "palette 0 means no tiles configured, yet other bytes are set"
        return
    if cfg.palette != 1:
        yield 0, str(cfg.palette), f"palette {cfg.palette}: only 0 and 1 are defined"
        return
    if any(cfg.reserved):
        yield RESERVED[0], cfg.reserved.hex(), "bytes 2-15 are reserved and not zero"
    for i in range(SLOTS):
        colsb, rows = cfg.colsb[i], cfg.rows[i]
        if i >= TILES:
            if colsb or rows:
                yield COLSB + 2 * i, f"{rows}x{colsb}B", f"tile {i} configured; palette 1 has 8"
            continue
        if colsb > MAX_COLSB:
            yield COLSB + 2 * i, str(colsb), f"tmm{i} has {colsb} bytes a row, over 64"
        if rows > MAX_ROWS:
            yield ROWS + i, str(rows), f"tmm{i} has {rows} rows, over 16"
        if (colsb == 0) != (rows == 0):
            yield COLSB + 2 * i, f"{rows}x{colsb}B", f"tmm{i} has rows or bytes a row, not both"
