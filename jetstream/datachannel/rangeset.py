"""Sets of integers kept as sorted, disjoint, half-open ranges.

Used for received packet numbers (ACK ranges, replay detection), for the byte ranges of a
stream the receiver already holds (de-duplication, completion) and for finished stream ids.
Two parallel lists (starts, stops) keep `bisect` in C; appends at the top, the common case
for packet numbers and in-order stream data, take a fast path. `RangeSet` is the compiled
twin (int64 arrays, `native.FAST.RangeSet`) where available; `PyRangeSet` here defines it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from jetstream.datachannel.native import FAST


class PyRangeSet:
    """Sorted, disjoint, non-adjacent half-open ranges ``[start, stop)``."""

    __slots__ = ("_starts", "_stops")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []
        for start, stop in ranges:
            self.add(start, stop)

    def add(self, start: int, stop: int) -> list[tuple[int, int]]:
        """Add ``[start, stop)``; return the sub-ranges that were not in the set before."""
        if start >= stop:
            return []
        starts, stops = self._starts, self._stops
        if not stops or start > stops[-1]:
            starts.append(start)
            stops.append(stop)
            return [(start, stop)]
        if start >= starts[-1]:
            last = stops[-1]
            if stop <= last:
                return []
            stops[-1] = stop
            return [(last, stop)]
        first = bisect_left(stops, start)  # first range that touches or follows start
        end = bisect_right(starts, stop)  # ranges [first, end) touch [start, stop)
        new: list[tuple[int, int]] = []
        cursor = start
        for i in range(first, end):
            if starts[i] > cursor:
                new.append((cursor, starts[i]))
            cursor = max(cursor, stops[i])
        if cursor < stop:
            new.append((cursor, stop))
        if first < end:
            start = min(start, starts[first])
            stop = max(stop, stops[end - 1])
        starts[first:end] = [start]
        stops[first:end] = [stop]
        return new

    def add_one(self, value: int) -> bool:
        """Add a single integer; return True if it was not in the set before."""
        stops = self._stops
        if stops and stops[-1] == value:
            stops[-1] = value + 1
            return True
        return bool(self.add(value, value + 1))

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value < self._stops[i]

    def covers(self, start: int, stop: int) -> bool:
        """True if every integer of ``[start, stop)`` is in the set."""
        if start >= stop:
            return True
        i = bisect_right(self._starts, start) - 1
        return i >= 0 and self._stops[i] >= stop

    def pop_first(self) -> tuple[int, int]:
        """Remove and return the lowest range (used to bound memory)."""
        return self._starts.pop(0), self._stops.pop(0)

    def last(self) -> tuple[int, int]:
        return self._starts[-1], self._stops[-1]

    def descending(self, limit: int) -> list[tuple[int, int]]:
        """The highest ``limit`` ranges, highest first (the ACK frame order)."""
        starts, stops = self._starts, self._stops
        n = len(starts)
        return [(starts[i], stops[i]) for i in range(n - 1, max(n - limit, 0) - 1, -1)]

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._stops, strict=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PyRangeSet):
            return NotImplemented
        return self._starts == other._starts and self._stops == other._stops

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"


if TYPE_CHECKING or FAST is None:
    RangeSet = PyRangeSet
else:
    RangeSet = FAST.RangeSet
