"""The composition root: configuration in, a running server out.

The only place that wires components together and owns their lifecycle. Start order:
state (so a broken state directory fails before any port opens), UDP, metrics, gRPC;
a step that fails undoes the ones before it.
Stop order on SIGTERM/SIGINT is the reverse, after health turns NOT_SERVING so load
balancers drain us, and in-flight calls get `shutdown_grace` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from functools import partial

from jetstream import __version__
from jetstream.api.localsocket import LocalSocket
from jetstream.api.server import ApiServer, ApiServices, build_api_server
from jetstream.auth.sessions import SessionStore
from jetstream.client.pool import ChannelPool
from jetstream.config import ServerConfig, is_loopback, notify_socket
from jetstream.datachannel.config import DataChannelConfig
from jetstream.listen_errors import DATA, METRICS, listen_error
from jetstream.observability.datachannel_metrics import RejectedDatagrams
from jetstream.observability.logsetup import configure_logging
from jetstream.observability.metrics import Metrics
from jetstream.observability.transfer_metrics import TransferMetrics
from jetstream.relay.link import RelayLink, RelaySettings
from jetstream.sdnotify import serve_until_signalled
from jetstream.services.auth import Authenticator, AuthService, SuperuserPolicy
from jetstream.services.bandwidth import BandwidthLimits, BandwidthService
from jetstream.services.destinations import DestinationService
from jetstream.services.event_queries import EventQueries
from jetstream.services.events import EventLog
from jetstream.services.files import FileService
from jetstream.services.login_events import RecordingAuthenticator
from jetstream.services.manifests import ManifestService
from jetstream.services.sandboxes import Sandboxes
from jetstream.services.server_info import ServerInfoService
from jetstream.state.database import Database
from jetstream.state.identity import load_identity
from jetstream.storage.dirwatch import DirWatcher
from jetstream.storage.sandbox import SandboxRules
from jetstream.storage.userfs import UserFS
from jetstream.tls import TlsIdentity, load_tls_identity
from jetstream.transfers.incoming import IncomingStore
from jetstream.transfers.model import Direction, Progress, Transfer
from jetstream.transfers.peer import ReceiveService, own_port
from jetstream.transfers.puller import PullJob
from jetstream.transfers.sender import PushJob, SenderContext
from jetstream.transfers.sendsessions import SendService
from jetstream.transfers.service import Job, TransferService
from jetstream.transfers.store import FileRecord, TransferStore
from jetstream.transport.endpoint import DataEndpoint
from jetstream.transport.sockets import bind_udp
from jetstream.triggers.listing import TriggerListing
from jetstream.triggers.runner import TriggerRunner, TriggerSettings
from jetstream.watches.service import WatchService
from jetstream.watches.store import WatchStore

log = logging.getLogger("jetstream.server")

TRIGGER_LOG = "triggers.log"
"""The trigger log's name in the state directory, unless --trigger-log says otherwise."""


@dataclass
class Server:
    """A started server; `stop()` releases everything it holds."""

    config: ServerConfig
    db: Database
    events: EventLog
    api: ApiServer
    metrics: Metrics | None
    files: UserFS
    manifests: ManifestService
    transfers: TransferService
    receive: ReceiveService
    send: SendService
    receive_endpoint: DataEndpoint
    udp_sockets: list[socket.socket] = field(default_factory=list)
    local: LocalSocket | None = None
    pool: ChannelPool | None = None
    triggers: TriggerRunner | None = None
    watcher: DirWatcher | None = None
    watches: WatchService | None = None
    relay: RelayLink | None = None
    stopped: bool = False

    @property
    def api_port(self) -> int:
        return self.api.port

    async def stop(self) -> None:
        """Idempotent: a second call (a test's, a signal's) finds nothing left to release."""
        if self.stopped:
            return
        self.stopped = True
        if self.relay is not None:
            await self.relay.stop()
        await self.api.stop(self.config.shutdown_grace)
        if self.local is not None:
            await self.local.stop()
        if self.watches is not None:
            await self.watches.close()
        await self.transfers.stop()
        await self.receive.close()
        await self.send.close()
        if self.pool is not None:
            await self.pool.close()
        self.receive_endpoint.close()
        await self.manifests.close()
        self.files.close()
        for sock in self.udp_sockets:
            sock.close()
        if self.metrics is not None:
            self.metrics.stop()
        self.events.record("shutdown", "server stopping", now=time.time())
        if self.triggers is not None:
            await self.triggers.close()
        if self.watcher is not None:
            self.watcher.close()
        self.events.flush()
        self.db.close()


async def start_server(
    config: ServerConfig, *, authenticator: Authenticator | None = None
) -> Server:
    """Start every component; `authenticator` replaces PAM only where PAM cannot run.

    A failure at any step (a port in use, a bad certificate) undoes the steps before it
    and raises ConfigError naming the setting, so nothing is left half-started.
    """
    async with AsyncExitStack() as undo:
        server = await _start(config, authenticator, undo)
        undo.pop_all()
    return server


async def _start(
    config: ServerConfig, authenticator: Authenticator | None, undo: AsyncExitStack
) -> Server:
    db = Database(config.persistent_state_dir)
    undo.callback(db.close)
    identity = load_identity(db)
    events = EventLog(db)
    undo.callback(events.flush)
    watcher = DirWatcher()
    undo.callback(watcher.close)
    triggers = TriggerRunner(TriggerSettings(
        config.trigger_dir, config.trigger_log or config.persistent_state_dir / TRIGGER_LOG,
        timeout=config.trigger_timeout, concurrency=config.trigger_concurrency),
        events, watcher)
    undo.push_async_callback(triggers.close)
    tls = _api_tls(config)
    udp_sockets = _bind_data_ports(config, undo)
    metrics = None if config.disable_telemetry else Metrics()
    metrics_port = None
    if metrics is not None:
        try:
            metrics_port = metrics.serve(config.metrics_host, config.metrics_port)
        except OSError as exc:
            raise listen_error(METRICS, config.metrics_host, config.metrics_port, exc) from None
        undo.callback(metrics.stop)
    info = ServerInfoService(
        config=config,
        identity=identity,
        tls=tls,
        receive_ports=tuple(s.getsockname()[1] for s in udp_sockets),
    )
    if authenticator is None:
        from jetstream.auth.pam import PamAuthenticator, pam_service_problem

        problem = pam_service_problem()
        if problem is not None:
            log.warning("%s", problem)
        authenticator = PamAuthenticator()
    authenticator = RecordingAuthenticator(authenticator, events)
    auth = AuthService(
        SessionStore(db),
        authenticator,
        superusers=SuperuserPolicy(frozenset(config.superuser), frozenset(config.supergroup)),
        session_ttl=config.session_ttl,
        api_tokens_enabled=not config.api_disable_api_tokens,
    )
    files = UserFS()
    undo.callback(files.close)
    sandboxes = Sandboxes(SandboxRules(config.sandbox_dir), db=db, events=events)
    manifests = ManifestService(db, files, sandboxes)
    undo.push_async_callback(manifests.close)
    await manifests.recover()
    pool = ChannelPool()
    undo.push_async_callback(pool.close)
    destinations = DestinationService(
        db, local_name=info.friendly_name, allow_plaintext=config.allow_plaintext_peers,
        connector=pool.connect, events=events,
    )
    datachannel = DataChannelConfig(idle_timeout=config.data_idle_timeout,
                                    keep_alive_interval=config.data_idle_timeout / 3)
    receive_endpoint = DataEndpoint(udp_sockets[0], datachannel)
    if metrics is not None:
        metrics.registry.register(RejectedDatagrams(receive_endpoint.rejections))
    relay = _relay_link(config, tls, receive_endpoint, identity.server_uid, info)
    data_address = own_port(receive_endpoint)
    if relay is not None:
        undo.push_async_callback(relay.stop)
        info.relay = relay.status
        data_address = relay.data_address_or(data_address)
    undo.callback(receive_endpoint.close)
    transfer_metrics = TransferMetrics(metrics.registry if metrics else None)
    incoming_store, transfer_store = IncomingStore(db), TransferStore(db)
    bandwidth = BandwidthService(db, _fixed_bandwidth(config))
    receive = ReceiveService(incoming_store, files, sandboxes, receive_endpoint,
                             events=events, metrics=transfer_metrics, bandwidth=bandwidth,
                             sending=lambda: transfers.sending or send.sending,
                             data_address=data_address)
    undo.push_async_callback(receive.close)
    send = SendService(manifests, files, sandboxes, receive_endpoint, events,
                       datachannel=datachannel, metrics=transfer_metrics,
                       bandwidth=bandwidth, receiving=lambda: receive.receiving,
                       data_address=data_address)
    undo.push_async_callback(send.close)
    transfers = TransferService(transfer_store, destinations, manifests, events,
                                sandboxes=sandboxes, metrics=transfer_metrics,
                                bandwidth=bandwidth, receiving=lambda: receive.receiving,
                                retry_timeout=config.transfer_retry_timeout)
    transfer_metrics.watch(
        lambda: [("outgoing", *c) for c in transfer_store.active_counts()]
        + [("incoming", *c) for c in incoming_store.active_counts()],
        transfers.live_gauges,
    )
    sender = SenderContext(destinations, manifests, files, sandboxes,
                           identity.server_uid, info.friendly_name, datachannel,
                           transfer_metrics)

    def job(transfer: Transfer, report: Callable[[Progress, str], None],
            record: Callable[[list[FileRecord]], None]) -> Job:
        if transfer.direction is Direction.PULL:
            return PullJob(transfer, report,
                           partial(transfer_store.set_manifest, transfer.id), sender,
                           receive)
        return PushJob(transfer, report, record, sender)

    watches = WatchService(WatchStore(db), transfers, transfer_store, destinations,
                           sandboxes, files, watcher, events)
    undo.push_async_callback(watches.close)
    transfers.start(job)
    undo.push_async_callback(transfers.stop)
    services = ApiServices(
        info=info,
        auth=auth,
        destinations=destinations,
        manifests=manifests,
        transfers=transfers,
        receive=receive,
        send=send,
        bandwidth=bandwidth,
        files=FileService(files, sandboxes),
        sandboxes=sandboxes,
        events=EventQueries(db, events),
        triggers=TriggerListing(triggers, EventQueries(db, events)),
        watches=watches,
        local=(None if config.api_socket is None
               else LocalSocket(config.api_socket, auth.local_caller)),
        client_address=relay.client_address if relay is not None else str,
    )
    api = await build_api_server(config, services, tls=tls, metrics=metrics)
    undo.push_async_callback(api.stop, 0)
    if services.local is not None:
        undo.push_async_callback(services.local.stop)
        if not await services.local.start():
            await services.local.stop()
            services = replace(services, local=None)
    triggers.start()
    server = Server(config, db, events, api, metrics, files, manifests, transfers, receive,
                    send, receive_endpoint, udp_sockets, services.local, pool, triggers,
                    watcher, watches, relay)
    watches.begin()
    info.api_port = api.port
    if relay is not None:
        relay.start()
    events.record(
        "launch",
        f"jetstream {__version__} started (server uid {identity.server_uid})",
        now=time.time(),
        attributes={"apiPort": str(api.port), "serverUid": identity.server_uid,
                    "version": __version__},
    )
    log.info(
        "ready: api %s:%d, data udp %s, metrics %s",
        config.api_bind_host, api.port,
        ",".join(f"{config.recv_host}:{p}" for p in info.receive_ports),
        f"{config.metrics_host}:{metrics_port}" if metrics_port else "off",
    )
    return server


def _bind_data_ports(config: ServerConfig, undo: AsyncExitStack) -> list[socket.socket]:
    sockets = []
    for port in config.recv_port:
        try:
            sock = bind_udp(config.recv_host, port)
        except OSError as exc:
            raise listen_error(DATA, config.recv_host, port, exc) from None
        undo.callback(sock.close)
        sockets.append(sock)
    return sockets


def _relay_link(config: ServerConfig, tls: TlsIdentity | None, endpoint: DataEndpoint,
                server_uid: str, info: ServerInfoService) -> RelayLink | None:
    """The link to the relay, if the server receives through one (started once the API is
    up: it tunnels peers' calls to it)."""
    if not config.recv_relay_host:
        return None
    assert tls is not None  # the configuration refuses a relay with a plaintext API
    host = config.api_bind_host.strip("[]")
    api_host = "127.0.0.1" if host in ("", "::", "0.0.0.0") else host
    settings = RelaySettings(config.recv_relay_host, config.recv_relay_port,
                             bytes.fromhex(config.recv_relay_fingerprint),
                             config.recv_relay_public_port)
    return RelayLink(settings, tls, endpoint, server_uid=server_uid, name=info.friendly_name,
                     api=lambda: (api_host, info.api_port))


def _fixed_bandwidth(config: ServerConfig) -> BandwidthLimits | None:
    """Limits given at start-up (flags, environment or file) are fixed; else the API's."""
    given = (config.max_outgoing_rate, config.max_incoming_rate, config.bandwidth_borrowing)
    if all(value is None for value in given):
        return None
    return BandwidthLimits(config.max_incoming_rate or 0, config.max_outgoing_rate or 0,
                           bool(config.bandwidth_borrowing), fixed=True)


def _api_tls(config: ServerConfig) -> TlsIdentity | None:
    if not config.api_plaintext:
        return load_tls_identity(
            config.persistent_state_dir, config.api_tls_cert, config.api_tls_key
        )
    if config.api_allow_remote_control and not is_loopback(config.api_bind_host):
        log.warning(
            "the API serves plaintext on %s: passwords and tokens cross the network in clear",
            config.api_bind_host,
        )
    return None


async def _stop(server: Server) -> None:
    log.info("shutting down (grace %.1f s)", server.config.shutdown_grace)
    await server.stop()


def run_server(config: ServerConfig) -> None:
    configure_logging(config.log_level)
    asyncio.run(serve_until_signalled(
        lambda: start_server(config), _stop,
        lambda server: f"serving, API port {server.api_port}", notify_socket()))
