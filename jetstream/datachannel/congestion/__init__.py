"""Rate control: an interface, a registry by name, and the built-in controllers."""

from __future__ import annotations

from jetstream.datachannel.congestion import fixed, model
from jetstream.datachannel.congestion.base import (
    AckSample,
    CongestionController,
    RateLimits,
    RatePolicy,
    available_congestion_controls,
    create_congestion_control,
    register_congestion_control,
)

__all__ = [
    "AckSample",
    "CongestionController",
    "RateLimits",
    "RatePolicy",
    "available_congestion_controls",
    "create_congestion_control",
    "fixed",
    "model",
    "register_congestion_control",
]
