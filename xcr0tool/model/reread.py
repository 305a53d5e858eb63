"""Sequences whose items are made again at every pass over them, never held.

A whole rr trace is read this way (sources/rrtrace.TraceImages) and so are the pairs a
diff compares against one (ops/diff.StreamedPairs): memory stays flat in the frame
count. What such a sequence gives is `__iter__` and `__len__`; indexing walks to the
item, which nothing does far into a trace. `Mapped` carries such a sequence through a
function (images to validate's subjects, subjects to their reports) without holding it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar, overload

T = TypeVar("T")
U = TypeVar("U")


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


class Mapped(Sequence[U]):
    """`make(item)` for each item of `items`, made as it is iterated or indexed, never
    held: over a Reread, as flat in memory as it."""

    def __init__(self, items: Sequence[T], make: Callable[[T], U]) -> None:
        self._items: Sequence[T] = items
        self._make: Callable[[T], U] = make

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[U]:
        return map(self._make, self._items)

    @overload
    def __getitem__(self, index: int) -> U: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[U]: ...
    def __getitem__(self, index: int | slice) -> U | Sequence[U]:
        if isinstance(index, slice):
            return list(self)[index]
        return self._make(self._items[index])
