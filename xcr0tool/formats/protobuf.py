"""A minimal reader of the protobuf wire format: enough for CRIU's images.

The wire format (protobuf.dev, "Encoding"): a message is a run of fields, each a varint key
(field number << 3 | wire type) and a value: wire type 0 a varint (at most 10 bytes, 7 bits
each, low first), 1 eight bytes, 2 a varint length and that many bytes (a sub-message, a
string, or a packed run of scalars), 5 four bytes. Types 3 and 4 (groups) are not used by
any proto2 file CRIU has. A repeated scalar may come one value per key or packed in one
length-delimited field; a reader must take both.

Every length and every varint is checked against the end of the bytes it is read from;
errors are ProtobufError with the byte offset, for the caller to name the file.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
_MAX_VARINT_BYTES = 10


class ProtobufError(ValueError):
    """Not a well-formed protobuf message (the problem, with a byte offset)."""


def read_varint(data: bytes | memoryview, pos: int, base: int = 0) -> tuple[int, int]:
    """(value, position after it). `base` is added to offsets in messages."""
    value = 0
    for count in range(_MAX_VARINT_BYTES):
        if pos + count >= len(data):
            raise ProtobufError(f"truncated varint at byte {base + pos}")
        byte = data[pos + count]
        value |= (byte & 0x7F) << (7 * count)
        if not byte & 0x80:
            return value & ((1 << 64) - 1), pos + count + 1
    raise ProtobufError(f"a varint at byte {base + pos} is longer than 10 bytes")


def iter_fields(
    data: bytes | memoryview, base: int = 0
) -> Iterator[tuple[int, int, int | memoryview, int]]:
    """(field number, wire type, value, offset of the value) of every field in order.
    Length-delimited values are memoryviews into `data`."""
    view = memoryview(data)
    pos = 0
    end = len(view)
    while pos < end:
        key, pos = read_varint(view, pos, base)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError(f"field number 0 at byte {base + pos}")
        at = pos
        value: int | memoryview
        if wire == VARINT:
            value, pos = read_varint(view, pos, base)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            if pos + size > end:
                raise ProtobufError(f"truncated {size}-byte field {number} at byte {base + pos}")
            value = int.from_bytes(view[pos : pos + size], "little")
            pos += size
        elif wire == LENGTH:
            length, pos = read_varint(view, pos, base)
            if length > end - pos:
                raise ProtobufError(
                    f"field {number} at byte {base + at} claims {length} bytes,"
                    f" {end - pos} are left"
                )
            at = pos
            value = view[pos : pos + length]
            pos += length
        else:
            raise ProtobufError(f"field {number} at byte {base + at} has wire type {wire}")
        yield number, wire, value, base + at


class Fields:
    """The fields of one message, by number, for the accessors below."""

    def __init__(self, data: bytes | memoryview, base: int = 0):
        self.base = base
        self._fields: dict[int, list[tuple[int, int | memoryview, int]]] = {}
        for number, wire, value, at in iter_fields(data, base):
            self._fields.setdefault(number, []).append((wire, value, at))

    def has(self, number: int) -> bool:
        return number in self._fields

    def scalar(self, number: int, default: int | None = None, bits: int = 64) -> int | None:
        """The last value of a varint field (protobuf: the last one wins), cut to its type."""
        values = self.repeated(number, bits)
        return values[-1] if values else default

    def repeated(self, number: int, bits: int = 64) -> list[int]:
        """A repeated varint field, one value per key or packed."""
        out: list[int] = []
        mask = (1 << bits) - 1
        for wire, value, at in self._fields.get(number, ()):
            if wire == VARINT:
                assert isinstance(value, int)
                out.append(value & mask)
            elif wire == LENGTH:
                assert isinstance(value, memoryview)
                pos = 0
                while pos < len(value):
                    item, pos = read_varint(value, pos, at)
                    out.append(item & mask)
            else:
                raise ProtobufError(f"field {number} at byte {at} is not a varint (wire {wire})")
        return out

    def message(self, number: int) -> Fields | None:
        """The last sub-message in a field (proto2 merges repeats; CRIU writes one)."""
        found = self._fields.get(number)
        if not found:
            return None
        wire, value, at = found[-1]
        if wire != LENGTH:
            raise ProtobufError(f"field {number} at byte {at} is not a message (wire {wire})")
        assert isinstance(value, memoryview)
        return Fields(value, at)

    def messages(self, number: int) -> list[Fields]:
        out = []
        for wire, value, at in self._fields.get(number, ()):
            if wire != LENGTH:
                raise ProtobufError(f"field {number} at byte {at} is not a message (wire {wire})")
            assert isinstance(value, memoryview)
            out.append(Fields(value, at))
        return out

    def text(self, number: int) -> str | None:
        found = self._fields.get(number)
        if not found:
            return None
        wire, value, at = found[-1]
        if wire != LENGTH:
            raise ProtobufError(f"field {number} at byte {at} is not a string (wire {wire})")
        assert isinstance(value, memoryview)
        return bytes(value).decode("utf-8", "replace")
