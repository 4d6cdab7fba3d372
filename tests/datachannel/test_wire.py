"""Header and frame codecs: round trips, truncation at every offset, garbage in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetstream.datachannel import wire
from jetstream.errors import RemoteProtocolError

PARAMS = wire.TransportParameters(
    idle_timeout=30.0, initial_max_data=1 << 26, max_datagram_size=1472, max_ack_delay=0.005
)
FRAMES: list[tuple[bytes, wire.Frame]] = [
    (wire.PING_FRAME, wire.PingFrame()),
    (wire.encode_max_data_frame(123456789), wire.MaxDataFrame(123456789)),
    (wire.encode_data_blocked_frame(77), wire.DataBlockedFrame(77)),
    (wire.encode_close_frame(0x101, "cancelled ✓"), wire.CloseFrame(0x101, "cancelled ✓")),
    (wire.encode_hello_frame(bytes(range(32)), PARAMS), wire.HelloFrame(bytes(range(32)), PARAMS)),
    (
        wire.encode_ack_frame([(90, 101), (50, 80), (0, 10)], 0.0015),
        wire.AckFrame(100, 0.0015, ((90, 101), (50, 80), (0, 10))),
    ),
]


def data_frame(stream_id: int, offset: int, payload: bytes, fin: bool) -> bytes:
    return wire.encode_data_frame_header(stream_id, offset, len(payload), fin) + payload


@pytest.mark.parametrize(("encoded", "expected"), FRAMES)
def test_frame_round_trip(encoded: bytes, expected: wire.Frame) -> None:
    assert wire.decode_frames(encoded) == [expected]


def test_data_frames_and_padding_in_one_payload() -> None:
    payload = data_frame(7, 1 << 40, b"hello", False) + data_frame(8, 0, b"", True) + bytes(9)
    frames = wire.decode_frames(payload)
    assert [(f.stream_id, f.offset, bytes(f.data), f.fin) for f in frames[:2]] == [  # type: ignore[union-attr]
        (7, 1 << 40, b"hello", False),
        (8, 0, b"", True),
    ]
    assert frames[2] == wire.PaddingFrame(9)


@pytest.mark.parametrize(
    "encoded", [encoded for encoded, _ in FRAMES] + [data_frame(1, 2, b"abcdef", True)]
)
def test_truncation_at_every_offset_is_malformed(encoded: bytes) -> None:
    # A truncated frame must never decode: every cut lands inside a fixed-width field, the
    # declared data length, the declared reason length or the range count.
    for cut in range(1, len(encoded)):
        with pytest.raises(RemoteProtocolError) as info:
            wire.decode_frames(encoded[:cut])
        assert info.value.close_code == wire.ErrorCode.FRAME_ENCODING_ERROR


def test_invalid_values_are_malformed() -> None:
    bad = [
        b"",  # empty payload
        b"\x07",  # unknown frame type
        b"\x00\x00\x01",  # padding must be zeros
        wire.encode_close_frame(1, "x")[:-1] + b"\xff",  # reason is not UTF-8
        bytes([wire.FrameType.ACK]) + (5).to_bytes(8, "big") + bytes(4) + bytes(2) + bytes(4),
        wire.encode_ack_frame([(0, 1)], 0)[:-4] + (9).to_bytes(4, "big"),  # range below 0
        wire.encode_hello_frame(bytes(32), PARAMS._replace(max_datagram_size=1000)),
        wire.encode_data_frame_header(1, wire.MAX_STREAM_OFFSET, 2, False) + b"ab",
    ]
    for payload in bad:
        with pytest.raises(RemoteProtocolError):
            wire.decode_frames(payload)


def test_ack_ranges_below_zero_are_rejected() -> None:
    frame = wire.encode_ack_frame([(10, 11), (0, 8)], 0)
    corrupted = frame[:-8] + (20).to_bytes(4, "big") + frame[-4:]
    with pytest.raises(RemoteProtocolError):
        wire.decode_frames(corrupted)


@given(
    st.lists(st.tuples(st.integers(1, 1000), st.integers(0, 1000)), min_size=1, max_size=40),
    st.integers(0, 1 << 40),
)
def test_ack_ranges_round_trip(shape: list[tuple[int, int]], low: int) -> None:
    ranges: list[tuple[int, int]] = []
    for length, gap in shape:
        ranges.append((low, low + length))
        low += length + gap + 1
    ranges.reverse()
    frame, end = wire.pull_ack_frame(memoryview(wire.encode_ack_frame(ranges, 0.25)), 0)
    assert end == wire.ack_frame_size(len(ranges))
    assert frame.ranges == tuple(ranges) and frame.largest == ranges[0][1] - 1
    assert frame.delay == 0.25


@given(st.binary(max_size=300))
def test_arbitrary_payloads_raise_only_protocol_errors(payload: bytes) -> None:
    try:
        wire.decode_frames(payload)
    except RemoteProtocolError:
        pass


@given(st.binary(max_size=120))
def test_arbitrary_datagrams_raise_only_protocol_errors(datagram: bytes) -> None:
    for parse in (wire.peek_destination_cid, wire.peek_ticket_id, wire.decode_long_header):
        try:
            parse(datagram)
        except RemoteProtocolError:
            pass


def test_long_header_round_trip_and_peeking() -> None:
    header = wire.encode_long_header(
        wire.PacketType.INITIAL, wire.VERSION_1, b"D" * 8, b"S" * 8, 3, b"T" * 16
    )
    datagram = header + bytes(1200)
    parsed = wire.decode_long_header(datagram)
    assert parsed == wire.LongHeader(
        wire.PacketType.INITIAL, wire.VERSION_1, b"D" * 8, b"S" * 8, 3, b"T" * 16, len(header)
    )
    assert wire.peek_ticket_id(datagram) == b"T" * 16
    assert wire.peek_destination_cid(datagram) == b"D" * 8
    short = wire.encode_short_header(1, b"C" * 8, 1 << 33) + bytes(20)
    assert wire.peek_destination_cid(short) == b"C" * 8
    assert wire.peek_ticket_id(short) is None
    assert short[0] == wire.FLAG_FIXED | wire.FLAG_KEY_PHASE
    with pytest.raises(RemoteProtocolError):
        wire.decode_long_header(header[:-1] + bytes(10))  # INITIAL too short for its tag


@pytest.mark.parametrize(
    ("truncated", "largest", "expected"),
    [
        (0xA82F9B32, 0xA82F30EA, 0xA82F9B32),  # same epoch
        (0x9B32, 0xA82F30EA, 0x100009B32),  # nearest to the expected number wins
        (5, -1, 5),
        (0x00000002, 0x1FFFFFFFF, 0x200000002),  # wrapped forwards
        (0xFFFFFFFF, 0x200000001, 0x1FFFFFFFF),  # late packet from the previous epoch
    ],
)
def test_packet_number_expansion(truncated: int, largest: int, expected: int) -> None:
    assert wire.decode_packet_number(truncated, largest) == expected
