"""Builds the grpc.aio server: servicers, health, reflection, the call interceptor."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from jetstream.api.interceptors import CallInterceptor
from jetstream.api.localsocket import LocalSocket
from jetstream.api.servicers.auth import AuthServicer
from jetstream.api.servicers.destinations import DestinationServicer
from jetstream.api.servicers.files import FileServicer
from jetstream.api.servicers.manifests import ManifestServicer
from jetstream.api.servicers.peer import PeerServicer
from jetstream.api.servicers.server import ServerServicer
from jetstream.api.servicers.transfers import TransferServicer
from jetstream.api.servicers.triggers import TriggerServicer
from jetstream.api.servicers.watches import WatchServicer
from jetstream.config import ServerConfig
from jetstream.errors import ConfigError
from jetstream.listen_errors import API, HEALTH, cannot_listen, probe_bind
from jetstream.observability.metrics import Metrics
from jetstream.services.auth import AuthService
from jetstream.services.bandwidth import BandwidthService
from jetstream.services.destinations import DestinationService
from jetstream.services.event_queries import EventQueries
from jetstream.services.files import FileService
from jetstream.services.manifests import ManifestService
from jetstream.services.sandboxes import Sandboxes
from jetstream.services.server_info import ServerInfoService
from jetstream.tls import TlsIdentity
from jetstream.transfers.peer import ReceiveService
from jetstream.transfers.sendsessions import SendService
from jetstream.transfers.service import TransferService
from jetstream.triggers.listing import TriggerListing
from jetstream.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    destinations_pb2,
    destinations_pb2_grpc,
    files_pb2,
    files_pb2_grpc,
    manifests_pb2,
    manifests_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    transfers_pb2,
    transfers_pb2_grpc,
    triggers_pb2,
    triggers_pb2_grpc,
    watches_pb2,
    watches_pb2_grpc,
)
from jetstream.watches.service import WatchService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiServices:
    """The service layer the API exposes."""

    info: ServerInfoService
    auth: AuthService
    destinations: DestinationService
    manifests: ManifestService
    transfers: TransferService
    receive: ReceiveService
    send: SendService
    bandwidth: BandwidthService
    files: FileService | None = None
    sandboxes: Sandboxes | None = None
    events: EventQueries | None = None
    local: LocalSocket | None = None
    """The local Unix socket (api/localsocket.py), if enabled."""
    triggers: TriggerListing | None = None
    watches: WatchService | None = None
    client_address: Callable[[str], str] = str
    """grpc peer -> the client's real address (differs for calls through a relay)."""


@dataclass
class ApiServer:
    server: aio.Server
    health: health.aio.HealthServicer
    port: int
    health_only: aio.Server | None = None
    """The plaintext health endpoint (--health-port), if on."""

    async def stop(self, grace: float) -> None:
        """NOT_SERVING first, so clients stop sending, then drain in-flight calls."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.health_only is not None:
            await self.health_only.stop(None)


async def build_api_server(
    config: ServerConfig,
    services: ApiServices,
    *,
    tls: TlsIdentity | None,
    metrics: Metrics | None,
) -> ApiServer:
    """A started server; `tls` None serves plaintext (the caller decided that is allowed)."""
    server = aio.server(
        interceptors=[
            CallInterceptor(
                services.auth.authenticate_token, metrics,
                local_caller=services.local.caller_for if services.local else None,
            )
        ],
        options=[("grpc.so_reuseport", 0)],
    )
    server_pb2_grpc.add_ServerServiceServicer_to_server(
        ServerServicer(services.info, sandboxes=services.sandboxes, events=services.events,
                       bandwidth=services.bandwidth),
        server,
    )
    if services.files is not None:
        files_pb2_grpc.add_FileServiceServicer_to_server(FileServicer(services.files), server)
    auth_pb2_grpc.add_AuthServiceServicer_to_server(
        AuthServicer(services.auth, services.client_address), server)
    destinations_pb2_grpc.add_DestinationServiceServicer_to_server(
        DestinationServicer(services.destinations), server
    )
    manifests_pb2_grpc.add_ManifestServiceServicer_to_server(
        ManifestServicer(services.manifests), server
    )
    transfers_pb2_grpc.add_TransferServiceServicer_to_server(
        TransferServicer(services.transfers, services.receive), server
    )
    peer_pb2_grpc.add_PeerServiceServicer_to_server(
        PeerServicer(services.receive, services.send), server)
    if services.triggers is not None:
        triggers_pb2_grpc.add_TriggerServiceServicer_to_server(
            TriggerServicer(services.triggers), server)
    if services.watches is not None:
        watches_pb2_grpc.add_WatchServiceServicer_to_server(
            WatchServicer(services.watches), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [
        server_pb2.DESCRIPTOR.services_by_name["ServerService"].full_name,
        auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
        destinations_pb2.DESCRIPTOR.services_by_name["DestinationService"].full_name,
        manifests_pb2.DESCRIPTOR.services_by_name["ManifestService"].full_name,
        transfers_pb2.DESCRIPTOR.services_by_name["TransferService"].full_name,
        peer_pb2.DESCRIPTOR.services_by_name["PeerService"].full_name,
        *([files_pb2.DESCRIPTOR.services_by_name["FileService"].full_name]
          if services.files is not None else []),
        *([triggers_pb2.DESCRIPTOR.services_by_name["TriggerService"].full_name]
          if services.triggers is not None else []),
        *([watches_pb2.DESCRIPTOR.services_by_name["WatchService"].full_name]
          if services.watches is not None else []),
    ]
    for name in names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )

    address = f"{config.api_bind_host}:{config.api_port}"
    # Probed first: grpc only logs why a bind failed, in a line of its own on stderr.
    problem = probe_bind(API, config.api_bind_host, config.api_port)
    if problem is None:
        try:
            if tls is None:
                port = server.add_insecure_port(address)
            else:
                credentials = grpc.ssl_server_credentials([(tls.key_pem, tls.certificate_pem)])
                port = server.add_secure_port(address, credentials)
        except RuntimeError:
            problem = cannot_listen(API, config.api_bind_host, config.api_port)
    if problem is not None:
        await server.stop(None)  # else grpc's finaliser runs after the loop closed
        raise problem
    if services.local is not None:
        services.local.bind_grpc(server.add_insecure_port)
    health_only = None
    if config.health_port:
        try:
            health_only = await _health_endpoint(health_servicer, config.health_port)
        except ConfigError:
            await server.stop(None)
            raise
    await server.start()
    return ApiServer(server, health_servicer, port, health_only)


async def _health_endpoint(servicer: health.aio.HealthServicer, port: int) -> aio.Server:
    """grpc.health.v1 alone, without TLS, on all interfaces: what kubelet's gRPC probes
    can reach. The same servicer as the API's, so both turn NOT_SERVING together."""
    server = aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    problem = probe_bind(HEALTH, "[::]", port)
    if problem is None:
        try:
            server.add_insecure_port(f"[::]:{port}")
        except RuntimeError:
            problem = cannot_listen(HEALTH, "[::]", port)
    if problem is not None:
        await server.stop(None)
        raise problem
    await server.start()
    log.info("gRPC health endpoint (plaintext, health only) on port %d", port)
    return server
