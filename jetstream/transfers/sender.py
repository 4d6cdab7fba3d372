"""One push: read the manifest's files as their owner and stream them to a destination.

The control plane (gRPC over TLS, pinned) opens a receive session on the destination and
learns what it already holds; the data channel then carries, without a round trip per
file, a header record, the bytes and a trailer with the digest for every entry. The
receiver answers each file with an outcome; files it could not verify are sent again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from google.protobuf.duration_pb2 import Duration

from jetstream.auth.principal import Principal, lookup_principal
from jetstream.client.remote import RemoteServer, connect
from jetstream.datachannel.config import DataChannelConfig
from jetstream.datachannel.congestion import RatePolicy as CorePolicy
from jetstream.datachannel.events import ConnectionTerminated, Event, StreamDataReceived
from jetstream.datachannel.handshake import SessionTicket
from jetstream.datachannel.rangeset import RangeSet
from jetstream.errors import FailedPrecondition, JetstreamError, PermissionDenied, Unavailable
from jetstream.observability.transfer_metrics import TransferMetrics
from jetstream.services.destinations import Destination, DestinationService
from jetstream.services.manifests import ManifestEntry, ManifestService
from jetstream.services.sandboxes import Sandboxes
from jetstream.storage import userfs
from jetstream.storage.paths import RelPath
from jetstream.storage.sandbox import Location, Sandbox
from jetstream.transfers import records
from jetstream.transfers.hashing import HashAlgorithm, new_hasher
from jetstream.transfers.model import (
    Failure,
    Progress,
    RateLimits,
    RatePolicy,
    Transfer,
    TransferState,
)
from jetstream.transfers.service import JobResult
from jetstream.transfers.store import FileRecord
from jetstream.transport.endpoint import DataEndpoint, DataLink
from jetstream.transport.sockets import bind_udp
from jetstream.v1 import common_pb2, peer_pb2, stream_records_pb2

log = logging.getLogger(__name__)

CHUNK = 4 << 20
SMALL_FILE = 256 << 10
SMALL_BATCH_BYTES = 4 << 20
SMALL_BATCH_FILES = 128
MAX_RESENDS = 2
MAX_FILES_IN_FLIGHT = 20_000
ESTABLISH_TIMEOUT = 15.0
REPORT_EVERY = 0.5

_HASH_WIRE = {HashAlgorithm.BLAKE3: common_pb2.HASH_ALGORITHM_BLAKE3,
              HashAlgorithm.SHA256: common_pb2.HASH_ALGORITHM_SHA256}
_OVERWRITE_WIRE = {"never": common_pb2.OVERWRITE_POLICY_NEVER,
                   "always": common_pb2.OVERWRITE_POLICY_ALWAYS,
                   "if_different": common_pb2.OVERWRITE_POLICY_IF_DIFFERENT,
                   "resume": common_pb2.OVERWRITE_POLICY_RESUME}
_CORE_POLICY = {RatePolicy.FAIR: CorePolicy.FAIR, RatePolicy.FIXED: CorePolicy.FIXED,
                RatePolicy.LOW_PRIORITY: CorePolicy.LOW_PRIORITY}


@dataclass(frozen=True)
class SenderContext:
    """What every push needs from the rest of the server."""

    destinations: DestinationService
    manifests: ManifestService
    files: userfs.UserFS
    sandboxes: Sandboxes
    server_uid: str
    server_name: str
    datachannel: DataChannelConfig = field(default_factory=DataChannelConfig)
    metrics: TransferMetrics = field(default_factory=TransferMetrics)


@dataclass(frozen=True)
class _Read:
    """A small file read whole; `changed`: it changed while it was read."""

    entry: ManifestEntry
    data: bytes
    mtime_ns: int
    changed: bool


def data_channel_config(base: DataChannelConfig, rate: RateLimits,
                        destination_max_bps: int) -> DataChannelConfig:
    ceilings = [r for r in (rate.max_bps, destination_max_bps) if r]
    return replace(
        base,
        rate_policy=_CORE_POLICY[rate.policy],
        min_rate=rate.min_bps,
        target_rate=rate.target_bps or None,
        max_rate=min(ceilings) if ceilings else None,
    )


class PushJob:
    def __init__(self, transfer: Transfer, report: Callable[[Progress, str], None],
                 record: Callable[[list[FileRecord]], None], context: SenderContext) -> None:
        self._transfer = transfer
        self._report = report
        self._record = record
        self._finished: list[FileRecord] = []
        self._digests: dict[int, bytes] = {}
        self._ctx = context
        self._rate = transfer.options.rate
        self._link: DataLink | None = None
        self._endpoint: DataEndpoint | None = None
        self._again: list[ManifestEntry] = []
        self._last_attempt = False
        self._outcome_arrived = asyncio.Event()
        self._assembler = records.StreamAssembler()
        self._reader = records.RecordReader(stream_records_pb2.ReceiverRecord)
        self._terminated: ConnectionTerminated | None = None
        self._sent: dict[int, ManifestEntry] = {}
        """Files awaiting the receiver's verdict, by file id."""
        self._next_file_id = 0
        self._progress = transfer.progress
        self._bytes_confirmed = 0
        self._bytes_resumed = 0
        self._counts = {"done": 0, "failed": 0, "skipped": 0}
        self._first_failure: Failure | None = None
        self._current = ""
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

    def _config(self, destination_max_bps: int) -> DataChannelConfig:
        caps = [c for c in (destination_max_bps, self._server_cap, self._receiver_cap) if c]
        return data_channel_config(self._ctx.datachannel, self._rate, min(caps) if caps else 0)

    def _apply_rate(self) -> None:
        link = self._link
        if link is None or not link.established.done() or link.established.exception():
            return
        destination = self._ctx.destinations.peek(self._transfer.destination_id)
        config = self._config(destination.max_rate_bps if destination else 0)
        link.connection.set_rate_limits(config.rate_limits())

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
        async with connect(destination.endpoint, plaintext=destination.plaintext,
                           pinned=destination.pinned_fingerprint or None,
                           token=destination.token_secret) as remote:
            opened = await self._open_session(remote, destination, manifest.file_count,
                                              manifest.dir_count, manifest.total_bytes)
            held = await self._received_state(remote, opened.session_id)
            reporter = asyncio.create_task(self._report_loop())
            try:
                await self._connect(destination, opened)
                await self._send_all(principal, sandbox, held)
                outcome = peer_pb2.SESSION_OUTCOME_COMPLETED
            except asyncio.CancelledError:
                await self._end_session(remote, opened.session_id, self._halt_outcome)
                raise
            except JetstreamError as exc:
                await self._end_session(remote, opened.session_id,
                                        peer_pb2.SESSION_OUTCOME_FAILED, str(exc))
                raise
            finally:
                reporter.cancel()
                self._close_link()
            summary = await remote.call(remote.peer.CompleteReceiveSession,
                                        peer_pb2.CompleteReceiveSessionRequest(
                                            session_id=opened.session_id, outcome=outcome))
        self._publish("completed")
        failure = self._first_failure
        if failure is None and summary.files_failed:
            first = summary.failed_files[0] if summary.failed_files else None
            failure = Failure(first.error.reason if first else "FILES_FAILED",
                              first.error.message if first else "files failed at the receiver",
                              first.path if first else "")
        return JobResult(self._progress, failure)

    # --- control plane -----------------------------------------------------------------------

    async def _open_session(self, remote: RemoteServer, destination: Destination,
                            files: int, dirs: int, total: int
                            ) -> peer_pb2.OpenReceiveSessionResponse:
        info, _rtt = await remote.server_info()
        if destination.pinned_server_uid and info.server_uid != destination.pinned_server_uid:
            raise PermissionDenied(
                f"{destination.endpoint.target} is server {info.server_uid}, not the pinned "
                f"{destination.pinned_server_uid}"
            )
        options = self._transfer.options
        request = peer_pb2.OpenReceiveSessionRequest(
            sender_transfer=f"transfers/{self._transfer.id}",
            sender_server_uid=self._ctx.server_uid,
            sender_display_name=self._ctx.server_name,
            manifest_summary=peer_pb2.ManifestSummary(file_count=files, dir_count=dirs,
                                                      total_bytes=total),
            destination_path=self._transfer.destination_path,
            overwrite_policy=_OVERWRITE_WIRE[options.overwrite.value],
            hash_algorithm=_HASH_WIRE[options.hash_algorithm],
            checkpoint_interval=Duration(seconds=int(options.checkpoint_interval),
                                         nanos=int(options.checkpoint_interval % 1 * 1e9)),
        )
        return await remote.call(remote.peer.OpenReceiveSession, request)

    async def _received_state(self, remote: RemoteServer, session_id: str
                              ) -> dict[str, tuple[int, int, RangeSet]]:
        """Path -> (size, mtime_ns, ranges) the receiver holds from earlier sessions."""
        held: dict[str, tuple[int, int, RangeSet]] = {}
        try:
            async for reply in remote.peer.QueryReceivedState(
                peer_pb2.QueryReceivedStateRequest(session_id=session_id),
                metadata=remote.metadata, timeout=60,
            ):
                state = reply.file
                ranges = RangeSet((r.offset, r.offset + r.length) for r in state.received_ranges)
                held[state.path] = (state.size_bytes, state.modify_time.ToNanoseconds(), ranges)
        except Exception as exc:  # noqa: BLE001 - grpc errors: resume is an optimisation
            log.warning("transfer %s: no resume state: %s", self._transfer.id, exc)
        return held

    async def _end_session(self, remote: RemoteServer, session_id: str, outcome: int,
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

    # --- data channel ------------------------------------------------------------------------

    async def _connect(self, destination: Destination,
                       opened: peer_pb2.OpenReceiveSessionResponse) -> None:
        if len(opened.ticket) != 48:
            raise Unavailable(f"{destination.endpoint.target} sent a malformed session ticket")
        ticket = SessionTicket(bytes(opened.ticket[:16]), bytes(opened.ticket[16:]))
        host = opened.receiver_host or destination.host
        port = destination.udp_port or opened.receiver_udp_port
        try:
            family, _, _, _, address = (await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_DGRAM))[0]
        except OSError as exc:
            raise Unavailable(f"cannot resolve {host}: {exc}") from None
        bind = "::" if family == socket.AF_INET6 else "0.0.0.0"
        self._receiver_cap = opened.params.max_rate_bps
        config = self._config(destination.max_rate_bps)
        self._endpoint = DataEndpoint(bind_udp(bind, destination.local_udp_port), config)
        link = self._endpoint.connect((address[0], address[1]), ticket)
        link.on_event = self._on_event
        self._link = link
        try:
            await asyncio.wait_for(asyncio.shield(link.established), ESTABLISH_TIMEOUT)
        except TimeoutError:
            raise Unavailable(
                f"no data-channel answer from {host} UDP {port} within {ESTABLISH_TIMEOUT:.0f} s"
                " (is the UDP port open?)"
            ) from None
        self._apply_rate()  # limits that changed while the handshake ran

    def _close_link(self) -> None:
        if self._link is not None:
            self._link.close(0, "done")
        if self._endpoint is not None:
            endpoint = self._endpoint
            asyncio.get_running_loop().call_later(1.0, endpoint.close)
        self._link = self._endpoint = None

    def _on_event(self, event: Event) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id == records.RECEIVER_STREAM:
            data = self._assembler.add(event.offset, event.data)
            assert self._link is not None
            self._link.consumed(len(event.data))
            for record in self._reader.feed(data):
                self._settle(record.outcome)
                self._outcome_arrived.set()
        elif isinstance(event, ConnectionTerminated):
            self._terminated = event
            self._outcome_arrived.set()

    def _write_record(self, record: stream_records_pb2.SenderRecord) -> None:
        assert self._link is not None
        self._link.send(records.SENDER_STREAM, records.frame(record))

    # --- files -------------------------------------------------------------------------------

    async def _send_all(self, principal: Principal, sandbox: Sandbox,
                        held: dict[str, tuple[int, int, RangeSet]]) -> None:
        entries: Iterator[ManifestEntry] = self._ctx.manifests.iter_entries(
            self._transfer.manifest_id)  # streamed: a million entries never sit in memory
        for attempt in range(MAX_RESENDS + 1):
            self._last_attempt = attempt == MAX_RESENDS
            await self._send_entries(principal, sandbox, held, entries)
            await self._await_outcomes(0)
            if not self._again:
                break
            entries, held, self._again = iter(self._again), {}, []
        self._write_record(stream_records_pb2.SenderRecord(
            end=stream_records_pb2.EndOfFiles(file_count=self._next_file_id)))

    async def _send_entries(self, principal: Principal, sandbox: Sandbox,
                            held: dict[str, tuple[int, int, RangeSet]],
                            entries: Iterator[ManifestEntry]) -> None:
        batch: list[ManifestEntry] = []
        batch_bytes = 0
        for entry in entries:
            if entry.kind == "file" and entry.size <= SMALL_FILE:
                batch.append(entry)
                batch_bytes += entry.size
                if len(batch) >= SMALL_BATCH_FILES or batch_bytes >= SMALL_BATCH_BYTES:
                    await self._send_small(principal, sandbox, batch)
                    batch, batch_bytes = [], 0
                continue
            if batch:
                await self._send_small(principal, sandbox, batch)
                batch, batch_bytes = [], 0
            if entry.kind == "directory":
                await self._make_room()
                self._header(entry)
            else:
                await self._send_large(principal, sandbox, entry, held.get(entry.dest_path))
        if batch:
            await self._send_small(principal, sandbox, batch)

    async def _make_room(self) -> None:
        """Bound the files awaiting a verdict, so a huge tree needs bounded memory."""
        if len(self._sent) >= MAX_FILES_IN_FLIGHT:
            await self._await_outcomes(MAX_FILES_IN_FLIGHT // 2)

    def _header(self, entry: ManifestEntry, size: int = 0, mtime_ns: int | None = None) -> int:
        """Announce an entry; a file's size and mtime are as read now, not as scanned."""
        file_id = self._next_file_id
        self._next_file_id += 1
        self._sent[file_id] = entry
        kind = (common_pb2.FILE_KIND_DIRECTORY if entry.kind == "directory"
                else common_pb2.FILE_KIND_FILE)
        self._write_record(stream_records_pb2.SenderRecord(header=stream_records_pb2.FileHeader(
            file_id=file_id, path=entry.dest_path, kind=kind, size_bytes=size,
            mode=entry.mode, modify_time_ns=entry.mtime_ns if mtime_ns is None else mtime_ns)))
        self._current = entry.dest_path
        return file_id

    def _trailer(self, file_id: int, digest: bytes, changed: bool) -> None:
        self._digests[file_id] = digest
        self._write_record(stream_records_pb2.SenderRecord(trailer=stream_records_pb2.FileTrailer(
            file_id=file_id, digest=digest, source_changed=changed)))

    async def _send_small(self, principal: Principal, sandbox: Sandbox,
                          batch: list[ManifestEntry]) -> None:
        locations = [_location(sandbox, e) for e in batch]
        reads = await self._ctx.files.run(principal, _read_small_files, batch, locations)
        link = self._require_link()
        for read in reads:
            if isinstance(read, Failure):
                self._fail_local(read, next(e for e in batch if e.dest_path == read.path))
                continue
            await link.wait_for_space(len(read.data) + 4096)
            await self._make_room()
            file_id = self._header(read.entry, len(read.data), read.mtime_ns)
            link.send(records.file_stream(file_id), read.data, end_stream=True)
            hasher = new_hasher(self._transfer.options.hash_algorithm)
            hasher.update(read.data)
            self._trailer(file_id, hasher.digest(), read.changed)

    async def _send_large(self, principal: Principal, sandbox: Sandbox, entry: ManifestEntry,
                          held: tuple[int, int, RangeSet] | None) -> None:
        location = _location(sandbox, entry)
        try:
            handle = await self._ctx.files.run(principal, userfs.open_read, location)
        except JetstreamError as exc:
            self._fail_local(Failure("SOURCE_UNREADABLE", str(exc), entry.dest_path), entry)
            return
        link = self._require_link()
        try:
            before = os.fstat(handle.fileno())
            size = before.st_size
            same = held is not None and held[:2] == (size, before.st_mtime_ns)
            skip = held[2] if held is not None and same else RangeSet()
            self._bytes_resumed += sum(stop - start for start, stop in skip)
            file_id = self._header(entry, size, before.st_mtime_ns)
            stream = records.file_stream(file_id)
            hasher = new_hasher(self._transfer.options.hash_algorithm)
            offset = 0
            while offset < size:
                data = await asyncio.to_thread(os.pread, handle.fileno(), CHUNK, offset)
                if not data:
                    break
                hasher.update(data)
                for start, stop in _missing(skip, offset, offset + len(data)):
                    await link.wait_for_space(stop - start)
                    link.send(stream, memoryview(data)[start - offset:stop - offset],
                              offset=start)
                offset += len(data)
            link.send(stream, b"", offset=size, end_stream=True)
            after = os.fstat(handle.fileno())
            changed = offset != size or _identity(before) != _identity(after)
            self._trailer(file_id, hasher.digest(), changed)
        finally:
            handle.close()

    def _require_link(self) -> DataLink:
        if self._terminated is not None or self._link is None:
            why = self._terminated.reason if self._terminated else "not connected"
            raise Unavailable(f"data channel lost: {why}")
        return self._link

    def _fail_local(self, failure: Failure, entry: ManifestEntry | None = None) -> None:
        if entry is not None:
            self._finished.append((entry.seq, "failed", 0, b"", failure.message, time.time()))
        self._counts["failed"] += 1
        self._first_failure = self._first_failure or failure

    async def _await_outcomes(self, at_most: int) -> None:
        """Wait until at most `at_most` files await the receiver's verdict."""
        while len(self._sent) > at_most:
            if self._terminated is not None:
                raise Unavailable(f"data channel lost: {self._terminated.reason}")
            self._outcome_arrived.clear()
            await self._outcome_arrived.wait()

    def _settle(self, outcome: stream_records_pb2.FileOutcome) -> None:
        """Account one file's verdict; keep it for another attempt if it may succeed then."""
        entry = self._sent.pop(outcome.file_id, None)
        digest = self._digests.pop(outcome.file_id, b"")
        if entry is None:
            return
        result = "skipped" if outcome.skipped else "ok" if outcome.ok else "failed"
        if outcome.ok:
            self._counts["skipped" if outcome.skipped else "done"] += 1
            self._bytes_confirmed += entry.size
        elif outcome.retry and not self._last_attempt:
            self._again.append(entry)
            return
        else:
            self._counts["failed"] += 1
            self._first_failure = self._first_failure or Failure(
                outcome.error.reason or "FILE_FAILED", outcome.error.message,
                entry.dest_path)
        self._ctx.metrics.files.labels("outgoing", result).inc()
        state = "skipped" if outcome.skipped else "done" if outcome.ok else "failed"
        self._finished.append((entry.seq, state, entry.size if outcome.ok else 0,
                               digest if outcome.ok else b"", outcome.error.message,
                               time.time()))

    # --- progress ----------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        last_bytes, last_retransmitted, last_time = 0, 0, time.monotonic()
        metrics = self._ctx.metrics
        while True:
            await asyncio.sleep(REPORT_EVERY)
            now = time.monotonic()
            stats = self._link.statistics() if self._link is not None else None
            sent = stats.stream_bytes_sent if stats else last_bytes
            retransmitted = stats.bytes_retransmitted if stats else last_retransmitted
            rate = (sent - last_bytes) * 8 / max(now - last_time, 1e-3)
            metrics.bytes.labels("outgoing").inc(max(sent - last_bytes, 0))
            metrics.retransmitted.inc(max(retransmitted - last_retransmitted, 0))
            last_bytes, last_retransmitted, last_time = sent, retransmitted, now
            self._publish("sending", rate=rate)

    def _flush_records(self) -> None:
        if self._finished:
            self._record(self._finished)
            self._finished = []

    def _publish(self, status: str, *, rate: float = 0.0) -> None:
        self._flush_records()
        stats = self._link.statistics() if self._link is not None else None
        previous = self._progress
        self._progress = Progress(
            bytes_total=previous.bytes_total,
            bytes_done=max(self._bytes_confirmed, min(
                self._bytes_resumed + (stats.stream_bytes_sent if stats else 0),
                previous.bytes_total)),
            files_total=previous.files_total,
            files_done=self._counts["done"],
            files_failed=self._counts["failed"],
            files_skipped=self._counts["skipped"],
            rate_bps=rate,
            rtt=stats.smoothed_rtt if stats else previous.rtt,
            loss_ratio=(stats.packets_lost / stats.packets_sent
                        if stats and stats.packets_sent else previous.loss_ratio),
            bytes_retransmitted=stats.bytes_retransmitted if stats
            else previous.bytes_retransmitted,
            bytes_on_wire=stats.bytes_sent if stats else previous.bytes_on_wire,
            bytes_resumed=self._bytes_resumed,
            current_path=self._current,
        )
        self._report(self._progress, status)


def _location(sandbox: Sandbox, entry: ManifestEntry) -> Location:
    root = sandbox.root(entry.source_root or None)
    parts = tuple(p for p in entry.source_path.split("/") if p)
    return Location(root, RelPath(parts))


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _missing(have: RangeSet, start: int, stop: int) -> Iterator[tuple[int, int]]:
    """The parts of [start, stop) not in `have`."""
    cursor = start
    for low, high in have:
        if high <= cursor:
            continue
        if low >= stop:
            break
        if low > cursor:
            yield cursor, low
        cursor = max(cursor, high)
    if cursor < stop:
        yield cursor, stop


def _read_small_files(entries: list[ManifestEntry], locations: list[Location]
                      ) -> list[_Read | Failure]:
    """Runs as the owner: read each small file whole and note whether it changed."""
    out: list[_Read | Failure] = []
    for entry, location in zip(entries, locations, strict=True):
        try:
            handle = userfs.open_read(location)
        except JetstreamError as exc:
            out.append(Failure("SOURCE_UNREADABLE", str(exc), entry.dest_path))
            continue
        with handle:
            before = os.fstat(handle.fileno())
            data = handle.read(before.st_size + 1)
            after = os.fstat(handle.fileno())
        changed = len(data) != before.st_size or _identity(before) != _identity(after)
        out.append(_Read(entry, data, before.st_mtime_ns, changed))
    return out
