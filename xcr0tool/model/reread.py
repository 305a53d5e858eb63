"""Sequences whose items are made again at every pass over them, never held.

A whole rr trace is read this way (sources/rrtrace.TraceImages) and so are the pairs a
diff compares against one (ops/diff.StreamedPairs): memory stays flat in the frame
count. What such a sequence gives is `__iter__` and `__len__`; indexing walks to the
item, which nothing does far into a trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar, overload

T = TypeVar("T")


class Reread(Sequence[T]):
    """A Sequence made of `__iter__` (each pass makes the items again) and `__len__`."""

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...
    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        for at, item in enumerate(self):
            if at == index:
                return item
        raise IndexError(index)
