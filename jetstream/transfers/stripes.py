"""A large file's chunks spread over the flows of a push.

One lane per flow takes the next chunk once its flow has room, so the flows share the file
in proportion to what each carries (they are paced alike, so about evenly) and a slow or
lossy moment on one does not hold up the others. The file is still read and hashed once, in
order, by the sender; each chunk keeps its file offset, so the receiver places it whichever
flow brought it. A file ends on every flow (each carried part of its stream); the receiver
releases the rest of each flow's stream once the file is settled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from jetstream.datachannel.stats import ConnectionStats, combined
from jetstream.transfers.flow import FurtherFlow
from jetstream.transport.endpoint import DataLink

_Chunk = tuple[int, memoryview, int]
"""(stream id, data, offset)"""


class Stripes:
    def __init__(self, first: DataLink, further: Sequence[FurtherFlow] = ()) -> None:
        self._first = first
        self._further = list(further)
        self._queue: asyncio.Queue[_Chunk] = asyncio.Queue(maxsize=1 + len(self._further))
        self._lanes: list[asyncio.Task[None]] = []
        self._failure: BaseException | None = None

    @property
    def flows(self) -> int:
        return 1 + len(self._further)

    async def send(self, stream_id: int, data: memoryview, offset: int) -> None:
        """Hand a chunk to the next flow with room; waits while every lane is busy."""
        if not self._further:
            await self._put(0, (stream_id, data, offset))
            return
        if not self._lanes:
            self._lanes = [asyncio.create_task(self._lane(i)) for i in range(self.flows)]
        self._raise_if_failed()
        await self._queue.put((stream_id, data, offset))

    async def end(self, stream_id: int, size: int) -> None:
        """End a file's stream on every flow, after all its chunks were handed over."""
        if self._lanes:
            await self._queue.join()
            self._raise_if_failed()
        self._first.send(stream_id, b"", offset=size, end_stream=True)
        await asyncio.gather(*(flow.send(stream_id, b"", offset=size, end_stream=True)
                               for flow in self._further))

    def statistics(self) -> ConnectionStats:
        return combined([self._first.statistics(),
                         *(flow.statistics() for flow in self._further)])

    def close(self) -> None:
        for lane in self._lanes:
            lane.cancel()

    async def _lane(self, index: int) -> None:
        while True:
            chunk = await self._queue.get()
            try:
                if self._failure is None:  # after one, only drain: nobody waits forever
                    await self._put(index, chunk)
            except Exception as exc:  # noqa: BLE001 - re-raised to the sender by send/end
                self._failure = exc
            finally:
                self._queue.task_done()

    async def _put(self, index: int, chunk: _Chunk) -> None:
        stream_id, data, offset = chunk
        if index == 0:
            await self._first.send_when_room(stream_id, data, offset=offset)
        else:
            await self._further[index - 1].send(stream_id, data, offset=offset)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure
