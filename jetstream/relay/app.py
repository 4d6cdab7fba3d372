"""The relay's composition root: configuration in, a running `jetstream relay_server` out.

Start order: the TLS identity (a broken state directory fails before any port opens), the
public ports, the control port, metrics. Stop order is the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from jetstream import __version__
from jetstream.config import RelayConfig, notify_socket
from jetstream.errors import ConfigError
from jetstream.observability.logsetup import configure_logging
from jetstream.relay.forwarding import Counters
from jetstream.relay.metrics import RelayMetrics
from jetstream.relay.registry import Relay
from jetstream.relay.servicer import RelayServicer
from jetstream.sdnotify import serve_until_signalled
from jetstream.tls import TlsIdentity, load_tls_identity
from jetstream.v1 import relay_pb2_grpc

log = logging.getLogger("jetstream.relay")

EXPIRY_INTERVAL = 10.0
SERVER_OPTIONS = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
)
"""Both ends ping every 10 s, so a link whose far end vanished ends within about 20 s."""


def relay_identity(config: RelayConfig) -> TlsIdentity:
    """The relay's certificate and key, made in the state directory on first use."""
    try:
        config.persistent_state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--persistent-state-dir {config.persistent_state_dir}: "
                          f"{exc.strerror}") from None
    return load_tls_identity(config.persistent_state_dir, config.control_tls_cert,
                             config.control_tls_key)


@dataclass
class RunningRelay:
    config: RelayConfig
    relay: Relay
    server: aio.Server
    control_port: int
    fingerprint: bytes
    metrics: RelayMetrics | None
    expiry: asyncio.Task[None]

    async def stop(self, grace: float = 1.0) -> None:
        self.expiry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.expiry
        await self.relay.close()
        await self.server.stop(grace)
        if self.metrics is not None:
            self.metrics.stop()


async def start_relay(config: RelayConfig) -> RunningRelay:
    if not config.trust_server:
        raise ConfigError("no --trust-server given: the relay would serve nobody; add the API "
                          "certificate fingerprint of each server it serves")
    identity = relay_identity(config)
    relay = Relay(frozenset(bytes.fromhex(f) for f in config.trust_server), config.queue_limit,
                  Counters())
    try:
        await relay.open_ports(config.host, config.recv_port)
        server = aio.server(options=SERVER_OPTIONS)
        relay_pb2_grpc.add_RelayServiceServicer_to_server(
            RelayServicer(relay, identity.fingerprint, config.public_address), server)
        health_servicer = health.aio.HealthServicer()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        bind = config.control_host or "[::]"
        if ":" in bind and not bind.startswith("["):
            bind = f"[{bind}]"
        target = f"{bind}:{config.control_port}"
        credentials = grpc.ssl_server_credentials([(identity.key_pem,
                                                    identity.certificate_pem)])
        try:
            control_port = server.add_secure_port(target, credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on control port {target}: {exc}") from None
        await server.start()
    except BaseException:
        await relay.close()
        raise
    metrics = None if config.disable_telemetry else RelayMetrics(relay)
    metrics_at = "off"
    if metrics is not None:
        metrics_port = metrics.serve(config.metrics_host, config.metrics_port)
        metrics_at = f"{config.metrics_host}:{metrics_port}"
    expiry = asyncio.create_task(_expire(relay))
    log.info("relay ready: control %s:%d, public %s:%s, fingerprint SHA256:%s, metrics %s "
             "(jetstream %s; serving %d trusted server(s))",
             bind, control_port, config.host, ",".join(str(p) for p in relay.ports),
             identity.fingerprint.hex(), metrics_at, __version__, len(relay.trusted))
    return RunningRelay(config, relay, server, control_port, identity.fingerprint, metrics,
                        expiry)


async def _expire(relay: Relay) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(EXPIRY_INTERVAL)
        relay.expire(loop.time())


async def _stop(running: RunningRelay) -> None:
    log.info("relay shutting down")
    await running.stop()


def run_relay(config: RelayConfig) -> None:
    configure_logging(config.log_level)
    asyncio.run(serve_until_signalled(
        lambda: start_relay(config), _stop,
        lambda relay: f"relaying, control port {relay.control_port}", notify_socket()))
