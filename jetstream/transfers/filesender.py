"""The sending half of a session: a manifest's files, read as their owner, onto a data link.

Shared by a push job (this server opened the session on the receiver) and a pull's send
session (the receiver opened it here). Per entry it writes a header record, the bytes and a
trailer with the digest, without a round trip per file; the receiver answers each file
with an outcome, and files it could not verify are sent again. Entries that cannot be read
here are reported to the receiver as well, so both ends count them as failed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from jetstream.auth.principal import Principal
from jetstream.datachannel.config import DataChannelConfig
from jetstream.datachannel.congestion import RatePolicy as CorePolicy
from jetstream.datachannel.events import ConnectionTerminated, Event, StreamDataReceived
from jetstream.datachannel.rangeset import RangeSet
from jetstream.datachannel.wire import ErrorCode
from jetstream.errors import JetstreamError, PermissionDenied, Unavailable
from jetstream.observability.transfer_metrics import TransferMetrics
from jetstream.services.manifests import ManifestEntry, ManifestService
from jetstream.storage import userfs
from jetstream.storage.paths import parse_path, printable
from jetstream.storage.sandbox import Location, Sandbox
from jetstream.transfers import peerwire, records
from jetstream.transfers.flow import FurtherFlow
from jetstream.transfers.hashing import HashAlgorithm, Hasher, new_hasher
from jetstream.transfers.model import Failure, Progress, RateLimits, RatePolicy
from jetstream.transfers.peerwire import Held
from jetstream.transfers.store import FileRecord
from jetstream.transfers.stripes import Stripes
from jetstream.transport.endpoint import DataLink
from jetstream.v1 import common_pb2, stream_records_pb2

log = logging.getLogger(__name__)

CHUNK = 4 << 20
SMALL_FILE = 256 << 10
SMALL_BATCH_BYTES = 4 << 20
SMALL_BATCH_FILES = 128
MAX_RESENDS = 2
MAX_FILES_IN_FLIGHT = 20_000
REPORT_EVERY = 0.5

_WIRE_KINDS = {"file": common_pb2.FILE_KIND_FILE, "directory": common_pb2.FILE_KIND_DIRECTORY,
               "symlink": common_pb2.FILE_KIND_SYMLINK}
_CORE_POLICY = {RatePolicy.FAIR: CorePolicy.FAIR, RatePolicy.FIXED: CorePolicy.FIXED,
                RatePolicy.LOW_PRIORITY: CorePolicy.LOW_PRIORITY}


def data_channel_config(base: DataChannelConfig, rate: RateLimits,
                        ceiling_bps: int) -> DataChannelConfig:
    """The sending side's data-channel settings for a transfer's rate limits and a further
    ceiling (destination, server-wide share, the other side's answer; 0: none). A ceiling
    below the transfer's floor lowers the floor: the settings stay usable."""
    ceilings = [r for r in (rate.max_bps, ceiling_bps) if r]
    ceiling = min(ceilings) if ceilings else None
    return replace(
        base,
        rate_policy=_CORE_POLICY[rate.policy],
        min_rate=rate.min_bps if ceiling is None else min(rate.min_bps, ceiling),
        target_rate=rate.target_bps or None,
        max_rate=ceiling,
    )


@dataclass(frozen=True)
class SendSpec:
    """What to send and as whom."""

    manifest_id: str
    hash_algorithm: HashAlgorithm
    principal: Principal
    sandbox: Sandbox
    held: Held
    """What the receiver already holds from earlier sessions: skipped."""


@dataclass(frozen=True)
class _Read:
    """A small file read whole; `changed`: it changed while it was read."""

    entry: ManifestEntry
    data: bytes
    mtime_ns: int
    changed: bool


class FileSender:
    def __init__(self, link: DataLink, spec: SendSpec, *, manifests: ManifestService,
                 files: userfs.UserFS, metrics: TransferMetrics,
                 on_rate: Callable[[RateLimits], None] | None = None) -> None:
        self._link = link
        self._spec = spec
        self._manifests = manifests
        self._files = files
        self._metrics = metrics
        self._on_rate = on_rate
        link.on_event = self._on_event
        self._stripes = Stripes(link)
        self._finished: list[FileRecord] = []
        self._digests: dict[int, bytes] = {}
        self._again: list[ManifestEntry] = []
        self._last_attempt = False
        self._outcome_arrived = asyncio.Event()
        self._assembler = records.StreamAssembler()
        self._reader = records.RecordReader(stream_records_pb2.ReceiverRecord)
        self._terminated: ConnectionTerminated | None = None
        self._sent: dict[int, ManifestEntry] = {}
        """Files awaiting the receiver's verdict, by file id."""
        self._next_file_id = 0
        self._bytes_confirmed = 0
        self._bytes_resumed = 0
        self._counts = {"done": 0, "failed": 0, "skipped": 0}
        self.first_failure: Failure | None = None
        self._current = ""

    @property
    def link(self) -> DataLink:
        return self._link

    def spread(self, further: Sequence[FurtherFlow]) -> None:
        """Send large files' chunks over these flows as well (before `send_all`)."""
        self._stripes = Stripes(self._link, further)

    # --- records -----------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id == records.RECEIVER_STREAM:
            data = self._assembler.add(event.offset, event.data)
            self._link.consumed(len(event.data))
            try:
                for record in self._reader.feed(data):
                    if record.WhichOneof("record") == "rate_limit":
                        if self._on_rate is not None:
                            self._on_rate(peerwire.rate_from_wire(record.rate_limit))
                        continue
                    self._settle(record.outcome)
                    self._outcome_arrived.set()
            except JetstreamError as exc:  # a broken record ends this session, nothing else
                log.warning("the receiver broke the records protocol: %s", exc)
                self._link.close(ErrorCode.PROTOCOL_VIOLATION, f"bad receiver record: {exc}")
        elif isinstance(event, ConnectionTerminated):
            self._terminated = event
            self._outcome_arrived.set()

    def _write_record(self, record: stream_records_pb2.SenderRecord) -> None:
        self._link.send(records.SENDER_STREAM, records.frame(record))

    # --- files -------------------------------------------------------------------------------

    async def send_all(self) -> None:
        """Send every entry, then the ones the receiver asked for again, then the end."""
        entries: Iterator[ManifestEntry] = self._manifests.iter_entries(
            self._spec.manifest_id)  # streamed: a million entries never sit in memory
        held = self._spec.held
        try:
            for attempt in range(MAX_RESENDS + 1):
                self._last_attempt = attempt == MAX_RESENDS
                await self._send_entries(held, entries)
                await self._await_outcomes(0)
                if not self._again:
                    break
                entries, held, self._again = iter(self._again), {}, []
        finally:
            self._stripes.close()
        self._write_record(stream_records_pb2.SenderRecord(
            end=stream_records_pb2.EndOfFiles(file_count=self._next_file_id)))

    async def _send_entries(self, held: Held, entries: Iterator[ManifestEntry]) -> None:
        batch: list[ManifestEntry] = []
        batch_bytes = 0
        for entry in entries:
            if entry.kind == "file" and entry.size <= SMALL_FILE:
                batch.append(entry)
                batch_bytes += entry.size
                if len(batch) >= SMALL_BATCH_FILES or batch_bytes >= SMALL_BATCH_BYTES:
                    await self._send_small(batch)
                    batch, batch_bytes = [], 0
                continue
            if batch:
                await self._send_small(batch)
                batch, batch_bytes = [], 0
            if entry.kind in ("directory", "symlink"):  # metadata only: nothing to read
                await self._make_room()
                self._header(entry)
            else:
                await self._send_large(entry, held.get(entry.dest_path))
        if batch:
            await self._send_small(batch)

    async def _make_room(self) -> None:
        """Bound the files awaiting a verdict, so a huge tree needs bounded memory."""
        if len(self._sent) >= MAX_FILES_IN_FLIGHT:
            await self._await_outcomes(MAX_FILES_IN_FLIGHT // 2)

    def _header(self, entry: ManifestEntry, size: int = 0, mtime_ns: int | None = None) -> int:
        """Announce an entry; a file's size and mtime are as read now, not as scanned."""
        file_id = self._next_file_id
        self._next_file_id += 1
        self._sent[file_id] = entry
        self._write_record(stream_records_pb2.SenderRecord(header=stream_records_pb2.FileHeader(
            file_id=file_id, path=entry.dest_path, kind=_WIRE_KINDS[entry.kind], size_bytes=size,
            mode=entry.mode, modify_time_ns=entry.mtime_ns if mtime_ns is None else mtime_ns,
            symlink_target=entry.symlink_target)))
        self._current = entry.dest_path
        return file_id

    def _trailer(self, file_id: int, digest: bytes, changed: bool) -> None:
        self._digests[file_id] = digest
        self._write_record(stream_records_pb2.SenderRecord(trailer=stream_records_pb2.FileTrailer(
            file_id=file_id, digest=digest, source_changed=changed)))

    async def _send_small(self, batch: list[ManifestEntry]) -> None:
        locations = [_location(self._spec.sandbox, e) for e in batch]
        reads = await self._files.run(self._spec.principal, _read_small_files, batch, locations)
        link = self._require_link()
        for read in reads:
            if isinstance(read, Failure):
                self._fail_local(read, next(e for e in batch if e.dest_path == read.path))
                continue
            await link.wait_for_space(len(read.data) + 4096)
            await self._make_room()
            file_id = self._header(read.entry, len(read.data), read.mtime_ns)
            link.send(records.file_stream(file_id), read.data, end_stream=True)
            hasher = new_hasher(self._spec.hash_algorithm)
            hasher.update(read.data)
            self._trailer(file_id, hasher.digest(), read.changed)

    async def _send_large(self, entry: ManifestEntry,
                          held: tuple[int, int, RangeSet] | None) -> None:
        location = _location(self._spec.sandbox, entry)
        try:
            handle = await self._files.run(self._spec.principal, userfs.open_read, location)
        except JetstreamError as exc:
            self._fail_local(_unreadable(exc, entry.dest_path), entry)
            return
        self._require_link()
        try:
            before = os.fstat(handle.fileno())
            size = before.st_size
            same = held is not None and held[:2] == (size, before.st_mtime_ns)
            skip = held[2] if held is not None and same else RangeSet()
            kept = sum(stop - start for start, stop in skip)
            self._bytes_resumed += kept
            log.info("sending %s: the receiver holds %d of its %d bytes",
                     printable(entry.dest_path), kept, size)
            file_id = self._header(entry, size, before.st_mtime_ns)
            stream = records.file_stream(file_id)
            hasher = new_hasher(self._spec.hash_algorithm)
            _advise_sequential(handle.fileno())
            offset = 0
            while offset < size:
                data = await asyncio.to_thread(_read_hashed, handle.fileno(), offset, hasher)
                if not data:
                    break
                for start, stop in _missing(skip, offset, offset + len(data)):
                    await self._stripes.send(stream, memoryview(data)[start - offset:stop - offset],
                                             start)
                offset += len(data)
            await self._stripes.end(stream, size)
            after = os.fstat(handle.fileno())
            changed = offset != size or _identity(before) != _identity(after)
            self._trailer(file_id, hasher.digest(), changed)
        finally:
            handle.close()

    def _require_link(self) -> DataLink:
        if self._terminated is not None:
            raise Unavailable(f"data channel lost: {self._terminated.reason}")
        return self._link

    def _fail_local(self, failure: Failure, entry: ManifestEntry) -> None:
        """An entry this side cannot read: count it, and tell the receiver."""
        self._finished.append((entry.seq, "failed", 0, b"", failure.message, time.time()))
        self._counts["failed"] += 1
        self._metrics.files.labels("outgoing", "failed").inc()
        self.first_failure = self.first_failure or failure
        self._write_record(stream_records_pb2.SenderRecord(
            source_failed=stream_records_pb2.SourceFailure(
                path=failure.path, error=common_pb2.ErrorDetail(
                    reason=failure.reason, message=failure.message, path=failure.path))))

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
            self.first_failure = self.first_failure or Failure(
                outcome.error.reason or "FILE_FAILED", outcome.error.message,
                entry.dest_path)
        self._metrics.files.labels("outgoing", result).inc()
        state = "skipped" if outcome.skipped else "done" if outcome.ok else "failed"
        self._finished.append((entry.seq, state, entry.size if outcome.ok else 0,
                               digest if outcome.ok else b"", outcome.error.message,
                               time.time()))

    # --- progress ----------------------------------------------------------------------------

    def take_finished(self) -> list[FileRecord]:
        """Files settled since the last call (for the transfer's per-file records)."""
        finished, self._finished = self._finished, []
        return finished

    async def report_loop(self, publish: Callable[[float], None]) -> None:
        """Count sent bytes in the metrics and call `publish(rate_bps)` every half second."""
        last_bytes, last_retransmitted, last_time = 0, 0, time.monotonic()

        def count() -> int:
            """Add what was sent since the last count to the metrics; return the total."""
            nonlocal last_bytes, last_retransmitted
            stats = self._stripes.statistics()
            sent, retransmitted = stats.stream_bytes_sent, stats.bytes_retransmitted
            self._metrics.bytes.labels("outgoing").inc(max(sent - last_bytes, 0))
            self._metrics.retransmitted.inc(max(retransmitted - last_retransmitted, 0))
            before, last_bytes, last_retransmitted = last_bytes, sent, retransmitted
            return sent - before

        try:
            while True:
                await asyncio.sleep(REPORT_EVERY)
                now = time.monotonic()
                publish(count() * 8 / max(now - last_time, 1e-3))
                last_time = now
        finally:  # the last half second too: a short transfer is counted all the same
            count()

    def progress(self, previous: Progress, rate: float) -> Progress:
        stats = self._stripes.statistics()
        return Progress(
            bytes_total=previous.bytes_total,
            bytes_done=max(self._bytes_confirmed, min(
                self._bytes_resumed + stats.stream_bytes_sent, previous.bytes_total)),
            files_total=previous.files_total,
            files_done=self._counts["done"],
            files_failed=self._counts["failed"],
            files_skipped=self._counts["skipped"],
            rate_bps=rate,
            rtt=stats.smoothed_rtt,
            loss_ratio=(stats.packets_lost / stats.packets_sent if stats.packets_sent
                        else previous.loss_ratio),
            bytes_retransmitted=stats.bytes_retransmitted,
            bytes_on_wire=stats.bytes_sent,
            bytes_resumed=self._bytes_resumed,
            current_path=self._current,
        )


def _unreadable(exc: JetstreamError, path: str) -> Failure:
    reason = "PERMISSION_DENIED" if isinstance(exc, PermissionDenied) else "SOURCE_UNREADABLE"
    return Failure(reason, str(exc), path)


def _location(sandbox: Sandbox, entry: ManifestEntry) -> Location:
    return Location(sandbox.root(entry.source_root or None),
                    parse_path(entry.source_path, what="source path"))


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _read_hashed(fd: int, offset: int, hasher: Hasher) -> bytes:
    """A chunk read and hashed on the worker thread: BLAKE3 of 4 MiB takes a millisecond or
    more, which the event loop driving the data channel must not spend."""
    data = os.pread(fd, CHUNK, offset)
    hasher.update(data)
    return data


def _advise_sequential(fd: int) -> None:
    """Ask for the kernel's larger read-ahead: the file is read once, front to back."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except OSError:
        pass  # advice only (some file systems refuse it)


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
    with userfs.DirCache() as dirs:
        for entry, location in zip(entries, locations, strict=True):
            try:
                handle = userfs.open_read(location, dirs=dirs)
            except JetstreamError as exc:
                out.append(_unreadable(exc, entry.dest_path))
                continue
            with handle:
                before = os.fstat(handle.fileno())
                data = handle.read(before.st_size + 1)
                after = os.fstat(handle.fileno())
            changed = len(data) != before.st_size or _identity(before) != _identity(after)
            out.append(_Read(entry, data, before.st_mtime_ns, changed))
    return out
