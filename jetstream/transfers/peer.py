"""The receiving side of sessions: those a sender opens here (push) and pulls of our own.

The sender authenticates as a user of this server (the destination's API token), so files
land in that user's sandbox with that user's rights. A session hands out a one-time data
channel ticket over the TLS-protected API; the sender must present it on our UDP port.
An incoming transfer is keyed by (sender server uid, sender transfer), so a sender that
restarts finds its checkpoints again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from jetstream.datachannel.grouprate import MAX_FLOWS
from jetstream.datachannel.handshake import SessionTicket
from jetstream.errors import FailedPrecondition, NotFound, PermissionDenied
from jetstream.observability.transfer_metrics import TransferMetrics
from jetstream.services.auth import Caller
from jetstream.services.bandwidth import BandwidthService, share
from jetstream.services.events import EventLog, Severity
from jetstream.services.sandboxes import Sandboxes
from jetstream.storage.paths import parse_path, printable
from jetstream.storage.sandbox import Location
from jetstream.storage.userfs import UserFS
from jetstream.transfers.incoming import FileCheckpoint, Incoming, IncomingStore, Source
from jetstream.transfers.model import Failure, Progress, TransferOptions, TransferState
from jetstream.transfers.receiver import ReceiveSession
from jetstream.transport.endpoint import DataEndpoint, DataLink, random_ticket

log = logging.getLogger(__name__)

TICKET_LIFETIME = 60.0
_RECEIVE_EVENTS = {TransferState.COMPLETED: "recv.transferComplete",
                   TransferState.FAILED: "recv.transferError",
                   TransferState.CANCELLED: "recv.transferCancelled",
                   TransferState.PAUSED: "recv.transferPaused"}
"""The event each way a receive session ends fires (PAUSED: interrupted, to be resumed)."""

DataAddress = Callable[[str], tuple[str, int]]
"""A caller's grpc peer -> (host, UDP port) it should send data to; host empty: the host it
called. Not always our own port: a caller that came through a relay goes back through it."""


def own_port(endpoint: DataEndpoint) -> DataAddress:
    return lambda peer: ("", endpoint.port)


@dataclass(frozen=True)
class OpenRequest:
    sender_uid: str
    sender_name: str
    sender_transfer: str
    destination_path: str
    options: TransferOptions
    files_total: int
    bytes_total: int
    flows: int = 1
    """Flows the sender would open (`MAX_FLOWS` at most are granted)."""


@dataclass(frozen=True)
class OpenedSession:
    session_id: str
    ticket_id: bytes
    ticket_secret: bytes
    expires_at: float
    udp_port: int
    incoming_id: str
    resumed: bool
    max_rate_bps: int
    """The sender's share of our incoming allowance (0: no limit)."""
    udp_host: str = ""
    """Where to send the data when not to the host the sender called (a relay's address)."""
    extra_tickets: tuple[SessionTicket, ...] = ()
    """One per further flow granted."""


@dataclass
class _Live:
    session: ReceiveSession
    owner: str
    location: Location
    """Where the transfer writes (its destination path)."""
    ticket_ids: tuple[bytes, ...] = ()
    """The tickets the sender connects with (a push); none for a pull, which connects out."""


class ReceiveService:
    def __init__(
        self,
        store: IncomingStore,
        files: UserFS,
        sandboxes: Sandboxes,
        endpoint: DataEndpoint,
        *,
        on_change: Callable[[Incoming], None] | None = None,
        events: EventLog | None = None,
        metrics: TransferMetrics | None = None,
        bandwidth: BandwidthService | None = None,
        sending: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
        data_address: DataAddress | None = None,
    ) -> None:
        self._store = store
        self._data_address = data_address or own_port(endpoint)
        self._bandwidth = bandwidth
        self._sending = sending
        self._metrics = metrics or TransferMetrics()
        self._files = files
        self._sandboxes = sandboxes
        self._endpoint = endpoint
        self._clock = clock
        self._on_change = on_change
        self._events = events
        self._live: dict[str, _Live] = {}
        store.mark_interrupted(now=clock())

    async def open(self, caller: Caller, request: OpenRequest) -> OpenedSession:
        """A push: the sender will connect to our UDP port with the ticket we hand out."""
        session_id, session, resumed = await self._new_session(caller, request)
        tickets = [random_ticket() for _ in range(max(1, min(request.flows, MAX_FLOWS)))]
        self._live[session_id].ticket_ids = tuple(t.ticket_id for t in tickets)

        def on_link(link: DataLink) -> None:
            peer = link.connection.peer_address
            session.attach(link, f"{peer[0]}:{peer[1]}" if peer else "")

        self._endpoint.expect(tickets[0], on_link)
        for extra in tickets[1:]:
            self._endpoint.expect(extra, session.attach_flow)
        for ticket in tickets:
            asyncio.get_running_loop().call_later(TICKET_LIFETIME, self._endpoint.withdraw,
                                                  ticket.ticket_id)
        host, port = self._data_address(caller.peer)
        ticket = tickets[0]
        return OpenedSession(session_id, ticket.ticket_id, ticket.secret,
                             self._clock() + TICKET_LIFETIME, port, session.incoming.id,
                             resumed, self.incoming_share(), host, tuple(tickets[1:]))

    async def open_pull(self, caller: Caller, request: OpenRequest
                        ) -> tuple[str, ReceiveSession]:
        """A pull: this server's own transfer receives; its job opens the flow to the sender
        and attaches the session to it. Ends with `complete` like any session."""
        session_id, session, _resumed = await self._new_session(caller, request)
        return session_id, session

    def incoming_share(self) -> int:
        """One session's share of the server-wide incoming allowance, bit/s (0: no limit)."""
        if self._bandwidth is None:
            return 0
        _out, incoming_bps = self._bandwidth.allowance(outgoing_active=self._sending(),
                                                       incoming_active=True)
        return share(incoming_bps, len(self._live))

    async def _new_session(self, caller: Caller, request: OpenRequest
                           ) -> tuple[str, ReceiveSession, bool]:
        if caller.token.read_only:
            raise PermissionDenied("a read-only token cannot receive transfers")
        location = await self._sandboxes.locate_for(
            caller, request.destination_path, write=True, what="destination_path")
        incoming = self._store.find(request.sender_uid, request.sender_transfer)
        resumed = incoming is not None
        progress = Progress(bytes_total=request.bytes_total, files_total=request.files_total)
        if incoming is None:
            incoming = self._store.create(Incoming(
                id="", owner=caller.username, source_uid=request.sender_uid,
                source_name=request.sender_name, sender_transfer=request.sender_transfer,
                destination_root=location.root.name, destination_path=str(location.path),
                options=request.options, progress=progress, created_at=self._clock()))
        elif incoming.owner != caller.username:
            raise PermissionDenied("another user receives this transfer")
        else:
            incoming = replace(incoming, options=request.options, error=None,
                               state=TransferState.RUNNING, ended_at=0.0,
                               progress=replace(incoming.progress, bytes_total=request.bytes_total,
                                                files_total=request.files_total))
        for session_id, live in list(self._live.items()):
            if live.session.incoming.id == incoming.id:
                await self._end(session_id, TransferState.PAUSED, None)
        session = ReceiveSession(incoming, caller.principal, location.root, self._files,
                                 self._store, on_change=self._changed,
                                 on_file=partial(self._file_arrived, incoming, location),
                                 metrics=self._metrics, clock=self._clock)
        session_id = uuid.uuid4().hex
        self._live[session_id] = _Live(session, caller.username, location)
        self._changed(session.incoming)
        self._event("recv.transferStarted", session.incoming, location,
                    f"receiving incomingTransfers/{incoming.id} from "
                    f"{incoming.source_name or incoming.source_uid}"
                    + (" (resumed)" if resumed else ""), resumed=str(resumed).lower())
        return session_id, session, resumed

    def received(self, caller: Caller, session_id: str) -> list[FileCheckpoint]:
        """Files partly on disk from earlier sessions (their checkpointed ranges), and the
        large ones finished already."""
        live = self._session(caller, session_id)
        return self._store.checkpoints(live.session.incoming.id, complete=True)

    async def complete(self, caller: Caller, session_id: str, state: TransferState,
                       error: Failure | None) -> tuple[Incoming, list[tuple[str, Failure]]]:
        live = self._session(caller, session_id)
        failures = list(live.session.failures)
        incoming = await self._end(session_id, state, error)
        return incoming, failures

    def get(self, caller: Caller, incoming_id: str) -> Incoming:
        incoming = self._store.get(incoming_id)
        if incoming is None or not caller.can_see(incoming.owner):
            raise NotFound(f"incomingTransfers/{incoming_id} not found")
        return incoming

    def list(self, caller: Caller, *, owner: str, after: str, limit: int) -> list[Incoming]:
        return self._store.list(owner=caller.owner_scope(owner), after=after, limit=limit)

    def sources(self, caller: Caller, *, owner: str, after: str, limit: int, now: float
                ) -> list[Source]:
        """The servers that sent here, as `owner` (scoped like `list`) sees them."""
        return self._store.sources(owner=caller.owner_scope(owner), after=after, limit=limit,
                                   now=now)

    async def close(self) -> None:
        for session_id in list(self._live):
            await self._end(session_id, TransferState.PAUSED, None)

    @property
    def receiving(self) -> bool:
        return bool(self._live)

    def _session(self, caller: Caller, session_id: str) -> _Live:
        live = self._live.get(session_id)
        if live is None or live.owner != caller.username:
            raise NotFound(f"no receive session {session_id!r}; open a new one")
        return live

    async def _end(self, session_id: str, state: TransferState,
                   error: Failure | None) -> Incoming:
        live = self._live.pop(session_id)
        for ticket_id in live.ticket_ids:
            self._endpoint.withdraw(ticket_id)
        if state is TransferState.COMPLETED and live.session.failures:
            state = TransferState.FAILED
            path, first = live.session.failures[0]
            error = Failure(first.reason, first.message, path)
        if state not in (TransferState.COMPLETED, TransferState.FAILED,
                         TransferState.CANCELLED, TransferState.PAUSED):
            raise FailedPrecondition(f"a session cannot end {state.value}")
        if state.terminal:
            self._metrics.finished.labels("incoming", state.value).inc()
        incoming = await live.session.close(state, error)
        self._event(_RECEIVE_EVENTS[state], incoming, live.location,
                    f"incomingTransfers/{incoming.id} {state.value}"
                    + (f": {error.message}" if error else ""),
                    Severity.ERROR if state is TransferState.FAILED else Severity.INFO)
        return incoming

    def _event(self, kind: str, incoming: Incoming, location: Location, message: str,
               severity: Severity = Severity.INFO, **extra: str) -> None:
        if self._events is None:
            return
        progress, error = incoming.progress, incoming.error
        self._events.record(kind, message, now=self._clock(), severity=severity,
                            username=incoming.owner, subject=f"incomingTransfers/{incoming.id}",
                            attributes={
            "transferId": incoming.id, "owner": incoming.owner,
            "sourceServerUid": incoming.source_uid, "sourceName": incoming.source_name,
            "sourceAddress": incoming.source_address,
            "senderTransfer": incoming.sender_transfer,
            "destinationPath": str(location.path), "localPath": location.host_path,
            "state": incoming.state.value, "bytesTotal": str(progress.bytes_total),
            "bytesDone": str(progress.bytes_done), "filesTotal": str(progress.files_total),
            "filesDone": str(progress.files_done), "filesFailed": str(progress.files_failed),
            "errorReason": error.reason if error else "",
            "errorMessage": error.message if error else "", **extra})

    def _file_arrived(self, incoming: Incoming, location: Location, path: str,
                      size: int) -> None:
        """One event per verified file, announced to listeners (never stored: a tree of a
        million files would flood the log)."""
        if self._events is None or not self._events.wants("recv.fileComplete"):
            return
        relative = parse_path(path, what="file path")
        placed = Location(location.root, location.path / relative)
        self._events.announce(
            "recv.fileComplete", f"{printable(str(placed.path))} arrived",
            now=self._clock(), username=incoming.owner,
            subject=f"incomingTransfers/{incoming.id}",
            attributes={"transferId": incoming.id, "owner": incoming.owner,
                        "path": str(relative).lstrip("/"),
                        "destinationPath": str(placed.path), "localPath": placed.host_path,
                        "sizeBytes": str(size), "sourceName": incoming.source_name})

    def _changed(self, incoming: Incoming) -> None:
        self._store.save(incoming)
        if self._on_change is not None:
            self._on_change(incoming)
