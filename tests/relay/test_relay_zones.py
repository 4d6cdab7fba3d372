"""The relay in a DMZ, as the issue asks for it: three namespaces (outside, dmz, inside)
with no route from outside to inside; a sender outside, the relay in the dmz, and two
servers inside that dial the relay and accept no inbound traffic.

One site serves every test of this module, in order: a push arrives verified; two servers
behind the relay receive at the same time; the relay is killed mid-transfer and restarted
and the transfer completes without starting over; no key reaches the relay; a flooding
sender does not grow the relay's memory beyond its bounds.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc import aio

from jetstream.v1 import (
    common_pb2,
    destinations_pb2,
    server_pb2,
    server_pb2_grpc,
    transfers_pb2,
)
from tests.relay.memscan import memory_contains
from tests.relay.support import RelayProcess, server_identity
from tests.relay.zones import Zones, http_get, metric, reachable, rss_kib, wait_for, zones
from tests.support.servers import ServerProcess
from tests.system.users import ALICE, PASSWORDS, require_root
from tests.transfers.helpers import (
    Api,
    file_sha256,
    manifest_of,
    owned_dir,
    push,
    remove,
    wait_terminal,
    write_random_file,
)

T = transfers_pb2
PUBLIC_PORTS = (8886, 8896)
RELAY_METRICS = 9887
CHECKPOINT = T.Transfer().checkpoint_interval.__class__(nanos=200_000_000)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)")


@dataclass
class Site:
    zones: Zones
    base: Path
    relay: RelayProcess
    sender: ServerProcess
    inside: list[ServerProcess]
    src: Path
    dst: list[Path]
    pins: list[str]
    """The inside servers' API certificate fingerprints."""

    def socket(self, name: str) -> str:
        return f"unix:{self.base / name / 'api.sock'}"

    def relay_metrics(self) -> str:
        return http_get(self.zones.dmz, "127.0.0.1", RELAY_METRICS)


def _server(base: Path, name: str, ns: str, *extra: str) -> ServerProcess:
    return ServerProcess(base / name / "state",
                         ["--disable-telemetry", "--api-socket", str(base / name / "api.sock"),
                          "--data-idle-timeout", "5", *extra],
                         base / f"{name}.log", wrapper=["ip", "netns", "exec", ns])


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    require_root(users=True)
    base = Path(tempfile.mkdtemp(prefix="jsrl-"))
    src = owned_dir(ALICE, "jsrl-src-")
    dst = [owned_dir(ALICE, "jsrl-dst-b-"), owned_dir(ALICE, "jsrl-dst-c-")]
    procs: list[ServerProcess | RelayProcess] = []
    try:
        with zones() as z:
            pins = [server_identity(base / name / "state").fingerprint.hex()
                    for name in ("b", "c")]
            relay = RelayProcess(
                base / "relay",
                ["--host", z.dmz_public_ip, "--control-host", z.dmz_inner_ip,
                 *[a for p in PUBLIC_PORTS for a in ("--recv-port", str(p))],
                 *[a for pin in pins for a in ("--trust-server", pin)],
                 "--metrics-port", str(RELAY_METRICS)],
                base / "relay.log", wrapper=z.wrap(z.dmz))
            procs.append(relay.start())
            sender = _server(base, "a", z.outside, "--api-port", "8886", "--recv-port", "8886")
            procs.append(sender.start())
            inside = []
            for name, port in zip(("b", "c"), PUBLIC_PORTS, strict=True):
                # The API stays on loopback: peers reach it through the relay's tunnel.
                server = _server(base, name, z.inside, "--api-port", str(port), "--recv-port",
                                 str(port), "--recv-relay-host", z.dmz_inner_ip,
                                 "--recv-relay-fingerprint", relay.fingerprint,
                                 "--recv-relay-public-port", str(port))
                procs.append(server.start())
                inside.append(server)
            for server in inside:
                wait_for(lambda s=server: "registered at relay" in s.log(), 20,
                         "the inside servers to register")
            yield Site(z, base, relay, sender, inside, src, dst, pins)
    finally:
        for proc in procs:
            proc.stop()
        remove(src, *dst)
        shutil.rmtree(base, ignore_errors=True)


def _file(site: Site, name: str, size: int) -> Path:
    return write_random_file(site.src / name, size, ALICE)


async def _destination(api: Api, site: Site, port: int) -> str:
    """The inside server as the sender sees it: the relay's public address, nothing else."""
    made = await api.destinations.CreateDestination(destinations_pb2.CreateDestinationRequest(
        destination=destinations_pb2.Destination(
            host=site.zones.dmz_public_ip, api_port=port,
            password=destinations_pb2.PasswordCredentials(username=ALICE,
                                                          password=PASSWORDS[ALICE]))))
    return made.destination.name


def test_push_from_outside_arrives_verified_through_the_relay(site):
    z = site.zones
    assert reachable(z.outside, z.inside_ip, 8886) == "Network is unreachable"
    assert reachable(z.outside, z.dmz_public_ip, PUBLIC_PORTS[0]) == "ok"
    big = _file(site, "first.bin", 24 << 20)
    peers_before = metric(site.relay_metrics(), "jetstream_relay_peers")

    async def main() -> None:
        async with aio.insecure_channel(site.socket("a")) as channel:
            api = Api(channel, ())
            destination = await _destination(api, site, PUBLIC_PORTS[0])
            manifest = await manifest_of(api, big)
            # Two flows: the relay forwards each from its own sender port.
            transfer = await push(api, destination, manifest, str(site.dst[0]), flows=2)
            done = await wait_terminal(api, transfer.name, timeout=120)
            assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error
        async with aio.insecure_channel(site.socket("b")) as channel:
            info = (await server_pb2_grpc.ServerServiceStub(channel).GetServerInfo(
                server_pb2.GetServerInfoRequest())).server_info
            assert info.relay.enabled and info.relay.connected
            assert list(info.relay.public_udp_ports) == [PUBLIC_PORTS[0]]
            assert info.relay.address == f"{z.dmz_inner_ip}:8887"
            incoming = await Api(channel, ()).transfers.ListIncomingTransfers(
                T.ListIncomingTransfersRequest(owner="-"))
            sources = {t.source_address.rpartition(":")[0]
                       for t in incoming.incoming_transfers}
            assert sources == {z.outside_ip}, "the receiver sees the sender, not the relay"

    asyncio.run(main())
    assert file_sha256(site.dst[0] / "first.bin") == file_sha256(big)
    assert f"logged in from ipv4:{z.outside_ip}:" in site.inside[0].log(), \
        "logins through the tunnel are counted by the sender's address (throttling)"
    scrape = site.relay_metrics()
    assert metric(scrape, "jetstream_relay_servers") == 2
    assert metric(scrape, 'jetstream_relay_bytes_total{direction="to_server"}') > 24 << 20
    assert metric(scrape, "jetstream_relay_peers") == peers_before + 2, \
        "each flow came from a port of its own"


def test_two_servers_behind_one_relay_receive_at_the_same_time(site):
    files = [_file(site, f"both-{i}.bin", 16 << 20) for i in range(2)]
    slow = common_pb2.RateLimit(max_bps=50_000_000)  # ~3 s each: long enough to overlap

    async def main() -> bool:
        async with aio.insecure_channel(site.socket("a")) as channel:
            api = Api(channel, ())
            destinations = [await _destination(api, site, port) for port in PUBLIC_PORTS]
            manifests = [await manifest_of(api, path) for path in files]
            transfers = [await push(api, destination, manifest, str(dst), rate_limit=slow)
                         for destination, manifest, dst
                         in zip(destinations, manifests, site.dst, strict=True)]
            overlapped = False
            while True:
                now = [(await api.transfers.GetTransfer(T.GetTransferRequest(name=t.name)))
                       .transfer for t in transfers]
                overlapped |= all(0 < t.progress.bytes_done < t.progress.bytes_total
                                  for t in now)
                if all(t.state in (common_pb2.TRANSFER_STATE_COMPLETED,
                                   common_pb2.TRANSFER_STATE_FAILED) for t in now):
                    break
                await asyncio.sleep(0.1)
            for transfer in now:
                assert transfer.state == common_pb2.TRANSFER_STATE_COMPLETED, transfer.error
            return overlapped

    assert asyncio.run(main()), "both servers were receiving at the same moment"
    for path, dst in zip(files, site.dst, strict=True):
        assert file_sha256(dst / path.name) == file_sha256(path)
    assert metric(site.relay_metrics(), "jetstream_relay_servers") == 2


def test_relay_killed_mid_transfer_is_restarted_and_the_transfer_completes(site):
    size = 96 << 20
    big = _file(site, "restart.bin", size)
    registered = site.inside[0].log().count("registered at relay")

    async def main() -> int:
        async with aio.insecure_channel(site.socket("a")) as channel:
            api = Api(channel, ())
            destination = await _destination(api, site, PUBLIC_PORTS[0])
            manifest = await manifest_of(api, big)
            transfer = await push(api, destination, manifest, str(site.dst[0]),
                                  checkpoint_interval=CHECKPOINT,
                                  rate_limit=common_pb2.RateLimit(max_bps=80_000_000))
            done_at_kill = 0
            async with asyncio.timeout(60):
                async for update in api.transfers.WatchTransfer(
                        T.WatchTransferRequest(name=transfer.name)):
                    done_at_kill = update.transfer.progress.bytes_done
                    if done_at_kill >= 0.3 * size:
                        break
            site.relay.kill()
            await asyncio.sleep(1.0)
            site.relay.start()
            done = await wait_terminal(api, transfer.name, timeout=120)
            assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error
            return done_at_kill

    done_at_kill = asyncio.run(main())
    assert done_at_kill < size
    assert file_sha256(site.dst[0] / big.name) == file_sha256(big)
    assert site.inside[0].log().count("registered at relay") > registered, "it came back"
    carried = metric(site.relay_metrics(), 'jetstream_relay_bytes_total{direction="to_server"}')
    assert 0 < carried < size - 0.8 * done_at_kill, (
        f"the restarted relay carried {carried:.0f} bytes of a {size}-byte file that was "
        f"{done_at_kill} bytes in when it was killed: the transfer started over")


def test_no_key_reaches_the_relay(site):
    """A sender that logs in, opens a session and sends file bytes through the relay; every
    secret it used is then searched for in the relay's memory, while the link is up."""
    z = site.zones
    out, hold = site.base / "probe.json", site.base / "probe.hold"
    probe = subprocess.Popen(
        [*z.wrap(z.outside), sys.executable, "-m", "tests.relay.probe_client", z.dmz_public_ip,
         str(PUBLIC_PORTS[0]), site.pins[0], ALICE, str(site.dst[0]), str(out), str(hold)],
        env={**os.environ, "JSRL_PASSWORD": PASSWORDS[ALICE]},
        cwd=Path(__file__).resolve().parents[2])
    try:
        wait_for(lambda: out.exists() or probe.poll() is not None, 60, "the probe's secrets")
        assert probe.poll() is None, f"the probe client failed ({probe.returncode})"
        secrets = {name: bytes.fromhex(value)
                   for name, value in json.loads(out.read_text()).items()}
        certificate = (site.base / "relay" / "api-tls.crt").read_text().splitlines()[2]
        found = memory_contains(site.relay.pid,
                                {**secrets, "the relay's own certificate": certificate.encode()})
    finally:
        hold.touch()
        probe.wait(30)
    assert found.pop("the relay's own certificate"), "the scan finds what the relay holds"
    assert len(found) == 8 and not any(found.values()), f"found in the relay: {found}"


FLOOD = """
import os, socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload, target, end = os.urandom(1400), (sys.argv[1], int(sys.argv[2])), time.monotonic() + 8
while time.monotonic() < end:
    for _ in range(256):
        try:
            sock.sendto(payload, target)
        except OSError:
            pass
"""


def test_relay_memory_stays_bounded_under_a_flood(site):
    """A sender floods the public port with datagrams (8 s, as fast as Python sends) while the
    server behind it first keeps up as best it can and then stops reading altogether."""
    z = site.zones
    pid, receiver = site.relay.pid, site.inside[0]
    assert receiver.proc is not None
    baseline = rss_kib(pid)
    before = metric(site.relay_metrics(), 'jetstream_relay_dropped_datagrams_total'
                                          '{reason="queue_full"}')
    flood = subprocess.Popen([*z.wrap(z.outside), sys.executable, "-c", FLOOD,
                              z.dmz_public_ip, str(PUBLIC_PORTS[0])])
    peak, started = baseline, time.monotonic()
    try:
        while flood.poll() is None:
            peak = max(peak, rss_kib(pid))
            if time.monotonic() - started > 3 and receiver.proc.poll() is None:
                os.kill(receiver.proc.pid, signal.SIGSTOP)  # the slow server: not reading
            time.sleep(0.05)
    finally:
        os.kill(receiver.proc.pid, signal.SIGCONT)
        flood.wait(30)
    grown = (peak - baseline) / 1024
    dropped = metric(site.relay_metrics(), 'jetstream_relay_dropped_datagrams_total'
                                           '{reason="queue_full"}') - before
    assert dropped > 10_000, f"the flood was absorbed without drops ({dropped:.0f})"
    assert grown < 48, f"relay RSS grew {grown:.1f} MiB under the flood"
    test_push_from_outside_arrives_verified_through_the_relay(site)  # and it still serves
