"""The relay's Prometheus metrics: its own registry and endpoint (default 127.0.0.1:9887).

The forwarding path only adds to plain integers (`forwarding.Counters`); they are read when
Prometheus scrapes, so no metric call sits in the per-datagram path.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Info,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jetstream import __version__
from jetstream.relay.registry import Relay

log = logging.getLogger(__name__)


class RelayMetrics:
    def __init__(self, relay: Relay) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        Info("jetstream_relay_build", "jetstream relay build information",
             registry=self.registry).info({"version": __version__,
                                           "python": platform.python_version()})
        self.registry.register(_RelayCollector(relay))
        self._server: WSGIServer | None = None
        self.port = 0
        """Where the endpoint listens, once `serve` ran."""

    def serve(self, host: str, port: int) -> int:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        self.port = int(server.server_address[1])
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _RelayCollector(Collector):
    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def collect(self) -> Iterable[Metric]:
        relay, counters = self._relay, self._relay.counters
        datagrams = CounterMetricFamily(
            "jetstream_relay_datagrams", "Datagrams forwarded, by direction "
            "(to_server: arrived on a public port; to_peer: sent out of one)",
            labels=["direction"])
        datagrams.add_metric(["to_server"], counters.to_server_datagrams)
        datagrams.add_metric(["to_peer"], counters.to_peer_datagrams)
        payload = CounterMetricFamily("jetstream_relay_bytes",
                                      "Datagram bytes forwarded, by direction",
                                      labels=["direction"])
        payload.add_metric(["to_server"], counters.to_server_bytes)
        payload.add_metric(["to_peer"], counters.to_peer_bytes)
        drops = CounterMetricFamily(
            "jetstream_relay_dropped_datagrams", "Datagrams not forwarded, by reason: "
            "queue_full (a server's link was busy), amplification (the 3x rule), unknown_peer, "
            "peer_limit, no_server (no server holds the port), send_failed (kernel refused)",
            labels=["reason"])
        for reason, count in counters.drops.items():
            drops.add_metric([reason], count)
        registrations = relay.registrations
        yield datagrams
        yield payload
        yield drops
        yield GaugeMetricFamily("jetstream_relay_servers", "Servers registered now",
                                value=len(registrations))
        yield GaugeMetricFamily("jetstream_relay_peers", "Remote peers of public ports known now",
                                value=sum(r.forwarder.peer_count for r in registrations))
        yield GaugeMetricFamily("jetstream_relay_queued_bytes",
                                "Datagram bytes waiting for their server's link",
                                value=sum(r.forwarder.queued_bytes for r in registrations))
        yield GaugeMetricFamily("jetstream_relay_tunnels",
                                "TCP connections to servers' control APIs carried now",
                                value=relay.tunnels)
