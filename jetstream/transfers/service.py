"""Outgoing transfers: the API's rules, the per-destination queues, and job lifecycles.

One transfer runs per destination at a time, lowest priority value first, then oldest: the
path to one destination is one bottleneck, and sharing it between transfers only makes each
finish later. Jobs report progress; this service persists it (at most once a second), fans
it out to watchers, and owns every state change, so the state machine lives in one place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from jetstream.errors import (
    FailedPrecondition,
    InvalidArgument,
    JetstreamError,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from jetstream.ids import check_id
from jetstream.observability.transfer_metrics import TransferMetrics
from jetstream.services.auth import Caller
from jetstream.services.bandwidth import BandwidthService, share
from jetstream.services.destinations import Destination, DestinationService
from jetstream.services.events import EventLog, Severity
from jetstream.services.manifests import (
    Manifest,
    ManifestService,
    ManifestSpec,
    ManifestState,
)
from jetstream.services.sandboxes import Sandboxes
from jetstream.storage.paths import parse_path
from jetstream.transfers.model import (
    Direction,
    Failure,
    Progress,
    RateLimits,
    Transfer,
    TransferOptions,
    TransferState,
    failure_reason,
)
from jetstream.transfers.store import FileRecord, FileRow, TransferStore

log = logging.getLogger(__name__)

DEFAULT_PRIORITY = 100
EVENT_NAMES = {
    TransferState.QUEUED: "send.transferQueued",
    TransferState.RUNNING: "send.transferStarted",
    TransferState.PAUSED: "send.transferPaused",
    TransferState.COMPLETED: "send.transferComplete",
    TransferState.FAILED: "send.transferError",
    TransferState.CANCELLED: "send.transferCancelled",
}
"""The event (and trigger script) each state change of a transfer fires."""
PERSIST_EVERY = 1.0
MAX_RETRY_DELAY = 60.0


@dataclass(frozen=True)
class _Outage:
    """Failed attempts in a row of one transfer, since its bytes last moved."""

    since: float
    failures: int
    bytes_done: int


class UpdateKind(StrEnum):
    SNAPSHOT = "snapshot"
    PROGRESS = "progress"
    STATE_CHANGED = "state_changed"


@dataclass(frozen=True)
class JobResult:
    progress: Progress
    failed_file: Failure | None = None
    """The first file that failed, if any did; the transfer then ends FAILED."""


class Job(Protocol):
    @property
    def progress(self) -> Progress: ...
    async def run(self) -> JobResult: ...
    def set_rate(self, rate: RateLimits) -> None: ...
    def halt(self, state: TransferState) -> None:
        """Say why the job is about to be cancelled (PAUSED or CANCELLED)."""
    def set_server_cap(self, bps: int) -> None:
        """This job's share of the server-wide outgoing allowance (0: none)."""


JobFactory = Callable[
    [Transfer, Callable[[Progress, str], None], Callable[[list[FileRecord]], None]], Job]
"""(transfer, report(progress, status), record(finished files)) -> a job that moves data."""


@dataclass(frozen=True)
class _Running:
    task: asyncio.Task[None]
    job: Job
    destination_id: str
    direction: Direction


class TransferService:
    def __init__(
        self,
        store: TransferStore,
        destinations: DestinationService,
        manifests: ManifestService,
        events: EventLog,
        *,
        sandboxes: Sandboxes,
        metrics: TransferMetrics | None = None,
        bandwidth: BandwidthService | None = None,
        receiving: Callable[[], bool] = lambda: False,
        retry_timeout: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._retry_timeout = retry_timeout
        self._outages: dict[str, _Outage] = {}
        self._bandwidth = bandwidth
        self._receiving = receiving
        self._metrics = metrics or TransferMetrics()
        self._destinations = destinations
        self._manifests = manifests
        self._sandboxes = sandboxes
        self._events = events
        self._clock = clock
        self._job_factory: JobFactory | None = None
        self._running: dict[str, _Running] = {}
        self._not_before: dict[str, float] = {}
        self._watchers: dict[str, set[asyncio.Queue[tuple[UpdateKind, Transfer]]]] = {}
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self._last_persist: dict[str, float] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, job_factory: JobFactory) -> None:
        self._job_factory = job_factory
        self._store.requeue_interrupted(now=self._clock())
        self._scheduler = asyncio.create_task(self._schedule(), name="transfer-scheduler")

    async def stop(self) -> None:
        """Stop jobs without changing their state: they resume after the next start."""
        if self._scheduler is not None:
            self._scheduler.cancel()
        tasks = [running.task for running in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._scheduler is not None:
            await asyncio.gather(self._scheduler, return_exceptions=True)

    # --- the API -----------------------------------------------------------------------------

    def create(
        self,
        caller: Caller,
        *,
        destination: str,
        manifest: str,
        destination_path: str,
        direction: Direction,
        priority: int | None,
        options: TransferOptions,
        labels: dict[str, str],
        requested_id: str,
        spec: ManifestSpec | None = None,
    ) -> Transfer:
        """PUSH: `manifest` names a manifest to send, or `spec` says what to build one from.
        PULL: `spec` names paths on the destination, fetched into `destination_path` here
        with the caller's rights; its job builds the manifest there."""
        transfer_id = requested_id or uuid.uuid4().hex[:12]
        check_id(transfer_id, "transfer_id")
        if self._store.get(transfer_id) is not None:
            raise InvalidArgument(f"transfers/{transfer_id} exists already")
        chosen = self._destinations.get(caller, destination)
        path = str(parse_path(destination_path, what="destination_path", empty_is_root=True))
        _check_options(options, priority)
        if direction is Direction.PULL:
            self._check_pull(caller, manifest, spec, path)
            manifest_id, waiting = "", ""
        else:
            found = self._local_manifest(caller, manifest, spec, transfer_id)
            manifest_id, spec = found.id, None
            waiting = (f"waiting for manifests/{found.id}"
                       if found.state is ManifestState.PENDING else "")
        now = self._clock()
        transfer = Transfer(
            id=transfer_id,
            owner=caller.username,
            direction=direction,
            destination_id=chosen.id,
            manifest_id=manifest_id,
            destination_path=path,
            priority=DEFAULT_PRIORITY if priority is None else priority,
            options=options,
            manifest_spec=spec,
            labels=labels,
            created_at=now,
            updated_at=now,
            status_message=waiting,
        )
        self._store.insert(transfer)
        way = "from" if direction is Direction.PULL else "to"
        self._event(transfer, "send.transferCreated",
                    f"transfer {transfer_id} {way} destinations/{chosen.id} queued")
        self._wake.set()
        return transfer

    def _check_pull(self, caller: Caller, manifest: str, spec: ManifestSpec | None,
                    path: str) -> None:
        if manifest or spec is None:
            raise InvalidArgument("a PULL takes manifest_spec (paths on the destination), "
                                  "not manifest")
        if caller.token.read_only:
            raise PermissionDenied("a read-only token cannot pull: a pull writes files here")
        self._sandboxes.view_for(caller).check(parse_path(path, what="destination_path",
                                                          empty_is_root=True), write=True)

    def _local_manifest(self, caller: Caller, manifest: str, spec: ManifestSpec | None,
                        transfer_id: str) -> Manifest:
        """The manifest a push sends: the one named, or one built from `spec` now, in the
        background (the scheduler starts the transfer once it is COMPLETE and fails it with
        the manifest's error). Called last in `create`, so a refused request leaves no
        manifest behind."""
        if bool(manifest) == (spec is not None):
            raise InvalidArgument("give either manifest or manifest_spec")
        if spec is not None:
            return self._manifests.create(caller, spec, {"transfer": transfer_id}, "")
        found = self._manifests.get(caller, manifest)
        if found.state is ManifestState.ERROR:
            raise FailedPrecondition(f"manifests/{manifest} failed to build: {found.error}")
        return found

    def get(self, caller: Caller, transfer_id: str) -> Transfer:
        transfer = self._store.get(transfer_id)
        if transfer is None or not caller.can_see(transfer.owner):
            raise NotFound(f"transfers/{transfer_id} not found")
        return transfer

    def list(self, caller: Caller, *, owner: str, states: list[TransferState],
             destination_id: str, direction: Direction | None, after: str,
             limit: int) -> list[Transfer]:
        return self._store.list(owner=caller.owner_scope(owner), states=states,
                                destination_id=destination_id, direction=direction,
                                after=after, limit=limit)

    def pause(self, caller: Caller, transfer_id: str) -> Transfer:
        transfer = self.get(caller, transfer_id)
        if transfer.state not in (TransferState.QUEUED, TransferState.RUNNING):
            raise FailedPrecondition(f"transfers/{transfer_id} is {transfer.state.value}")
        self._stop_job(transfer_id, TransferState.PAUSED)
        return self._change(transfer, TransferState.PAUSED, "paused by " + caller.username)

    def resume(self, caller: Caller, transfer_id: str) -> Transfer:
        transfer = self.get(caller, transfer_id)
        if transfer.state not in (TransferState.PAUSED, TransferState.FAILED):
            raise FailedPrecondition(f"transfers/{transfer_id} is {transfer.state.value}")
        self._not_before.pop(transfer_id, None)
        self._outages.pop(transfer_id, None)
        resumed = self._change(replace(transfer, error=None, attempt_count=0),
                               TransferState.QUEUED, "resumed by " + caller.username)
        self._wake.set()
        return resumed

    def cancel(self, caller: Caller, transfer_id: str) -> Transfer:
        transfer = self.get(caller, transfer_id)
        if transfer.state.terminal:
            raise FailedPrecondition(f"transfers/{transfer_id} is {transfer.state.value}")
        self._stop_job(transfer_id, TransferState.CANCELLED)
        return self._change(transfer, TransferState.CANCELLED, "cancelled by " + caller.username)

    def delete(self, caller: Caller, transfer_id: str, *, force: bool) -> None:
        transfer = self.get(caller, transfer_id)
        if not transfer.state.terminal and not force:
            raise FailedPrecondition(
                f"transfers/{transfer_id} is {transfer.state.value}; cancel it or use force"
            )
        self._stop_job(transfer_id, TransferState.CANCELLED)
        self._store.delete(transfer_id)
        self._publish(replace(transfer, state=TransferState.CANCELLED), UpdateKind.STATE_CHANGED)
        self._event(transfer, "send.transferDeleted",
                    f"transfer {transfer_id} deleted by {caller.username}")

    def update(self, caller: Caller, transfer_id: str, *, priority: int | None,
               rate: RateLimits | None, checkpoint_interval: float | None) -> Transfer:
        transfer = self.get(caller, transfer_id)
        if transfer.state.terminal:
            raise FailedPrecondition(f"transfers/{transfer_id} is {transfer.state.value}")
        options = transfer.options
        if rate is not None:
            options = replace(options, rate=rate)
        if checkpoint_interval is not None:
            options = replace(options, checkpoint_interval=checkpoint_interval)
        _check_options(options, priority)
        updated = replace(transfer, options=options, updated_at=self._clock(),
                          priority=transfer.priority if priority is None else priority)
        self._store.save(updated)
        running = self._running.get(transfer_id)
        if running is not None and rate is not None:
            running.job.set_rate(rate)
        self._publish(updated, UpdateKind.PROGRESS)
        self._wake.set()
        return updated

    def files(self, caller: Caller, transfer_id: str, *, after_seq: int, limit: int,
              states: list[str]) -> list[FileRow]:
        return self._store.files(self.get(caller, transfer_id), after_seq=after_seq,
                                 limit=limit, states=states)

    async def watch(self, caller: Caller, transfer_id: str
                    ) -> AsyncIterator[tuple[UpdateKind, Transfer]]:
        """A snapshot, then every state change and progress report, until a terminal state."""
        transfer = self.get(caller, transfer_id)
        queue: asyncio.Queue[tuple[UpdateKind, Transfer]] = asyncio.Queue(maxsize=256)
        self._watchers.setdefault(transfer_id, set()).add(queue)
        try:
            yield UpdateKind.SNAPSHOT, transfer
            while not transfer.state.terminal:
                kind, transfer = await queue.get()
                yield kind, transfer
        finally:
            watchers = self._watchers.get(transfer_id)
            if watchers is not None:
                watchers.discard(queue)
                if not watchers:
                    del self._watchers[transfer_id]

    # --- scheduling --------------------------------------------------------------------------

    async def _schedule(self) -> None:
        while True:
            self._wake.clear()
            busy = {running.destination_id for running in self._running.values()}
            now = self._clock()
            for transfer in self._store.queued():
                if transfer.destination_id in busy or transfer.id in self._running:
                    continue
                if self._not_before.get(transfer.id, 0.0) > now:
                    continue
                if transfer.direction is Direction.PULL:  # its job builds the remote manifest
                    busy.add(transfer.destination_id)
                    self._launch(transfer)
                    continue
                manifest = self._manifests.peek(transfer.manifest_id)
                if manifest is None or manifest.state is ManifestState.ERROR:
                    self._finish(transfer, TransferState.FAILED, Failure(
                        "MANIFEST_FAILED", manifest.error if manifest else "manifest deleted"))
                    continue
                if manifest.state is ManifestState.PENDING:
                    continue
                busy.add(transfer.destination_id)
                self._launch(transfer)
            self._rebalance()
            delay = min((t - now for t in self._not_before.values() if t > now), default=1.0)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.05, min(delay, 1.0)))
            except TimeoutError:
                pass

    def _rebalance(self) -> None:
        """Split the server-wide outgoing allowance between the running pushes (a pull's
        share of the incoming allowance is set when its session opens)."""
        pushes = [r for r in self._running.values() if r.direction is Direction.PUSH]
        if self._bandwidth is None or not pushes:
            return
        outgoing, _incoming = self._bandwidth.allowance(outgoing_active=True,
                                                        incoming_active=self._receiving())
        cap = share(outgoing, len(pushes))
        for running in pushes:
            running.job.set_server_cap(cap)

    def _launch(self, transfer: Transfer) -> None:
        assert self._job_factory is not None
        now = self._clock()
        started = replace(transfer, state=TransferState.RUNNING, status_message="starting",
                          attempt_count=transfer.attempt_count + 1,
                          started_at=transfer.started_at or now, updated_at=now)
        self._store.save(started)
        self._publish(started, UpdateKind.STATE_CHANGED)
        self._event(started, EVENT_NAMES[TransferState.RUNNING],
                    f"transfer {started.id} started (attempt {started.attempt_count})")

        def report(progress: Progress, status: str) -> None:
            self._progress(started.id, progress, status)

        def record(files: list[FileRecord]) -> None:
            self._store.record_files(started.id, files)

        job = self._job_factory(started, report, record)
        task = asyncio.create_task(self._run(started.id, job), name=f"transfer-{started.id}")
        self._running[started.id] = _Running(task, job, started.destination_id,
                                             started.direction)
        self._rebalance()

    async def _run(self, transfer_id: str, job: Job) -> None:
        try:
            result = await job.run()
        except asyncio.CancelledError:
            raise
        except Unavailable as exc:
            self._retry_or_fail(transfer_id, Failure("PEER_UNREACHABLE", str(exc)))
        except JetstreamError as exc:
            self._fail(transfer_id, Failure(failure_reason(exc), str(exc)))
        except Exception as exc:  # noqa: BLE001 - a bug must fail the transfer, not the server
            log.exception("transfer %s crashed", transfer_id)
            self._fail(transfer_id, Failure("INTERNAL", f"internal error: {exc}"))
        else:
            transfer = self._store.get(transfer_id)
            if transfer is not None and transfer.state is TransferState.RUNNING:
                transfer = replace(transfer, progress=result.progress)
                if result.failed_file is not None:
                    self._finish(transfer, TransferState.FAILED, result.failed_file)
                else:
                    self._finish(transfer, TransferState.COMPLETED, None)
        finally:
            self._running.pop(transfer_id, None)
            self._wake.set()

    def _retry_or_fail(self, transfer_id: str, failure: Failure) -> None:
        """Retry with growing pauses while the peer has been unreachable for less than the
        retry timeout: a network outage or a restarting peer must not fail a transfer,
        while one that never comes back does, in bounded time."""
        transfer = self._store.get(transfer_id)
        if transfer is None or transfer.state is not TransferState.RUNNING:
            return
        now, done = self._clock(), transfer.progress.bytes_done
        outage = self._outages.get(transfer_id)
        if outage is None or done > outage.bytes_done:  # it moved since: a new outage
            outage = _Outage(now, 0, done)
        if now - outage.since >= self._retry_timeout:
            self._outages.pop(transfer_id, None)
            self._finish(transfer, TransferState.FAILED, Failure(
                failure.reason, f"{failure.message} (retried for {now - outage.since:.0f} s)"))
            return
        outage = replace(outage, failures=outage.failures + 1)
        self._outages[transfer_id] = outage
        delay = min(2.0 ** outage.failures, MAX_RETRY_DELAY)
        self._not_before[transfer_id] = now + delay
        self._change(transfer, TransferState.QUEUED,
                     f"{failure.message}; retrying in {delay:.0f} s")

    def _fail(self, transfer_id: str, failure: Failure) -> None:
        transfer = self._store.get(transfer_id)
        if transfer is not None and transfer.state is TransferState.RUNNING:
            self._finish(transfer, TransferState.FAILED, failure)

    def _finish(self, transfer: Transfer, state: TransferState, failure: Failure | None) -> None:
        self._outages.pop(transfer.id, None)
        now = self._clock()
        done = replace(transfer, state=state, error=failure, ended_at=now, updated_at=now,
                       status_message=failure.message if failure else state.value)
        self._store.save(done)
        self._count_end(state)
        self._publish(done, UpdateKind.STATE_CHANGED)
        severity = Severity.ERROR if state is TransferState.FAILED else Severity.INFO
        self._event(done, EVENT_NAMES[state], f"transfer {done.id} {state.value}"
                    + (f": {failure.message}" if failure else ""), severity)

    @property
    def sending(self) -> bool:
        return bool(self._running)

    def live_gauges(self) -> tuple[float, float]:
        """(sum of current send rates in bit/s, mean RTT in seconds) of running jobs."""
        progress = [running.job.progress for running in self._running.values()]
        rtts = [p.rtt for p in progress if p.rtt]
        return sum(p.rate_bps for p in progress), sum(rtts) / len(rtts) if rtts else 0.0

    def _count_end(self, state: TransferState) -> None:
        if state.terminal:
            self._metrics.finished.labels("outgoing", state.value).inc()

    def _change(self, transfer: Transfer, state: TransferState, message: str) -> Transfer:
        changed = replace(transfer, state=state, status_message=message,
                          updated_at=self._clock(),
                          ended_at=self._clock() if state.terminal else 0.0)
        self._store.save(changed)
        self._count_end(state)
        self._publish(changed, UpdateKind.STATE_CHANGED)
        self._event(changed, EVENT_NAMES[state], f"transfer {changed.id}: {message}")
        return changed

    def _stop_job(self, transfer_id: str, state: TransferState) -> None:
        running = self._running.pop(transfer_id, None)
        if running is not None:
            running.job.halt(state)
            running.task.cancel()

    def _progress(self, transfer_id: str, progress: Progress, status: str) -> None:
        transfer = self._store.get(transfer_id)
        if transfer is None or transfer.state is not TransferState.RUNNING:
            return
        now = self._clock()
        updated = replace(transfer, progress=progress, status_message=status, updated_at=now)
        if now - self._last_persist.get(transfer_id, 0.0) >= PERSIST_EVERY:
            self._last_persist[transfer_id] = now
            self._store.save(updated)
        self._publish(updated, UpdateKind.PROGRESS)

    def _publish(self, transfer: Transfer, kind: UpdateKind) -> None:
        for queue in self._watchers.get(transfer.id, ()):
            if queue.full() and kind is UpdateKind.PROGRESS:
                continue  # a slow watcher misses progress, never a state change
            if queue.full():
                queue.get_nowait()
            queue.put_nowait((kind, transfer))

    def _event(self, transfer: Transfer, kind: str, message: str,
               severity: Severity = Severity.INFO) -> None:
        destination = self._destinations.peek(transfer.destination_id)
        self._events.record(kind, message, now=self._clock(), severity=severity,
                            username=transfer.owner, subject=f"transfers/{transfer.id}",
                            attributes=transfer_attributes(transfer, destination))


def transfer_attributes(transfer: Transfer, destination: Destination | None) -> dict[str, str]:
    """What an event about a transfer says (and its trigger scripts receive)."""
    progress, error = transfer.progress, transfer.error
    return {
        "transferId": transfer.id, "direction": transfer.direction.value,
        "destinationId": transfer.destination_id,
        "destinationAddress": destination.endpoint.target if destination else "",
        "destinationPath": transfer.destination_path, "manifestId": transfer.manifest_id,
        "owner": transfer.owner, "state": transfer.state.value,
        "bytesTotal": str(progress.bytes_total), "bytesDone": str(progress.bytes_done),
        "filesTotal": str(progress.files_total), "filesDone": str(progress.files_done),
        "filesFailed": str(progress.files_failed),
        "errorReason": error.reason if error else "",
        "errorMessage": error.message if error else "",
        "labels": json.dumps(transfer.labels, sort_keys=True),
    }


def _check_options(options: TransferOptions, priority: int | None) -> None:
    if priority is not None and not 0 <= priority <= 100:
        raise InvalidArgument("priority must be from 0 (first) to 100 (last)")
    if not 0.1 <= options.checkpoint_interval <= 3600:
        raise InvalidArgument("checkpoint_interval must be from 0.1 s to 1 hour")
    problem = options.rate.problem()
    if problem is not None:
        raise InvalidArgument(f"rate_limit: {problem}")
