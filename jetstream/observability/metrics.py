"""The Prometheus endpoint: a private registry served on a local port.

A private registry (not prometheus_client's global one) keeps several servers in one test
process apart, and lets components register collectors that read their own snapshots at
scrape time, so the data-channel core never imports prometheus_client.
"""

from __future__ import annotations

import logging
import platform
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    start_http_server,
)

from jetstream import __version__
from jetstream.datachannel.native import DATAPATH

log = logging.getLogger(__name__)


class Metrics:
    """Every metric the server exports, registered on one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.build_info = Info(
            "jetstream_build", "jetstream build information", registry=self.registry
        )
        self.build_info.info({"version": __version__, "python": platform.python_version(),
                              "data_path": DATAPATH})
        self.grpc_handled = Counter(
            "grpc_server_handled",
            "gRPC calls completed on the server, by method and status code",
            ["grpc_service", "grpc_method", "grpc_code"],
            registry=self.registry,
        )
        self.grpc_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time to complete gRPC calls",
            ["grpc_service", "grpc_method"],
            registry=self.registry,
        )
        self.auth_attempts = Counter(
            "jetstream_auth_attempts",
            "Login attempts by result",
            ["result"],
            registry=self.registry,
        )
        for result in ("ok", "denied", "throttled"):
            self.auth_attempts.labels(result=result)
        self._server: WSGIServer | None = None
        self.port = 0
        """Where the endpoint listens, once `serve` ran."""

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint on a daemon thread; return the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound = self.port = int(server.server_address[1])
        log.info("metrics endpoint on http://%s:%d/metrics", host, bound)
        return bound

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
