"""Transfer metrics: counters the engine increments, gauges read at scrape time.

Labels stay bounded (direction, result, state): never a file, user or transfer name.
The engine calls `TransferMetrics` whether telemetry is on or not; with telemetry off the
instruments live on a registry nobody serves, which keeps the call sites free of checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

DIRECTIONS = ("outgoing", "incoming")
RESULTS = ("completed", "failed", "cancelled")
FILE_RESULTS = ("ok", "failed", "skipped")

StateCounts = Callable[[], Iterable[tuple[str, str, int]]]
"""() -> (direction, state, count) for every non-terminal transfer state."""
LinkGauges = Callable[[], tuple[float, float]]
"""() -> (sum of current send rates in bit/s, mean smoothed RTT in seconds)."""


class TransferMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.finished = Counter("jetstream_transfers_finished", "Transfers that ended, by result",
                                ["direction", "result"], registry=self.registry)
        self.bytes = Counter("jetstream_transfer_bytes", "File bytes moved (payload)",
                             ["direction"], registry=self.registry)
        self.files = Counter("jetstream_transfer_files", "Files moved, by result",
                             ["direction", "result"], registry=self.registry)
        self.retransmitted = Counter("jetstream_datachannel_retransmitted_bytes",
                                     "Bytes the data channel sent again after a loss",
                                     registry=self.registry)
        self.hash_failures = Counter("jetstream_file_verification_failures",
                                     "Files whose digest did not match at the receiver",
                                     registry=self.registry)
        for direction in DIRECTIONS:
            self.bytes.labels(direction)
            for result in RESULTS:
                self.finished.labels(direction, result)
            for file_result in FILE_RESULTS:
                self.files.labels(direction, file_result)

    def watch(self, states: StateCounts, links: LinkGauges) -> None:
        """Publish live gauges computed by the engine when Prometheus scrapes."""
        self.registry.register(_LiveCollector(states, links))


class _LiveCollector(Collector):
    def __init__(self, states: StateCounts, links: LinkGauges) -> None:
        self._states = states
        self._links = links

    def collect(self) -> Iterable[GaugeMetricFamily]:
        active = GaugeMetricFamily("jetstream_transfers", "Transfers that have not ended",
                                   labels=["direction", "state"])
        for direction, state, count in self._states():
            active.add_metric([direction, state], count)
        rate, rtt = self._links()
        yield active
        yield GaugeMetricFamily("jetstream_send_rate_bits_per_second",
                                "Current payload send rate of all running transfers",
                                value=rate)
        yield GaugeMetricFamily("jetstream_datachannel_rtt_seconds",
                                "Mean smoothed round-trip time of running transfers",
                                value=rtt)
