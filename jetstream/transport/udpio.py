"""Batched UDP I/O: many datagrams per system call with UDP GSO and GRO.

In Python the cost of a fast data channel is per packet, and a syscall per datagram is
the largest share (docs: research/performance.md 3.3). Linux can take a run of equal-sized
datagrams in one `sendmsg` (UDP_SEGMENT, "GSO") and hand back several coalesced datagrams
from one `recvmsg` (UDP_GRO). Where the kernel or the route refuses, we fall back to one
call per datagram, once, and remember it. With the compiled data path (`native.FAST`) the
same groups go out through `sendmmsg` (many GSO sends per call) and come in through
`recvmmsg` (many reads per call), without the interpreter between datagrams.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections.abc import Iterator, Sequence

from jetstream.datachannel.native import FAST

log = logging.getLogger(__name__)

SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = 103
UDP_GRO = 104
#: Kernel limits for one GSO send: at most 64 segments and a 64 KiB UDP payload.
MAX_GSO_SEGMENTS = 64
MAX_GSO_BYTES = 65000
RECV_BUFFER_BYTES = 65535
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)

Address = tuple[str, int]


class BatchSocket:
    """A non-blocking UDP socket that sends and receives datagrams in batches."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.gso = _probe_gso(sock)
        self.gro = _enable_gro(sock)
        self.send_calls = 0
        self._recv_calls = 0
        self._receiver = None if FAST is None else FAST.BatchReceiver(sock.fileno())

    @property
    def recv_calls(self) -> int:
        """System calls that returned datagrams."""
        receiver = self._receiver
        return self._recv_calls + (0 if receiver is None else receiver.calls)

    def send(self, datagrams: list[bytes], addr: Address) -> int:
        """Send `datagrams` to `addr` in order; return how many went out before EAGAIN.

        The caller keeps the rest and retries when the socket is writable again.
        """
        if FAST is not None and type(addr[0]) is str:
            return self._send_native(datagrams, addr)
        return self._send_python(datagrams, addr)

    def _send_python(self, datagrams: Sequence[bytes], addr: Address) -> int:
        sent = 0
        for group in _gso_groups(datagrams) if self.gso else ([d] for d in datagrams):
            try:
                if len(group) == 1:
                    self.sock.sendto(group[0], addr)
                else:
                    self._send_gso(group, addr)
            except BlockingIOError:
                return sent
            except OSError as exc:
                if len(group) > 1 and exc.errno in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP):
                    log.info("UDP GSO refused on this path (%s); sending one by one", exc)
                    self.gso = False
                    return sent + self._send_python(datagrams[sent:], addr)
                raise
            self.send_calls += 1
            sent += len(group)
        return sent

    def _send_native(self, datagrams: list[bytes], addr: Address) -> int:
        try:
            sent, calls = FAST.send_batch(self.sock.fileno(), datagrams, addr, self.gso)  # type: ignore[union-attr]
        except ValueError:  # a host name, not an address: the kernel path resolves it
            return self._send_python(datagrams, addr)
        except OSError as exc:
            if self.gso and exc.errno in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP):
                log.info("UDP GSO refused on this path (%s); sending one by one", exc)
                self.gso = False
                return self._send_native(datagrams, addr)
            raise
        self.send_calls += calls
        return int(sent)

    def _send_gso(self, group: Sequence[bytes], addr: Address) -> None:
        size = struct.pack("=H", len(group[0]))
        self.sock.sendmsg([b"".join(group)], [(SOL_UDP, UDP_SEGMENT, size)], 0, addr)

    def receive(self, limit: int = 256) -> list[tuple[bytes | memoryview, Address]]:
        """Drain up to about `limit` datagrams that are waiting; [] when none are.

        Each read is a fresh immutable bytes object; the datagrams of a coalesced (GRO)
        read are read-only memoryview slices of it, so no datagram is copied again.
        """
        if self._receiver is not None:
            return self._receiver.receive(limit)  # type: ignore[no-any-return]
        received: list[tuple[bytes | memoryview, Address]] = []
        sock = self.sock
        append = received.append
        while len(received) < limit:
            try:
                if self.gro:
                    data, ancdata, _flags, addr = sock.recvmsg(
                        RECV_BUFFER_BYTES, _GRO_CMSG_SPACE
                    )
                    nbytes = len(data)
                    segment = _gro_segment_size(ancdata) if ancdata else 0
                else:
                    data, addr = sock.recvfrom(RECV_BUFFER_BYTES)
                    nbytes = segment = len(data)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                continue  # an ICMP error for an earlier send; not a reason to stop reading
            self._recv_calls += 1
            if not segment or segment >= nbytes:
                append((data, addr))
                continue
            view = memoryview(data)
            for start in range(0, nbytes, segment):
                append((view[start:start + segment], addr))
        return received

    def close(self) -> None:
        self.sock.close()


def _gso_groups(datagrams: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    """Split into runs the kernel accepts: equal sizes, only the last of a run shorter."""
    start = 0
    count = len(datagrams)
    while start < count:
        size = len(datagrams[start])
        end = start + 1
        total = size
        while (
            end < count
            and end - start < MAX_GSO_SEGMENTS
            and total + len(datagrams[end]) <= MAX_GSO_BYTES
            and len(datagrams[end]) <= size
        ):
            total += len(datagrams[end])
            end += 1
            if len(datagrams[end - 1]) < size:
                break  # a shorter datagram can only end a run
        yield datagrams[start:end]
        start = end


def _probe_gso(sock: socket.socket) -> bool:
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


def _enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def _gro_segment_size(ancdata: list[tuple[int, int, bytes]]) -> int:
    for level, kind, data in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
            return int(struct.unpack("=i", data[:4])[0])
    return 0
