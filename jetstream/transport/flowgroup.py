"""A transfer's flows on real sockets: each in its own worker thread, event loop and socket.

The compiled data path runs the crypto of a burst and its socket calls (sendmmsg, recvmmsg)
without the GIL, so flows in threads overlap that work on several cores; each worker's loop
drives one `DataEndpoint` with its own UDP socket, so the kernel spreads their packets over
its queues as well. The leader's controller paces the whole group
(`jetstream.datachannel.grouprate`): each follower's worker applies it every
`FOLLOW_INTERVAL`, in its own thread, the only one that touches its connection.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from jetstream.datachannel.grouprate import FOLLOW_INTERVAL, follow
from jetstream.transport.endpoint import DataLink

T = TypeVar("T")


class FlowWorker:
    """A daemon thread running an event loop of its own until `stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def run(self, job: Callable[[], Awaitable[T]]) -> T:
        """Run ``job()`` on this worker's loop; await its result from the caller's loop."""
        async def call() -> T:
            return await job()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), self.loop))

    def stop(self) -> None:
        """Cancel what still runs here (a sibling's job that another's failure cut short),
        let it unwind, then end the thread: nothing is left pending or never awaited."""
        if self.loop.is_closed():
            return

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


async def run_in_workers(jobs: Sequence[Callable[[], Awaitable[T]]],
                         name: str = "flow") -> list[T]:
    """Run each job in a worker of its own and return their results in order; the workers
    stop afterwards, also when a job fails (its exception is raised here)."""
    workers = [FlowWorker(f"{name}-{i}") for i in range(len(jobs))]
    try:
        return list(await asyncio.gather(*(w.run(job) for w, job in zip(workers, jobs,
                                                                      strict=True))))
    finally:
        for worker in workers:
            worker.stop()


async def follow_leader(leader: Callable[[], DataLink | None], own: DataLink) -> None:
    """A follower's task, in its own worker: pace as the leader does until either closes.

    ``leader`` returns the leader's link once it exists (it lives in another worker; only
    its statistics are read from here)."""
    while not own.terminated.done():
        link = leader()
        if link is not None:
            if link.connection.is_closed:
                return
            follow(link.connection, own.connection)
        await asyncio.sleep(FOLLOW_INTERVAL)
