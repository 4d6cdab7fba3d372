"""Which flow a receiver's flow-control credit goes back to, when a session has several.

Each flow (connection) has a window of its own: the sender stops on a flow once the bytes it
sent there, and the receiver has not yet disposed of, fill it. The receiver disposes of
bytes per file and in batches (a write, a checkpoint), not per flow, so it cannot say which
flow a disposed byte came by; giving every credit to one flow would starve the others.
Credit therefore goes back in the order the bytes arrived: the oldest bytes owed are repaid
first. Every flow is repaid all it carried, none is repaid more, and none waits for long,
since the receiver disposes of bytes roughly in the order they came.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

L = TypeVar("L")


class CreditLedger(Generic[L]):
    def __init__(self) -> None:
        self._owed: deque[list[Any]] = deque()
        """[flow, bytes] in arrival order; neighbours of one flow are merged."""

    def received(self, flow: L, nbytes: int) -> None:
        owed = self._owed
        if owed and owed[-1][0] is flow:
            owed[-1][1] += nbytes
        elif nbytes:
            owed.append([flow, nbytes])

    def repay(self, nbytes: int) -> Iterator[tuple[L, int]]:
        """(flow, bytes) that ``nbytes`` disposed of repay, oldest first."""
        owed = self._owed
        while nbytes > 0 and owed:
            head = owed[0]
            flow, due = head
            if due > nbytes:
                head[1] = due - nbytes
                yield flow, nbytes
                return
            owed.popleft()
            nbytes -= due
            yield flow, due
