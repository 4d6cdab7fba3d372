"""Link parameters: unit parsing and the per-direction configuration.

Kept separate from the namespace plumbing so it can be unit-tested and reused
(e.g. by benchmark scripts that print the emulated link next to their results)
without root.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

LossModel = Literal["bernoulli", "gilbert"]
Impair = Literal["ab", "ba", "both"]

_SI = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_NUM = r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)"


def parse_rate(value: str | float) -> float:
    """Bits per second from '200mbit', '1gbit', '1.5g', '800k' or a number; 0 = unlimited.

    Byte units ('mbps', 'MB/s') are refused: tc reads 'mbps' as megabytes, people
    read it as megabits, and a factor of 8 is the worst kind of silent error.
    """
    if isinstance(value, int | float):
        v = float(value)
    else:
        s = value.strip()
        if s.lower() in ("0", "unlimited", "inf", "none"):
            return 0.0
        m = re.fullmatch(_NUM + r"\s*([kmgtKMGT]?)(bits?|bit/s)?", s)
        if not m:
            raise ValueError(
                f"rate {value!r}: use bits per second like '200mbit', '1gbit' or '500k' "
                "(byte units such as 'mbps' are ambiguous and refused)"
            )
        v = float(m.group(1)) * _SI[m.group(2).lower()]
    if v < 0 or not math.isfinite(v):
        raise ValueError(f"rate {value!r} must be a finite number >= 0")
    return v


def parse_time(value: str | float) -> float:
    """Seconds from '100ms', '50us', '1.5s', '200000ns'; a bare number is seconds only if 0."""
    if isinstance(value, int | float):
        v = float(value)
    else:
        s = value.strip()
        if s == "0":
            return 0.0
        m = re.fullmatch(_NUM + r"\s*(s|ms|us|µs|ns)", s)
        if not m:
            raise ValueError(f"time {value!r}: use a unit, like '100ms', '50us' or '1s'")
        v = (
            float(m.group(1))
            * {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}[m.group(2)]
        )
    if v < 0 or not math.isfinite(v):
        raise ValueError(f"time {value!r} must be a finite number >= 0")
    return v


def parse_prob(value: str | float) -> float:
    """A probability: strings need a '%' ('1%', '0.5%'); Python floats are fractions (0.01).

    Requiring the '%' in strings avoids netem's trap where 'loss 1' means 1 %.
    """
    if isinstance(value, int | float):
        v = float(value)
    else:
        s = value.strip()
        if s == "0":
            return 0.0
        m = re.fullmatch(_NUM + r"\s*%", s)
        if not m:
            raise ValueError(f"probability {value!r}: write a percentage like '1%' or '0.1%'")
        v = float(m.group(1)) / 100.0
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"probability {value!r} must be between 0 and 100 %")
    return v


def parse_queue(value: str | float, rate_bps: float, rtt_s: float, mtu: int) -> float:
    """Queue limit in bytes from '200ms' (of the rate), '1bdp', '100pkt', '256kb', '2MiB', bytes."""
    if isinstance(value, int | float):
        return float(value)
    s = value.strip()
    m = re.fullmatch(_NUM + r"\s*([A-Za-zµ]*)", s)
    if not m:
        raise ValueError(f"queue {value!r}: use '200ms', '1bdp', '100pkt', '256kb' or bytes")
    n, unit = float(m.group(1)), m.group(2)
    if unit in ("s", "ms", "us", "µs"):
        if rate_bps <= 0:
            raise ValueError(f"queue {value!r} in time needs a rate")
        return rate_bps * parse_time(s) / 8.0
    if unit.lower() == "bdp":
        if rate_bps <= 0:
            raise ValueError(f"queue {value!r} in BDP needs a rate")
        return n * rate_bps * rtt_s / 8.0
    if unit.lower() in ("p", "pkt", "pkts", "packets"):
        return n * mtu
    scale = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "kib": 1024, "mib": 1 << 20}.get(unit.lower())
    if scale is None:
        raise ValueError(f"queue {value!r}: unknown unit {unit!r}")
    return n * scale


def fmt_rate(bps: float) -> str:
    """Human-readable bit rate, as tc prints it."""
    if bps <= 0:
        return "unlimited"
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps:g}bit"


@dataclass(frozen=True)
class Direction:
    """One direction of the link: bottleneck, then path impairments, then delay.

    Loss is applied after the bottleneck (a lost packet has used link capacity),
    which is what the goodput bound R * (1 - p) in performance.md section 3.1 assumes.
    """

    rate_bps: float = 0.0  # 0: unlimited (no queue either)
    delay_s: float = 0.0  # constant one-way propagation delay
    queue_bytes: float = 1e18  # drop-tail limit on the bottleneck backlog
    loss: float = 0.0  # average loss probability
    loss_model: LossModel = "bernoulli"
    burst: float = 4.0  # gilbert: mean length of a bad-state run, in packets
    loss_bad: float = 1.0  # gilbert: loss probability in the bad state
    reorder: float = 0.0  # probability a packet is held back by reorder_delay_s
    reorder_delay_s: float = 0.001
    duplicate: float = 0.0
    corrupt: float = 0.0

    def gilbert_params(self) -> tuple[float, float]:
        """(p, r): P(good->bad), P(bad->good) so that the mean loss equals `loss`.

        Stationary P(bad) = p / (p + r) and loss = P(bad) * loss_bad (no loss when good).
        """
        if self.burst < 1:
            raise ValueError("gilbert burst length must be >= 1 packet")
        r = 1.0 / self.burst
        pi_bad = self.loss / self.loss_bad if self.loss_bad > 0 else 0.0
        if pi_bad >= 1.0:
            raise ValueError("gilbert: loss must be below loss_bad")
        return pi_bad * r / (1.0 - pi_bad), r

    def forwarder_args(self, key: str) -> list[str]:
        """Command-line options of linkemu-fwd for this direction ('ab' or 'ba')."""
        a = [
            f"--{key}-rate={self.rate_bps:.0f}",
            f"--{key}-delay-ns={round(self.delay_s * 1e9)}",
            f"--{key}-queue-bytes={self.queue_bytes:.0f}",
        ]
        if self.loss > 0 and self.loss_model == "gilbert":
            p, r = self.gilbert_params()
            a += [f"--{key}-ge-p={p:.12g}", f"--{key}-ge-r={r:.12g}"]
            a += [f"--{key}-ge-loss-bad={self.loss_bad:.12g}", f"--{key}-ge-loss-good=0"]
        elif self.loss > 0:
            a.append(f"--{key}-loss={self.loss:.12g}")
        if self.reorder > 0:
            a += [
                f"--{key}-reorder={self.reorder:.12g}",
                f"--{key}-reorder-delay-ns={round(self.reorder_delay_s * 1e9)}",
            ]
        if self.duplicate > 0:
            a.append(f"--{key}-duplicate={self.duplicate:.12g}")
        if self.corrupt > 0:
            a.append(f"--{key}-corrupt={self.corrupt:.12g}")
        return a

    def describe(self) -> str:
        """One line for logs and reports."""
        q = f"queue {self.queue_bytes / 1e3:.0f} kB" if self.rate_bps > 0 else "no queue"
        parts = [fmt_rate(self.rate_bps), f"delay {self.delay_s * 1e3:g} ms", q]
        if self.loss:
            extra = f" burst {self.burst:g}" if self.loss_model == "gilbert" else ""
            parts.append(f"loss {self.loss * 100:g}% {self.loss_model}{extra}")
        for name in ("reorder", "duplicate", "corrupt"):
            v = getattr(self, name)
            if v:
                parts.append(f"{name} {v * 100:g}%")
        return ", ".join(parts)


@dataclass(frozen=True)
class LinkConfig:
    """Both directions plus the settings the forwarder applies to the whole link."""

    ab: Direction = field(default_factory=Direction)
    ba: Direction = field(default_factory=Direction)
    mtu: int = 1500
    seed: int = 1
    overhead: int = 0  # bytes added per packet when charging the rate (e.g. 14 for Ethernet)
    corrupt_fix_checksum: bool = True  # corruption reaches the application (not a UDP drop)
    tick_s: float = 0.0  # >0: forwarder wakes at most once per tick (less CPU, up to a tick late)

    @classmethod
    def make(
        cls,
        rate: str | float = "200mbit",
        rtt: str | float = "100ms",
        *,
        queue: str | float | None = None,
        loss: str | float = 0.0,
        loss_model: LossModel = "bernoulli",
        burst: float = 4.0,
        loss_bad: str | float = 1.0,
        reorder: str | float = 0.0,
        reorder_delay: str | float = "1ms",
        duplicate: str | float = 0.0,
        corrupt: str | float = 0.0,
        impair: Impair = "ab",
        rate_ba: str | float | None = None,
        mtu: int = 1500,
        seed: int = 1,
        overhead: int = 0,
        corrupt_fix_checksum: bool = True,
        tick: str | float = 0.0,
    ) -> LinkConfig:
        """The usual symmetric link: RTT/2 each way, the same rate both ways unless
        `rate_ba` says otherwise, impairments on the direction(s) named by `impair`.

        The default queue is one BDP (at least 64 MTU-sized packets), the bottleneck
        buffer of the WAN goals in performance.md section 6.2.
        """
        if impair not in ("ab", "ba", "both"):
            raise ValueError(f"impair must be 'ab', 'ba' or 'both', not {impair!r}")
        if loss_model not in ("bernoulli", "gilbert"):
            raise ValueError(f"loss model must be 'bernoulli' or 'gilbert', not {loss_model!r}")
        if not 576 <= mtu <= 2000:
            raise ValueError("mtu must be between 576 and 2000")
        rtt_s = parse_time(rtt)
        clean = Direction(delay_s=rtt_s / 2)
        lossy = replace(
            clean,
            loss=parse_prob(loss),
            loss_model=loss_model,
            burst=burst,
            loss_bad=parse_prob(loss_bad),
            reorder=parse_prob(reorder),
            reorder_delay_s=parse_time(reorder_delay),
            duplicate=parse_prob(duplicate),
            corrupt=parse_prob(corrupt),
        )
        dirs = {}
        for key, r in (
            ("ab", parse_rate(rate)),
            ("ba", parse_rate(rate if rate_ba is None else rate_ba)),
        ):
            if queue is None:
                q = max(r * rtt_s / 8.0, 64.0 * mtu) if r > 0 else 1e18
            else:
                q = parse_queue(queue, r, rtt_s, mtu)
            if r > 0 and q < mtu:
                raise ValueError(f"queue of {q:.0f} bytes cannot hold one {mtu}-byte packet")
            base = lossy if impair in (key, "both") else clean
            dirs[key] = replace(base, rate_bps=r, queue_bytes=q)
        cfg = cls(
            dirs["ab"], dirs["ba"], mtu, seed, overhead, corrupt_fix_checksum, parse_time(tick)
        )
        for d in (cfg.ab, cfg.ba):
            if d.loss_model == "gilbert" and d.loss > 0:
                d.gilbert_params()  # validate now rather than at forwarder start
        return cfg

    @property
    def rtt_s(self) -> float:
        """Base round-trip time (no queueing)."""
        return self.ab.delay_s + self.ba.delay_s

    def forwarder_args(self) -> list[str]:
        """linkemu-fwd options for both directions and link-wide settings."""
        return [
            *self.ab.forwarder_args("ab"),
            *self.ba.forwarder_args("ba"),
            f"--seed={self.seed}",
            f"--overhead={self.overhead}",
            f"--corrupt-fix-checksum={int(self.corrupt_fix_checksum)}",
            f"--tick-ns={round(self.tick_s * 1e9)}",
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, stored in the state file and printed by `up --json`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinkConfig:
        """Inverse of to_dict."""
        return cls(
            Direction(**d["ab"]),
            Direction(**d["ba"]),
            **{k: v for k, v in d.items() if k not in ("ab", "ba")},
        )

    def describe(self) -> str:
        """Two lines for logs and reports."""
        return f"A->B: {self.ab.describe()}\nB->A: {self.ba.describe()}"
