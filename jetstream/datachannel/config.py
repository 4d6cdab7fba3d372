"""Settings of one data-channel connection (every field has a default and says why)."""

from __future__ import annotations

from dataclasses import dataclass

from jetstream.datachannel import crypto, wire
from jetstream.datachannel.congestion import (
    RateLimits,
    RatePolicy,
    available_congestion_controls,
)
from jetstream.errors import ConfigError

DEFAULT_MAX_DATAGRAM_SIZE = 1500 - 20 - 8
"""A 1500-byte IPv4 MTU minus the IPv4 and UDP headers."""


@dataclass(frozen=True)
class DataChannelConfig:
    max_datagram_size: int = DEFAULT_MAX_DATAGRAM_SIZE
    """Largest UDP payload we send or accept (header + frames + 16-byte tag)."""
    aead: str = "AES-128-GCM"
    """"AES-128-GCM" or "AES-256-GCM"."""
    idle_timeout: float = 30.0
    """Seconds without an authentic packet before we give up (the smaller of both sides wins)."""
    keep_alive_interval: float | None = 10.0
    """Send a PING after this long without sending anything ack-eliciting (None: never)."""
    handshake_timeout: float = 10.0
    """Seconds to complete the handshake before `ConnectionTerminated(HANDSHAKE_TIMEOUT)`."""
    initial_rtt: float = 0.333
    """RTT assumed before the first measurement (RFC 9002's 333 ms)."""
    max_ack_delay: float = 0.005
    """Longest we hold an ACK for an ack-eliciting packet."""
    ack_every: int = 16
    """Send an ACK at the latest after this many ack-eliciting packets."""
    max_ack_ranges: int = 32
    """ACK frames carry at most this many ranges (newest first), which bounds their size."""
    max_tracked_ranges: int = 4096
    """Received-packet ranges kept for replay detection; older packets count as replays."""
    flow_control_window: int = 64 << 20
    """Unconsumed stream bytes we let the peer have outstanding."""
    send_buffer_limit: int = 64 << 20
    """Most stream bytes the core holds (queued plus unacknowledged) before the application
    should stop adding (see `Connection.send_buffer_space`)."""
    max_active_streams: int = 65536
    """Incomplete receive streams at a time; a peer exceeding it is closed."""
    congestion_control: str = "model"
    """Registered controller for the FAIR and LOW_PRIORITY policies (FIXED uses "fixed")."""
    rate_policy: RatePolicy = RatePolicy.FAIR
    min_rate: int = 0
    """Bits per second the sender never goes below."""
    target_rate: int | None = None
    """Bits per second: the rate of the FIXED policy, a ceiling for the others."""
    max_rate: int | None = None
    """Bits per second the sender never exceeds."""
    initial_window: int = 32
    """Packets in flight before the first ACK."""
    initial_rate: int | None = None
    """Bits per second to start at, e.g. what this path delivered last time (the control
    plane may remember it); STARTUP still searches upwards from there. None: start from
    `initial_window`, which costs about log2(BDP / initial_window) round trips."""
    pacing_quantum: float = 0.001
    """Seconds of data the pacer may release at once: the driver's timer granularity."""
    max_batch: int = 64
    """Most datagrams one `datagrams_to_send` call returns (one GSO batch or so)."""
    key_update_interval: int = 1 << 21
    """Packets sent under one key before a key update (AES-GCM's limit is 2**23)."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not 1200 <= self.max_datagram_size <= 65527:
            problems.append("max_datagram_size must be between 1200 and 65527")
        if self.aead not in crypto.AEAD_KEY_LENGTHS:
            problems.append(f"aead must be one of {sorted(crypto.AEAD_KEY_LENGTHS)}")
        for name in ("idle_timeout", "handshake_timeout", "initial_rtt", "pacing_quantum"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive")
        if self.keep_alive_interval is not None and self.keep_alive_interval <= 0:
            problems.append("keep_alive_interval must be positive or None")
        if not 0 <= self.max_ack_delay <= 1:
            problems.append("max_ack_delay must be between 0 and 1 second")
        for name in ("ack_every", "max_ack_ranges", "max_tracked_ranges", "initial_window"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if wire.ack_frame_size(self.max_ack_ranges) > self.max_payload // 2:
            problems.append("max_ack_ranges makes ACK frames fill half a datagram")
        for name in ("flow_control_window", "send_buffer_limit", "max_active_streams"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be positive")
        if self.max_batch < 1 or self.key_update_interval < 1024:
            problems.append("max_batch must be >= 1 and key_update_interval >= 1024")
        if self.congestion_control not in available_congestion_controls():
            problems.append(f"congestion_control must be one of {available_congestion_controls()}")
        if self.rate_policy is RatePolicy.FIXED and not self.target_rate:
            problems.append("the fixed rate policy needs target_rate")
        if self.initial_rate is not None and self.initial_rate <= 0:
            problems.append("initial_rate must be positive or None")
        if self.min_rate < 0 or any(
            r is not None and r <= 0 for r in (self.target_rate, self.max_rate)
        ):
            problems.append("rates must be positive")
        if self.max_rate is not None and self.min_rate > self.max_rate:
            problems.append("min_rate exceeds max_rate")
        if problems:
            raise ConfigError("invalid data channel settings: " + "; ".join(problems))

    @property
    def controller_name(self) -> str:
        return "fixed" if self.rate_policy is RatePolicy.FIXED else self.congestion_control

    def rate_limits(self) -> RateLimits:
        """The configured rates in bytes per second."""
        return RateLimits(
            policy=self.rate_policy,
            min_rate=self.min_rate / 8,
            target_rate=None if self.target_rate is None else self.target_rate / 8,
            max_rate=None if self.max_rate is None else self.max_rate / 8,
        )

    @property
    def max_payload(self) -> int:
        """Frame bytes that fit in one 1-RTT datagram."""
        return self.max_datagram_size - wire.SHORT_HEADER_SIZE - wire.AEAD_TAG_LENGTH
