"""The FIXED policy: send at the target rate and ignore loss and delay.

For reserved or dedicated links where the operator knows the rate (Aspera's "fixed"). The
window only has to cover the path: twice the target rate times the RTT, so that ACK delays
never throttle the pacer.
"""

from __future__ import annotations

from typing import Any

from jetstream.datachannel.congestion.base import (
    AckSample,
    CongestionController,
    register_congestion_control,
)
from jetstream.errors import ConfigError


class FixedRateController(CongestionController):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.limits.target_rate is None:
            raise ConfigError("the fixed rate policy needs a target rate")
        self.pacing_rate = self.limits.clamp(self.limits.target_rate)
        self._set_cwnd(self.initial_rtt)

    @property
    def state(self) -> str:
        return "fixed"

    def _set_cwnd(self, rtt: float) -> None:
        floor = self.initial_window * self.max_datagram_size
        self.cwnd = max(floor, int(2 * self.pacing_rate * rtt))

    def on_ack(self, *, now: float, sample: AckSample) -> None:
        target = self.limits.target_rate  # the limits may change during a transfer
        if target is not None:
            self.pacing_rate = self.limits.clamp(target)
        self._set_cwnd(max(sample.smoothed_rtt, sample.min_rtt))

    def on_packets_lost(
        self, *, now: float, lost_bytes: int, tagged_lost_bytes: int, bytes_in_flight: int
    ) -> None:
        """Loss does not change a fixed rate."""

    def on_persistent_congestion(self, *, now: float) -> None:
        """Neither does a silent path: the idle timeout ends a dead connection."""


register_congestion_control("fixed", FixedRateController)
