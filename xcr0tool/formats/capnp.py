"""A reader of packed Cap'n Proto messages: as much of the encoding as rr's traces use.

The encoding (capnproto.org, "Encoding" and "Serialization over a stream"):

- A message is a segment table (u32 segment count - 1, one u32 size in words per segment,
  padded to a whole word) followed by the segments, each a run of 8-byte words.
- Packing replaces each word by a tag byte (bit i set: byte i is non-zero) and its
  non-zero bytes. Tag 0x00 is followed by a count of further all-zero words; tag 0xFF by
  its 8 bytes, then a count of words copied unpacked. rr writes the table and each segment
  as separate pieces, so no run crosses a piece (capnp's PackedOutputStream).
- A pointer is one word. Its low two bits: 0 struct (signed 30-bit word offset from the
  end of the pointer, u16 data words, u16 pointer count), 1 list (offset, 3-bit element
  size, 29-bit count; size 7 is a composite list led by a tag word), 2 far (bit 2 set:
  double-far; 29-bit landing-pad offset; u32 segment id), 3 capability.
  A single far pointer lands on a struct or list pointer whose offset counts from the
  pad. A double-far lands on two words: a far pointer to the content, and a tag word that
  is the struct or list pointer with offset 0.

Nothing here trusts a count or an offset: every pointer is checked against its segment,
every message against a word limit, every read against a traversal limit (capnp's own
defence against amplification: a pointer loop reads the same words again and again).
Errors are CapnpError with the problem only; the caller names the file and the frame.

Written from the specification, not from capnp's code; pycapnp is not used because it
needs the schema at run time (which the project does not ship: rr's schema is rr's)
and costs a compiled extension for the four fields rr's reader here needs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

WORD = 8
# capnp's ReaderOptions default traversalLimitInWords: 8 Mi words (64 MiB).
TRAVERSAL_LIMIT_WORDS = 8 << 20
# capnp refuses messages with more segments than this (serialize.c++, "too many segments").
MAX_SEGMENTS = 512
# No message here may be larger than capnp's traversal limit: a bigger one could not be read.
MAX_MESSAGE_WORDS = TRAVERSAL_LIMIT_WORDS

_STRUCT, _LIST, _FAR, _OTHER = 0, 1, 2, 3
_BYTES_PER_ELEMENT = {0: 0, 2: 1, 3: 2, 4: 4, 5: 8, 6: 8}  # list element sizes but bits (1)
_ZERO_WORD = bytes(WORD)


class CapnpError(ValueError):
    """The bytes are not a well-formed Cap'n Proto message (the problem, in words)."""


def _expander(tag: int) -> Callable[..., bytes]:
    """The unpacking of a word with this tag: its non-zero bytes back in their places.

    struct's pad byte 'x' writes a zero when packing, so the format for tag 0b00000101 is
    'BxBxxxxx' and pack(*nonzero_bytes) is the word."""
    return struct.Struct("".join("B" if tag >> i & 1 else "x" for i in range(8))).pack


_EXPAND = [_expander(tag) for tag in range(256)]
_POPCOUNT = bytes(bin(tag).count("1") for tag in range(256))
_LONGEST = 10 + 255 * WORD  # tag 0xFF: the tag, 8 bytes, a count, 255 words


class PackedSource:
    """Packed bytes to unpack, from one buffer (`version`) or a feed of buffers (rr's
    decompressed events blocks). `more()` appends the next buffer and says whether there
    was one; only the unread tail is kept, so memory is one block plus one message."""

    def __init__(self, data: bytes = b"", more: Callable[[], bytes | None] | None = None):
        self.buf = data
        self.pos = 0
        self._feed = more
        self._mark: int | None = None

    def at_end(self) -> bool:
        while self.pos >= len(self.buf):
            if not self._refill():
                return True
        return False

    def _refill(self) -> bool:
        if self._feed is None:
            return False
        block = self._feed()
        if block is None:
            self._feed = None
            return False
        keep = self.pos if self._mark is None else min(self.pos, self._mark)
        self.buf = self.buf[keep:] + block
        self.pos -= keep
        if self._mark is not None:
            self._mark -= keep
        return True

    def mark(self) -> None:
        """Keep the bytes from here on until release(), so that rewind() can return here."""
        self._mark = self.pos

    def rewind(self) -> None:
        assert self._mark is not None
        self.pos = self._mark

    def release(self) -> None:
        self._mark = None

    def _ensure(self, pos: int) -> None:
        """Refill until a whole item (at most _LONGEST bytes) follows pos, or the feed ends."""
        self.pos = pos
        while len(self.buf) - self.pos < _LONGEST and self._refill():
            pass

    def unpack(self, words: int, out: bytearray | None) -> None:
        """Unpack `words` words onto `out` (or skip them when out is None).

        The loop checks bounds only near the end of the buffer: anywhere else a whole
        item (at most _LONGEST bytes) is known to be there."""
        buf, pos = self.buf, self.pos
        limit = len(buf) - _LONGEST
        done = 0
        popcount = _POPCOUNT
        expand = _EXPAND
        while done < words:
            if pos > limit:
                self._ensure(pos)
                buf, pos = self.buf, self.pos
                limit = len(buf) - _LONGEST
                if pos > limit:  # the feed is done: this item may be cut short
                    pos, done = self._checked_item(pos, done, words, out)
                    continue
            tag = buf[pos]
            if 0 < tag < 255:
                stop = pos + 1 + popcount[tag]
                if out is not None:
                    out += expand[tag](*buf[pos + 1 : stop])
                pos = stop
                done += 1
            elif tag == 0:
                count = 1 + buf[pos + 1]
                if done + count > words:
                    raise CapnpError("a run of zero words crosses the end of a segment")
                if out is not None:
                    out += _ZERO_WORD * count
                pos += 2
                done += count
            else:
                count = buf[pos + 9]
                stop = pos + 10 + WORD * count
                if done + 1 + count > words:
                    raise CapnpError("a run of unpacked words crosses the end of a segment")
                if out is not None:
                    out += buf[pos + 1 : pos + 9]
                    out += buf[pos + 10 : stop]
                pos = stop
                done += 1 + count
        self.pos = pos

    def _checked_item(
        self, pos: int, done: int, words: int, out: bytearray | None
    ) -> tuple[int, int]:
        """One item at the end of the data, every length checked."""
        buf, end = self.buf, len(self.buf)
        if pos >= end:
            raise CapnpError("truncated: the packed data ends inside the message")
        tag = buf[pos]
        if tag == 0:
            if pos + 2 > end:
                raise CapnpError("truncated: the packed data ends inside a run of zero words")
            count = 1 + buf[pos + 1]
            if done + count > words:
                raise CapnpError("a run of zero words crosses the end of a segment")
            if out is not None:
                out += _ZERO_WORD * count
            return pos + 2, done + count
        if tag == 0xFF:
            if pos + 10 > end:
                raise CapnpError("truncated: the packed data ends inside a word")
            count = buf[pos + 9]
            stop = pos + 10 + WORD * count
            if stop > end:
                raise CapnpError("truncated: the packed data ends inside a run of words")
            if done + 1 + count > words:
                raise CapnpError("a run of unpacked words crosses the end of a segment")
            if out is not None:
                out += buf[pos + 1 : pos + 9]
                out += buf[pos + 10 : stop]
            return stop, done + 1 + count
        stop = pos + 1 + _POPCOUNT[tag]
        if stop > end:
            raise CapnpError("truncated: the packed data ends inside a word")
        if out is not None:
            out += _EXPAND[tag](*buf[pos + 1 : stop])
        return stop, done + 1


def read_segment_table(source: PackedSource) -> list[int]:
    """The sizes in words of a message's segments (the first word already tells how many)."""
    first = bytearray()
    source.unpack(1, first)
    count = int.from_bytes(first[0:4], "little") + 1
    if count > MAX_SEGMENTS:
        raise CapnpError(f"the segment table claims {count} segments (at most {MAX_SEGMENTS})")
    rest = bytearray()
    source.unpack(count // 2, rest)  # the table is (count + 1) u32 words, padded to 8 bytes
    table = bytes(first) + bytes(rest)
    sizes = [int.from_bytes(table[4 + 4 * i : 8 + 4 * i], "little") for i in range(count)]
    total = sum(sizes)
    if total > MAX_MESSAGE_WORDS:
        raise CapnpError(
            f"the segment table claims {total} words ({total * WORD} bytes), more than the"
            f" {MAX_MESSAGE_WORDS * WORD >> 20} MiB a message may have"
        )
    return sizes


def read_packed_message(source: PackedSource) -> Message:
    """One whole packed message from the source."""
    sizes = read_segment_table(source)
    segments = []
    for size in sizes:
        out = bytearray()
        source.unpack(size, out)
        segments.append(bytes(out))
    return Message(segments)


@dataclass(frozen=True)
class _Target:
    """Where a pointer leads: the segment, the word the content starts at, and the pointer
    word that describes it (for a double-far, the tag word)."""

    segment: int
    at: int
    word: int


class Message:
    """Segments of a message, read through checked pointers."""

    def __init__(self, segments: list[bytes], traversal_limit: int = TRAVERSAL_LIMIT_WORDS):
        self.segments = segments
        self._budget = traversal_limit

    def _charge(self, words: int) -> None:
        # capnp charges at least one word per object, so that empty ones cost something.
        self._budget -= max(words, 1)
        if self._budget < 0:
            raise CapnpError(
                "the traversal limit is exceeded (pointers lead to more data than the message"
                " holds: a loop or an amplification)"
            )

    def _word(self, segment: int, at: int) -> int:
        seg = self.segments[segment]
        if at < 0 or (at + 1) * WORD > len(seg):
            raise CapnpError(f"a pointer at word {at} lies outside segment {segment}")
        return int.from_bytes(seg[at * WORD : (at + 1) * WORD], "little")

    def _segment_words(self, segment: int) -> int:
        return len(self.segments[segment]) // WORD

    def _follow(self, segment: int, at: int) -> _Target | None:
        """Resolve the pointer at (segment, at), through far pointers; None if null."""
        word = self._word(segment, at)
        if word == 0:
            return None
        kind = word & 3
        if kind == _FAR:
            double = word >> 2 & 1
            pad = word >> 3 & ((1 << 29) - 1)
            target_segment = word >> 32
            if target_segment >= len(self.segments):
                raise CapnpError(
                    f"a far pointer names segment {target_segment}, the message has"
                    f" {len(self.segments)}"
                )
            if not double:
                landing = self._word(target_segment, pad)
                if landing & 3 == _FAR:
                    raise CapnpError("a far pointer lands on another far pointer")
                if landing & 3 == _OTHER:
                    raise CapnpError("a capability pointer where data was expected")
                return _Target(target_segment, pad + 1 + _offset(landing), landing)
            far = self._word(target_segment, pad)
            tag = self._word(target_segment, pad + 1)
            if far & 3 != _FAR or far >> 2 & 1:
                raise CapnpError("a double-far landing pad does not start with a far pointer")
            if tag & 3 not in (_STRUCT, _LIST) or _offset(tag) != 0:
                raise CapnpError("a double-far landing pad has a bad tag word")
            content_segment = far >> 32
            if content_segment >= len(self.segments):
                raise CapnpError(
                    f"a far pointer names segment {content_segment}, the message has"
                    f" {len(self.segments)}"
                )
            return _Target(content_segment, far >> 3 & ((1 << 29) - 1), tag)
        if kind == _OTHER:
            raise CapnpError("a capability pointer where data was expected")
        return _Target(segment, at + 1 + _offset(word), word)

    def root(self) -> Struct:
        if not self.segments or not self.segments[0]:
            raise CapnpError("the message is empty (no root pointer)")
        found = self._struct_at(0, 0)
        if found is None:
            raise CapnpError("the root pointer is null")
        return found

    def _struct_at(self, segment: int, at: int) -> Struct | None:
        target = self._follow(segment, at)
        if target is None:
            return None
        if target.word & 3 != _STRUCT:
            raise CapnpError("a list pointer where a struct was expected")
        data_words = target.word >> 32 & 0xFFFF
        pointers = target.word >> 48
        self._check_range(target.segment, target.at, data_words + pointers, "a struct")
        self._charge(data_words + pointers)
        return Struct(self, target.segment, target.at, data_words, pointers)

    def _data_at(self, segment: int, at: int) -> bytes | None:
        """A Data or Text field: a list of bytes."""
        target = self._follow(segment, at)
        if target is None:
            return None
        if target.word & 3 != _LIST:
            raise CapnpError("a struct pointer where a byte list (Data) was expected")
        element = target.word >> 32 & 7
        count = target.word >> 35
        if element != 2:
            raise CapnpError(f"a list of element size code {element} where bytes were expected")
        words = (count + WORD - 1) // WORD
        self._check_range(target.segment, target.at, words, "a byte list")
        self._charge(words)
        start = target.at * WORD
        return self.segments[target.segment][start : start + count]

    def _check_range(self, segment: int, at: int, words: int, what: str) -> None:
        if at < 0 or at + words > self._segment_words(segment):
            raise CapnpError(
                f"{what} of {words} words at word {at} runs past the end of segment {segment}"
                f" ({self._segment_words(segment)} words)"
            )


def _offset(word: int) -> int:
    """The signed 30-bit word offset of a struct or list pointer."""
    value = word >> 2 & ((1 << 30) - 1)
    return value - (1 << 30) if value & (1 << 29) else value


class Struct:
    """A struct's data and pointer sections. Fields past the end of a (smaller, older)
    struct read as their default, as capnp has it."""

    def __init__(self, message: Message, segment: int, at: int, data_words: int, pointers: int):
        self._message = message
        self._segment = segment
        self._at = at
        self.data_words = data_words
        self.pointer_count = pointers

    def _uint(self, byte_offset: int, size: int) -> int:
        if byte_offset + size > self.data_words * WORD:
            return 0
        start = self._at * WORD + byte_offset
        return int.from_bytes(self._message.segments[self._segment][start : start + size], "little")

    def u16(self, byte_offset: int) -> int:
        return self._uint(byte_offset, 2)

    def u32(self, byte_offset: int) -> int:
        return self._uint(byte_offset, 4)

    def i32(self, byte_offset: int) -> int:
        value = self._uint(byte_offset, 4)
        return value - (1 << 32) if value >> 31 else value

    def u64(self, byte_offset: int) -> int:
        return self._uint(byte_offset, 8)

    def bit(self, bit_offset: int) -> bool:
        return bool(self._uint(bit_offset // 8, 1) >> (bit_offset % 8) & 1)

    def has_pointer(self, index: int) -> bool:
        if index >= self.pointer_count:
            return False
        return self._message._word(self._segment, self._at + self.data_words + index) != 0

    def struct(self, index: int) -> Struct | None:
        if index >= self.pointer_count:
            return None
        return self._message._struct_at(self._segment, self._at + self.data_words + index)

    def data(self, index: int) -> bytes | None:
        if index >= self.pointer_count:
            return None
        return self._message._data_at(self._segment, self._at + self.data_words + index)
