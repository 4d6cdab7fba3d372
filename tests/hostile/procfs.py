"""What the kernel says about a server process and its UDP port (/proc), sampled in the
background while it is under attack."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User and system time the process used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class UdpQueue(NamedTuple):
    waiting: int
    """Bytes queued on the socket, not yet read by the process."""
    drops: int
    """Datagrams the kernel dropped for it since it opened (receive buffer full)."""


def udp_queue(port: int) -> UdpQueue:
    """The receive queue of the UDP socket bound to `port` (any address, v4 or v6)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[1].endswith(wanted):
                    return UdpQueue(int(fields[4].split(":")[1], 16), int(fields[-1]))
    raise RuntimeError(f"no UDP socket on port {port}")


MAX_WAITING = 8 << 20
"""Bytes queued at a flooded socket before a sender waits for the process to catch up."""


def wait_for_room(port: int) -> None:
    """Return once the socket on `port` holds at most `MAX_WAITING` bytes: a sender that
    waits here makes the kernel drop nothing, so the process sees every datagram."""
    while udp_queue(port).waiting > MAX_WAITING:
        time.sleep(0.002)


class Sample(NamedTuple):
    at: float
    rss: int
    cpu: float


@dataclass
class Sampler:
    """RSS and CPU time of `pid` every `interval` seconds on a thread of its own."""

    pid: int
    interval: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> Sample:
        taken = Sample(time.monotonic(), rss_bytes(self.pid), cpu_seconds(self.pid))
        self.samples.append(taken)
        return taken

    def __enter__(self) -> Sampler:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.sample()

        self._thread = threading.Thread(target=loop, name="sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.at <= end]
