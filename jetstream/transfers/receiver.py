"""One incoming session: the data channel's events turned into verified files on disk.

Ordering is the data channel's: bytes of any stream arrive in any order, a file's bytes may
come before its header. Nothing is written on the event-loop thread. Small files are kept
in memory until whole and written, verified and renamed in one visit to a worker thread;
large files are written in ~1 MiB batches to a temporary file, hashed as they are written,
synced and recorded at each checkpoint, and verified before the rename. Flow-control credit
goes back to the sender only once bytes are written, and a large file's once a checkpoint
made them durable: that bounds the memory a session holds and what a crash costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from jetstream.auth.principal import Principal
from jetstream.datachannel.events import (
    ConnectionTerminated,
    Event,
    StreamDataReceived,
    StreamEnded,
)
from jetstream.datachannel.rangeset import RangeSet
from jetstream.errors import JetstreamError, LocalProtocolError, RemoteProtocolError
from jetstream.observability.transfer_metrics import TransferMetrics
from jetstream.storage import userfs
from jetstream.storage.paths import RelPath, parse_path, printable
from jetstream.storage.sandbox import Location, Sandbox, SandboxRoot
from jetstream.transfers import filesink, records
from jetstream.transfers.credit import CreditLedger
from jetstream.transfers.filesink import Target
from jetstream.transfers.incoming import FileCheckpoint, Incoming, IncomingStore
from jetstream.transfers.model import Failure, Overwrite, Progress, TransferState, failure_reason
from jetstream.transport.endpoint import DataLink
from jetstream.v1 import common_pb2, stream_records_pb2

log = logging.getLogger(__name__)

SMALL_FILE = 256 << 10
SMALL_BATCH = 128
"""Small files stored per visit to a worker thread and per flush of the file system (a
syncfs writes back everything dirty on it: the fewer, the better)."""
CHECKPOINT_BYTES = 16 << 20
"""Large-file bytes written that bring the next checkpoint forward (see `_checkpoints`).
Their flow-control credit goes back once a checkpoint made them durable, so a receiver's
crash re-sends at most one window (64 MiB); it must stay well below the window, with
`HOLD_BYTES` and `FLUSH_BYTES`, or the sender would wait for a checkpoint that never comes."""
FLUSH_BYTES = 1 << 20
"""New bytes of a large file that make the next write."""
PUBLISH_EVERY = 0.5
"""Seconds between two progress saves from checkpoints (each one a database commit)."""
HOLD_BYTES = 16 << 20
"""Bytes of a large file kept in memory beyond a loss until it is repaired (about a round
trip later), so that they are hashed and written in order instead of written, read back and
hashed (`filesink.write_pieces`)."""


@dataclass
class _File:
    file_id: int
    header: stream_records_pb2.FileHeader | None = None
    target: Target | None = None
    part: userfs.PartFile | None = None
    digest: filesink.RunningDigest | None = None
    pieces: list[tuple[int, bytes | memoryview]] = field(default_factory=list)
    pending_bytes: int = 0
    held_back: int = 0
    """Bytes of `pieces` the last write kept back beyond a gap (see `HOLD_BYTES`)."""
    written: RangeSet = field(default_factory=RangeSet)
    """Bytes on disk (in the temporary file)."""
    held: RangeSet = field(default_factory=RangeSet)
    """Bytes on disk or waiting in `pieces`."""
    busy: bool = False
    finishing: bool = False
    """The temporary file is being verified and renamed (or dropped): no more syncs."""
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    """Clear while a checkpoint syncs the temporary file, which must stay open meanwhile."""

    def __post_init__(self) -> None:
        self.synced.set()
    ended: bool = False
    trailer: stream_records_pb2.FileTrailer | None = None
    skipped: bool = False
    done: bool = False

    @property
    def small(self) -> bool:
        return self.header is not None and self.header.size_bytes <= SMALL_FILE


class ReceiveSession:
    def __init__(
        self,
        incoming: Incoming,
        principal: Principal,
        root: SandboxRoot,
        files: userfs.UserFS,
        store: IncomingStore,
        *,
        on_change: Callable[[Incoming], None],
        on_file: Callable[[str, int], None] | None = None,
        metrics: TransferMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`on_file(path, size)`: a file was verified and renamed into place."""
        self.incoming = incoming
        self._on_file = on_file
        self._metrics = metrics or TransferMetrics()
        self._principal = principal
        self._root = root
        self._link_scope = Sandbox((root,))
        """Links received may point only beneath the root the transfer writes to."""
        self._base = parse_path(incoming.destination_path, what="destination_path",
                                empty_is_root=True)
        self._fs = files
        self._store = store
        self._on_change = on_change
        self._clock = clock
        self._link: DataLink | None = None
        """The first flow: records, small files and outcomes go there."""
        self._flows: list[DataLink] = []
        """Every flow of the session, the first included; the others carry file data only."""
        self._credit: CreditLedger[DataLink] = CreditLedger()
        self._stopping = False
        self._files: dict[int, _File] = {}
        self._records = records.StreamAssembler()
        self._reader = records.RecordReader(stream_records_pb2.SenderRecord)
        self._expected_files: int | None = None
        self._outcomes = 0
        held = store.checkpoints(incoming.id, complete=True)
        self._resume = {c.path: c for c in held if not c.complete}
        self._finished_before = {c.path: c for c in held if c.complete}
        """Large files an earlier session of this transfer wrote and verified: a sender that
        lost their outcome offers them again, and sends none of their bytes."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._checkpointer: asyncio.Task[None] | None = None
        self._settled_ids = RangeSet()
        """Files with an outcome (ids are sequential, so this stays a few ranges)."""
        self._checkpoint_due = asyncio.Event()
        self._unsynced = 0
        """Large-file bytes written since the last checkpoint began: their credit is held."""
        self.finished = asyncio.get_running_loop().create_future()
        self.settled = asyncio.Event()
        """Set once every file the sender announced has an outcome (after its end record)."""
        self._bytes_done = 0
        self._published_at = -math.inf
        self._counts = {"done": 0, "failed": 0, "skipped": 0}
        """Counters of this session: files retried now may have failed in an earlier one."""
        self._failures: list[tuple[str, Failure]] = []
        self._received_data = False
        """Data arrived since the last publish (last_receive_at is updated then, not per
        packet)."""
        self._released: bool | None = None
        """Set when the session let go of its files: True kept them for a resume."""
        self._small: list[tuple[_File, filesink.WholeFile]] = []
        """Small files that arrived whole, waiting for the writer."""
        self._small_writer: asyncio.Task[None] | None = None
        self._replies: list[bytes] = []
        """Framed outcomes not sent yet."""

    @property
    def failures(self) -> list[tuple[str, Failure]]:
        return self._failures

    # --- wiring ------------------------------------------------------------------------------

    def attach(self, link: DataLink, address: str) -> None:
        """The session's first flow is up."""
        self._link = link
        self.attach_flow(link)
        self.incoming = replace(self.incoming, state=TransferState.RUNNING,
                                source_address=address, last_receive_at=self._clock())
        if self.incoming.options.checkpoint_interval > 0:  # else only at file ends
            self._checkpointer = asyncio.create_task(self._checkpoints())

    def attach_flow(self, link: DataLink) -> None:
        """A flow of the session (`attach` makes the first; the others carry file data
        only)."""
        self._flows.append(link)
        link.on_event = lambda event: self._on_event(link, event)

    def _on_event(self, link: DataLink, event: Event) -> None:
        try:
            if isinstance(event, StreamDataReceived):
                self._credit.received(link, len(event.data))
                if event.stream_id == records.SENDER_STREAM:
                    if link is not self._link:
                        raise RemoteProtocolError("records came on a further flow")
                    for record in self._reader.feed(self._records.add(event.offset, event.data)):
                        self._on_record(record)
                    self._consumed(len(event.data))
                else:
                    self._on_data(event.stream_id - records.FIRST_FILE_STREAM, event.offset,
                                  event.data)
            elif isinstance(event, StreamEnded) and event.stream_id >= records.FIRST_FILE_STREAM:
                entry = self._file(event.stream_id - records.FIRST_FILE_STREAM)
                if entry is not None:
                    entry.ended = True
                    self._advance(entry)
            elif isinstance(event, ConnectionTerminated) and not self._stopping:
                self._stopping = True  # once, whichever flow ended first
                self._spawn(self._stop(f"data channel closed: {event.reason or event.error_code}"))
        except RemoteProtocolError as exc:
            log.warning("incoming %s: %s", self.incoming.id, exc)
            link.close(exc.close_code, str(exc))

    def _on_record(self, record: stream_records_pb2.SenderRecord) -> None:
        kind = record.WhichOneof("record")
        if kind == "header":
            entry = self._file(record.header.file_id)
            if entry is None:
                raise RemoteProtocolError(f"file {record.header.file_id} was sent twice")
            entry.header = record.header
            if entry.small and record.header.kind == common_pb2.FILE_KIND_FILE:
                self._open_small(entry)
            else:
                self._spawn(self._open(entry), entry)
        elif kind == "trailer":
            entry = self._file(record.trailer.file_id)
            if entry is None:
                return  # settled on its header alone (an earlier session delivered it)
            if entry.trailer is not None:
                raise RemoteProtocolError(f"file {record.trailer.file_id} ended twice")
            entry.trailer = record.trailer
            self._advance(entry)
        elif kind == "end":
            self._expected_files = record.end.file_count
            self._maybe_finished()
        elif kind == "source_failed":
            failed = record.source_failed
            self._failures.append((failed.path, Failure(
                failed.error.reason or "SOURCE_UNREADABLE", failed.error.message, failed.path)))
            self._counts["failed"] += 1
            self._metrics.files.labels("incoming", "failed").inc()

    def _file(self, file_id: int) -> _File | None:
        """The entry of a file in flight; None for one already settled, whose late events
        (its FIN after an outcome sent on the data alone) must not open it again."""
        entry = self._files.get(file_id)
        if entry is None:
            if file_id in self._settled_ids:
                return None
            if len(self._files) > 1_000_000:
                raise RemoteProtocolError("too many files in flight")
            entry = self._files[file_id] = _File(file_id)
        return entry

    def _on_data(self, file_id: int, offset: int, data: bytes | memoryview) -> None:
        entry = self._file(file_id)
        if entry is None or entry.done or entry.skipped:
            self._consumed(len(data))
            return
        entry.pieces.append((offset, data))  # the core's buffers are immutable: no copy
        entry.pending_bytes += len(data)
        entry.held.add(offset, offset + len(data))
        self._received_data = True
        if entry.part is not None and (entry.pending_bytes - entry.held_back >= FLUSH_BYTES
                                       or entry.trailer is not None):
            self._advance(entry)

    # --- per-file progress -------------------------------------------------------------------

    def _advance(self, entry: _File) -> None:
        """Start the next step for `entry` if one is due and none is running."""
        if entry.busy or entry.done or entry.target is None:
            return
        if entry.skipped:
            self._drop(entry)
            return
        complete = entry.trailer is not None and (entry.ended or self._covered(entry))
        if entry.part is None and entry.small:
            if complete:
                entry.busy = True  # until its outcome
                self._store_small(entry)
            return
        if entry.part is not None and (entry.pending_bytes - entry.held_back >= FLUSH_BYTES
                                       or (complete and entry.pieces)):
            self._step(entry, self._flush(entry, hold=0 if complete else HOLD_BYTES))
        elif entry.part is not None and complete:
            self._step(entry, self._verify(entry))

    def _step(self, entry: _File, step: Coroutine[Any, Any, None]) -> None:
        """Run one step for `entry`: marked busy now, so no other step (or a checkpoint's
        sync) can touch the file until this one is over."""
        entry.busy = True
        self._spawn(step, entry)

    @staticmethod
    def _covered(entry: _File) -> bool:
        """Every byte written or waiting to be (a resumed file's stream never ends in the
        data channel, since part of it came from an earlier session)."""
        return entry.held.covers(0, entry.target.size if entry.target is not None else 0)

    def _place(self, header: stream_records_pb2.FileHeader) -> tuple[RelPath, Location]:
        """The header's path (validated) and where it goes."""
        path = parse_path(header.path, what="file path")
        return path, Location(self._root, self._base / path)

    @staticmethod
    def _target(header: stream_records_pb2.FileHeader, location: Location) -> Target:
        return Target(location, header.size_bytes, header.mode & 0o777, header.modify_time_ns)

    def _open_small(self, entry: _File) -> None:
        """A small file needs nothing from the file system before it is whole (then it is
        stored with others in one visit to a worker): no task of its own."""
        assert entry.header is not None
        try:
            entry.target = self._target(entry.header, self._place(entry.header)[1])
        except JetstreamError as exc:
            self._failed(entry, exc)
            return
        self._advance(entry)

    async def _open(self, entry: _File) -> None:
        """Directories, links and large files (small files: `_open_small`)."""
        header = entry.header
        assert header is not None
        path, location = self._place(header)
        if header.kind == common_pb2.FILE_KIND_DIRECTORY:
            entry.busy = True
            await self._fs.run(self._principal, filesink.make_directory, location, header.mode)
            entry.busy = False
            self._outcome(entry, ok=True)
            return
        if header.kind == common_pb2.FILE_KIND_SYMLINK:
            entry.busy = True
            self._link_scope.link_target(location, header.symlink_target)  # refuses escapes
            made = await self._fs.run(self._principal, filesink.make_symlink, location,
                                      header.symlink_target, header.modify_time_ns,
                                      self.incoming.options.overwrite)
            entry.busy = False
            self._outcome(entry, ok=True, skipped=not made)
            return
        if header.kind != common_pb2.FILE_KIND_FILE:
            raise RemoteProtocolError(f"unsupported entry kind {header.kind}")
        entry.target = self._target(header, location)
        entry.busy = True
        overwrite = self.incoming.options.overwrite
        before = self._finished_before.pop(str(path).lstrip("/"), None)
        if before is not None and (before.size, before.mtime_ns) == (
                header.size_bytes, header.modify_time_ns) and await self._fs.run(
                    self._principal, filesink.existing_is_current, entry.target,
                    Overwrite.RESUME):
            entry.busy = False
            self._outcome(entry, ok=True)  # delivered by that earlier session
            self._drop(entry)
            return
        resume = self._resume.pop(str(path).lstrip("/"), None)
        part = None
        if resume is not None and (resume.size, resume.mtime_ns) == (header.size_bytes,
                                                                     header.modify_time_ns):
            part = await self._reopen(location, resume, entry.target.mode)
            if part is None:  # the sender skips what the checkpoint named: have it all again
                self._store.forget_checkpoints(self.incoming.id, [resume.path])
                self._outcome(entry, ok=False, retry=True, error=Failure(
                    "RESUME_LOST", f"{printable(header.path)}: the partial file is gone"))
                return
        elif resume is not None:  # the source changed since: its old bytes are worthless
            await self._discard(location, resume)
        if part is None:
            part = await self._fs.run(self._principal, filesink.open_part, entry.target,
                                      overwrite)
        else:
            for start, stop in resume.ranges:  # type: ignore[union-attr]
                entry.written.add(start, stop)
                entry.held.add(start, stop)
        entry.busy = False
        if part is None:
            entry.skipped = True
            self._outcome(entry, ok=True, skipped=True)
            self._drop(entry)
            return
        if self._released is not None:  # the session ended while the file was being opened
            await self._fs.run(self._principal,
                               part.detach if self._released else part.abort)
            return
        entry.part = part
        entry.digest = filesink.RunningDigest(self.incoming.options.hash_algorithm,
                                              entry.written)
        self._advance(entry)

    async def _discard(self, location: Location, checkpoint: FileCheckpoint) -> None:
        stale = await self._reopen(location, checkpoint, 0o600)
        if stale is not None:
            await self._fs.run(self._principal, stale.abort)
        self._store.forget_checkpoints(self.incoming.id, [checkpoint.path])

    async def _reopen(self, location: Location, checkpoint: FileCheckpoint, mode: int
                      ) -> userfs.PartFile | None:
        if not checkpoint.temp_name:
            return None
        try:
            part: userfs.PartFile = await self._fs.run(
                self._principal, userfs.open_part, location, checkpoint.temp_name,
                overwrite=self.incoming.options.overwrite.value != "never",
                mode=mode)
        except JetstreamError:
            return None
        return part

    def _store_small(self, entry: _File) -> None:
        if self._released is not None:
            return
        assert entry.target is not None and entry.trailer is not None
        pieces = sorted(entry.pieces)
        data = b"".join(piece for _offset, piece in pieces)  # type: ignore[misc]
        size = len(data)
        entry.pieces, entry.pending_bytes = [], 0
        if entry.trailer.source_changed or size != entry.target.size:
            self._consumed(size)
            self._outcome(entry, ok=False, retry=True, error=Failure(
                "SOURCE_CHANGED", f"{printable(entry.header.path)} changed while it was sent"))  # type: ignore[union-attr]
            return
        self._small.append((entry, filesink.WholeFile(entry.target, data, entry.trailer.digest)))
        if self._small_writer is None or self._small_writer.done():
            self._small_writer = asyncio.create_task(self._write_small_files())
            self._tasks.add(self._small_writer)  # awaited before files are released
            self._small_writer.add_done_callback(self._tasks.discard)

    async def _write_small_files(self) -> None:
        """Store the small files that are whole, many per visit to a worker thread."""
        while self._small and self._released is None:
            batch, self._small = self._small[:SMALL_BATCH], self._small[SMALL_BATCH:]
            try:
                results: list[str | JetstreamError] = await self._fs.run(
                    self._principal, filesink.store_many, [item for _e, item in batch],
                    self.incoming.options.hash_algorithm, self.incoming.options.overwrite)
            except JetstreamError as exc:
                results = [exc] * len(batch)
            except OSError as exc:  # not a file's fault (e.g. out of descriptors): fail, not stall
                results = [JetstreamError(f"storing files: {exc.strerror or exc}")] * len(batch)
            self._consumed(sum(len(item.data) for _entry, item in batch))
            stored = 0
            for (entry, item), result in zip(batch, results, strict=True):
                path = entry.header.path if entry.header else ""
                if isinstance(result, JetstreamError):
                    self._outcome(entry, ok=False, error=Failure(
                        failure_reason(result), str(result), path), defer=True)
                elif result == "mismatch":
                    self._outcome(entry, ok=False, retry=True, error=Failure(
                        "HASH_MISMATCH", f"{printable(path)}: digest mismatch"), defer=True)
                else:
                    stored += len(item.data)
                    self._bytes_done += len(item.data)  # before the outcome: the last publishes
                    self._outcome(entry, ok=True, skipped=result == "skipped", defer=True)
            self._metrics.bytes.labels("incoming").inc(stored)
            self._send_replies()

    async def _flush(self, entry: _File, hold: int) -> None:
        if self._released is not None:
            return
        assert entry.part is not None
        pieces, entry.pieces = entry.pieces, []
        size, entry.pending_bytes = entry.pending_bytes, 0
        assert entry.digest is not None
        written, kept = await self._fs.run(
            self._principal, filesink.write_pieces, entry.part, pieces, entry.digest, hold)
        entry.held_back = sum(len(data) for _offset, data in kept)
        entry.pieces[:0] = kept
        entry.pending_bytes += entry.held_back
        size -= entry.held_back
        for start, stop in written:
            entry.written.add(start, stop)
        self._bytes_done += size
        self._metrics.bytes.labels("incoming").inc(size)
        if self._checkpointer is None or self._checkpointer.done():  # none to wait for
            self._consumed(size)
        else:
            self._unsynced += size
            if self._unsynced >= CHECKPOINT_BYTES:
                self._checkpoint_due.set()
        entry.busy = False
        self._advance(entry)

    async def _verify(self, entry: _File) -> None:
        if self._released is not None:
            return
        assert entry.part is not None and entry.target is not None and entry.trailer is not None
        header = entry.header
        assert header is not None
        entry.finishing = True
        await entry.synced.wait()  # a checkpoint may be syncing this file
        if entry.trailer.source_changed:
            await self._fs.run(self._principal, entry.part.abort)
            self._outcome(entry, ok=False, retry=True, error=Failure(
                "SOURCE_CHANGED", f"{printable(header.path)} changed while it was sent"))
            return
        assert entry.digest is not None
        ok = await self._fs.run(self._principal, filesink.finish, entry.part, entry.target,
                                entry.digest, self.incoming.options.hash_algorithm,
                                entry.trailer.digest)
        if ok:
            self._store.finished(self.incoming.id, header.path, header.size_bytes,
                                 header.modify_time_ns)
            self._outcome(entry, ok=True)
        else:
            self._store.forget_checkpoints(self.incoming.id, [header.path])
            self._outcome(entry, ok=False, retry=True, error=Failure(
                "HASH_MISMATCH", f"{printable(header.path)}: digest mismatch after transfer"))

    def _drop(self, entry: _File) -> None:
        """Discard data for a file we do not write (skipped): just give the credit back."""
        self._consumed(entry.pending_bytes)
        entry.pieces, entry.pending_bytes, entry.held_back = [], 0, 0

    def _outcome(self, entry: _File, *, ok: bool, skipped: bool = False, retry: bool = False,
                 error: Failure | None = None, defer: bool = False) -> None:
        """Settle a file and tell the sender; `defer`: the caller sends the reply with those
        of other files (`_send_replies`)."""
        entry.done, entry.busy, entry.part = True, False, None
        outcome = stream_records_pb2.FileOutcome(file_id=entry.file_id, ok=ok, skipped=skipped,
                                                 retry=retry)
        if error is not None:
            outcome.error.CopyFrom(common_pb2.ErrorDetail(reason=error.reason,
                                                          message=error.message,
                                                          path=error.path))
            if not retry:
                self._failures.append((entry.header.path if entry.header else "", error))
        key = "skipped" if skipped else "done" if ok else "failed" if not retry else ""
        if key == "done" and self._on_file is not None and entry.header is not None \
                and entry.header.kind == common_pb2.FILE_KIND_FILE:
            self._on_file(entry.header.path, entry.header.size_bytes)
        if key:
            self._counts[key] += 1
            self._metrics.files.labels("incoming", "ok" if key == "done" else key).inc()
        if error is not None and error.reason == "HASH_MISMATCH":
            self._metrics.hash_failures.inc()
        self._replies.append(records.frame(stream_records_pb2.ReceiverRecord(outcome=outcome)))
        if not defer:
            self._send_replies()
        self._outcomes += 1
        self._files.pop(entry.file_id, None)
        self._settled_ids.add_one(entry.file_id)
        header = entry.header
        if len(self._flows) > 1 and header is not None and not entry.small \
                and header.kind == common_pb2.FILE_KIND_FILE:
            whole = ok and not skipped  # every byte came (or an earlier session had it)
            self._release_stream(entry, [(0, header.size_bytes)] if whole else list(entry.held))
        self._maybe_finished()

    def _release_stream(self, entry: _File, held: list[tuple[int, int]]) -> None:
        """Let every flow finish a settled file's stream: each carried only part of it, so
        none would see it complete. The bytes `held` came by one flow or another and will
        not come again on any; a byte not held (a skipped or failed file's) may still come,
        and its credit is then repaid as usual."""
        stream = records.file_stream(entry.file_id)
        for link in self._flows:
            try:
                link.connection.resume_stream(stream, held)
            except LocalProtocolError:
                pass  # this flow's part ended the stream already

    def _send_replies(self) -> None:
        """One write to the receiver stream for the outcomes of a batch of small files."""
        if self._replies and self._link is not None:
            self._link.send(records.RECEIVER_STREAM, b"".join(self._replies))
        self._replies.clear()

    def _maybe_finished(self) -> None:
        if self._expected_files is not None and self._outcomes >= self._expected_files:
            self._publish()
            self.settled.set()

    def _consumed(self, nbytes: int) -> None:
        for link, repaid in self._credit.repay(nbytes):
            link.consumed(repaid)

    # --- failures inside a step become a failed file, never a crashed session ----------------

    def _spawn(self, step: Coroutine[Any, Any, None], entry: _File | None = None) -> None:
        task = asyncio.ensure_future(self._guard(step, entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, step: Coroutine[Any, Any, None], entry: _File | None) -> None:
        try:
            await step
        except JetstreamError as exc:
            if entry is None:
                log.warning("incoming %s: %s", self.incoming.id, exc)
                return
            if entry.part is not None:
                try:
                    await self._fs.run(self._principal, entry.part.abort)
                except JetstreamError:
                    pass
            self._failed(entry, exc)

    def _failed(self, entry: _File, exc: JetstreamError) -> None:
        self._drop(entry)
        path = entry.header.path if entry.header else ""
        self._outcome(entry, ok=False, error=Failure(failure_reason(exc), str(exc), path))

    # --- checkpoints and the end -------------------------------------------------------------

    async def _checkpoints(self) -> None:
        """Every interval, and sooner once `CHECKPOINT_BYTES` were written since the last
        one: their credit waits for it, so what a crash can cost is bounded in bytes too."""
        interval = self.incoming.options.checkpoint_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._checkpoint_due.wait(), interval)
            self._checkpoint_due.clear()
            await self.checkpoint()

    async def checkpoint(self) -> None:
        """Sync every partly written large file and record what is safely on disk; then
        the sender gets the credit for what was written before."""
        saved: list[FileCheckpoint] = []
        syncing: list[_File] = []
        credit, self._unsynced = self._unsynced, 0
        try:
            for entry in list(self._files.values()):
                part, header = entry.part, entry.header
                if part is None or header is None or entry.finishing or not entry.written:
                    continue
                # A flush may be writing meanwhile: what `written` says now was written
                # before, so the sync makes at least that durable.
                written = tuple(entry.written)
                entry.synced.clear()  # until saved: a verify must not forget it first
                syncing.append(entry)
                try:
                    await self._fs.run(self._principal, part.sync)
                except JetstreamError as exc:  # the file's next write or its verify fails it
                    log.warning("incoming %s: checkpoint of %s: %s", self.incoming.id,
                                printable(header.path), exc)
                    continue
                saved.append(FileCheckpoint(header.path, header.size_bytes,
                                            header.modify_time_ns, part.temp_name, written))
            if saved:  # the commit's own fsync stays off the event loop
                await asyncio.to_thread(self._store.save_checkpoints, self.incoming.id, saved)
        finally:
            for entry in syncing:
                entry.synced.set()
            self._consumed(credit)
        if self._clock() - self._published_at >= PUBLISH_EVERY:
            self._publish()

    @property
    def progress(self) -> Progress:
        """This session's counters now (bytes written, files settled)."""
        total = self.incoming.progress
        return Progress(
            bytes_total=total.bytes_total, bytes_done=self._bytes_done,
            files_total=total.files_total, files_done=self._counts["done"],
            files_failed=self._counts["failed"], files_skipped=self._counts["skipped"])

    def _publish(self) -> None:
        self._published_at = self._clock()
        if self._received_data:
            self._received_data = False
            self.incoming = replace(self.incoming, last_receive_at=self._clock())
        self.incoming = replace(self.incoming, progress=self.progress)
        self._on_change(self.incoming)

    def resume_ranges(self) -> dict[str, tuple[tuple[int, int], ...]]:
        """Path -> ranges already on stable storage, for the sender to skip."""
        return {path: c.ranges for path, c in self._resume.items()}

    async def _stop(self, why: str) -> None:
        """The link is gone: keep what is on disk for a resume, drop the rest."""
        await self._release_files(keep=True)
        if not self.finished.done():
            self.finished.set_result(why)

    async def _release_files(self, *, keep: bool) -> None:
        """Close every unfinished file: `keep` checkpoints and detaches, else aborts."""
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            self._checkpointer = None
        # Let running steps finish first, so every write is either checkpointed or undone.
        running = [t for t in self._tasks if t is not asyncio.current_task()]
        await asyncio.gather(*running, return_exceptions=True)
        self._released = keep
        if keep:
            await self.checkpoint()
        else:
            self._store.forget_checkpoints(self.incoming.id, [
                e.header.path for e in self._files.values() if e.header is not None])
        for entry in list(self._files.values()):
            part, entry.part = entry.part, None
            if part is not None:
                # Only a checkpointed file is worth keeping: nothing else could find it again.
                kept = keep and bool(entry.written)
                await self._fs.run(self._principal, part.detach if kept else part.abort)

    async def close(self, state: TransferState, error: Failure | None) -> Incoming:
        await self._release_files(keep=state is not TransferState.CANCELLED)
        for link in self._flows:
            link.close(0, state.value)
        self._publish()
        self.incoming = replace(self.incoming, state=state, error=error,
                                ended_at=self._clock() if state.terminal else 0.0)
        self._on_change(self.incoming)
        if not self.finished.done():
            self.finished.set_result(state.value)
        return self.incoming
