"""Packet headers and frame codecs of docs/protocol.md (sections 3 and 4).

Every field has a fixed width so that one precompiled `struct.Struct` call reads or writes a
header or a frame: per-packet Python work is the cost that matters (performance.md 3.3).
Decoders raise `RemoteProtocolError` (close code `FRAME_ENCODING_ERROR`) on any malformed or
truncated input and nothing else; `struct.error`, `IndexError` and `UnicodeDecodeError` are
translated here, at the boundary where they can occur.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum
from typing import NamedTuple, TypeAlias

from jetstream.datachannel.native import FAST
from jetstream.errors import RemoteProtocolError

VERSION_1 = 0x4A530001
"""The only version defined so far ("JS", 1); chosen by the control plane, never negotiated here."""

CID_LENGTH = 8
TICKET_ID_LENGTH = 16
PUBLIC_KEY_LENGTH = 32
AEAD_TAG_LENGTH = 16
MIN_INITIAL_DATAGRAM_SIZE = 1200
"""A client pads its INITIAL to at least this size, so the 3x amplification allowance of the
server (3600 bytes) covers its HANDSHAKE reply."""
MAX_STREAM_OFFSET = (1 << 62) - 1
PACKET_NUMBER_LIMIT = 1 << 62
"""Packet numbers are 64-bit on the nonce, but never reach 2**62 (the connection closes first)."""

FLAG_LONG = 0x80
FLAG_FIXED = 0x40
FLAG_KEY_PHASE = 0x04
LONG_TYPE_MASK = 0x03
SHORT_RESERVED_MASK = 0x3B
LONG_RESERVED_MASK = 0x3C

SHORT_HEADER = struct.Struct(">B8sI")
"""flags, destination connection id, packet number (low 32 bits): 13 bytes."""
LONG_HEADER = struct.Struct(">BI8s8sI")
"""flags, version, destination cid, source cid, packet number (low 32 bits): 25 bytes."""
SHORT_HEADER_SIZE = SHORT_HEADER.size
LONG_HEADER_SIZE = LONG_HEADER.size
INITIAL_HEADER_SIZE = LONG_HEADER_SIZE + TICKET_ID_LENGTH

Address: TypeAlias = tuple[object, ...]
"""A peer address as the driver's socket layer gives it, e.g. ``(host, port)``; opaque here."""


class PacketType(IntEnum):
    """Long-header packet types (the low two bits of the first byte)."""

    INITIAL = 0
    HANDSHAKE = 1


class FrameType(IntEnum):
    PADDING = 0x00
    PING = 0x01
    ACK = 0x02
    MAX_DATA = 0x03
    DATA_BLOCKED = 0x04
    CLOSE = 0x05
    HELLO = 0x06
    DATA = 0x08
    DATA_FIN = 0x09


class ErrorCode(IntEnum):
    """CLOSE frame error codes; codes >= APPLICATION are chosen by the application."""

    NO_ERROR = 0x0
    INTERNAL_ERROR = 0x1
    PROTOCOL_VIOLATION = 0x2
    FRAME_ENCODING_ERROR = 0x3
    FLOW_CONTROL_ERROR = 0x4
    FINAL_SIZE_ERROR = 0x5
    STREAM_LIMIT_ERROR = 0x6
    HANDSHAKE_FAILURE = 0x7
    IDLE_TIMEOUT = 0x8
    HANDSHAKE_TIMEOUT = 0x9
    APPLICATION = 0x100


# Frame bodies (after the type byte).
_ACK = struct.Struct(">QIHI")  # largest, ack delay (µs), range count, first range length
_ACK_RANGE = struct.Struct(">II")  # gap, range length
_U64 = struct.Struct(">Q")
_CLOSE = struct.Struct(">HH")  # error code, reason length
_HELLO = struct.Struct(">32sIQHI")  # public key, idle ms, max data, max datagram, max ack delay µs
_DATA = struct.Struct(">BIQH")  # type, stream id, offset, length (the type byte included)
DATA_FRAME_HEADER = _DATA
"""The DATA frame header: type byte, stream id, offset, length (for hot loops)."""
DATA_FRAME_OVERHEAD = _DATA.size
ACK_FRAME_BASE_SIZE = 1 + _ACK.size
ACK_RANGE_SIZE = _ACK_RANGE.size
MAX_DATA_FRAME_SIZE = 1 + _U64.size
HELLO_FRAME_SIZE = 1 + _HELLO.size
MAX_REASON_LENGTH = 256


def malformed(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed {what}", close_code=ErrorCode.FRAME_ENCODING_ERROR)


# --- headers ---------------------------------------------------------------------------------


class LongHeader(NamedTuple):
    packet_type: PacketType
    version: int
    destination_cid: bytes
    source_cid: bytes
    truncated_pn: int
    ticket_id: bytes
    """Only in INITIAL packets (empty otherwise): which session ticket the client holds."""
    size: int
    """Header length: the associated data of the AEAD."""


def encode_short_header(key_phase: int, destination_cid: bytes, packet_number: int) -> bytes:
    return SHORT_HEADER.pack(
        FLAG_FIXED | (FLAG_KEY_PHASE if key_phase else 0),
        destination_cid,
        packet_number & 0xFFFFFFFF,
    )


def encode_long_header(
    packet_type: PacketType,
    version: int,
    destination_cid: bytes,
    source_cid: bytes,
    packet_number: int,
    ticket_id: bytes = b"",
) -> bytes:
    header = LONG_HEADER.pack(
        FLAG_LONG | FLAG_FIXED | packet_type,
        version,
        destination_cid,
        source_cid,
        packet_number & 0xFFFFFFFF,
    )
    return header + ticket_id


def decode_long_header(datagram: bytes | memoryview) -> LongHeader:
    """Parse a long header; the caller has checked `FLAG_LONG`."""
    try:
        flags, version, dcid, scid, truncated_pn = LONG_HEADER.unpack_from(datagram, 0)
    except struct.error:
        raise malformed("long header") from None
    if not flags & FLAG_FIXED or flags & LONG_RESERVED_MASK or flags & LONG_TYPE_MASK > 1:
        raise malformed("long header flags")
    packet_type = PacketType(flags & LONG_TYPE_MASK)
    size = LONG_HEADER_SIZE
    ticket_id = b""
    if packet_type is PacketType.INITIAL:
        size = INITIAL_HEADER_SIZE
        ticket_id = bytes(datagram[LONG_HEADER_SIZE:size])
    if len(datagram) < size + AEAD_TAG_LENGTH:
        raise malformed("long header packet")
    return LongHeader(packet_type, version, dcid, scid, truncated_pn, ticket_id, size)


def peek_destination_cid(datagram: bytes | memoryview) -> bytes:
    """The destination connection id, for a driver that demultiplexes one socket."""
    if len(datagram) < SHORT_HEADER_SIZE + AEAD_TAG_LENGTH:
        raise malformed("datagram")
    if datagram[0] & FLAG_LONG:
        return decode_long_header(datagram).destination_cid
    return bytes(datagram[1 : 1 + CID_LENGTH])


def peek_ticket_id(datagram: bytes | memoryview) -> bytes | None:
    """The session ticket id of an INITIAL packet (None for other packets).

    A server driver uses it to find the ticket before it creates a `Connection`; the INITIAL
    is still unauthenticated at that point, so it must not consume the ticket until
    `Connection.authenticated` is true.
    """
    if len(datagram) < SHORT_HEADER_SIZE + AEAD_TAG_LENGTH or not datagram[0] & FLAG_LONG:
        return None
    header = decode_long_header(datagram)
    return header.ticket_id if header.packet_type is PacketType.INITIAL else None


def decode_packet_number(truncated: int, largest: int) -> int:
    """Expand a 32-bit truncated packet number next to the largest one received (RFC 9000 A.3)."""
    expected = largest + 1
    candidate = (expected & ~0xFFFFFFFF) | truncated
    if candidate <= expected - 0x80000000 and candidate < PACKET_NUMBER_LIMIT - 0x100000000:
        return candidate + 0x100000000
    if candidate > expected + 0x80000000 and candidate >= 0x100000000:
        return candidate - 0x100000000
    return candidate


# --- frames ----------------------------------------------------------------------------------


class TransportParameters(NamedTuple):
    """What each side announces in its HELLO frame."""

    idle_timeout: float
    """Seconds without an authenticated packet before the connection dies (min of both)."""
    initial_max_data: int
    """Flow-control credit for the peer: unique stream bytes it may send before MAX_DATA."""
    max_datagram_size: int
    """Largest UDP payload this side accepts."""
    max_ack_delay: float
    """Longest this side delays an ACK, in seconds (used in the peer's PTO)."""


class PaddingFrame(NamedTuple):
    length: int


class PingFrame(NamedTuple):
    pass


class AckFrame(NamedTuple):
    largest: int
    delay: float
    """Seconds the receiver held the ACK after receiving `largest`."""
    ranges: tuple[tuple[int, int], ...]
    """Acknowledged packet numbers as half-open ranges, highest first."""


class MaxDataFrame(NamedTuple):
    maximum: int


class DataBlockedFrame(NamedTuple):
    limit: int


class CloseFrame(NamedTuple):
    error_code: int
    reason: str


class HelloFrame(NamedTuple):
    public_key: bytes
    params: TransportParameters


class DataFrame(NamedTuple):
    stream_id: int
    offset: int
    data: memoryview
    fin: bool


Frame: TypeAlias = (
    PaddingFrame
    | PingFrame
    | AckFrame
    | MaxDataFrame
    | DataBlockedFrame
    | CloseFrame
    | HelloFrame
    | DataFrame
)

PING_FRAME = bytes([FrameType.PING])
_DATA_TYPE = int(FrameType.DATA)
_DATA_FIN_TYPE = int(FrameType.DATA_FIN)


def encode_data_frame_header(stream_id: int, offset: int, length: int, fin: bool) -> bytes:
    """The 15-byte DATA frame header; the caller appends `length` bytes of data."""
    return _DATA.pack(_DATA_FIN_TYPE if fin else _DATA_TYPE, stream_id, offset, length)


def pull_data_frame(buf: memoryview, pos: int) -> tuple[int, int, memoryview, bool, int]:
    """Decode the DATA frame whose type byte is at ``buf[pos]``.

    Returns plain fields ``(stream id, offset, data, fin, next position)``: this runs once
    per packet, and a tuple is cheaper than a `DataFrame`.
    """
    try:
        frame_type, stream_id, offset, length = _DATA.unpack_from(buf, pos)
    except struct.error:
        raise malformed("DATA frame") from None
    start = pos + DATA_FRAME_OVERHEAD
    end = start + length
    if end > len(buf) or offset + length > MAX_STREAM_OFFSET:
        raise malformed("DATA frame")
    return stream_id, offset, buf[start:end], frame_type == FrameType.DATA_FIN, end


def _pull_data_frame(buf: memoryview, pos: int) -> tuple[DataFrame, int]:
    stream_id, offset, data, fin, end = pull_data_frame(buf, pos)
    return DataFrame(stream_id, offset, data, fin), end


def ack_frame_size(range_count: int) -> int:
    return ACK_FRAME_BASE_SIZE + (range_count - 1) * ACK_RANGE_SIZE


def encode_ack_frame(ranges: list[tuple[int, int]], delay: float) -> bytes:
    """ACK for half-open ``ranges`` given highest first (as `RangeSet.descending` returns)."""
    high_start, high_stop = ranges[0]
    largest = high_stop - 1
    parts = [
        bytes([FrameType.ACK]),
        _ACK.pack(largest, min(int(delay * 1e6), 0xFFFFFFFF), len(ranges), largest - high_start),
    ]
    previous_low = high_start
    for start, stop in ranges[1:]:
        parts.append(_ACK_RANGE.pack(previous_low - stop - 1, stop - 1 - start))
        previous_low = start
    return b"".join(parts)


def pull_ack_frame(buf: memoryview, pos: int) -> tuple[AckFrame, int]:
    if _native_pull_ack is not None:
        largest, delay_us, ranges, pos = _native_pull_ack(buf, pos)
        return AckFrame(largest, delay_us / 1e6, ranges), pos
    try:
        largest, delay_us, count, first = _ACK.unpack_from(buf, pos + 1)
        pos += ACK_FRAME_BASE_SIZE
        if count == 0 or first > largest:
            raise malformed("ACK frame")
        low = largest - first
        ranges = [(low, largest + 1)]
        if count > 1:
            values = struct.unpack_from(f">{2 * (count - 1)}I", buf, pos)
            pos += (count - 1) * ACK_RANGE_SIZE
            for i in range(0, len(values), 2):
                high = low - values[i] - 2
                low = high - values[i + 1]
                if low < 0:
                    raise malformed("ACK frame")
                ranges.append((low, high + 1))
    except struct.error:
        raise malformed("ACK frame") from None
    return AckFrame(largest, delay_us / 1e6, tuple(ranges)), pos


_native_pull_ack = None if FAST is None else FAST.pull_ack_frame
"""The compiled twin of `pull_ack_frame`'s decoding (same ranges, same errors)."""
if FAST is not None:
    FAST.set_malformed(malformed)


def encode_max_data_frame(maximum: int) -> bytes:
    return bytes([FrameType.MAX_DATA]) + _U64.pack(maximum)


def encode_data_blocked_frame(limit: int) -> bytes:
    return bytes([FrameType.DATA_BLOCKED]) + _U64.pack(limit)


def _pull_u64(buf: memoryview, pos: int, what: str) -> tuple[int, int]:
    try:
        (value,) = _U64.unpack_from(buf, pos + 1)
    except struct.error:
        raise malformed(what) from None
    return value, pos + MAX_DATA_FRAME_SIZE


def pull_max_data_frame(buf: memoryview, pos: int) -> tuple[MaxDataFrame, int]:
    value, pos = _pull_u64(buf, pos, "MAX_DATA frame")
    return MaxDataFrame(value), pos


def pull_data_blocked_frame(buf: memoryview, pos: int) -> tuple[DataBlockedFrame, int]:
    value, pos = _pull_u64(buf, pos, "DATA_BLOCKED frame")
    return DataBlockedFrame(value), pos


def encode_close_frame(error_code: int, reason: str) -> bytes:
    raw = reason.encode()[:MAX_REASON_LENGTH]
    return bytes([FrameType.CLOSE]) + _CLOSE.pack(error_code, len(raw)) + raw


def pull_close_frame(buf: memoryview, pos: int) -> tuple[CloseFrame, int]:
    try:
        code, length = _CLOSE.unpack_from(buf, pos + 1)
    except struct.error:
        raise malformed("CLOSE frame") from None
    start = pos + 1 + _CLOSE.size
    end = start + length
    if end > len(buf) or length > MAX_REASON_LENGTH:
        raise malformed("CLOSE frame")
    try:
        reason = bytes(buf[start:end]).decode()
    except UnicodeDecodeError:
        raise malformed("CLOSE reason") from None
    return CloseFrame(code, reason), end


def encode_hello_frame(public_key: bytes, params: TransportParameters) -> bytes:
    return bytes([FrameType.HELLO]) + _HELLO.pack(
        public_key,
        round(params.idle_timeout * 1000),
        params.initial_max_data,
        params.max_datagram_size,
        round(params.max_ack_delay * 1e6),
    )


def pull_hello_frame(buf: memoryview, pos: int) -> tuple[HelloFrame, int]:
    try:
        key, idle_ms, max_data, max_datagram, ack_delay_us = _HELLO.unpack_from(buf, pos + 1)
    except struct.error:
        raise malformed("HELLO frame") from None
    if idle_ms == 0 or max_datagram < MIN_INITIAL_DATAGRAM_SIZE:
        raise malformed("HELLO parameters")
    params = TransportParameters(idle_ms / 1000, max_data, max_datagram, ack_delay_us / 1e6)
    return HelloFrame(key, params), pos + HELLO_FRAME_SIZE


def pull_padding_frame(buf: memoryview, pos: int) -> tuple[PaddingFrame, int]:
    """PADDING runs to the end of the packet and must be all zero bytes."""
    rest = buf[pos:]
    if rest != bytes(len(rest)):
        raise malformed("PADDING")
    return PaddingFrame(len(rest)), len(buf)


def pull_ping_frame(buf: memoryview, pos: int) -> tuple[PingFrame, int]:
    return PingFrame(), pos + 1


FrameDecoder: TypeAlias = Callable[[memoryview, int], tuple[Frame, int]]
FRAME_DECODERS: dict[int, FrameDecoder] = {
    FrameType.PADDING: pull_padding_frame,
    FrameType.PING: pull_ping_frame,
    FrameType.ACK: pull_ack_frame,
    FrameType.MAX_DATA: pull_max_data_frame,
    FrameType.DATA_BLOCKED: pull_data_blocked_frame,
    FrameType.CLOSE: pull_close_frame,
    FrameType.HELLO: pull_hello_frame,
    FrameType.DATA: _pull_data_frame,
    FrameType.DATA_FIN: _pull_data_frame,
}


def decode_frames(payload: bytes | memoryview) -> list[Frame]:
    """Decode a whole packet payload; an empty payload is malformed."""
    buf = memoryview(payload)
    if not buf:
        raise malformed("empty payload")
    frames: list[Frame] = []
    pos = 0
    end = len(buf)
    while pos < end:
        decoder = FRAME_DECODERS.get(buf[pos])
        if decoder is None:
            raise malformed(f"frame type {buf[pos]:#x}")
        frame, pos = decoder(buf, pos)
        frames.append(frame)
    return frames
