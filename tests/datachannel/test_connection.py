"""Connection behaviour driven by hand: streams, resume, flow control, closing, timeouts,
key updates, protocol violations and API misuse."""

from __future__ import annotations

import pytest

from jetstream.datachannel import (
    ConnectionTerminated,
    DataChannelConfig,
    ErrorCode,
    HandshakeCompleted,
    StreamAcknowledged,
    StreamDataReceived,
    StreamEnded,
    wire,
)
from jetstream.datachannel.connection import Connection
from jetstream.errors import ConfigError, LocalProtocolError
from jetstream.netsim import LinkConfig
from tests.helpers.datachannel import (
    CLIENT,
    SERVER,
    assert_identical,
    deliver,
    drain_events,
    established_pair,
    make_pair,
    transfer,
)

LINK = LinkConfig(rate_bps=20e6, delay=0.01, queue_bytes=50_000)
BACK = LinkConfig(delay=0.01)


def pump(a: Connection, b: Connection, now: float, rounds: int = 50, step: float = 0.01) -> float:
    """Exchange datagrams with ``step`` seconds of one-way delay, firing due timers."""
    for _ in range(rounds):
        for conn in (a, b):
            timer = conn.get_timer()
            if timer is not None and timer <= now:
                conn.handle_timer(now)
        from_a, from_b = a.datagrams_to_send(now), b.datagrams_to_send(now)
        now += step
        deliver(from_a, b, CLIENT, now)
        deliver(from_b, a, SERVER, now)
    return now


def test_handshake_reports_completion_on_both_sides() -> None:
    pair, _ = established_pair()
    assert [type(e) for e in drain_events(pair.client)] == [HandshakeCompleted]
    assert [type(e) for e in drain_events(pair.server)] == [HandshakeCompleted]
    assert pair.client.statistics().smoothed_rtt == pytest.approx(0.02)


def test_handshake_answered_within_one_clock_reading() -> None:
    """Found by fuzzing (tests/fuzz/regressions/handshake): a HANDSHAKE that arrives at the
    very time of the INITIAL is an RTT sample of 0, which the rate model divided by."""
    pair = make_pair()
    pair.client.connect(SERVER, 1.0)
    deliver(pair.client.datagrams_to_send(1.0), pair.server, CLIENT, 1.0)
    deliver(pair.server.datagrams_to_send(1.0), pair.client, SERVER, 1.0)
    assert any(isinstance(e, HandshakeCompleted) for e in drain_events(pair.client))
    assert pair.client.statistics().smoothed_rtt > 0


def test_ten_thousand_files_share_packets_and_round_trips() -> None:
    streams = {i: bytes([i % 251]) * (i % 97) for i in range(10_000)}
    network, flow, done = transfer(streams, seed=1, forward=LINK, backward=BACK, max_time=30)
    assert done
    assert_identical(flow, streams)
    assert set(flow.sender.acknowledged) == set(streams)
    # About 480 kB at 20 Mbit/s: a fraction of a second, not 10,000 round trips of 20 ms.
    assert network.now < 2.0
    assert flow.client.conn.statistics().packets_sent < 600


def test_resume_sends_and_reports_only_the_missing_ranges() -> None:
    pair, now = established_pair()
    data = bytes(range(256)) * 400
    pair.server.resume_stream(5, [(0, 40_000), (60_000, 80_000)])
    pair.client.send_stream_data(5, memoryview(data)[40_000:60_000], offset=40_000)
    pair.client.send_stream_data(5, memoryview(data)[80_000:], offset=80_000, end_stream=True)
    now = pump(pair.client, pair.server, now)
    events = drain_events(pair.server)
    pieces = [(e.offset, bytes(e.data)) for e in events if isinstance(e, StreamDataReceived)]
    assert sum(len(p) for _, p in pieces) == len(data) - 60_000
    assert all(data[offset : offset + len(p)] == p for offset, p in pieces)
    assert [e for e in events if isinstance(e, StreamEnded)] == [StreamEnded(5, len(data))]
    assert StreamAcknowledged(5) in drain_events(pair.client)


def test_resume_that_completes_an_ended_stream_reports_its_end() -> None:
    pair, now = established_pair()
    data = bytes(range(256)) * 40
    # The end arrives first; the start is declared afterwards (the receiver found it on disk).
    pair.client.send_stream_data(7, memoryview(data)[6000:], offset=6000, end_stream=True)
    now = pump(pair.client, pair.server, now)
    events = drain_events(pair.server)
    assert not [e for e in events if isinstance(e, StreamEnded)]
    pair.server.resume_stream(7, [(0, 3000)])
    assert not [e for e in drain_events(pair.server) if isinstance(e, StreamEnded)]
    pair.server.resume_stream(7, [(3000, 6000)])
    assert drain_events(pair.server) == [StreamEnded(7, len(data))]
    with pytest.raises(LocalProtocolError):
        pair.server.resume_stream(7, [(0, 1)])  # finished: nothing more to declare
    # A resume covering everything before the data arrives: the end comes with the data.
    pair.server.resume_stream(8, [(0, len(data))])
    assert drain_events(pair.server) == []
    pair.client.send_stream_data(8, b"", offset=len(data), end_stream=True)
    pump(pair.client, pair.server, now)
    assert [e for e in drain_events(pair.server) if isinstance(e, StreamEnded)] == [
        StreamEnded(8, len(data))
    ]


def test_flow_control_holds_the_sender_until_data_is_consumed() -> None:
    window = 100_000
    pair = make_pair(
        client_config=DataChannelConfig(),
        server_config=DataChannelConfig(flow_control_window=window),
    )
    pair.client.connect(SERVER, 0.0)
    pair.client.send_stream_data(1, bytes(1_000_000), end_stream=True)
    now = pump(pair.client, pair.server, 0.0, rounds=100)
    received = sum(
        len(e.data) for e in drain_events(pair.server) if isinstance(e, StreamDataReceived)
    )
    assert received == window
    assert pair.client.statistics().stream_bytes_sent == window
    total = received
    for _ in range(40):
        pair.server.data_consumed(received)
        now = pump(pair.client, pair.server, now, rounds=10)
        received = sum(
            len(e.data) for e in drain_events(pair.server) if isinstance(e, StreamDataReceived)
        )
        total += received
    assert total == 1_000_000


def test_close_reaches_the_peer_with_its_code() -> None:
    pair, now = established_pair()
    drain_events(pair.client), drain_events(pair.server)
    pair.client.close(ErrorCode.APPLICATION + 1, "cancelled by user")
    assert drain_events(pair.client) == [
        ConnectionTerminated(ErrorCode.APPLICATION + 1, "cancelled by user", by_peer=False)
    ]
    deliver(pair.client.datagrams_to_send(now), pair.server, CLIENT, now + 0.01)
    assert drain_events(pair.server) == [
        ConnectionTerminated(ErrorCode.APPLICATION + 1, "cancelled by user", by_peer=True)
    ]
    assert pair.server.is_closed and pair.server.get_timer() is None
    timer = pair.client.get_timer()
    assert timer is not None
    pair.client.handle_timer(timer)
    assert pair.client.is_closed and pair.client.get_timer() is None
    with pytest.raises(LocalProtocolError):
        pair.client.send_stream_data(1, b"late")


def test_keep_alive_holds_an_idle_connection_and_silence_ends_it() -> None:
    pair, now = established_pair()
    now = pump(pair.client, pair.server, now, rounds=100, step=0.5)  # 50 s of idle time
    assert not pair.client.is_closed and not pair.server.is_closed
    for conn in (pair.client, pair.server):  # the path goes black
        while not conn.is_closed:
            timer = conn.get_timer()
            assert timer is not None
            conn.datagrams_to_send(timer)
            conn.handle_timer(timer)
        terminated = [e for e in drain_events(conn) if isinstance(e, ConnectionTerminated)]
        assert terminated[-1].error_code == ErrorCode.IDLE_TIMEOUT
        assert conn.get_timer() is None


def test_key_updates_happen_and_data_survives_them() -> None:
    config = DataChannelConfig(key_update_interval=1024)
    streams = {1: bytes(range(256)) * 12_000}
    _, flow, done = transfer(
        streams, seed=2, forward=LINK, backward=BACK, max_time=30, client_config=config
    )
    assert done
    assert_identical(flow, streams)
    assert flow.client.conn.statistics().key_updates >= 2
    assert flow.server.conn.statistics().rejected_auth == 0


def authentic(conn: Connection, payload: bytes) -> bytes:
    """Seal ``payload`` as ``conn`` would: to forge an authentic but invalid packet."""
    keys = conn._send_keys  # noqa: SLF001 - only a peer with keys can send these
    assert keys is not None
    pn = conn._next_pn  # noqa: SLF001
    conn._next_pn += 1  # noqa: SLF001
    header = wire.encode_short_header(keys.phase, conn._hs.peer_cid, pn)  # noqa: SLF001
    return header + keys.protection.seal(pn, header, payload)


def receive(conn: Connection, datagrams: list[bytes], now: float, one_by_one: bool) -> None:
    """From the client, through `receive_datagram` one by one or as one receive batch."""
    if one_by_one:
        for datagram in datagrams:
            conn.receive_datagram(datagram, CLIENT, now)
    else:
        deliver([(datagram, SERVER) for datagram in datagrams], conn, CLIENT, now)


def test_a_receive_batch_takes_what_is_genuine_and_counts_the_rest() -> None:
    """A batch with a forgery, a replay, a key update and another connection's datagram in
    it: the run stops at each, the slow path counts or applies it, the run goes on."""
    pair, now = established_pair()
    drain_events(pair.server)
    other, _ = established_pair(seed=7)
    data = [wire.encode_data_frame_header(1, i * 10, 10, i == 5) + bytes([i]) * 10
            for i in range(6)]
    first = authentic(pair.client, data[0])
    forged = bytearray(authentic(pair.client, b"\x01"))
    forged[-1] ^= 1
    pair.client._send_keys.update(pair.client._next_pn)  # noqa: SLF001 - the peer's key update
    batch = [first, authentic(pair.client, data[1]), bytes(forged), first,
             authentic(other.client, data[2]), authentic(pair.client, data[2]),
             authentic(pair.client, data[3] + wire.PING_FRAME),
             authentic(pair.client, data[4]), authentic(pair.client, data[5])]
    before = pair.server.statistics()
    receive(pair.server, batch, now, one_by_one=False)
    events = drain_events(pair.server)
    got = {e.offset: bytes(e.data) for e in events if isinstance(e, StreamDataReceived)}
    assert got == {i * 10: bytes([i]) * 10 for i in range(6)}
    assert [e.final_size for e in events if isinstance(e, StreamEnded)] == [60]
    stats = pair.server.statistics()
    assert stats.rejected_auth - before.rejected_auth == 1
    assert stats.rejected_replay - before.rejected_replay == 1
    assert stats.rejected_malformed - before.rejected_malformed == 1  # the other's cid
    assert stats.packets_received - before.packets_received == 6
    assert not pair.server.is_closed


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x07", ErrorCode.FRAME_ENCODING_ERROR),
        (wire.encode_ack_frame([(0, 1000)], 0.0), ErrorCode.PROTOCOL_VIOLATION),
        (
            wire.encode_hello_frame(bytes(32), wire.TransportParameters(1.0, 1, 1472, 0.0)),
            ErrorCode.PROTOCOL_VIOLATION,
        ),
        (
            wire.encode_data_frame_header(1, 5, 2, True)
            + b"ab"
            + wire.encode_data_frame_header(1, 0, 3, True)
            + b"abc",
            ErrorCode.FINAL_SIZE_ERROR,
        ),
        (
            wire.encode_data_frame_header(1, 5, 2, True)
            + b"ab"
            + wire.encode_data_frame_header(1, 6, 3, False)
            + b"abc",
            ErrorCode.FINAL_SIZE_ERROR,
        ),
    ],
)
@pytest.mark.parametrize("one_by_one", [True, False])
def test_authentic_violations_close_with_an_error(payload: bytes, code: int,
                                                  one_by_one: bool) -> None:
    pair, now = established_pair()
    drain_events(pair.server)
    receive(pair.server, [authentic(pair.client, payload)], now, one_by_one)
    terminated = [e for e in drain_events(pair.server) if isinstance(e, ConnectionTerminated)]
    assert len(terminated) == 1
    assert terminated[0].error_code == code and not terminated[0].by_peer
    deliver(pair.server.datagrams_to_send(now), pair.client, SERVER, now + 0.01)
    events = drain_events(pair.client)
    assert any(
        isinstance(e, ConnectionTerminated) and e.by_peer and e.error_code == code for e in events
    )


@pytest.mark.parametrize("one_by_one", [True, False])
def test_flow_control_violation_closes(one_by_one: bool) -> None:
    pair = make_pair(server_config=DataChannelConfig(flow_control_window=10))
    pair.client.connect(SERVER, 0.0)
    deliver(pair.client.datagrams_to_send(0.0), pair.server, CLIENT, 0.01)
    deliver(pair.server.datagrams_to_send(0.01), pair.client, SERVER, 0.02)
    drain_events(pair.server)
    payload = wire.encode_data_frame_header(1, 0, 20, False) + bytes(20)
    receive(pair.server, [authentic(pair.client, payload)], 0.03, one_by_one)
    assert any(
        isinstance(e, ConnectionTerminated) and e.error_code == ErrorCode.FLOW_CONTROL_ERROR
        for e in drain_events(pair.server)
    )


def test_api_misuse_is_a_local_error() -> None:
    pair, _ = established_pair()
    with pytest.raises(LocalProtocolError):
        pair.server.connect(CLIENT, 0.0)
    with pytest.raises(LocalProtocolError):
        pair.client.send_stream_data(1 << 32, b"x")
    pair.client.send_stream_data(3, b"abc", end_stream=True)
    with pytest.raises(LocalProtocolError):
        pair.client.send_stream_data(3, b"more")
    with pytest.raises(LocalProtocolError):
        pair.client.send_stream_data(4, b"x", offset=-1)


@pytest.mark.parametrize(
    "settings",
    [
        {"max_datagram_size": 1000},
        {"aead": "ChaCha20"},
        {"congestion_control": "reno"},
        {
            "rate_policy": __import__(
                "jetstream.datachannel", fromlist=["RatePolicy"]
            ).RatePolicy.FIXED
        },
        {"ack_every": 0},
        {"idle_timeout": 0},
        {"min_rate": 10, "max_rate": 5},
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        DataChannelConfig(**settings)  # type: ignore[arg-type]
