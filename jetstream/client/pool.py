"""Control channels to other servers, kept open between uses.

Opening a pinned TLS channel costs about five round trips (fetching the certificate to check
the pin, then TCP, TLS and HTTP/2 for the channel): half a second at 100 ms RTT and well over
a second on a satellite path, paid by every push, pull and connectivity test. A destination
is used again and again, so its channel is kept, per (target, plaintext, pin), until it has
sat unused for `IDLE_SECONDS`; grpc reconnects it by itself, trusting only the certificate it
was opened with. A channel whose calls fail as unavailable is dropped, so the next use opens
a fresh one and checks the pin again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from grpc import aio

from jetstream.client.channel import Endpoint, open_aio_channel
from jetstream.client.remote import RemoteServer
from jetstream.errors import Unavailable

IDLE_SECONDS = 300.0

_Key = tuple[str, bool, bytes | None]


@dataclass
class _Entry:
    channel: aio.Channel
    fingerprint: bytes | None
    users: int = 0
    last_used: float = 0.0


class ChannelPool:
    def __init__(self, *, idle: float = IDLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._idle = idle
        self._clock = clock
        self._entries: dict[_Key, _Entry] = {}
        self._opening: dict[_Key, asyncio.Lock] = {}
        """Per key, so that a destination slow to answer delays only its own uses."""
        self._sweep: asyncio.TimerHandle | None = None

    @asynccontextmanager
    async def connect(self, endpoint: Endpoint, *, plaintext: bool = False,
                      pinned: bytes | None = None, token: str | None = None
                      ) -> AsyncIterator[RemoteServer]:
        """A `RemoteServer` on the pooled channel; `token` is this use's own."""
        key = (endpoint.target, plaintext, pinned)
        entry = await self._entry(key, endpoint)
        entry.users += 1
        remote = RemoteServer(entry.channel, endpoint, entry.fingerprint)
        remote.token = token
        try:
            yield remote
        except Unavailable:
            self._drop(key, entry)
            raise
        finally:
            entry.users -= 1
            entry.last_used = self._clock()
            self._schedule_sweep()

    async def _entry(self, key: _Key, endpoint: Endpoint) -> _Entry:
        lock = self._opening.setdefault(key, asyncio.Lock())
        async with lock:  # one channel per key, even when uses start together
            entry = self._entries.get(key)
            if entry is None:
                channel, fingerprint = await open_aio_channel(
                    endpoint, plaintext=key[1], pinned=key[2])
                entry = self._entries[key] = _Entry(channel, fingerprint)
                # First contact (no pin yet) pins what it saw: later uses ask for that pin.
                self._entries.setdefault((key[0], key[1], fingerprint), entry)
            return entry

    def _drop(self, key: _Key, entry: _Entry) -> None:
        keys = [k for k, e in self._entries.items() if e is entry]
        for k in keys:
            del self._entries[k]
        if keys:
            asyncio.get_running_loop().create_task(entry.channel.close(1.0))

    def _schedule_sweep(self) -> None:
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self._idle, self._on_sweep)

    def _on_sweep(self) -> None:
        self._sweep = None
        now = self._clock()
        for key, entry in list(self._entries.items()):
            if key in self._entries and entry.users == 0 and now - entry.last_used >= self._idle:
                self._drop(key, entry)
        if self._entries:
            self._schedule_sweep()

    async def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        entries = {id(entry): entry for entry in self._entries.values()}
        self._entries = {}
        await asyncio.gather(*(entry.channel.close(None) for entry in entries.values()))
