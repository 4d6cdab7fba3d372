"""Control channels to destinations are reused, dropped when unavailable, closed when idle."""

from __future__ import annotations

import asyncio

import pytest

from jetstream.client.channel import Endpoint
from jetstream.client.pool import ChannelPool
from jetstream.errors import Unavailable

# Plaintext channels to a closed port: grpc connects lazily, so nothing is dialled here.
HERE = Endpoint("127.0.0.1", 9)


def test_uses_share_one_channel_each_with_its_own_token() -> None:
    async def main() -> None:
        pool = ChannelPool()
        async with pool.connect(HERE, plaintext=True, token="a") as first, \
                pool.connect(HERE, plaintext=True, token="b") as second:
            assert first.channel is second.channel
            assert (first.metadata, second.metadata) == (
                (("authorization", "Bearer a"),), (("authorization", "Bearer b"),))
        async with pool.connect(Endpoint("127.0.0.1", 10), plaintext=True) as other:
            assert other.channel is not first.channel
        await pool.close()

    asyncio.run(main())


def test_an_unavailable_channel_is_replaced() -> None:
    async def main() -> None:
        pool = ChannelPool()
        with pytest.raises(Unavailable):
            async with pool.connect(HERE, plaintext=True) as broken:
                raise Unavailable("connection refused")
        async with pool.connect(HERE, plaintext=True) as fresh:
            assert fresh.channel is not broken.channel
        await pool.close()

    asyncio.run(main())


def test_idle_channels_are_closed() -> None:
    async def main() -> None:
        pool = ChannelPool(idle=0.05)
        async with pool.connect(HERE, plaintext=True) as used:
            await asyncio.sleep(0.1)  # in use: kept however long
        async with pool.connect(HERE, plaintext=True) as again:
            assert again.channel is used.channel
        await asyncio.sleep(0.2)
        async with pool.connect(HERE, plaintext=True) as later:
            assert later.channel is not used.channel
        await pool.close()

    asyncio.run(main())
