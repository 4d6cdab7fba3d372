"""What a benchmark run measures: link profiles and workloads (issue #7).

Kept free of I/O so the report code and the tests can use it without root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.linkemu.config import parse_prob, parse_rate, parse_time

MTU = 1500
UDP_PAYLOAD = MTU - 20 - 8
"""The largest payload one 1500-byte IPv4 packet can carry (UDP: 1472 bytes). Every tool here
sends IP packets of at most this size, so R * (1 - p) * 1472/1500 bounds every goodput."""

LOOPBACK_ASSUMED_BPS = 500e6
"""Rate used only to size time-outs on loopback, where no link rate exists."""


@dataclass(frozen=True)
class Profile:
    """One emulated link (or loopback, `rate` None): the same link for every tool in a run."""

    key: str
    rate: str | None
    rtt: str = "0ms"
    loss: str = "0"
    title: str = ""

    @property
    def loopback(self) -> bool:
        return self.rate is None

    @property
    def rate_bps(self) -> float | None:
        return None if self.rate is None else parse_rate(self.rate)

    @property
    def rtt_s(self) -> float:
        return parse_time(self.rtt)

    @property
    def loss_p(self) -> float:
        return parse_prob(self.loss)

    @property
    def capacity_bps(self) -> float | None:
        """Payload capacity of the link times (1 - loss): the 100 % of the 'share' column."""
        r = self.rate_bps
        if r is None:
            return None
        return r * (1.0 - self.loss_p) * UDP_PAYLOAD / MTU

    def describe(self) -> str:
        if self.loopback:
            return "loopback, no emulator"
        r = self.rate_bps or 0.0
        rate = f"{r / 1e9:g} Gbit/s" if r >= 1e9 else f"{r / 1e6:g} Mbit/s"
        return f"{rate}, RTT {self.rtt_s * 1e3:g} ms, loss {self.loss_p * 100:g} %"

    def label(self) -> str:
        """Short label for charts: '(b) 200M/100ms/1%'."""
        if self.loopback:
            return f"({self.key}) loopback"
        r = self.rate_bps or 0.0
        rate = f"{r / 1e9:g}G" if r >= 1e9 else f"{r / 1e6:g}M"
        return f"({self.key}) {rate}/{self.rtt_s * 1e3:g}ms/{self.loss_p * 100:g}%"

    def ideal_seconds(self, payload_bytes: int) -> float:
        """Time at the capacity (or an assumed loopback rate); sizes the time-outs."""
        cap = self.capacity_bps or LOOPBACK_ASSUMED_BPS
        return payload_bytes * 8.0 / cap + 4 * self.rtt_s


PROFILES: dict[str, Profile] = {
    "a": Profile("a", "200mbit", "100ms", "0", "200 Mbit/s, 100 ms, no loss"),
    "b": Profile("b", "200mbit", "100ms", "1%", "200 Mbit/s, 100 ms, 1 % loss"),
    "c": Profile("c", "200mbit", "200ms", "3%", "200 Mbit/s, 200 ms, 3 % loss"),
    "d": Profile("d", "1gbit", "20ms", "0.1%", "1 Gbit/s, 20 ms, 0.1 % loss"),
    "e": Profile("e", "50mbit", "300ms", "5%", "50 Mbit/s, 300 ms, 5 % loss (satellite-like)"),
    "lo": Profile("lo", None, title="loopback (no emulator)"),
    "smoke": Profile("smoke", "50mbit", "10ms", "0", "CI smoke: 50 Mbit/s, 10 ms, no loss"),
}
FULL_RUN = ("a", "b", "c", "d", "e", "lo")


def parse_profile(text: str) -> Profile:
    """A profile key ('b') or a custom one: 'name=200mbit,100ms,1%'."""
    if text in PROFILES:
        return PROFILES[text]
    m = re.fullmatch(r"([A-Za-z0-9_]{1,12})=([^,]+),([^,]+),([^,]+)", text)
    if not m:
        raise ValueError(
            f"profile {text!r}: use one of {', '.join(PROFILES)} or 'name=RATE,RTT,LOSS' "
            "(e.g. 'x=100mbit,50ms,0.5%')"
        )
    p = Profile(m[1], m[2], m[3], m[4])
    p.rate_bps, p.rtt_s, p.loss_p  # noqa: B018 - validate the units now
    return Profile(m[1], m[2], m[3], m[4], p.describe())


@dataclass(frozen=True)
class Workload:
    """`count` files of `size` bytes; one file is sent as a file, more as a directory tree."""

    key: str
    count: int
    size: int

    @property
    def total_bytes(self) -> int:
        return self.count * self.size

    def describe(self) -> str:
        if self.count == 1:
            return f"one {fmt_bytes(self.size)} file"
        return f"{self.count:,} files of {fmt_bytes(self.size)} ({fmt_bytes(self.total_bytes)})"


def parse_size(text: str) -> int:
    """Bytes from '1G', '64M', '16K', '512' (binary units: 1G = 1 GiB)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"size {text!r}: use a number with K, M, G or T (binary units)")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m[2].upper()]
    value = int(float(m[1]) * scale)
    if value <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return value


def fmt_bytes(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            v = n / scale
            return f"{v:g} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n:g} B"
