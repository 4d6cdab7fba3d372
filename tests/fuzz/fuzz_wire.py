"""Fuzz target: the datagram decoder (jetstream/datachannel/wire.py).

One input is one UDP payload, given to every function a driver or a connection applies to
bytes off the network. Each may only answer or raise `RemoteProtocolError`; what decodes must
encode back to the same bytes (a decoder that reads a field wrongly fails here even if it
never crashes).
"""

from __future__ import annotations

from jetstream.datachannel import wire
from jetstream.errors import RemoteProtocolError

_REENCODE = {
    wire.PingFrame: lambda f: wire.PING_FRAME,
    wire.MaxDataFrame: lambda f: wire.encode_max_data_frame(f.maximum),
    wire.DataBlockedFrame: lambda f: wire.encode_data_blocked_frame(f.limit),
    wire.CloseFrame: lambda f: wire.encode_close_frame(f.error_code, f.reason),
    wire.HelloFrame: lambda f: wire.encode_hello_frame(f.public_key, f.params),
    wire.PaddingFrame: lambda f: bytes(f.length),
    wire.DataFrame: lambda f: wire.encode_data_frame_header(f.stream_id, f.offset,
                                                            len(f.data), f.fin) + f.data,
}


def TestOneInput(data: bytes) -> None:
    _headers(data)
    _frames(data)


def _headers(data: bytes) -> None:
    for peek in (wire.peek_destination_cid, wire.peek_ticket_id):
        try:
            peek(data)
        except RemoteProtocolError:
            pass
    if not data or not data[0] & wire.FLAG_LONG:
        return  # callers decode a long header only where the first bit says so
    try:
        header = wire.decode_long_header(data)
    except RemoteProtocolError:
        return
    again = wire.encode_long_header(header.packet_type, header.version, header.destination_cid,
                                    header.source_cid, header.truncated_pn, header.ticket_id)
    assert again == data[:header.size], (again, data[:header.size])
    assert len(data) >= header.size + wire.AEAD_TAG_LENGTH


def _frames(data: bytes) -> None:
    try:
        frames = wire.decode_frames(data)
    except RemoteProtocolError:
        return
    assert frames, "a payload that decodes holds a frame"
    pos = 0
    for frame in frames:
        if isinstance(frame, wire.AckFrame):
            size = wire.ack_frame_size(len(frame.ranges))
            encoded = wire.encode_ack_frame(list(frame.ranges), 0.0)
            # The delay field (bytes 9-12) goes through a float: compare everything else.
            assert encoded[:9] + encoded[13:] == data[pos:pos + 9] + data[pos + 13:pos + size]
            assert _ordered(frame.ranges), frame.ranges
        else:
            encoded = _REENCODE[type(frame)](frame)
            size = len(encoded)
            assert encoded == data[pos:pos + size], (frame, data[pos:pos + size])
        pos += size
    assert pos == len(data)


def _ordered(ranges: tuple[tuple[int, int], ...]) -> bool:
    """Highest first, disjoint, not adjacent, none empty, none negative."""
    previous_start = None
    for start, stop in ranges:
        if not 0 <= start < stop or (previous_start is not None and stop >= previous_start):
            return False
        previous_start = start
    return True


def seeds() -> list[bytes]:
    """One encoding of every frame and header kind, for the fuzzer to start from."""
    params = wire.TransportParameters(30.0, 1 << 26, 1472, 0.005)
    frames = [
        wire.PING_FRAME,
        wire.encode_ack_frame([(90, 101), (50, 80), (0, 10)], 0.0015),
        wire.encode_max_data_frame(1 << 30),
        wire.encode_data_blocked_frame(77),
        wire.encode_close_frame(0x101, "cancelled"),
        wire.encode_hello_frame(bytes(range(32)), params),
        wire.encode_data_frame_header(7, 1 << 20, 5, False) + b"hello",
        wire.encode_data_frame_header(2, 0, 0, True) + bytes(4),
    ]
    long_header = wire.encode_long_header(wire.PacketType.INITIAL, wire.VERSION_1, bytes(8),
                                          bytes(range(8)), 1, bytes(range(16)))
    short_header = wire.encode_short_header(0, bytes(range(8)), 5)
    return [*frames, b"".join(frames), long_header + bytes(1200 - len(long_header)),
            short_header + bytes(wire.AEAD_TAG_LENGTH + 4)]
