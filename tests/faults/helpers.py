"""What the fault tests share: server processes they may kill, a large file, its hash, and
the progress of a transfer as it runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from jetstream.v1 import transfers_pb2
from tests.support.servers import ServerProcess, unused_tcp_port
from tests.transfers.helpers import Api

T = transfers_pb2
FAST_CHECKPOINTS = T.Transfer().checkpoint_interval.__class__(nanos=100_000_000)


def server(tmp_path: Path, name: str, *extra: str) -> ServerProcess:
    """A server process on a fixed API port (it comes back on the same one after a kill)."""
    port = unused_tcp_port()
    return ServerProcess(
        tmp_path / name,
        ["--api-port", str(port), "--recv-port", "0", "--disable-telemetry",
         "--api-socket", "", *extra],
        tmp_path / f"{name}.log",
    )


async def run_until(api: Api, name: str, done: Callable[[T.Transfer], bool],
                    timeout: float = 180) -> T.Transfer:
    """Follow the transfer until `done` says so (or it ends); return that update."""
    async with asyncio.timeout(timeout):
        async for update in api.transfers.WatchTransfer(T.WatchTransferRequest(name=name),
                                                        metadata=api.auth):
            if done(update.transfer):
                return update.transfer
    raise AssertionError(f"transfers/{name} ended before the condition held")
