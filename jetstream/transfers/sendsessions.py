"""The sending side of pulls: sessions another server opens here to fetch a manifest.

The receiving server (which owns the transfer) logs in as a user of this server, builds
the manifest here as that user, then opens a send session: we hand out a one-time ticket,
it opens the UDP flow to our port, and the shared sending half reads the files with that
user's rights, skipping what the receiver already holds. The receiver ends the session
with CompleteSendSession; a session whose flow dies without that ends FAILED.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from jetstream.datachannel.config import DataChannelConfig
from jetstream.errors import FailedPrecondition, JetstreamError, NotFound
from jetstream.observability.transfer_metrics import TransferMetrics
from jetstream.services.auth import Caller
from jetstream.services.bandwidth import BandwidthService, share
from jetstream.services.events import EventLog, Severity
from jetstream.services.manifests import Manifest, ManifestService, ManifestState
from jetstream.services.sandboxes import Sandboxes
from jetstream.storage.userfs import UserFS
from jetstream.transfers.filesender import FileSender, SendSpec, data_channel_config
from jetstream.transfers.hashing import HashAlgorithm
from jetstream.transfers.model import Failure, RateLimits, TransferState
from jetstream.transfers.peer import DataAddress, own_port
from jetstream.transfers.peerwire import Held
from jetstream.transport.endpoint import DataEndpoint, DataLink, random_ticket

log = logging.getLogger(__name__)

TICKET_LIFETIME = 60.0
_PULL_EVENTS = {TransferState.COMPLETED: "send.pullComplete",
                TransferState.FAILED: "send.pullError",
                TransferState.CANCELLED: "send.pullCancelled",
                TransferState.PAUSED: "send.pullPaused"}
"""Events of the sessions that serve another server's pull, by how they end."""
COMPLETE_GRACE = 10.0
"""How long CompleteSendSession may come after the flow closed (the receiver closes its
end first) before the session counts as FAILED."""


@dataclass(frozen=True)
class SendRequest:
    receiver_uid: str
    receiver_name: str
    receiver_transfer: str
    manifest_id: str
    hash_algorithm: HashAlgorithm
    held: Held
    rate: RateLimits
    max_rate_bps: int
    """The receiver's ceiling (0: none); we may lower it."""


@dataclass(frozen=True)
class OpenedSend:
    session_id: str
    ticket_id: bytes
    ticket_secret: bytes
    expires_at: float
    udp_port: int
    max_rate_bps: int
    manifest: Manifest
    udp_host: str = ""
    """As `OpenedSession.udp_host`."""


@dataclass
class _Sending:
    owner: str
    request: SendRequest
    ceiling: int
    ticket_id: bytes
    sender: FileSender | None = None
    tasks: tuple[asyncio.Task[None], ...] = ()


class SendService:
    def __init__(
        self,
        manifests: ManifestService,
        files: UserFS,
        sandboxes: Sandboxes,
        endpoint: DataEndpoint,
        events: EventLog,
        *,
        datachannel: DataChannelConfig,
        metrics: TransferMetrics,
        bandwidth: BandwidthService | None = None,
        receiving: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
        data_address: DataAddress | None = None,
    ) -> None:
        self._manifests = manifests
        self._data_address = data_address or own_port(endpoint)
        self._files = files
        self._sandboxes = sandboxes
        self._endpoint = endpoint
        self._events = events
        self._datachannel = datachannel
        self._metrics = metrics
        self._bandwidth = bandwidth
        self._receiving = receiving
        self._clock = clock
        self._live: dict[str, _Sending] = {}

    @property
    def sending(self) -> bool:
        return bool(self._live)

    async def open(self, caller: Caller, request: SendRequest) -> OpenedSend:
        manifest = self._manifests.get(caller, request.manifest_id)
        if manifest.state is not ManifestState.COMPLETE:
            raise FailedPrecondition(f"manifests/{manifest.id} is {manifest.state.value}")
        ceiling = min((c for c in (request.max_rate_bps, self._outgoing_share()) if c),
                      default=0)
        spec = SendSpec(manifest.id, request.hash_algorithm, caller.principal,
                        self._sandboxes.for_principal(caller.principal), request.held)
        session_id = uuid.uuid4().hex
        ticket = random_ticket()
        live = _Sending(caller.username, request, ceiling, ticket.ticket_id)
        self._live[session_id] = live

        def on_link(link: DataLink) -> None:
            def apply(rate: RateLimits) -> None:
                link.connection.set_rate_limits(
                    data_channel_config(self._datachannel, rate, ceiling).rate_limits())

            def forget_records(_rate: float) -> None:
                sender.take_finished()  # the receiver's transfer keeps per-file records

            sender = FileSender(link, spec, manifests=self._manifests, files=self._files,
                                metrics=self._metrics, on_rate=apply)
            live.sender = sender
            live.tasks = (asyncio.create_task(self._send(session_id, sender)),
                          asyncio.create_task(sender.report_loop(forget_records)))
            link.terminated.add_done_callback(lambda _: asyncio.get_running_loop().call_later(
                COMPLETE_GRACE, self._lost, session_id))

        self._endpoint.expect(ticket, on_link,
                              data_channel_config(self._datachannel, request.rate, ceiling))
        asyncio.get_running_loop().call_later(TICKET_LIFETIME, self._unused, session_id)
        self._event(live, "send.pullStarted", f"sending manifests/{manifest.id} to "
                    f"{request.receiver_name or request.receiver_uid} "
                    f"({request.receiver_transfer})")
        host, port = self._data_address(caller.peer)
        return OpenedSend(session_id, ticket.ticket_id, ticket.secret,
                          self._clock() + TICKET_LIFETIME, port, ceiling, manifest, host)

    async def complete(self, caller: Caller, session_id: str, state: TransferState,
                       error: Failure | None, files_verified: int, files_failed: int) -> None:
        live = self._live.get(session_id)
        if live is None or live.owner != caller.username:
            raise NotFound(f"no send session {session_id!r}")
        detail = f"{files_verified} file(s) verified, {files_failed} failed"
        self._end(session_id, state, f"{detail}: {error.message}" if error else detail)

    async def close(self) -> None:
        for session_id in list(self._live):
            self._end(session_id, TransferState.PAUSED, "this server is stopping")

    def _outgoing_share(self) -> int:
        if self._bandwidth is None:
            return 0
        outgoing, _in = self._bandwidth.allowance(outgoing_active=True,
                                                  incoming_active=self._receiving())
        return share(outgoing, len(self._live) + 1)

    async def _send(self, session_id: str, sender: FileSender) -> None:
        try:
            await sender.send_all()
        except JetstreamError as exc:
            log.info("send session %s: %s", session_id, exc)

    def _unused(self, session_id: str) -> None:
        live = self._live.get(session_id)
        self._endpoint.withdraw(live.ticket_id if live else b"")
        if live is not None and live.sender is None:
            self._end(session_id, TransferState.FAILED, "the receiver never connected")

    def _lost(self, session_id: str) -> None:
        if session_id in self._live:
            self._end(session_id, TransferState.FAILED, "the data channel closed early")

    def _end(self, session_id: str, state: TransferState, message: str) -> None:
        live = self._live.pop(session_id)
        self._endpoint.withdraw(live.ticket_id)
        for task in live.tasks:
            task.cancel()
        if live.sender is not None:
            live.sender.link.close(0, state.value)
        if state.terminal:
            self._metrics.finished.labels("outgoing", state.value).inc()
        self._event(live, _PULL_EVENTS[state],
                    f"sending manifests/{live.request.manifest_id} to "
                    f"{live.request.receiver_name or live.request.receiver_uid} "
                    f"{state.value}: {message}",
                    Severity.ERROR if state is TransferState.FAILED else Severity.INFO)

    def _event(self, live: _Sending, kind: str, message: str,
               severity: Severity = Severity.INFO) -> None:
        request = live.request
        self._events.record(kind, message, now=self._clock(), severity=severity,
                            username=live.owner, subject=f"manifests/{request.manifest_id}",
                            attributes={"manifestId": request.manifest_id, "owner": live.owner,
                                        "receiverUid": request.receiver_uid,
                                        "receiverName": request.receiver_name,
                                        "receiverTransfer": request.receiver_transfer})
