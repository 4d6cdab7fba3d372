"""A UDP relay between two servers that records what the sender sends (a tap on a real
transfer) and can replay it to the receiver while the session runs.

Server A's destination names the relay's front port as B's UDP port; the relay forwards
A's datagrams to B from its back socket and B's answers to A, so B sees one peer address.
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections import deque
from dataclasses import dataclass, field

from tests.hostile.procfs import wait_for_room

Address = tuple[str, int]
RECENT = 256
"""Genuine datagrams kept for a flood to mutate (the live session's connection id)."""


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


@dataclass
class Relay:
    target: Address
    """B's receive port."""
    replay_back: int = 0
    """While recording, also send the receiver the short-header datagram this many places
    back, and the one just forwarded, again (0: no replays)."""
    front: socket.socket = field(default_factory=_udp)
    back: socket.socket = field(default_factory=_udp)
    captured: list[bytes] = field(default_factory=list)
    """Every datagram from A to B while recording."""
    recent: deque[bytes] = field(default_factory=lambda: deque(maxlen=RECENT))
    forwarded: int = 0
    """A-to-B datagrams forwarded, recording or not."""
    replayed: int = 0
    answers: int = 0
    """Datagrams from B, forwarded or not."""
    recording: bool = False
    _peer: Address | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Condition = field(default_factory=threading.Condition)

    @property
    def port(self) -> int:
        return int(self.front.getsockname()[1])

    def start(self) -> Relay:
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.front.close()
        self.back.close()

    def replay(self, datagrams: list[bytes]) -> None:
        """Send `datagrams` to B again from the address B knows the session's sender by."""
        for data in datagrams:
            wait_for_room(self.target[1])
            self.back.sendto(data, self.target)
            self.replayed += 1

    def wait_forwarded(self, count: int, timeout: float) -> None:
        """Block until `count` datagrams from A went through (a session is running)."""
        with self._lock:
            if not self._lock.wait_for(lambda: self.forwarded >= count, timeout):
                raise TimeoutError(f"only {self.forwarded} datagrams from the sender")

    def genuine(self) -> list[bytes]:
        """The latest datagrams from A (thread-safe copy)."""
        with self._lock:
            return list(self.recent)

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.front, selectors.EVENT_READ)
            selector.register(self.back, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(0.05):
                    if key.fileobj is self.front:
                        self._from_sender()
                    else:
                        self._from_receiver()

    def _from_sender(self) -> None:
        while True:
            try:
                data, self._peer = self.front.recvfrom(65535)
            except BlockingIOError:
                return
            self.back.sendto(data, self.target)
            with self._lock:
                self.forwarded += 1
                self.recent.append(data)
                self._lock.notify_all()
            if not self.recording:
                continue
            self.captured.append(data)
            if self.replay_back and not data[0] & 0x80:
                short = [d for d in self.captured[-self.replay_back - 1:] if not d[0] & 0x80]
                for again in {short[0], short[-1]}:
                    self.back.sendto(again, self.target)
                    self.replayed += 1

    def _from_receiver(self) -> None:
        while True:
            try:
                data = self.back.recv(65535)
            except BlockingIOError:
                return
            self.answers += 1
            if self._peer is not None:
                self.front.sendto(data, self._peer)
