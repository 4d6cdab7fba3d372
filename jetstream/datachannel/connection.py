"""The sans-IO data-channel connection: the one object a driver talks to.

A `Connection` has three inputs and no I/O, clock or global randomness of its own (the model
is aioquic's ``QuicConnection``):

* datagrams, through `receive_datagram(data, addr, now)`, or a receive batch at a time
  through `receive_run(datagrams, index, now)` (`receive_batch` when all are this
  connection's);
* a single timer: the driver calls `handle_timer(now)` when `get_timer()` is reached;
* application calls: `connect`, `send_stream_data`, `resume_stream`, `data_consumed`,
  `close`.

After any input the driver drains `next_event()` and sends every ``(datagram, address)``
that `datagrams_to_send(now)` returns, then re-arms its timer from `get_timer()`. Time is a
float in seconds from any monotonic origin; randomness (connection ids, ephemeral keys, the
controller's phase) comes from the injected ``rng``.

Datagrams that are truncated, forged, corrupted, replayed or simply random are counted in
`statistics()` and dropped without any reply. An authentic packet that breaks the protocol
closes the connection with a CLOSE frame carrying the error code.
"""

from __future__ import annotations

import dataclasses
import math
import random
import struct
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat

from jetstream.datachannel import wire
from jetstream.datachannel.acks import AckTracker
from jetstream.datachannel.config import DataChannelConfig
from jetstream.datachannel.congestion import (
    CongestionController,
    RateLimits,
    create_congestion_control,
)
from jetstream.datachannel.control import ControlFrames
from jetstream.datachannel.crypto import PacketProtection, ReceiveKeys, RunEntry, SendKeys
from jetstream.datachannel.events import (
    ConnectionTerminated,
    Event,
    HandshakeCompleted,
    StreamAcknowledged,
    StreamDataReceived,
    StreamEnded,
)
from jetstream.datachannel.flowcontrol import ReceiveWindow, SendCredit
from jetstream.datachannel.handshake import Role, SessionTicket, State, Trigger, next_state
from jetstream.datachannel.hello import HelloExchange
from jetstream.datachannel.pacing import Pacer
from jetstream.datachannel.recovery import (
    Recovery,
    RttEstimator,
    SentPacket,
    StreamChunk,
    lost_sizes,
)
from jetstream.datachannel.stats import ConnectionStats, Counters, Rejection, snapshot
from jetstream.datachannel.streams import ReceiveStreams, SendStreams
from jetstream.datachannel.wire import Address, ErrorCode, FrameType
from jetstream.errors import LocalProtocolError, RemoteProtocolError

CLOSING_PTOS = 3
"""After our CLOSE we linger this many PTOs to repeat it to a peer that keeps sending."""
_SHORT = wire.SHORT_HEADER
_ACK_ONLY = frozenset({FrameType.ACK, FrameType.PADDING, FrameType.CLOSE})
_SHORT_FLAGS_CHECKED = wire.FLAG_LONG | wire.FLAG_FIXED | wire.SHORT_RESERVED_MASK
# Enum members are slow to look up (about 100 ns each on Python 3.11): module constants.
_CLOSED = State.CLOSED
_CLOSING = State.CLOSING
_ESTABLISHED = State.ESTABLISHED
_HANDSHAKE_SENT = State.HANDSHAKE_SENT
_START = State.START
_SHORT_HEADER_SIZE = wire.SHORT_HEADER_SIZE
_TAG_LENGTH = wire.AEAD_TAG_LENGTH
_DATA_HEADER = wire.DATA_FRAME_HEADER
_DATA_OVERHEAD = wire.DATA_FRAME_OVERHEAD
_DATA_TYPE = int(FrameType.DATA)
_DATA_FIN_TYPE = int(FrameType.DATA_FIN)
_FLAG_FIXED = wire.FLAG_FIXED
_FLAG_KEY_PHASE = wire.FLAG_KEY_PHASE


def _burst_length(
    tail: int, room: int, credit: int, tokens: float, size: int, batch: int, window: int,
    phase_left: int,
) -> int:
    """How many full packets of ``size`` bytes (``room`` bytes of data each) go out in one
    burst: at least one, and after that only while the packet just sent leaves more than
    ``tail`` bytes of the write, a full packet of credit, pacer tokens above -1, room in the
    batch and in the congestion ``window`` (what it still takes beyond one more packet), and
    the key phase (``phase_left`` packets before a key update is due)."""
    count = -(-tail // room)  # ceil: the packet that takes the write to its tail is the last
    count = min(count, (credit - room) // room + 1, batch, window // size + 1)
    if tokens + 1 <= size * count:  # tokens - k * size <= -1 ends the burst at packet k
        count = min(count, max(math.ceil((tokens + 1) / size), 1))
    if phase_left > 0:
        count = min(count, phase_left)
    return max(count, 1)


class Connection:
    """One end of a data channel (see the module docstring for the driver contract)."""

    def __init__(
        self,
        config: DataChannelConfig,
        *,
        role: Role,
        ticket: SessionTicket,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.role = role
        self._rng = rng if rng is not None else random.SystemRandom()
        self.state = _START
        self.authenticated = False
        """True once the peer proved it holds the ticket (a server driver consumes the
        ticket only then)."""
        self.peer_address: Address | None = None
        self._validated = role is Role.CLIENT
        self._amp_received = 0
        self._amp_sent = 0
        self._validation_pn = 0
        self._hs = HelloExchange(
            aead=config.aead,
            role=role,
            ticket=ticket,
            rng=self._rng,
            params=wire.TransportParameters(
                idle_timeout=config.idle_timeout,
                initial_max_data=config.flow_control_window,
                max_datagram_size=config.max_datagram_size,
                max_ack_delay=config.max_ack_delay,
            ),
        )
        self._send_keys: SendKeys | None = None
        self._receive_keys: ReceiveKeys | None = None
        self._next_pn = 0
        self._max_datagram = config.max_datagram_size
        self._counters = Counters()
        self._events: deque[Event] = deque()
        self._cid = self._hs.local_cid
        self._rtt = RttEstimator(config.initial_rtt)
        self._acks = AckTracker(
            ack_every=config.ack_every,
            max_ack_delay=config.max_ack_delay,
            max_ranges=config.max_ack_ranges,
            max_tracked=config.max_tracked_ranges,
        )
        self._recovery = Recovery(self._rtt, config.max_ack_delay)
        self._cc: CongestionController | None = None
        self._pacer = Pacer(config.pacing_quantum, config.max_datagram_size)
        self._credit = SendCredit(0)
        self._window = ReceiveWindow(config.flow_control_window)
        self._send_streams = SendStreams()
        self._receive_streams = ReceiveStreams(config.max_active_streams)
        self._idle_timeout = config.handshake_timeout
        self._last_received = 0.0
        self._started = 0.0
        self._control = ControlFrames()
        self._pacing_wakeup: float | None = None
        self._close_frame: bytes | None = None
        self._closing_deadline: float | None = None
        self._last_close_sent = -1.0
        self._last_close_frame = b""
        self._frame_handlers: dict[int, Callable[[memoryview, int, float], int]] = {
            FrameType.PADDING: self._handle_padding,
            FrameType.PING: self._handle_ping,
            FrameType.ACK: self._handle_ack,
            FrameType.MAX_DATA: self._handle_max_data,
            FrameType.DATA_BLOCKED: self._handle_data_blocked,
            FrameType.CLOSE: self._handle_close,
            FrameType.DATA: self._handle_data,
            FrameType.DATA_FIN: self._handle_data,
            FrameType.HELLO: self._handle_hello,
        }

    # --- driver contract ---------------------------------------------------------------------

    def connect(self, addr: Address, now: float) -> None:
        """Client only: start the handshake towards ``addr``."""
        if self.role is not Role.CLIENT:
            raise LocalProtocolError("only a client connects")
        self._transition(Trigger.CONNECT)
        self.peer_address = addr
        self._started = self._last_received = now
        self._hs.due = True

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        """Process one UDP payload received from ``addr``."""
        state = self.state
        if state is _CLOSED:
            return
        if len(data) < wire.SHORT_HEADER_SIZE + wire.AEAD_TAG_LENGTH:
            self._counters.reject(Rejection.MALFORMED)
            return
        try:
            if data[0] & wire.FLAG_LONG:
                self._receive_long(data, addr, now)
            else:
                self._receive_short(data, addr, now)
        except RemoteProtocolError as error:
            if self.authenticated and self.state is not _CLOSED:
                self._close(error.close_code, str(error))
            else:
                self._counters.reject(Rejection.MALFORMED)

    def receive_run(
        self, datagrams: Sequence[tuple[bytes | memoryview, Address]], index: int, now: float
    ) -> int:
        """Process ``datagrams[index]`` and the datagrams after it that belong to this
        connection's current run; return the index of the first one not processed.

        Established data flows through here a batch at a time: the current key opens the
        run in one call (`PacketProtection.open_run`) and the packets are accounted for
        together. Whatever that call stops at (another connection's datagram, a replay, a
        forgery, a key update, a new peer address) goes through `receive_datagram`.
        """
        keys = self._receive_keys
        if self.state is _ESTABLISHED and keys is not None:
            acks = self._acks
            stop, largest, nbytes, entries = keys.current.open_run(
                datagrams, index, _FLAG_FIXED | (_FLAG_KEY_PHASE if keys.phase else 0),
                self._cid, acks.received, acks.floor, acks.largest, self.peer_address)
            if stop > index:
                self._apply_run(entries, stop - index, largest, nbytes, now)
                return stop
        data, addr = datagrams[index]
        self.receive_datagram(data, addr, now)
        return index + 1

    def receive_batch(
        self, datagrams: Sequence[tuple[bytes | memoryview, Address]], now: float
    ) -> None:
        """Process a batch of datagrams that are all for this connection (a driver with
        nothing to route, such as a simulator), run by run."""
        index = 0
        while index < len(datagrams):
            index = self.receive_run(datagrams, index, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Datagrams to send now, at most `config.max_batch` of them."""
        out: list[tuple[bytes, Address]] = []
        state = self.state
        if state is _CLOSED or self.peer_address is None:
            return out
        if self._close_frame is not None:
            self._send_close(now, out)
        elif state is _CLOSING:
            pass
        elif self._hs.due:
            self._send_handshake(now, out)
        if self._cc is not None and state is _ESTABLISHED:
            self._send_1rtt(now, out)
        return out

    def get_timer(self) -> float | None:
        """When to call `handle_timer` next (None: only input can wake this connection)."""
        state = self.state
        if state is _CLOSED:
            return None
        if state is _CLOSING:
            return self._closing_deadline
        timer = self._last_received + self._idle_timeout
        if state is not _ESTABLISHED:
            timer = min(timer, self._started + self.config.handshake_timeout)
            retry = self._hs.retry_at
            if retry is not None and retry < timer:
                timer = retry
        for candidate in (
            self._recovery.timer(),
            self._acks.deadline,
            self._pacing_wakeup,
            self._keep_alive_time(),
        ):
            if candidate is not None and candidate < timer:
                timer = candidate
        return timer

    def handle_timer(self, now: float) -> None:
        state = self.state
        if state is _CLOSED:
            return
        if state is _CLOSING:
            if self._closing_deadline is not None and now >= self._closing_deadline:
                self._transition(Trigger.CLOSING_DONE)
            return
        if state is not _ESTABLISHED and now >= self._started + self.config.handshake_timeout:
            self._terminate(ErrorCode.HANDSHAKE_TIMEOUT, "handshake timed out")
            return
        if now >= self._last_received + self._idle_timeout:
            self._terminate(ErrorCode.IDLE_TIMEOUT, "idle timeout")
            return
        retry = self._hs.retry_at
        if retry is not None and now >= retry:
            self._hs.retry_at = None
            self._hs.due = True
        recovery = self._recovery
        if recovery.loss_time is not None and now >= recovery.loss_time:
            lost = recovery.detect_lost(now)
            if lost and self._cc is not None:
                lost_bytes, tagged_lost = lost_sizes(lost)
                self._cc.on_packets_lost(
                    now=now,
                    lost_bytes=lost_bytes,
                    tagged_lost_bytes=tagged_lost,
                    bytes_in_flight=recovery.bytes_in_flight,
                )
            self._on_lost(lost)
        else:
            pto = recovery.timer()
            if pto is not None and now >= pto:
                probes = recovery.on_pto()
                self._on_lost(probes)
                self._control.probes = max(len(probes), 1)
                if recovery.persistent_congestion and self._cc is not None:
                    self._cc.on_persistent_congestion(now=now)
        keep_alive = self._keep_alive_time()
        if keep_alive is not None and now >= keep_alive:
            self._control.ping = True

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    @property
    def events(self) -> deque[Event]:
        """The queue `next_event` pops from: a driver may ``popleft()`` it directly (one C
        call per event instead of a method call), and must only ever pop from it."""
        return self._events

    # --- application calls -------------------------------------------------------------------

    def send_stream_data(
        self,
        stream_id: int,
        data: bytes | memoryview,
        *,
        offset: int | None = None,
        end_stream: bool = False,
    ) -> None:
        """Queue ``data`` for ``stream_id`` at ``offset`` (default: after the last write).

        The core keeps a reference to ``data`` (no copy) until it is acknowledged; a
        zero-length write with ``end_stream`` just ends the stream.
        """
        if self.state in (_CLOSING, _CLOSED):
            raise LocalProtocolError("the connection is closed")
        view = data if isinstance(data, memoryview) else memoryview(data)
        self._send_streams.write(stream_id, view, offset, end_stream)

    def resume_stream(self, stream_id: int, received: Iterable[tuple[int, int]]) -> None:
        """Receiver: byte ranges of ``stream_id`` we already hold (never reported again).

        If the stream's end has arrived and these ranges complete it, `StreamEnded` follows.
        """
        final_size = self._receive_streams.resume(stream_id, list(received))
        if final_size is not None:
            self._events.append(StreamEnded(stream_id, final_size))

    def data_consumed(self, length: int) -> None:
        """Receiver: ``length`` bytes from `StreamDataReceived` events are disposed of."""
        window = self._window
        window.on_consumed(length)
        if window.update_due():
            self._control.max_data = True

    def send_buffer_space(self) -> int:
        """Bytes the application may still queue with `send_stream_data` to keep the link
        busy: about two windows ahead, within `config.send_buffer_limit`."""
        cwnd = self._cc.cwnd if self._cc is not None else 0
        target = min(max(4 * cwnd, 4 << 20), self.config.send_buffer_limit)
        return max(target - self._send_streams.held, 0)

    def close(self, error_code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Close with ``error_code`` (0, or an application code >= 0x100)."""
        if self.state is _START:
            self._terminate(error_code, reason)
        elif self.state not in (_CLOSING, _CLOSED):
            self._close(error_code, reason)

    def set_rate_limits(self, limits: RateLimits) -> None:
        """Change the rate bounds of an established connection (its policy stays)."""
        if self._cc is None:
            raise LocalProtocolError("rate limits change only on an established connection")
        self._cc.limits = dataclasses.replace(limits, policy=self._cc.limits.policy)

    @property
    def local_cid(self) -> bytes:
        """Our connection id: a driver routes datagrams carrying it to this connection."""
        return self._cid

    @property
    def is_closed(self) -> bool:
        """Nothing left to do: the driver may forget this connection."""
        return self.state is _CLOSED

    @property
    def max_datagram_size(self) -> int:
        """Largest datagram sent: ours until the handshake, then the smaller of both ends'."""
        return self._max_datagram

    def statistics(self) -> ConnectionStats:
        return snapshot(self._counters, self._rtt, self._recovery, self._cc)

    def __repr__(self) -> str:
        return f"<Connection {self.role.value} {self.state.value} cid={self._hs.local_cid.hex()}>"

    # --- handshake -----------------------------------------------------------------------------

    def _receive_long(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        if self.state is _CLOSING:
            self._counters.reject(Rejection.MALFORMED)  # no handshake packet is taken now
            return
        opened = self._hs.open(data, self._acks)
        if isinstance(opened, Rejection):
            self._counters.reject(opened)
            return
        header, pn, plaintext = opened
        self._acks.on_packet(pn, False, now)
        self._on_authentic(1, len(data), now)
        frame = self._hs.read(plaintext)
        if isinstance(frame, wire.CloseFrame):
            self._on_peer_close(frame)
            return
        secrets = self._hs.accept(header, frame)
        if self.role is Role.SERVER:
            if secrets is not None:
                self._started = now
                self.peer_address = addr
                self._install_keys(secrets, frame.params)
            elif not self._hs.is_repeat(frame):
                return  # another INITIAL with the same ticket: not ours to answer
            self._transition(Trigger.RECEIVE_INITIAL)
            if self.state is _HANDSHAKE_SENT:
                self._hs.due = True
        elif secrets is not None:
            if self._hs.sends == 1:  # Karn: only an unambiguous exchange is an RTT sample
                self._rtt.update(now - self._started, 0.0)
            self._install_keys(secrets, frame.params)
            self._transition(Trigger.RECEIVE_HANDSHAKE)
            self._control.ping = True  # the server is established by our first 1-RTT packet
            self._on_established()

    def _install_keys(self, secrets: tuple[bytes, bytes], params: wire.TransportParameters) -> None:
        aead = self.config.aead
        self._send_keys = SendKeys(aead, secrets[0])
        self._receive_keys = ReceiveKeys(aead, secrets[1])
        self._max_datagram = min(self.config.max_datagram_size, params.max_datagram_size)
        self._idle_timeout = min(self.config.idle_timeout, params.idle_timeout)
        self._credit.on_max_data(params.initial_max_data)
        self._recovery.peer_max_ack_delay = params.max_ack_delay

    def _on_established(self) -> None:
        config = self.config
        self._hs.finish()
        self._cc = create_congestion_control(
            config.controller_name,
            max_datagram_size=self._max_datagram,
            limits=config.rate_limits(),
            rng=self._rng,
            initial_window=config.initial_window,
            initial_rtt=self._rtt.smoothed,
            initial_rate=None if config.initial_rate is None else config.initial_rate / 8,
        )
        self._pacer.set_rate(self._cc.pacing_rate)
        self._events.append(HandshakeCompleted(idle_timeout=self._idle_timeout))

    def _send_handshake(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        if not self._amplification_allows(wire.MIN_INITIAL_DATAGRAM_SIZE):
            return
        out.append((self._long_packet(self._hs.hello), self._address()))
        self._hs.on_sent(now, self._rtt.pto_interval(0.0))

    def _long_packet(self, frames: bytes) -> bytes:
        pn = self._next_pn
        self._next_pn = pn + 1
        datagram = self._hs.seal(frames, pn)
        self._count_sent(len(datagram))
        return datagram

    # --- 1-RTT receive -----------------------------------------------------------------------

    def _receive_short(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        flags, dcid, truncated = _SHORT.unpack_from(data, 0)
        keys = self._receive_keys
        if flags & _SHORT_FLAGS_CHECKED != wire.FLAG_FIXED or dcid != self._cid or keys is None:
            self._counters.reject(Rejection.MALFORMED)
            return
        acks = self._acks
        largest = acks.largest
        pn = ((largest + 1) & ~0xFFFFFFFF) | truncated  # the common case, without a call
        if not largest - 0x7FFFFFFF < pn <= largest + 0x80000000:
            pn = wire.decode_packet_number(truncated, largest)
        if pn <= largest and acks.is_duplicate(pn):
            self._counters.reject(Rejection.REPLAY)
            return
        phase = 1 if flags & _FLAG_KEY_PHASE else 0
        if phase == keys.phase:  # the common case, without two calls
            plaintext = keys.current.open_short(pn, data)
        else:
            view = memoryview(data)
            plaintext = keys.open(
                pn, phase, view[:_SHORT_HEADER_SIZE], view[_SHORT_HEADER_SIZE:]
            )
        if plaintext is None:
            self._counters.reject(Rejection.AUTH)
            return
        if pn > largest and addr != self.peer_address:
            self._migrate(addr)
        self.authenticated = True
        self._last_received = now
        counters = self._counters
        counters.packets_received += 1
        counters.bytes_received += len(data)
        if not self._validated:
            self._amp_received += len(data)
        state = self.state
        if state is not _ESTABLISHED:
            if state is _HANDSHAKE_SENT:
                self._transition(Trigger.RECEIVE_1RTT)
                self._validated = True
                self._on_established()
            elif state is _CLOSING:
                self._schedule_close_repeat(now)
                acks.on_packet(pn, False, now)
                return
        acks.on_packet(pn, self._process_frames(memoryview(plaintext), now), now)

    def _apply_run(self, entries: list[RunEntry], packets: int, largest: int, nbytes: int,
                   now: float) -> None:
        self._on_authentic(packets, nbytes, now)
        acks = self._acks
        deliver = self._deliver
        eliciting = packets  # DATA packets are; the others count themselves below
        try:
            for pn, stream_id, offset, data in entries:
                if stream_id >= 0:  # DATA frames, checked and joined by open_run
                    deliver(stream_id, offset, len(data), data, False)
                else:
                    eliciting -= 1
                    acks.on_packet(pn, self._process_frames(memoryview(data), now), now)
                    if self.state is _CLOSED:
                        break
        except RemoteProtocolError as error:
            if self.state is not _CLOSED:
                self._close(error.close_code, str(error))
        acks.on_run(largest, eliciting, now)

    def _on_authentic(self, packets: int, size: int, now: float) -> None:
        self.authenticated = True
        self._last_received = now
        counters = self._counters
        counters.packets_received += packets
        counters.bytes_received += size
        if not self._validated:
            self._amp_received += size

    def _migrate(self, addr: Address) -> None:
        """The peer's newest packet came from elsewhere (NAT rebinding): follow it, but
        under the amplification limit until a packet sent there is acknowledged."""
        self.peer_address = addr
        if self.state is _ESTABLISHED:
            self._validated = False
            self._amp_received = self._amp_sent = 0
            self._validation_pn = self._next_pn

    def _process_frames(self, buf: memoryview, now: float) -> bool:
        """Apply every frame of a 1-RTT payload; True if the packet was ack-eliciting."""
        handlers = self._frame_handlers
        ack_eliciting = False
        pos = 0
        end = len(buf)
        if not end:
            raise wire.malformed("empty payload")
        if buf[0] == _DATA_TYPE:  # the common packet: one DATA frame filling it
            pos = self._handle_data(buf, 0, now)
            if pos == end:
                return True
            ack_eliciting = True
        while pos < end:
            frame_type = buf[pos]
            handler = handlers.get(frame_type)
            if handler is None:
                raise wire.malformed(f"frame type {frame_type:#x}")
            if frame_type not in _ACK_ONLY:
                ack_eliciting = True
            pos = handler(buf, pos, now)
            if self.state is _CLOSED:
                break
        return ack_eliciting

    def _handle_padding(self, buf: memoryview, pos: int, now: float) -> int:
        return wire.pull_padding_frame(buf, pos)[1]

    def _handle_ping(self, buf: memoryview, pos: int, now: float) -> int:
        return pos + 1

    def _handle_hello(self, buf: memoryview, pos: int, now: float) -> int:
        raise RemoteProtocolError(
            "HELLO in a 1-RTT packet", close_code=ErrorCode.PROTOCOL_VIOLATION
        )

    def _handle_max_data(self, buf: memoryview, pos: int, now: float) -> int:
        frame, pos = wire.pull_max_data_frame(buf, pos)
        self._credit.on_max_data(frame.maximum)
        return pos

    def _handle_data_blocked(self, buf: memoryview, pos: int, now: float) -> int:
        frame, pos = wire.pull_data_blocked_frame(buf, pos)
        if frame.limit >= self._window.limit and self._window.update_due():
            self._control.max_data = True
        return pos

    def _handle_close(self, buf: memoryview, pos: int, now: float) -> int:
        frame, pos = wire.pull_close_frame(buf, pos)
        self._on_peer_close(frame)
        return pos

    def _handle_data(self, buf: memoryview, pos: int, now: float) -> int:
        try:
            frame_type, stream_id, offset, length = _DATA_HEADER.unpack_from(buf, pos)
        except struct.error:
            raise wire.malformed("DATA frame") from None
        start = pos + _DATA_OVERHEAD
        pos = start + length
        if pos > len(buf) or offset + length > wire.MAX_STREAM_OFFSET:
            raise wire.malformed("DATA frame")
        self._deliver(stream_id, offset, length, buf[start:pos], frame_type == _DATA_FIN_TYPE)
        return pos

    def _deliver(self, stream_id: int, offset: int, length: int, data: bytes | memoryview,
                 fin: bool) -> None:
        """Report the new bytes of a DATA frame, and the stream's end if it is complete."""
        new, final_size = self._receive_streams.on_data(stream_id, offset, length, fin)
        events = self._events
        window = self._window
        for start, stop in new:
            size = stop - start
            window.received += size
            if window.received > window.limit:
                window.on_data(0)  # raises the flow-control error
            self._counters.stream_bytes_received += size
            piece = data if size == length else data[start - offset : stop - offset]
            events.append(StreamDataReceived(stream_id, start, piece))
        if final_size is not None:
            events.append(StreamEnded(stream_id, final_size))

    def _handle_ack(self, buf: memoryview, pos: int, now: float) -> int:
        frame, pos = wire.pull_ack_frame(buf, pos)
        if frame.largest >= self._next_pn:
            raise RemoteProtocolError(
                "ACK of a packet never sent", close_code=ErrorCode.PROTOCOL_VIOLATION
            )
        recovery = self._recovery
        outcome = recovery.on_ack(frame, now)
        events = self._events
        streams = self._send_streams
        for stream_id in streams.on_acked(outcome.acked):
            events.append(StreamAcknowledged(stream_id))
        self._on_lost(outcome.lost)
        cc = self._cc
        if cc is not None:
            cc.on_ack(now=now, sample=outcome.sample)
            self._pacer.set_rate(cc.pacing_rate)
        if not self._validated and recovery.largest_acked >= self._validation_pn:
            self._validated = True
        return pos

    def _on_lost(self, lost: list[SentPacket]) -> None:
        if not lost:
            return
        counters = self._counters
        retransmit = self._send_streams.retransmit
        confirming = self._recovery.largest_acked < 0
        for packet in lost:
            counters.packets_lost += 1
            counters.bytes_lost += packet.size
            if packet.chunks:
                retransmit.extend(packet.chunks)
            if packet.control:
                self._control.on_lost(packet.control, self._credit, confirming)

    # --- 1-RTT send --------------------------------------------------------------------------

    def _send_1rtt(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        """Fill ``out`` with 1-RTT packets: control frames when due, stream data while the
        window, the pacer and flow control allow. This loop runs once per data packet, so
        the common packet (one slice of a large queued write, nothing else) is built inline:
        no `SendStreams.take` call, one header pack, and the AEAD called directly."""
        keys = self._send_keys
        cc = self._cc
        assert keys is not None and cc is not None
        recovery = self._recovery
        streams = self._send_streams
        retransmit, pending = streams.retransmit, streams.pending
        credit = self._credit
        acks = self._acks
        pacer = self._pacer
        counters = self._counters
        addr = self._address()
        mds = self._max_datagram
        payload_space = mds - _SHORT_HEADER_SIZE - _TAG_LENGTH
        full_room = payload_space - _DATA_OVERHEAD
        max_batch = self.config.max_batch
        key_update_interval = self.config.key_update_interval
        peer_cid = self._hs.peer_cid
        control_frames = self._control
        pack_header = _SHORT.pack
        pack_data = _DATA_HEADER.pack
        on_packet_sent = recovery.on_packet_sent
        tokens = pacer.tokens
        refilled = False  # refill only when the window allows data (as `can_send` did)
        self._pacing_wakeup = None
        while True:
            if len(out) >= max_batch:
                self._pacing_wakeup = now  # more may be due: come back at once
                break
            probing = control_frames.probes > 0
            available = credit.limit - credit.used
            has_data = bool(retransmit) or (bool(pending) and available > 0)
            if not refilled and has_data and not probing and (
                recovery.bytes_in_flight + mds <= cc.cwnd
            ):
                tokens = pacer.refill(now)
                refilled = True
            may_send_data = has_data and (
                probing or (recovery.bytes_in_flight + mds <= cc.cwnd and tokens > -1.0)
            )
            if pending and available <= 0 and credit.blocked_at != credit.limit:
                control_frames.data_blocked = True
            control_due = (
                probing
                or acks.deadline is not None
                or control_frames.ping
                or control_frames.max_data
                or control_frames.data_blocked
            )
            if not may_send_data and not (
                control_due and (probing or acks.ack_due(now) or control_frames.pending())
            ):
                if has_data and recovery.bytes_in_flight + mds <= cc.cwnd:
                    pacer.tokens = tokens
                    self._pacing_wakeup = pacer.next_send_time()
                break
            if not self._validated and not self._amplification_allows(mds):
                break
            if (
                not control_due
                and may_send_data
                and not retransmit
                and available >= full_room
                and len(pending[0][2]) > full_room
                and self._validated
            ):
                # The common case: full packets sliced off the oldest queued write, in a
                # burst while the batch, the window, the pacer and the credit allow (none of
                # them, nor any control frame, can change inside the burst), sealed in one
                # call (the compiled path runs the whole burst without the interpreter).
                stream_id, offset, data, fin = pending[0]
                pn = self._next_pn
                protection, flags = self._protection_for(pn)
                count = _burst_length(
                    len(data) - full_room,  # keep a short tail for `take` (and its fin)
                    full_room,
                    available,
                    tokens,
                    mds,
                    max_batch - len(out),
                    cc.cwnd - mds - recovery.bytes_in_flight,
                    keys.phase_start_pn + key_update_interval - pn,
                )
                datagrams = protection.seal_data_run(
                    flags, peer_cid, pn, stream_id, offset, data, full_room, count
                )
                self._next_pn = pn + count
                out.extend(zip(datagrams, repeat(addr)))
                taken = count * full_room
                recovery.on_burst_sent(
                    pn, now, mds,
                    [(stream_id, offset + start, data[start : start + full_room], False)
                     for start in range(0, taken, full_room)],
                    cc.send_tag)
                size = count * mds
                counters.packets_sent += count
                counters.bytes_sent += size
                tokens -= size
                available -= taken
                pending[0] = (stream_id, offset + taken, data[taken:], fin)
                credit.used += taken
                counters.stream_bytes_sent += taken
                continue
            chunks: list[StreamChunk] | None = None
            control = 0
            payload: bytes
            if control_due:
                parts, control = control_frames.build(
                    now, acks, self._window, credit, probing and not has_data
                )
                space = payload_space - sum(map(len, parts))
            else:
                parts, space = [], payload_space
            if may_send_data:
                chunks, new_bytes = streams.take(space, available)
                sent_bytes = 0
                for stream_id, offset, data, fin in chunks:
                    length = len(data)
                    sent_bytes += length
                    parts.append(
                        pack_data(_DATA_FIN_TYPE if fin else _DATA_TYPE, stream_id, offset,
                                  length)
                    )
                    parts.append(data)
                if new_bytes:
                    credit.used += new_bytes
                    counters.stream_bytes_sent += new_bytes
                if sent_bytes > new_bytes:
                    counters.packets_retransmitted += 1
                    counters.bytes_retransmitted += sent_bytes - new_bytes
            if not parts:
                break
            payload = b"".join(parts)
            pn = self._next_pn
            self._next_pn = pn + 1
            protection, flags = self._protection_for(pn)
            datagram = protection.seal_packet(
                pn, pack_header(flags, peer_cid, pn & 0xFFFFFFFF), payload
            )
            size = len(datagram)
            counters.packets_sent += 1
            counters.bytes_sent += size
            if not self._validated:
                self._amp_sent += size
            out.append((datagram, addr))
            if chunks or control:
                on_packet_sent(SentPacket(pn, now, size, chunks or [], control, cc.send_tag))
                tokens -= size
                if probing:
                    control_frames.probes -= 1
        pacer.tokens = tokens
        if not streams.has_data() and recovery.bytes_in_flight < cc.cwnd:
            recovery.app_limited_until = max(recovery.delivered + recovery.bytes_in_flight, 1)

    def _protection_for(self, pn: int) -> tuple[PacketProtection, int]:
        """The keys and header flags for packet ``pn``: the next key phase once it is due
        and the peer acknowledged a packet of the current one (section 6.4)."""
        keys = self._send_keys
        assert keys is not None
        if pn - keys.phase_start_pn >= self.config.key_update_interval and (
            self._recovery.largest_acked >= keys.phase_start_pn
        ):
            keys.update(pn)
            self._counters.key_updates += 1
        return keys.protection, _FLAG_FIXED | (_FLAG_KEY_PHASE if keys.phase else 0)

    def _keep_alive_time(self) -> float | None:
        interval = self.config.keep_alive_interval
        if interval is None or self.state is not _ESTABLISHED:
            return None
        return max(self._recovery.last_ack_eliciting_time, self._last_received) + interval

    def _amplification_allows(self, size: int) -> bool:
        return self._validated or self._amp_sent + size <= 3 * self._amp_received

    def _count_sent(self, size: int) -> None:
        counters = self._counters
        counters.packets_sent += 1
        counters.bytes_sent += size
        if not self._validated:
            self._amp_sent += size

    def _address(self) -> Address:
        addr = self.peer_address
        assert addr is not None
        return addr

    # --- closing -----------------------------------------------------------------------------

    def _transition(self, trigger: Trigger) -> None:
        self.state = next_state(self.role, self.state, trigger)

    def _close(self, error_code: int, reason: str) -> None:
        self._transition(Trigger.CLOSE)
        self._close_frame = wire.encode_close_frame(error_code, reason)
        self._events.append(ConnectionTerminated(error_code, reason, by_peer=False))

    def _terminate(self, error_code: int, reason: str) -> None:
        """Silent end (timeouts): nobody is listening, or nothing could be said."""
        self._transition(Trigger.TIMEOUT)
        self._events.append(ConnectionTerminated(error_code, reason, by_peer=False))

    def _on_peer_close(self, frame: wire.CloseFrame) -> None:
        self._transition(Trigger.PEER_CLOSED)
        self._events.append(ConnectionTerminated(frame.error_code, frame.reason, by_peer=True))

    def _schedule_close_repeat(self, now: float) -> None:
        if now - self._last_close_sent >= self._rtt.smoothed and self._last_close_frame:
            self._close_frame = self._last_close_frame

    def _send_close(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        frame = self._close_frame
        assert frame is not None
        self._close_frame = None
        self._last_close_frame = frame
        self._last_close_sent = now
        if self._closing_deadline is None:
            self._closing_deadline = now + CLOSING_PTOS * self._rtt.pto_interval(0.0)
        keys = self._send_keys
        if keys is not None:
            pn = self._next_pn
            self._next_pn = pn + 1
            header = wire.encode_short_header(keys.phase, self._hs.peer_cid, pn)
            datagram = keys.protection.seal_packet(pn, header, frame)
            self._count_sent(len(datagram))
        elif self._hs.can_send:
            datagram = self._long_packet(frame)
        else:
            return
        out.append((datagram, self._address()))
