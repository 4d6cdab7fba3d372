"""A deterministic network simulator that drives real data-channel cores in virtual time.

Tests and benchmarks share it. Virtual time jumps from one event (a datagram arrival or an
endpoint timer) to the next, so a 100 ms-RTT transfer of a gigabyte takes only the CPU the
two cores need. Everything random comes from one seeded `random.Random`, so a run is
reproducible from its seed.

A `Link` is one direction of a bottleneck, in the order a packet meets it: a drop-tail queue
(bytes), serialisation at ``rate_bps`` (counting ``overhead`` bytes of IP/UDP headers per
datagram), random loss (Bernoulli or Gilbert-Elliott, after the bottleneck, so a lost packet
still used capacity), corruption, reordering (extra delay), duplication, and propagation
delay. Payloads are never copied except to corrupt one: senders hand the cores memoryview
slices of shared buffers (`PatternContent`) and receivers compare slices.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from jetstream.datachannel import (
    Connection,
    ConnectionTerminated,
    DataChannelConfig,
    Event,
    Role,
    SessionTicket,
    StreamAcknowledged,
    StreamDataReceived,
    StreamEnded,
)
from jetstream.datachannel.wire import Address

IPV4_UDP_OVERHEAD = 28
STALL_LIMIT = 100_000
"""Events in a row at one instant that mean an endpoint's timer never gets handled."""
QUEUE_DELAY_BIN = 0.0001
"""Queueing delays are kept as a histogram of 0.1 ms bins (exact enough for a p95)."""


@dataclass(frozen=True)
class GilbertElliott:
    """Bursty loss: a two-state Markov chain stepped once per packet."""

    p_good_to_bad: float
    p_bad_to_good: float
    loss_good: float = 0.0
    loss_bad: float = 1.0



@dataclass(frozen=True)
class LinkConfig:
    rate_bps: float | None = None
    """Bottleneck rate in bits per second (None: no bottleneck, no queue)."""
    delay: float = 0.0
    """One-way propagation delay in seconds."""
    queue_bytes: int | None = None
    """Drop-tail queue capacity (None: unbounded)."""
    loss: float | GilbertElliott = 0.0
    """Bernoulli loss probability, or a bursty model."""
    reorder: float = 0.0
    """Probability that a packet is held back by up to ``reorder_delay``."""
    reorder_delay: float = 0.005
    duplicate: float = 0.0
    corrupt: float = 0.0
    """Probability that one random bit of the datagram is flipped."""
    overhead: int = IPV4_UDP_OVERHEAD
    drop_if: Callable[[int, bytes], bool] | None = None
    """Scripted loss: called with the link's 1-based packet count and the datagram."""


class Link:
    """One direction of the path; counts what it did to the traffic."""

    def __init__(self, network: Network, config: LinkConfig) -> None:
        self._network = network
        self.config = config
        self._rng = network.rng
        self._byte_rate = config.rate_bps / 8 if config.rate_bps else None
        self._free_at = 0.0
        self._bad_state = False
        self.packets = 0
        self.dropped_queue = 0
        self.dropped_loss = 0
        self.corrupted = 0
        self.duplicated = 0
        self.reordered = 0
        self.queue_delay_bins = [0] * 20000  # up to 2 s

    def send(self, now: float, datagram: bytes, src: Address, dst: Address) -> None:
        config = self.config
        rng = self._rng
        self.packets += 1
        depart = now
        byte_rate = self._byte_rate
        if byte_rate is not None:
            start = self._free_at if self._free_at > now else now
            size = len(datagram) + config.overhead
            queue_limit = config.queue_bytes
            if queue_limit is not None and (start - now) * byte_rate + size > queue_limit:
                self.dropped_queue += 1
                return
            depart = self._free_at = start + size / byte_rate
            bins = self.queue_delay_bins
            bins[min(int((start - now) / QUEUE_DELAY_BIN), len(bins) - 1)] += 1
        if self._lost(rng) or (
            config.drop_if is not None and config.drop_if(self.packets, datagram)
        ):
            self.dropped_loss += 1
            return
        arrive = depart + config.delay
        if config.corrupt and rng.random() < config.corrupt:
            self.corrupted += 1
            damaged = bytearray(datagram)
            bit = rng.randrange(len(damaged) * 8)
            damaged[bit >> 3] ^= 1 << (bit & 7)
            datagram = bytes(damaged)
        if config.reorder and rng.random() < config.reorder:
            self.reordered += 1
            arrive += rng.random() * config.reorder_delay
        network = self._network
        network.schedule(arrive, dst, datagram, src)
        if config.duplicate and rng.random() < config.duplicate:
            self.duplicated += 1
            network.schedule(arrive + rng.random() * 0.001, dst, datagram, src)

    def _lost(self, rng: random.Random) -> bool:
        loss = self.config.loss
        if isinstance(loss, GilbertElliott):
            if self._bad_state:
                self._bad_state = rng.random() >= loss.p_bad_to_good
            else:
                self._bad_state = rng.random() < loss.p_good_to_bad
            return rng.random() < (loss.loss_bad if self._bad_state else loss.loss_good)
        return bool(loss) and rng.random() < loss

    def queue_delay_percentile(self, fraction: float) -> float:
        """Seconds of queueing that ``fraction`` of the packets did not exceed."""
        bins = self.queue_delay_bins
        target = fraction * sum(bins)
        seen = 0
        for index, count in enumerate(bins):
            seen += count
            if count and seen >= target:
                return (index + 1) * QUEUE_DELAY_BIN
        return 0.0


# --- applications ----------------------------------------------------------------------------


class Content(Protocol):
    """What a sender sends and a receiver expects: streams of known size and content."""

    def sizes(self) -> dict[int, int]: ...

    def view(self, stream_id: int, offset: int, length: int) -> memoryview: ...


class PatternContent:
    """Stream bytes taken from one seeded random buffer at a per-stream shift.

    Any slice up to the buffer size is a zero-copy view, so a gigabyte costs no memory.
    """

    def __init__(self, sizes: dict[int, int], seed: int = 0, period: int = 1 << 20) -> None:
        self._sizes = dict(sizes)
        self._period = period
        pattern = random.Random(seed).randbytes(period)
        self._buffer = memoryview(pattern + pattern)

    def sizes(self) -> dict[int, int]:
        return self._sizes

    def view(self, stream_id: int, offset: int, length: int) -> memoryview:
        if length > self._period:
            raise ValueError("a pattern view is at most one period long")
        start = (offset + stream_id * 7919) % self._period
        return self._buffer[start : start + length]


class BytesContent:
    """Streams given as bytes (small transfers in tests)."""

    def __init__(self, streams: dict[int, bytes]) -> None:
        self._streams = {sid: memoryview(data) for sid, data in streams.items()}

    def sizes(self) -> dict[int, int]:
        return {sid: len(data) for sid, data in self._streams.items()}

    def view(self, stream_id: int, offset: int, length: int) -> memoryview:
        return self._streams[stream_id][offset : offset + length]


class Application(Protocol):
    def on_event(self, conn: Connection, event: Event, now: float) -> None: ...

    def pump(self, conn: Connection, now: float) -> None: ...


class Sender:
    """Writes every stream of ``content`` as fast as the core's send buffer allows."""

    def __init__(self, content: Content, chunk_size: int = 256 << 10) -> None:
        self.content = content
        self._chunk = chunk_size
        self._queue = sorted(content.sizes().items())
        self._stream_index = 0
        self._offset = 0
        self.acknowledged: set[int] = set()
        self.terminated: ConnectionTerminated | None = None

    @property
    def done(self) -> bool:
        return len(self.acknowledged) == len(self._queue)

    def on_event(self, conn: Connection, event: Event, now: float) -> None:
        if isinstance(event, StreamAcknowledged):
            self.acknowledged.add(event.stream_id)
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event

    def pump(self, conn: Connection, now: float) -> None:
        queue = self._queue
        if conn.is_closed:
            return
        space = conn.send_buffer_space()
        while space > 0 and self._stream_index < len(queue):
            stream_id, size = queue[self._stream_index]
            length = min(self._chunk, size - self._offset, space)
            end = self._offset + length == size
            if length or end:
                view = self.content.view(stream_id, self._offset, length)
                conn.send_stream_data(stream_id, view, end_stream=end)
            self._offset += length
            space -= max(length, 1)
            if end:
                self._stream_index += 1
                self._offset = 0


class Receiver:
    """Checks every delivered byte against ``content`` and records goodput over time."""

    def __init__(self, content: Content, keep: bool = False, bucket: float = 0.01) -> None:
        self.content = content
        self._expected = content.sizes()
        self.received: dict[int, int] = {}
        self.completed: dict[int, float] = {}
        """Stream id -> virtual time it ended."""
        self.mismatches = 0
        self.kept: dict[int, bytearray] | None = {} if keep else None
        self.terminated: ConnectionTerminated | None = None
        self.bucket = bucket
        self.timeline: list[int] = []
        """Bytes delivered per ``bucket`` seconds of virtual time."""
        self.total = 0

    @property
    def done(self) -> bool:
        return len(self.completed) == len(self._expected)

    def on_event(self, conn: Connection, event: Event, now: float) -> None:
        if isinstance(event, StreamDataReceived):
            data = event.data
            length = len(data)
            stream_id = event.stream_id
            if data != self.content.view(stream_id, event.offset, length):
                self.mismatches += 1
            self.received[stream_id] = self.received.get(stream_id, 0) + length
            if self.kept is not None:
                buffer = self.kept.setdefault(stream_id, bytearray())
                if len(buffer) < event.offset + length:
                    buffer.extend(bytes(event.offset + length - len(buffer)))
                buffer[event.offset : event.offset + length] = data
            self.total += length
            index = int(now / self.bucket)
            timeline = self.timeline
            if index >= len(timeline):
                timeline.extend([0] * (index + 1 - len(timeline)))
            timeline[index] += length
            conn.data_consumed(length)
        elif isinstance(event, StreamEnded):
            if self.received.get(event.stream_id, 0) != event.final_size:
                self.mismatches += 1
            self.completed[event.stream_id] = now
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event

    def pump(self, conn: Connection, now: float) -> None:
        """A receiver has nothing to write."""

    @property
    def intact(self) -> bool:
        """Every stream complete, every byte exactly once and as sent."""
        return (
            self.done
            and not self.mismatches
            and all(self.received.get(sid, 0) == size for sid, size in self._expected.items())
        )


# --- the network -----------------------------------------------------------------------------


@dataclass
class Endpoint:
    conn: Connection
    address: Address
    app: Application
    link: Link
    """Where this endpoint's datagrams go."""
    timer: float | None = None

    def service(self, now: float) -> None:
        conn = self.conn
        app = self.app
        event = conn.next_event()
        while event is not None:
            app.on_event(conn, event, now)
            event = conn.next_event()
        app.pump(conn, now)
        link = self.link
        for datagram, addr in conn.datagrams_to_send(now):
            link.send(now, datagram, self.address, addr)
        self.timer = conn.get_timer()


class Network:
    """Endpoints joined by links, run in virtual time."""

    def __init__(self, seed: int = 0, batch_window: float = 0.0005) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self._heap: list[tuple[float, int, Endpoint, bytes, Address]] = []
        self._seq = 0
        self._endpoints: dict[Address, Endpoint] = {}
        self.batch_window = batch_window
        """Datagrams arriving within this window are read before the endpoint answers, like
        a driver draining its socket. Other endpoints' events inside the window may then be
        handled slightly out of order; nothing can notice while the window stays below every
        link delay."""

    def link(self, config: LinkConfig) -> Link:
        return Link(self, config)

    def add(self, conn: Connection, address: Address, app: Application, link: Link) -> Endpoint:
        endpoint = Endpoint(conn, address, app, link)
        self._endpoints[address] = endpoint
        return endpoint

    def schedule(self, when: float, dst: Address, datagram: bytes, src: Address) -> None:
        endpoint = self._endpoints.get(dst)
        if endpoint is not None:
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, endpoint, datagram, src))

    def start(self, endpoint: Endpoint) -> None:
        endpoint.service(self.now)

    def run(self, until: Callable[[], bool], max_time: float) -> bool:
        """Advance until ``until()`` holds (True) or nothing is left before ``max_time``."""
        heap = self._heap
        endpoints = list(self._endpoints.values())
        for endpoint in endpoints:
            endpoint.timer = endpoint.conn.get_timer()
        window = self.batch_window
        stalled = 0
        while not until():
            timed: Endpoint | None = None
            next_timer = math.inf
            for endpoint in endpoints:
                timer = endpoint.timer
                if timer is not None and timer < next_timer:
                    next_timer, timed = timer, endpoint
            next_arrival = heap[0][0] if heap else math.inf
            next_event = min(next_timer, next_arrival)
            if next_event > max_time:
                return False
            stalled = stalled + 1 if next_event <= self.now else 0
            if stalled > STALL_LIMIT:
                raise RuntimeError(f"virtual time stopped advancing at {self.now}")
            if next_arrival <= next_timer:
                when, _, endpoint, datagram, src = heapq.heappop(heap)
                self.now = when
                receive = endpoint.conn.receive_batch
                receive([(datagram, src)], when)
                own_timer = endpoint.timer
                limit = when + window
                if own_timer is not None and own_timer < limit:
                    limit = own_timer
                while heap and heap[0][2] is endpoint and heap[0][0] <= limit:
                    when, _, _, datagram, src = heapq.heappop(heap)
                    self.now = when
                    receive([(datagram, src)], when)
                endpoint.service(self.now)
            else:
                assert timed is not None
                self.now = next_timer
                timed.conn.handle_timer(next_timer)
                timed.service(next_timer)
        return True


# --- convenience -----------------------------------------------------------------------------


@dataclass
class Flow:
    """A client (the sender) and a server (the receiver) joined over two links."""

    client: Endpoint
    server: Endpoint
    sender: Sender
    receiver: Receiver

    @property
    def done(self) -> bool:
        return self.receiver.done and self.sender.done


def add_flow(
    network: Network,
    content: Content,
    *,
    forward: Link,
    backward: Link,
    name: str = "flow",
    client_config: DataChannelConfig | None = None,
    server_config: DataChannelConfig | None = None,
    keep: bool = False,
) -> Flow:
    """Connect a sending client to a receiving server and start the handshake."""
    rng = network.rng
    ticket = SessionTicket.generate(rng.randbytes)
    client = Connection(
        client_config or DataChannelConfig(),
        role=Role.CLIENT,
        ticket=ticket,
        rng=random.Random(rng.random()),
    )
    server = Connection(
        server_config or DataChannelConfig(),
        role=Role.SERVER,
        ticket=ticket,
        rng=random.Random(rng.random()),
    )
    sender = Sender(content)
    receiver = Receiver(content, keep=keep)
    client_address: Address = (name, "client")
    server_address: Address = (name, "server")
    client_end = network.add(client, client_address, sender, forward)
    server_end = network.add(server, server_address, receiver, backward)
    client.connect(server_address, network.now)
    client_end.service(network.now)
    return Flow(client_end, server_end, sender, receiver)


def run_flows(network: Network, flows: Iterable[Flow], max_time: float) -> bool:
    """Run until every flow completed (True) or ``max_time`` passed (False)."""
    pending = list(flows)
    return network.run(lambda: all(flow.done for flow in pending), max_time)
