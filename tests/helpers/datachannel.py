"""Data-channel test helpers: connection pairs driven by hand, transfers over the simulator."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from jetstream.datachannel import Connection, DataChannelConfig, Event, Role, SessionTicket
from jetstream.datachannel.wire import Address
from jetstream.netsim import BytesContent, Flow, LinkConfig, Network, add_flow, run_flows

CLIENT: Address = ("client", 1)
SERVER: Address = ("server", 1)


@dataclass
class Pair:
    client: Connection
    server: Connection
    ticket: SessionTicket


def make_pair(
    seed: int = 0,
    client_config: DataChannelConfig | None = None,
    server_config: DataChannelConfig | None = None,
) -> Pair:
    rng = random.Random(seed)
    ticket = SessionTicket.generate(rng.randbytes)
    client = Connection(
        client_config or DataChannelConfig(),
        role=Role.CLIENT,
        ticket=ticket,
        rng=random.Random(seed + 1),
    )
    server = Connection(
        server_config or DataChannelConfig(),
        role=Role.SERVER,
        ticket=ticket,
        rng=random.Random(seed + 2),
    )
    return Pair(client, server, ticket)


def deliver(
    datagrams: list[tuple[bytes, Address]], to: Connection, source: Address, now: float
) -> None:
    """Hand ``datagrams`` to ``to`` as one receive batch from ``source``."""
    to.receive_batch([(datagram, source) for datagram, _ in datagrams], now)


def established_pair(seed: int = 0, rtt: float = 0.02) -> tuple[Pair, float]:
    """A pair through the handshake by hand (no loss); returns it and the current time."""
    pair = make_pair(seed)
    now = 0.0
    pair.client.connect(SERVER, now)
    deliver(pair.client.datagrams_to_send(now), pair.server, CLIENT, now + rtt / 2)
    now += rtt / 2
    deliver(pair.server.datagrams_to_send(now), pair.client, SERVER, now + rtt / 2)
    now += rtt / 2
    deliver(pair.client.datagrams_to_send(now), pair.server, CLIENT, now + rtt / 2)
    now += rtt / 2
    return pair, now


def drain_events(conn: Connection) -> list[Event]:
    events: list[Event] = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events


def sha256(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def transfer(
    streams: dict[int, bytes],
    *,
    seed: int,
    forward: LinkConfig,
    backward: LinkConfig,
    max_time: float,
    client_config: DataChannelConfig | None = None,
    server_config: DataChannelConfig | None = None,
) -> tuple[Network, Flow, bool]:
    """Send ``streams`` client -> server over the simulator, keeping what arrives."""
    network = Network(seed=seed)
    flow = add_flow(
        network,
        BytesContent(streams),
        forward=network.link(forward),
        backward=network.link(backward),
        client_config=client_config,
        server_config=server_config,
        keep=True,
    )
    done = run_flows(network, [flow], max_time=max_time)
    return network, flow, done


def assert_identical(flow: Flow, streams: dict[int, bytes]) -> None:
    kept = flow.receiver.kept
    assert kept is not None
    assert flow.receiver.intact
    for stream_id, data in streams.items():
        assert sha256(kept.get(stream_id, bytearray())) == sha256(data), stream_id
