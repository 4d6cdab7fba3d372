"""Datagrams the data port dropped without a reply, read from the endpoint at scrape time.

A hostile or broken sender is visible here and nowhere else: the port never answers such
datagrams. The one label is a reason from a fixed set, never an address or a name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

REASONS = {
    "malformed": "not a packet of the protocol, or not one this connection takes",
    "auth": "failed authentication (forged, corrupted, wrong keys)",
    "replay": "a packet number seen before, or too old to tell",
    "unrouted": "no connection or session ticket of this server",
}


class RejectedDatagrams(Collector):
    def __init__(self, totals: Callable[[], Mapping[str, int]]) -> None:
        self._totals = totals

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "jetstream_datachannel_rejected_datagrams",
            "Datagrams the data port dropped without reply, by reason: "
            + "; ".join(f"{reason}: {why}" for reason, why in REASONS.items()),
            labels=["reason"],
        )
        totals = self._totals()
        for reason in REASONS:
            family.add_metric([reason], totals.get(reason, 0))
        yield family
