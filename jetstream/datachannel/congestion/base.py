"""Rate-control interface and the registry of controllers by name.

The loss-recovery code condenses each ACK frame into one `AckSample` and calls the controller
once per ACK, not once per packet: at 200k packets/s a per-packet hook would cost more than
the controller itself. Controllers answer with two numbers, `pacing_rate` (bytes/s) and
`cwnd` (bytes allowed in flight).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from jetstream.errors import ConfigError


class RatePolicy(Enum):
    """How a transfer shares the path (the Aspera vocabulary)."""

    FIXED = "fixed"
    """Send at the target rate whatever happens (a dedicated or reserved link)."""
    FAIR = "fair"
    """Find and share the bottleneck with other flows; random loss is not congestion."""
    LOW_PRIORITY = "low-priority"
    """Use only spare capacity: back off as soon as a queue builds (like LEDBAT)."""


@dataclass(frozen=True)
class RateLimits:
    """Rate bounds in bytes per second (the configuration speaks bits per second)."""

    policy: RatePolicy = RatePolicy.FAIR
    min_rate: float = 0.0
    """Floor of the pacing rate, even under congestion."""
    target_rate: float | None = None
    """FIXED: the rate to send at. FAIR, LOW_PRIORITY: a ceiling like `max_rate`."""
    max_rate: float | None = None
    """Hard ceiling of the pacing rate."""

    def clamp(self, rate: float) -> float:
        for ceiling in (self.target_rate, self.max_rate):
            if ceiling is not None and rate > ceiling:
                rate = ceiling
        return max(rate, self.min_rate)


class AckSample(NamedTuple):
    """What one ACK frame taught the sender."""

    acked_bytes: int
    lost_bytes: int
    """Bytes declared lost while processing this ACK (random and congestive alike)."""
    tagged_acked_bytes: int
    """Part of ``acked_bytes`` sent while `CongestionController.send_tag` was set."""
    tagged_lost_bytes: int
    """Part of ``lost_bytes`` sent while `CongestionController.send_tag` was set."""
    delivered: int
    """Bytes acknowledged since the start of the connection, this ACK included."""
    delivery_rate: float
    """Bytes/s over the flight that ended with the newest acknowledged packet; 0 if none."""
    app_limited: bool
    """The sample was taken while the application, not the network, limited sending."""
    packet_delivered: int
    """`delivered` when the newest acknowledged packet was sent (delimits round trips)."""
    rtt: float | None
    """RTT sample of this ACK, if the largest acknowledged packet was newly acknowledged,
    minus the ACK delay the peer reported (never below the connection's minimum RTT)."""
    min_rtt: float
    smoothed_rtt: float
    bytes_in_flight: int


class CongestionController(ABC):
    """A rate controller; `Connection` reads `pacing_rate` and `cwnd` after each hook."""

    pacing_rate: float
    """Bytes per second the pacer releases."""
    cwnd: int
    """Bytes that may be in flight."""
    send_tag: int = 0
    """Stamped on each packet sent; the fate of tagged packets is reported separately,
    so a controller can measure the loss of packets it sent under known conditions."""

    def __init__(
        self,
        *,
        max_datagram_size: int,
        limits: RateLimits,
        rng: random.Random,
        initial_window: int,
        initial_rtt: float,
        initial_rate: float | None = None,
    ) -> None:
        self.max_datagram_size = max_datagram_size
        self.limits = limits
        self.rng = rng
        self.initial_window = initial_window
        """Packets allowed in flight before the first ACK."""
        self.initial_rtt = initial_rtt
        """The handshake's RTT sample: sets the first pacing rate."""
        self.initial_rate = initial_rate
        """Bytes/s this path delivered before, if the application remembers: start there."""

    @abstractmethod
    def on_ack(self, *, now: float, sample: AckSample) -> None:
        """An ACK frame acknowledged ``sample.acked_bytes`` (may be 0) and revealed losses."""

    @abstractmethod
    def on_packets_lost(
        self, *, now: float, lost_bytes: int, tagged_lost_bytes: int, bytes_in_flight: int
    ) -> None:
        """The loss timer (not an ACK) declared ``lost_bytes`` lost."""

    @abstractmethod
    def on_persistent_congestion(self, *, now: float) -> None:
        """Several probe timeouts passed without any ACK: the path may have collapsed."""

    @property
    @abstractmethod
    def state(self) -> str:
        """Short name of the controller's phase, for statistics and logs."""


ControllerFactory = Callable[..., CongestionController]
_REGISTRY: dict[str, ControllerFactory] = {}


def register_congestion_control(name: str, factory: ControllerFactory) -> None:
    _REGISTRY[name] = factory


def available_congestion_controls() -> list[str]:
    return sorted(_REGISTRY)


def create_congestion_control(
    name: str,
    *,
    max_datagram_size: int,
    limits: RateLimits,
    rng: random.Random,
    initial_window: int,
    initial_rtt: float,
    initial_rate: float | None = None,
) -> CongestionController:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        known = ", ".join(available_congestion_controls())
        raise ConfigError(f"unknown congestion control {name!r} (known: {known})") from None
    return factory(
        max_datagram_size=max_datagram_size,
        limits=limits,
        rng=rng,
        initial_window=initial_window,
        initial_rtt=initial_rtt,
        initial_rate=initial_rate,
    )
