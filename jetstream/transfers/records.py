"""Framing of the records on a transfer's control streams (proto: stream_records.proto).

A record is a 4-byte big-endian length and a serialized message. The reader is fed the
stream's bytes in order (the data channel reports them in any order; `StreamAssembler`
puts them back in order first) and yields whole messages.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError, Message

from jetstream.errors import RemoteProtocolError

SENDER_STREAM = 0
RECEIVER_STREAM = 1
FIRST_FILE_STREAM = 2
MAX_RECORD_BYTES = 1 << 20

_LENGTH = struct.Struct(">I")
M = TypeVar("M", bound=Message)


def frame(message: Message) -> bytes:
    body = message.SerializeToString()
    return _LENGTH.pack(len(body)) + body


def file_stream(file_id: int) -> int:
    return FIRST_FILE_STREAM + file_id


class StreamAssembler:
    """Turns out-of-order (offset, data) pieces of one stream into its in-order bytes."""

    def __init__(self) -> None:
        self._next = 0
        self._pending: dict[int, bytes] = {}

    def add(self, offset: int, data: bytes | memoryview) -> bytes:
        """The bytes that became contiguous with this piece (maybe empty)."""
        if offset != self._next:
            self._pending[offset] = bytes(data)
            return b""
        out = [bytes(data)]
        self._next += len(data)
        while self._next in self._pending:
            piece = self._pending.pop(self._next)
            out.append(piece)
            self._next += len(piece)
        return b"".join(out)


class RecordReader(Generic[M]):
    """Yields complete messages of type `kind` from in-order stream bytes."""

    def __init__(self, kind: type[M]) -> None:
        self._kind = kind
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[M]:
        self._buffer += data
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > MAX_RECORD_BYTES:
                raise RemoteProtocolError(f"control record of {length} bytes is too large")
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                return
            message = self._kind()
            try:
                message.ParseFromString(bytes(self._buffer[_LENGTH.size:end]))
            except DecodeError:
                raise RemoteProtocolError("malformed control record") from None
            del self._buffer[:end]
            yield message
