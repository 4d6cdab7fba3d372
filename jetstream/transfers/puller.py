"""One pull: this server fetches paths from a destination and writes them here.

The job logs in to the remote server as the destination's user, has the manifest built
there (as that user, so the remote enforces its sandbox and read rights), and opens a send
session, handing over its own checkpoints so the sender skips what is already here. It
opens the UDP flow itself and receives with the same machinery as a push received here:
temporary names, verification, atomic renames, checkpoints. It ends the remote's session
with CompleteSendSession, reporting what it verified.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from jetstream.client.remote import RemoteServer
from jetstream.errors import FailedPrecondition, JetstreamError, NotFound, Unavailable
from jetstream.services.auth import acting_as
from jetstream.services.destinations import Destination
from jetstream.transfers import peerwire, records
from jetstream.transfers.flow import Flow, open_flow
from jetstream.transfers.model import (
    Failure,
    Progress,
    RateLimits,
    Transfer,
    TransferState,
    failure_reason,
)
from jetstream.transfers.peer import OpenRequest, ReceiveService
from jetstream.transfers.receiver import ReceiveSession
from jetstream.transfers.sender import HASH_WIRE, SenderContext, check_identity
from jetstream.transfers.service import JobResult
from jetstream.transport.endpoint import DataLink
from jetstream.v1 import common_pb2, manifests_pb2, peer_pb2, stream_records_pb2

CAPABILITY = "transfers.pull"
MANIFEST_TIMEOUT = 3600.0
REPORT_EVERY = 0.5
_OUTCOMES = {TransferState.PAUSED: peer_pb2.SESSION_OUTCOME_PAUSED,
             TransferState.CANCELLED: peer_pb2.SESSION_OUTCOME_CANCELLED,
             TransferState.FAILED: peer_pb2.SESSION_OUTCOME_FAILED,
             TransferState.COMPLETED: peer_pb2.SESSION_OUTCOME_COMPLETED}


class PullJob:
    def __init__(self, transfer: Transfer, report: Callable[[Progress, str], None],
                 remember_manifest: Callable[[str], None], context: SenderContext,
                 receive: ReceiveService) -> None:
        self._transfer = transfer
        self._report = report
        self._remember_manifest = remember_manifest
        self._ctx = context
        self._receive = receive
        self._rate = transfer.options.rate
        self._progress = transfer.progress
        self._halt_state = TransferState.PAUSED
        self._flow: Flow | None = None
        self._ceiling = 0
        """The destination's limit and our share of the incoming allowance (0: none)."""

    @property
    def progress(self) -> Progress:
        return self._progress

    def halt(self, state: TransferState) -> None:
        self._halt_state = state

    def set_rate(self, rate: RateLimits) -> None:
        """Tell the sender: the data channel that sends is at the other end."""
        self._rate = rate
        link = self._flow.link if self._flow is not None else None
        if link is not None and not link.terminated.done():
            link.send(records.RECEIVER_STREAM, records.frame(stream_records_pb2.ReceiverRecord(
                rate_limit=peerwire.rate_to_wire(self._rate))))

    def set_server_cap(self, bps: int) -> None:
        """Pulls use the incoming allowance, shared out when their session opens."""

    async def run(self) -> JobResult:
        transfer = self._transfer
        destination = self._ctx.destinations.peek(transfer.destination_id)
        if destination is None:
            raise FailedPrecondition(f"destinations/{transfer.destination_id} was deleted")
        # The owner's own rights (the API checked the creator's token).
        caller = await acting_as(transfer.owner, "pull transfer")
        async with self._ctx.destinations.open(destination) as remote:
            info = await check_identity(remote, destination)
            if CAPABILITY not in info.capabilities:
                raise FailedPrecondition(f"{destination.endpoint.target} cannot send pulls")
            self._report(self._progress, "building the manifest on the remote server")
            manifest = await self._remote_manifest(remote)
            if manifest.state != manifests_pb2.MANIFEST_STATE_COMPLETE:
                self._remember_manifest("")  # the next attempt builds it again
                return JobResult(self._progress, Failure(
                    "MANIFEST_FAILED", f"{destination.endpoint.target}: cannot list the files "
                    f"to fetch: {manifest.error.message or 'the manifest did not complete'}"))
            self._progress = replace(
                transfer.progress, bytes_total=manifest.total_bytes,
                files_total=manifest.file_count + manifest.dir_count, rate_bps=0.0)
            session_id, session = await self._receive.open_pull(caller, OpenRequest(
                sender_uid=info.server_uid, sender_name=info.display_name or info.hostname,
                sender_transfer=f"pull:transfers/{transfer.id}",
                destination_path=transfer.destination_path, options=transfer.options,
                files_total=self._progress.files_total, bytes_total=manifest.total_bytes))
            held = self._receive.received(caller, session_id)
            self._progress = replace(self._progress,
                                     bytes_resumed=sum(b - a for c in held for a, b in c.ranges))
            caps = [c for c in (destination.max_rate_bps, self._receive.incoming_share()) if c]
            self._ceiling = min(caps, default=0)
            state, error, sender_session = TransferState.FAILED, None, ""
            try:
                opened = await remote.call(remote.peer.OpenSendSession,
                                           peer_pb2.OpenSendSessionRequest(
                    receiver_transfer=f"transfers/{transfer.id}",
                    receiver_server_uid=self._ctx.server_uid,
                    receiver_display_name=self._ctx.server_name,
                    manifest=manifest.name,
                    hash_algorithm=HASH_WIRE[transfer.options.hash_algorithm],
                    params=peer_pb2.DataChannelParams(max_rate_bps=self._ceiling),
                    received_files=[peerwire.to_wire(c) for c in held],
                    rate_limit=peerwire.rate_to_wire(self._rate)))
                sender_session = opened.session_id
                await self._receive_all(destination, opened, session)
                state = TransferState.COMPLETED
            except asyncio.CancelledError:
                state = self._halt_state
                raise
            except JetstreamError as exc:
                error = Failure(failure_reason(exc), str(exc))
                raise
            finally:
                if self._flow is not None:
                    self._flow.close()
                incoming, failures = await asyncio.shield(
                    self._receive.complete(caller, session_id, state, error))
                if sender_session:
                    await self._end_session(remote, sender_session, incoming.state,
                                            incoming.progress.files_done, failures, error)
        self._progress = self._current(session, 0.0)
        self._report(self._progress, "completed")
        if not failures:
            return JobResult(self._progress)
        path, first = failures[0]
        return JobResult(self._progress, replace(first, path=first.path or path))

    async def _remote_manifest(self, remote: RemoteServer) -> manifests_pb2.Manifest:
        """The manifest built on the remote for this transfer (again if it was deleted),
        once its scan ended."""
        M = manifests_pb2
        name = f"manifests/{self._transfer.manifest_id}" if self._transfer.manifest_id else ""
        try:
            if name:
                await remote.call(remote.manifests.GetManifest, M.GetManifestRequest(name=name))
        except NotFound:
            name = ""
        if not name:
            spec = self._transfer.manifest_spec
            if spec is None:
                raise FailedPrecondition(f"transfers/{self._transfer.id} has no manifest_spec")
            made = await remote.call(remote.manifests.CreateManifest, M.CreateManifestRequest(
                manifest=M.Manifest(spec=peerwire.spec_to_wire(spec),
                                    labels={"pull": f"{self._ctx.server_name}/"
                                                    f"transfers/{self._transfer.id}"})))
            name = made.manifest.name
            self._remember_manifest(name.removeprefix("manifests/"))
        try:
            done = (await remote.manifests.WaitManifest(
                M.WaitManifestRequest(name=name), metadata=remote.metadata,
                timeout=MANIFEST_TIMEOUT)).manifest
        except Exception as exc:  # noqa: BLE001 - grpc errors: the remote is unreachable
            raise Unavailable(f"{remote.endpoint.target}: waiting for {name}: {exc}") from None
        return done

    async def _receive_all(self, destination: Destination,
                           opened: peer_pb2.OpenSendSessionResponse,
                           session: ReceiveSession) -> None:
        def attach(link: DataLink) -> None:
            peer = link.connection.peer_address
            session.attach(link, f"{peer[0]}:{peer[1]}" if peer else "")

        self._flow = await open_flow(destination, opened.sender_host, opened.sender_udp_port,
                                     opened.ticket, self._ctx.datachannel, attach)
        reporter = asyncio.create_task(self._report_loop(session))
        settled = asyncio.create_task(session.settled.wait())
        try:
            await asyncio.wait({settled, session.finished}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reporter.cancel()
            settled.cancel()
        if not session.settled.is_set():
            raise Unavailable(f"data channel lost: {session.finished.result()}")

    async def _end_session(self, remote: RemoteServer, session_id: str, state: TransferState,
                           verified: int, failures: list[tuple[str, Failure]],
                           error: Failure | None) -> None:
        request = peer_pb2.CompleteSendSessionRequest(
            session_id=session_id, outcome=_OUTCOMES[state], files_verified=verified,
            failed_files=[peer_pb2.FileVerification(path=path, error=common_pb2.ErrorDetail(
                reason=f.reason, message=f.message, path=path)) for path, f in failures[:1000]])
        if error is not None:
            request.error.CopyFrom(common_pb2.ErrorDetail(reason=error.reason,
                                                          message=error.message))
        try:
            await asyncio.shield(asyncio.wait_for(
                remote.call(remote.peer.CompleteSendSession, request), 5))
        except (JetstreamError, TimeoutError, asyncio.CancelledError):
            pass  # the sender ends the session itself when the flow closes

    async def _report_loop(self, session: ReceiveSession) -> None:
        last_bytes, last_time = 0, time.monotonic()
        while True:
            await asyncio.sleep(REPORT_EVERY)
            now = time.monotonic()
            done = session.progress.bytes_done
            rate = (done - last_bytes) * 8 / max(now - last_time, 1e-3)
            last_bytes, last_time = done, now
            self._progress = self._current(session, rate)
            self._report(self._progress, "receiving")

    def _current(self, session: ReceiveSession, rate: float) -> Progress:
        got = session.progress
        link = self._flow.link if self._flow is not None else None
        stats = link.statistics() if link is not None else None
        previous = self._progress
        return replace(
            previous,
            bytes_done=min(previous.bytes_resumed + got.bytes_done, previous.bytes_total),
            files_done=got.files_done, files_failed=got.files_failed,
            files_skipped=got.files_skipped, rate_bps=rate,
            rtt=stats.smoothed_rtt if stats else previous.rtt,
            bytes_on_wire=stats.bytes_received if stats else previous.bytes_on_wire)
