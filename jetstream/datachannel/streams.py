"""Stream bookkeeping: what we still have to send, and what we have received.

A stream is one file (or any byte sequence) named by a 32-bit id the application chooses;
any number of streams share a connection and their frames share packets, so ten thousand
small files cost no round trip each. Offsets are absolute, which is the resume story: the
sender may start a stream anywhere or send only the ranges the receiver lacks, and the
receiver may declare the ranges it already holds (`ReceiveStreams.resume`).
"""

from __future__ import annotations

from collections import deque

from jetstream.datachannel.rangeset import RangeSet
from jetstream.datachannel.recovery import SentPacket, StreamChunk
from jetstream.datachannel.wire import DATA_FRAME_OVERHEAD, MAX_STREAM_OFFSET, ErrorCode
from jetstream.errors import LocalProtocolError, RemoteProtocolError

MAX_STREAM_ID = (1 << 32) - 1


class _SendStream:
    __slots__ = ("next_offset", "unacked", "end", "end_acked")

    def __init__(self) -> None:
        self.next_offset = 0
        self.unacked = 0
        """Bytes written by the application and not yet acknowledged."""
        self.end: int | None = None
        self.end_acked = False


class SendStreams:
    """Queued stream data, data waiting to be resent, and per-stream acknowledgement."""

    def __init__(self) -> None:
        self._streams: dict[int, _SendStream] = {}
        self._acknowledged = RangeSet()
        self.pending: deque[StreamChunk] = deque()
        """Data never sent, in the order the application wrote it."""
        self.retransmit: deque[StreamChunk] = deque()
        """Data of lost packets; goes out before new data."""
        self.held = 0
        """Stream bytes written and not yet acknowledged (queued, in flight or to resend)."""

    def write(self, stream_id: int, data: memoryview, offset: int | None, end: bool) -> None:
        if not 0 <= stream_id <= MAX_STREAM_ID:
            raise LocalProtocolError(f"stream id {stream_id} is out of range")
        if stream_id in self._acknowledged:
            raise LocalProtocolError(f"stream {stream_id} has already ended")
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = _SendStream()
        if offset is None:
            offset = stream.next_offset
        length = len(data)
        stop = offset + length
        if offset < 0 or stop > MAX_STREAM_OFFSET:
            raise LocalProtocolError(f"offset {offset} is out of range")
        if stream.end is not None:
            raise LocalProtocolError(f"stream {stream_id} has already ended")
        if end and stop < stream.next_offset:
            raise LocalProtocolError(f"stream {stream_id} cannot end before data already written")
        if not length and not end:
            return
        stream.next_offset = max(stream.next_offset, stop)
        stream.unacked += length
        if end:
            stream.end = stop
        self.held += length
        self.pending.append((stream_id, offset, data, end))

    def take(self, space: int, credit: int) -> tuple[list[StreamChunk], int]:
        """Chunks for one packet with ``space`` bytes of frames left; resent data first.

        New data is limited to ``credit`` bytes; returns the chunks and the new bytes taken.
        """
        chunks: list[StreamChunk] = []
        new_bytes = 0
        retransmit, pending = self.retransmit, self.pending
        while space > DATA_FRAME_OVERHEAD:
            if retransmit:
                queue, budget = retransmit, space
            elif pending and credit > 0:
                queue, budget = pending, credit
            else:
                break
            stream_id, offset, data, fin = queue[0]
            room = space - DATA_FRAME_OVERHEAD
            length = len(data)
            if length > room or length > budget:
                length = room if room < budget else budget
                queue[0] = (stream_id, offset + length, data[length:], fin)
                chunk = (stream_id, offset, data[:length], False)
            else:
                chunk = queue.popleft()
            chunks.append(chunk)
            space -= DATA_FRAME_OVERHEAD + length
            if queue is pending:
                credit -= length
                new_bytes += length
        return chunks, new_bytes

    def on_acked(self, packets: list[SentPacket]) -> list[int]:
        """Account the chunks of acknowledged packets; return the streams now completely
        acknowledged."""
        done: list[int] = []
        streams = self._streams
        held = 0
        for packet in packets:
            for stream_id, _, data, fin in packet.chunks:
                stream = streams[stream_id]
                length = len(data)
                stream.unacked -= length
                held += length
                if fin:
                    stream.end_acked = True
                if stream.end_acked and not stream.unacked:
                    del streams[stream_id]
                    self._acknowledged.add_one(stream_id)
                    done.append(stream_id)
        self.held -= held
        return done

    def has_data(self) -> bool:
        return bool(self.retransmit or self.pending)


class _ReceiveStream:
    __slots__ = ("received", "final_size")

    def __init__(self) -> None:
        self.received = RangeSet()
        self.final_size: int | None = None


class ReceiveStreams:
    """De-duplicates stream data and detects complete streams."""

    def __init__(self, max_active: int) -> None:
        self._max_active = max_active
        self._streams: dict[int, _ReceiveStream] = {}
        self._finished = RangeSet()

    def _stream(self, stream_id: int) -> _ReceiveStream | None:
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id in self._finished:
                return None
            if len(self._streams) >= self._max_active:
                raise RemoteProtocolError(
                    "too many incomplete streams", close_code=ErrorCode.STREAM_LIMIT_ERROR
                )
            stream = self._streams[stream_id] = _ReceiveStream()
        return stream

    def on_data(
        self, stream_id: int, offset: int, length: int, fin: bool
    ) -> tuple[list[tuple[int, int]], int | None]:
        """New byte ranges of a DATA frame, and the final size if the stream is now complete."""
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._stream(stream_id)
            if stream is None:
                return [], None  # a late duplicate of a finished stream
        stop = offset + length
        final = stream.final_size
        if final is None and not fin:  # the common case: no end known yet
            return stream.received.add(offset, stop), None
        if fin:
            if final is not None and final != stop:
                raise RemoteProtocolError(
                    "final size changed", close_code=ErrorCode.FINAL_SIZE_ERROR
                )
            if stream.received and stream.received.last()[1] > stop:
                raise RemoteProtocolError(
                    "data beyond final size", close_code=ErrorCode.FINAL_SIZE_ERROR
                )
            stream.final_size = final = stop
        elif final is not None and stop > final:
            raise RemoteProtocolError(
                "data beyond final size", close_code=ErrorCode.FINAL_SIZE_ERROR
            )
        new = stream.received.add(offset, stop)
        if final is not None and stream.received.covers(0, final):
            self._finish(stream_id)
            return new, final
        return new, None

    def resume(self, stream_id: int, ranges: list[tuple[int, int]]) -> int | None:
        """Declare byte ranges the application already holds; they are never reported.

        Returns the final size if the stream's end was already received and these ranges
        complete it (the stream is then finished, as `on_data` would have done).
        """
        for start, stop in ranges:
            if not 0 <= start <= stop <= MAX_STREAM_OFFSET:
                raise LocalProtocolError(f"invalid range [{start}, {stop})")
        stream = self._stream(stream_id)
        if stream is None:
            raise LocalProtocolError(f"stream {stream_id} is already complete")
        for start, stop in ranges:
            stream.received.add(start, stop)
        final = stream.final_size
        if final is not None and stream.received.covers(0, final):
            self._finish(stream_id)
            return final
        return None

    def _finish(self, stream_id: int) -> None:
        del self._streams[stream_id]
        self._finished.add_one(stream_id)
