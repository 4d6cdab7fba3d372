"""One push: this server sends a manifest's files to a destination.

The control plane (gRPC over TLS, pinned) opens a receive session on the destination and
learns what it already holds; this server then opens the data channel and the shared
sending half (filesender) streams the files. The session ends with CompleteReceiveSession,
whose answer says which files the receiver could not verify.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.duration_pb2 import Duration

from jetstream.auth.principal import lookup_principal
from jetstream.client.remote import RemoteServer
from jetstream.datachannel.config import DataChannelConfig
from jetstream.datachannel.grouprate import flow_count, follower_config, leader_config
from jetstream.errors import FailedPrecondition, JetstreamError, PermissionDenied
from jetstream.observability.transfer_metrics import TransferMetrics
from jetstream.services.destinations import Destination, DestinationService
from jetstream.services.manifests import ManifestService
from jetstream.services.sandboxes import Sandboxes
from jetstream.storage import userfs
from jetstream.transfers import peerwire
from jetstream.transfers.filesender import FileSender, SendSpec, data_channel_config
from jetstream.transfers.flow import Flow, FurtherFlow, open_flow, open_further_flow
from jetstream.transfers.hashing import HashAlgorithm
from jetstream.transfers.model import (
    Failure,
    Progress,
    RateLimits,
    Transfer,
    TransferState,
)
from jetstream.transfers.peerwire import Held
from jetstream.transfers.service import JobResult
from jetstream.transfers.store import FileRecord
from jetstream.transport.endpoint import DataLink
from jetstream.v1 import common_pb2, peer_pb2, server_pb2

log = logging.getLogger(__name__)

HASH_WIRE = {HashAlgorithm.BLAKE3: common_pb2.HASH_ALGORITHM_BLAKE3,
             HashAlgorithm.SHA256: common_pb2.HASH_ALGORITHM_SHA256}
_OVERWRITE_WIRE = {"never": common_pb2.OVERWRITE_POLICY_NEVER,
                   "always": common_pb2.OVERWRITE_POLICY_ALWAYS,
                   "if_different": common_pb2.OVERWRITE_POLICY_IF_DIFFERENT,
                   "resume": common_pb2.OVERWRITE_POLICY_RESUME}


@dataclass(frozen=True)
class SenderContext:
    """What every transfer job needs from the rest of the server."""

    destinations: DestinationService
    manifests: ManifestService
    files: userfs.UserFS
    sandboxes: Sandboxes
    server_uid: str
    server_name: str
    datachannel: DataChannelConfig = field(default_factory=DataChannelConfig)
    metrics: TransferMetrics = field(default_factory=TransferMetrics)
    path_rates: dict[str, float] = field(default_factory=dict)
    """Bit/s the last push to each destination delivered (since this server started): how
    many flows the next one needs."""


MEASURE_AFTER = 2.0
"""Seconds of data a push must last before its rate says something about the path."""


async def check_identity(remote: RemoteServer, destination: Destination
                         ) -> server_pb2.ServerInfo:
    """The remote's description; PermissionDenied unless it is the server pinned for the
    destination."""
    info, _rtt = await remote.server_info()
    if destination.pinned_server_uid and info.server_uid != destination.pinned_server_uid:
        raise PermissionDenied(
            f"{destination.endpoint.target} is server {info.server_uid}, not the pinned "
            f"{destination.pinned_server_uid}"
        )
    return info


class PushJob:
    def __init__(self, transfer: Transfer, report: Callable[[Progress, str], None],
                 record: Callable[[list[FileRecord]], None], context: SenderContext) -> None:
        self._transfer = transfer
        self._report = report
        self._record = record
        self._ctx = context
        self._rate = transfer.options.rate
        self._flow: Flow | None = None
        self._further: list[FurtherFlow] = []
        self._flows = 1
        """Flows of the current session: the first and the further ones."""
        self._sender: FileSender | None = None
        self._progress = transfer.progress
        self._halt_outcome = peer_pb2.SESSION_OUTCOME_PAUSED
        self._server_cap = 0
        self._receiver_cap = 0
        """What the receiver allows us (its server-wide incoming share), bit/s."""

    @property
    def progress(self) -> Progress:
        return self._progress

    def halt(self, state: TransferState) -> None:
        self._halt_outcome = (peer_pb2.SESSION_OUTCOME_CANCELLED
                              if state is TransferState.CANCELLED
                              else peer_pb2.SESSION_OUTCOME_PAUSED)

    def set_rate(self, rate: RateLimits) -> None:
        self._rate = rate
        self._apply_rate()

    def set_server_cap(self, bps: int) -> None:
        """The share of the server-wide allowance this job may use now (0: no cap)."""
        if bps != self._server_cap:
            self._server_cap = bps
            self._apply_rate()

    def _config(self) -> DataChannelConfig:
        destination = self._ctx.destinations.peek(self._transfer.destination_id)
        caps = [c for c in (destination.max_rate_bps if destination else 0, self._server_cap,
                            self._receiver_cap) if c]
        return data_channel_config(self._ctx.datachannel, self._rate, min(caps) if caps else 0)

    def _apply_rate(self) -> None:
        """The first flow leads the group: it runs the controller at an N-th of the limits,
        the further flows follow it (`grouprate`)."""
        link = self._flow.link if self._flow is not None else None
        if link is None or not link.established.done() or link.established.exception():
            return
        link.connection.set_rate_limits(leader_config(self._config(), self._flows).rate_limits())

    def _wanted_flows(self, destination: Destination) -> int:
        """Flows to ask the receiver for: the transfer's choice, else one per
        `PER_FLOW_BPS` of the rate expected (its target or ceiling, else the most that its
        previous attempt or the last push to the destination reached), at most one per core
        but one. One through a fixed local UDP port, which one socket holds."""
        if destination.local_udp_port:
            return 1
        rate = self._rate
        expected = rate.target_bps or rate.max_bps or max(
            self._transfer.progress.rate_bps, self._ctx.path_rates.get(destination.id, 0.0))
        return flow_count(os.cpu_count() or 1, expected, self._transfer.options.flows)

    async def run(self) -> JobResult:
        transfer = self._transfer
        destination = self._ctx.destinations.peek(transfer.destination_id)
        if destination is None:
            raise FailedPrecondition(f"destinations/{transfer.destination_id} was deleted")
        manifest = self._ctx.manifests.peek(transfer.manifest_id)
        if manifest is None:
            raise FailedPrecondition(f"manifests/{transfer.manifest_id} was deleted")
        principal = await asyncio.to_thread(lookup_principal, transfer.owner)
        sandbox = self._ctx.sandboxes.for_principal(principal)
        self._progress = Progress(bytes_total=manifest.total_bytes,
                                  files_total=manifest.file_count + manifest.dir_count)
        async with self._ctx.destinations.open(destination) as remote:
            # One round trip for both: the TLS pin already proved whom we talk to, and a
            # session opened on a server that is not the pinned one is left to expire.
            _info, opened = await asyncio.gather(
                check_identity(remote, destination),
                self._open_session(remote, manifest.file_count, manifest.dir_count,
                                   manifest.total_bytes, self._wanted_flows(destination)))
            held = (await self._received_state(remote, opened.session_id) if opened.resumed
                    else {})  # a new incoming transfer holds no checkpoints yet
            spec = SendSpec(transfer.manifest_id, transfer.options.hash_algorithm, principal,
                            sandbox, held)
            reporter: asyncio.Task[None] | None = None
            try:
                self._receiver_cap = opened.params.max_rate_bps
                self._flows = 1 + len(opened.extra_tickets)
                self._flow = await open_flow(destination, opened.receiver_host,
                                             opened.receiver_udp_port, opened.ticket,
                                             leader_config(self._config(), self._flows),
                                             lambda link: self._attach(link, spec))
                self._apply_rate()  # limits that changed while the handshake ran
                sender = self._sender
                assert sender is not None
                sender.spread(await self._open_further(destination, opened))
                reporter = asyncio.create_task(sender.report_loop(self._publish))
                started = time.monotonic()
                await sender.send_all()
                self._measured(destination, time.monotonic() - started)
                outcome = peer_pb2.SESSION_OUTCOME_COMPLETED
            except asyncio.CancelledError:
                await self._end_session(remote, opened.session_id, self._halt_outcome)
                raise
            except JetstreamError as exc:
                await self._end_session(remote, opened.session_id,
                                        peer_pb2.SESSION_OUTCOME_FAILED, str(exc))
                raise
            finally:
                if reporter is not None:
                    reporter.cancel()
                if self._flow is not None:
                    self._flow.close()
                further, self._further = self._further, []
                await asyncio.shield(asyncio.gather(*(flow.close() for flow in further)))
            summary = await remote.call(remote.peer.CompleteReceiveSession,
                                        peer_pb2.CompleteReceiveSessionRequest(
                                            session_id=opened.session_id, outcome=outcome))
        self._publish(0.0, "completed")
        failure = self._sender.first_failure if self._sender is not None else None
        if failure is None and summary.files_failed:
            first = summary.failed_files[0] if summary.failed_files else None
            failure = Failure(first.error.reason if first else "FILES_FAILED",
                              first.error.message if first else "files failed at the receiver",
                              first.path if first else "")
        return JobResult(self._progress, failure)

    def _measured(self, destination: Destination, seconds: float) -> None:
        """Remember the rate this session delivered, if it ran long enough to tell."""
        if seconds >= MEASURE_AFTER and self._sender is not None:
            sent = self._sender.progress(self._progress, 0.0)
            self._ctx.path_rates[destination.id] = (
                (sent.bytes_done - sent.bytes_resumed) * 8 / seconds)

    async def _open_further(self, destination: Destination,
                            opened: peer_pb2.OpenReceiveSessionResponse) -> list[FurtherFlow]:
        """The flows beyond the first the receiver granted, each in a thread of its own;
        all or none (a failure closes those opened and is raised)."""
        assert self._flow is not None
        config = follower_config(self._config(), self._flows)
        results = await asyncio.gather(*(
            open_further_flow(destination, opened.receiver_host, opened.receiver_udp_port,
                              ticket, config, self._flow.link, f"push-{self._transfer.id}-{i}")
            for i, ticket in enumerate(opened.extra_tickets, 1)), return_exceptions=True)
        self._further = [r for r in results if isinstance(r, FurtherFlow)]
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure
        return self._further

    def _attach(self, link: DataLink, spec: SendSpec) -> None:
        self._sender = FileSender(link, spec, manifests=self._ctx.manifests,
                                  files=self._ctx.files, metrics=self._ctx.metrics)

    # --- control plane -----------------------------------------------------------------------

    async def _open_session(self, remote: RemoteServer, files: int, dirs: int, total: int,
                            flows: int) -> peer_pb2.OpenReceiveSessionResponse:
        options = self._transfer.options
        request = peer_pb2.OpenReceiveSessionRequest(
            sender_transfer=f"transfers/{self._transfer.id}",
            sender_server_uid=self._ctx.server_uid,
            sender_display_name=self._ctx.server_name,
            manifest_summary=peer_pb2.ManifestSummary(file_count=files, dir_count=dirs,
                                                      total_bytes=total),
            destination_path=self._transfer.destination_path,
            overwrite_policy=_OVERWRITE_WIRE[options.overwrite.value],
            hash_algorithm=HASH_WIRE[options.hash_algorithm],
            checkpoint_interval=Duration(seconds=int(options.checkpoint_interval),
                                         nanos=int(options.checkpoint_interval % 1 * 1e9)),
            flows=flows,
        )
        return await remote.call(remote.peer.OpenReceiveSession, request)

    async def _received_state(self, remote: RemoteServer, session_id: str) -> Held:
        """What the receiver holds from earlier sessions."""
        states: list[peer_pb2.ReceivedFileState] = []
        try:
            async for reply in remote.peer.QueryReceivedState(
                peer_pb2.QueryReceivedStateRequest(session_id=session_id),
                metadata=remote.metadata, timeout=60,
            ):
                states.append(reply.file)
        except Exception as exc:  # noqa: BLE001 - grpc errors: resume is an optimisation
            log.warning("transfer %s: no resume state: %s", self._transfer.id, exc)
        return peerwire.held(states)

    async def _end_session(self, remote: RemoteServer, session_id: str,
                           outcome: peer_pb2.SessionOutcome.ValueType,
                           message: str = "") -> None:
        request = peer_pb2.CompleteReceiveSessionRequest(session_id=session_id, outcome=outcome)
        if message:
            request.error.CopyFrom(common_pb2.ErrorDetail(reason="SENDER_FAILED",
                                                          message=message))
        try:
            await asyncio.shield(asyncio.wait_for(
                remote.call(remote.peer.CompleteReceiveSession, request), 5))
        except (JetstreamError, TimeoutError, asyncio.CancelledError):
            pass

    # --- progress ----------------------------------------------------------------------------

    def _publish(self, rate: float, status: str = "sending") -> None:
        if self._sender is None:
            return
        finished = self._sender.take_finished()
        if finished:
            self._record(finished)
        self._progress = self._sender.progress(self._progress, rate)
        self._report(self._progress, status)
