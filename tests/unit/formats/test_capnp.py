"""The packed Cap'n Proto reader (xcr0tool.formats.capnp) against the encoding as the
specification gives it: a packer written here from the spec, hand-made messages with
single and double far pointers, and the checks on every pointer and count. Messages made
by capnp's own encoder are read in tests/unit/sources/test_rr.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xcr0tool.formats.capnp import (
    MAX_MESSAGE_WORDS,
    CapnpError,
    Message,
    PackedSource,
    read_packed_message,
)


def pack(words: bytes) -> bytes:
    """capnp's packing (capnproto.org/encoding.html#packing), one piece."""
    out = bytearray()
    i = 0
    count = len(words) // 8
    while i < count:
        word = words[8 * i : 8 * i + 8]
        tag = sum(1 << b for b in range(8) if word[b])
        out.append(tag)
        out += bytes(b for b in word if b)
        i += 1
        if tag == 0:
            run = 0
            while i < count and run < 255 and not any(words[8 * i : 8 * i + 8]):
                run += 1
                i += 1
            out.append(run)
        elif tag == 0xFF:
            run = 0
            start = i
            while i < count and run < 255 and sum(1 for b in words[8 * i : 8 * i + 8] if b) >= 7:
                run += 1
                i += 1
            out.append(run)
            out += words[8 * start : 8 * i]
    return bytes(out)


def framed(segments: list[bytes]) -> bytes:
    """Segment table and segments, packed piece by piece as writePackedMessage does."""
    table = (len(segments) - 1).to_bytes(4, "little")
    table += b"".join((len(s) // 8).to_bytes(4, "little") for s in segments)
    if len(table) % 8:
        table += bytes(4)
    return pack(table) + b"".join(pack(s) for s in segments)


def struct_ptr(offset: int, data: int, ptrs: int) -> bytes:
    return ((offset & ((1 << 30) - 1)) << 2 | data << 32 | ptrs << 48).to_bytes(8, "little")


def list_ptr(offset: int, element: int, count: int) -> bytes:
    return ((offset & ((1 << 30) - 1)) << 2 | 1 | element << 32 | count << 35).to_bytes(8, "little")


def far_ptr(segment: int, pad: int, double: bool = False) -> bytes:
    return (2 | int(double) << 2 | pad << 3 | segment << 32).to_bytes(8, "little")


words_st = st.lists(
    st.one_of(
        st.just(bytes(8)),
        st.binary(min_size=8, max_size=8),
        st.builds(lambda b: bytes([b, 0, 0, 0, 0, 0, 0, 0]), st.integers(1, 255)),
    ),
    max_size=600,
).map(b"".join)


@given(words_st, st.integers(1, 64))
def test_unpack_round_trip_streamed_in_pieces(words: bytes, piece: int) -> None:
    packed = pack(words)
    pieces = [packed[i : i + piece] for i in range(0, len(packed), piece)]
    source = PackedSource(b"", lambda: pieces.pop(0) if pieces else None)
    out = bytearray()
    source.unpack(len(words) // 8, out)
    assert bytes(out) == words
    assert source.at_end()


@given(words_st)
def test_skipping_consumes_exactly_the_words(words: bytes) -> None:
    source = PackedSource(pack(words) + pack(b"\x01" * 8))
    source.unpack(len(words) // 8, None)
    out = bytearray()
    source.unpack(1, out)
    assert bytes(out) == b"\x01" * 8


def test_double_far_and_single_far_pointers() -> None:
    # segment 0: the root pointer, a double-far to segment 1's landing pad at word 0
    # segment 1: the pad (a far pointer to segment 2 word 0, then the tag word)
    # segment 2: the struct (1 data word, 1 pointer), whose pointer is a single far to
    #            segment 3 word 0, a landing pad for a byte list right after it
    seg0 = far_ptr(1, 0, double=True)
    seg1 = far_ptr(2, 0) + struct_ptr(0, 1, 1)
    seg2 = (0xDEADBEEF).to_bytes(8, "little") + far_ptr(3, 0)
    seg3 = list_ptr(0, 2, 5) + b"hello\0\0\0"
    message = read_packed_message(PackedSource(framed([seg0, seg1, seg2, seg3])))
    root = message.root()
    assert root.u32(0) == 0xDEADBEEF
    assert root.data(0) == b"hello"
    assert root.u64(64) == 0  # past a smaller struct's data: the default


def test_a_pointer_outside_its_segment_is_refused() -> None:
    seg0 = struct_ptr(5, 1, 0)  # the struct would start at word 6 of a 1-word segment
    with pytest.raises(CapnpError, match="runs past the end of segment 0"):
        Message([seg0]).root()


def test_a_far_pointer_to_a_missing_segment_is_refused() -> None:
    with pytest.raises(CapnpError, match="names segment 7, the message has 1"):
        Message([far_ptr(7, 0)]).root()


def test_a_byte_list_longer_than_its_segment_is_refused() -> None:
    seg0 = struct_ptr(0, 0, 1) + list_ptr(0, 2, 1000)
    with pytest.raises(CapnpError, match="a byte list of 125 words"):
        Message([seg0]).root().data(0)


def test_the_traversal_limit_stops_amplification() -> None:
    # one struct whose pointer points back at the struct itself, read again and again
    seg0 = struct_ptr(0, 0, 1) + struct_ptr(-1, 0, 1)
    message = Message([seg0], traversal_limit=100)
    node = message.root()
    with pytest.raises(CapnpError, match="traversal limit"):
        for _ in range(200):
            node = node.struct(0)  # type: ignore[assignment]


def test_a_segment_table_claiming_too_much_is_refused_before_reading() -> None:
    table = (0).to_bytes(4, "little") + (MAX_MESSAGE_WORDS + 1).to_bytes(4, "little")
    with pytest.raises(CapnpError, match="more than the 64 MiB a message may have"):
        read_packed_message(PackedSource(pack(table)))


def test_truncated_packed_data_is_refused() -> None:
    data = framed([struct_ptr(0, 2, 0) + b"\x01" * 16])
    with pytest.raises(CapnpError, match="truncated"):
        read_packed_message(PackedSource(data[:-3]))


def test_a_zero_run_crossing_a_segment_end_is_refused() -> None:
    table = (0).to_bytes(4, "little") + (2).to_bytes(4, "little")
    with pytest.raises(CapnpError, match="crosses the end of a segment"):
        read_packed_message(PackedSource(pack(table) + b"\x00\x05"))
