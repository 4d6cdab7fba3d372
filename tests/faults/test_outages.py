"""Outages in the middle of a transfer: the receiver frozen for 60 s, the emulated WAN dark
for 30 s. The transfer stalls, then finishes on its own from its checkpoint, identical; a
peer that never comes back fails it after the retry timeout (root: real servers)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from grpc import aio

from bench.linkemu.link import Link
from jetstream.v1 import common_pb2, destinations_pb2, destinations_pb2_grpc
from tests.faults.helpers import FAST_CHECKPOINTS, run_until, server
from tests.support.servers import ServerProcess
from tests.system.users import ALICE, PASSWORDS
from tests.transfers.helpers import (
    Api,
    destination_to,
    file_sha256,
    login,
    manifest_of,
    push,
    start,
    wait_terminal,
    write_random_file,
)

COMPLETED = common_pb2.TRANSFER_STATE_COMPLETED


def test_a_receiver_frozen_for_60_s_then_resumed(tmp_path, dirs):
    src, dst = dirs
    size = 256 << 20
    write_random_file(src / "big.bin", size, ALICE)
    a, b = server(tmp_path, "a").start(), server(tmp_path, "b").start()

    async def main() -> tuple[common_pb2.TransferState, int, float]:
        async with AsyncExitStack() as stack:
            api = await login(stack, a.api_port, ALICE)
            transfer = await push(api, await destination_to(api, b.api_port, ALICE),
                                  await manifest_of(api, src / "big.bin"), str(dst),
                                  checkpoint_interval=FAST_CHECKPOINTS,
                                  rate_limit=common_pb2.RateLimit(max_bps=200_000_000))
            await run_until(api, transfer.name, lambda t: t.progress.bytes_done > size // 3)
            b.signal(signal.SIGSTOP)
            frozen = time.monotonic()
            await asyncio.sleep(60)
            b.signal(signal.SIGCONT)
            done = await wait_terminal(api, transfer.name, timeout=300)
            return done, time.monotonic() - frozen

    try:
        done, after_freeze = asyncio.run(main())
    finally:
        b.signal(signal.SIGCONT)
        a.stop()
        b.stop()
    print(f"frozen 60 s: completed {after_freeze:.0f} s after the freeze, attempts "
          f"{done.attempt_count}, resumed {done.progress.bytes_resumed / size:.0%} of the file")
    assert done.state == COMPLETED, done.error
    assert file_sha256(dst / "big.bin") == file_sha256(src / "big.bin")
    assert done.progress.bytes_resumed >= size // 3, "it continued from its checkpoint"
    assert not list(dst.rglob("*.part"))


@pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun")
def test_a_30_s_blackout_of_the_wan(dirs):
    src, dst = dirs
    size = 96 << 20
    write_random_file(src / "big.bin", size, ALICE)
    base = Path(tempfile.mkdtemp(prefix="js-blackout-"))
    link = Link(rate="100mbit", rtt="40ms", loss="0.5%", prefix="js-bo-",
                subnet="10.80.2.0/24")

    def in_namespace(ns: str, name: str) -> ServerProcess:
        return ServerProcess(
            base / name / "state",
            ["--api-allow-remote-control", "--api-port", "8886", "--recv-port", "8886",
             "--disable-telemetry", "--api-socket", str(base / name / "api.sock")],
            base / f"{name}.log", wrapper=["ip", "netns", "exec", ns])

    async def main() -> tuple[common_pb2.Transfer, float]:
        # The sender's API over its local socket: the root namespace has no route to the link.
        async with aio.insecure_channel(f"unix:{base / 'a' / 'api.sock'}") as channel:
            api = Api(channel, ())
            made = await destinations_pb2_grpc.DestinationServiceStub(channel).CreateDestination(
                destinations_pb2.CreateDestinationRequest(destination=destinations_pb2.Destination(
                    host=link.addr_b, api_port=8886,
                    password=destinations_pb2.PasswordCredentials(
                        username=ALICE, password=PASSWORDS[ALICE]))))
            transfer = await push(api, made.destination.name,
                                  await manifest_of(api, src / "big.bin"), str(dst),
                                  checkpoint_interval=FAST_CHECKPOINTS)
            await run_until(api, transfer.name, lambda t: t.progress.bytes_done > size // 3)
            assert link.pid is not None
            os.kill(link.pid, signal.SIGSTOP)  # the forwarder: nothing crosses the link
            dark = time.monotonic()
            await asyncio.sleep(30)
            os.kill(link.pid, signal.SIGCONT)
            done = await wait_terminal(api, transfer.name, timeout=300)
            return done, time.monotonic() - dark

    with link:
        a, b = in_namespace(link.ns_a, "a").start(), in_namespace(link.ns_b, "b").start()
        try:
            done, after_dark = asyncio.run(main())
        finally:
            if link.pid is not None:
                os.kill(link.pid, signal.SIGCONT)
            a.stop()
            b.stop()
            shutil.rmtree(base, ignore_errors=True)
    print(f"30 s blackout: completed {after_dark:.0f} s after it began, attempts "
          f"{done.attempt_count}, resumed {done.progress.bytes_resumed / size:.0%} of the file")
    assert done.state == COMPLETED, done.error
    assert file_sha256(dst / "big.bin") == file_sha256(src / "big.bin")
    assert done.progress.bytes_resumed >= size // 3, "it continued from its checkpoint"


def test_a_peer_that_never_comes_back_fails_after_the_retry_timeout(tmp_path, dirs):
    src, dst = dirs
    (src / "f.bin").write_bytes(b"x" * 1000)

    async def main() -> tuple[common_pb2.Transfer, float]:
        async with AsyncExitStack() as stack:
            a = await start(stack, tmp_path / "a", ("transfer_retry_timeout", 6.0))
            b = await start(stack, tmp_path / "b")
            api = await login(stack, a, ALICE)
            destination = await destination_to(api, b, ALICE)
            await b.stop()  # and it never comes back
            started = time.monotonic()
            transfer = await push(api, destination, await manifest_of(api, src), str(dst))
            done = await wait_terminal(api, transfer.name, timeout=120)
            return done, time.monotonic() - started

    done, took = asyncio.run(main())
    assert done.state == common_pb2.TRANSFER_STATE_FAILED
    assert done.error.reason == "PEER_UNREACHABLE", done.error
    assert "retried for" in done.error.message
    assert 6.0 <= took < 60, took
    assert done.attempt_count >= 3
