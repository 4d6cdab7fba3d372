"""A push between two servers in two network namespaces joined by an emulated lossy WAN."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from grpc import aio

from bench.linkemu import Link
from jetstream.v1 import common_pb2, destinations_pb2, destinations_pb2_grpc
from tests.support.servers import ServerProcess
from tests.system.users import ALICE, PASSWORDS, require_root
from tests.transfers.helpers import (
    Api,
    chown_tree,
    manifest_of,
    owned_dir,
    push,
    remove,
    tree_digest,
    wait_terminal,
)


def in_namespace(ns: str, base: Path, name: str) -> ServerProcess:
    return ServerProcess(
        base / name / "state",
        ["--api-allow-remote-control", "--api-port", "8886", "--recv-port", "8886",
         "--disable-telemetry", "--api-socket", str(base / name / "api.sock"),
         "--data-idle-timeout", "5"],
        base / f"{name}.log",
        wrapper=["ip", "netns", "exec", ns],
    )


@pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun")
def test_push_across_an_emulated_wan(tmp_path):
    require_root(users=True)
    base = Path(tempfile.mkdtemp(prefix="js-wan-"))
    src, dst = owned_dir(ALICE, "js-src-"), owned_dir(ALICE, "js-dst-")
    (src / "tree" / "sub").mkdir(parents=True)
    (src / "tree" / "large.bin").write_bytes(os.urandom(6 << 20))
    for i in range(300):
        (src / "tree" / "sub" / f"s{i}.dat").write_bytes(os.urandom(2000 + i))
    chown_tree(src, ALICE)
    link = Link(rate="100mbit", rtt="40ms", loss="1%", prefix="js-t5-",
                subnet="10.77.5.0/24")
    with link:
        a = in_namespace(link.ns_a, base, "a").start()
        b = in_namespace(link.ns_b, base, "b").start()
        try:
            async def main() -> common_pb2.TransferState:
                # The sender's API is reached over its local socket: the root namespace has
                # no route into the test subnet (only a blackhole).
                async with aio.insecure_channel(f"unix:{base / 'a' / 'api.sock'}") as channel:
                    api = Api(channel, ())
                    made = await destinations_pb2_grpc.DestinationServiceStub(channel) \
                        .CreateDestination(destinations_pb2.CreateDestinationRequest(
                            destination=destinations_pb2.Destination(
                                host=link.addr_b, api_port=8886,
                                password=destinations_pb2.PasswordCredentials(
                                    username=ALICE, password=PASSWORDS[ALICE]))))
                    manifest = await manifest_of(api, src / "tree")
                    transfer = await push(api, made.destination.name, manifest, str(dst))
                    done = await wait_terminal(api, transfer.name, timeout=240)
                    assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error
                    assert done.progress.rtt.ToNanoseconds() > 30e6, "the RTT of the link"
                    return done.state

            asyncio.run(main())
        finally:
            a.stop()
            b.stop()
            shutil.rmtree(base, ignore_errors=True)
    assert tree_digest(dst / "tree") == tree_digest(src / "tree")
    remove(src, dst)
