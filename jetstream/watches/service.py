"""Watch folders: the API's rules, batches of written files as transfers, and what happens to
a file once it arrived.

Each batch of files that settled becomes an ordinary push transfer (its own id, labelled
`watch: watches/{id}`), created as the watch's owner with the limits of the credentials
that created the watch. Exactly once, across crashes: the files of a batch are recorded
(SENDING, with the transfer's id) before the transfer is created; a transfer that ends
(the event log says so) settles its files; at start, batches whose transfer never came to
be are forgotten (their files are found by the scan and sent again: nothing had been sent),
batches whose transfer ended while the server was down are settled, and the others wait
for their transfer, which resumes from its checkpoint like any other. A resumed transfer
skips files that already arrived, so a file arrives once.

After delivery a file is kept (and remembered: sent again only once it changes), deleted or
moved, as the owner, and only if it is still the version that was sent; a file changed
meanwhile is sent again. A file that failed to arrive is tried again after a delay, up to
MAX_ATTEMPTS times, then waits until it changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from jetstream.auth.principal import lookup_principal
from jetstream.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    JetstreamError,
    NotFound,
    PermissionDenied,
)
from jetstream.ids import check_id
from jetstream.services.auth import Caller, acting_as
from jetstream.services.destinations import DestinationService
from jetstream.services.events import Event, EventLog, Severity
from jetstream.services.globs import PathFilter
from jetstream.services.manifests import ManifestSpec, Mapping
from jetstream.services.sandboxes import Sandboxes
from jetstream.storage import userfs
from jetstream.storage.dirwatch import DirWatcher
from jetstream.storage.paths import RelPath, parse_path, printable
from jetstream.storage.sandbox import Location, Sandbox
from jetstream.transfers.model import Direction, TransferOptions, TransferState
from jetstream.transfers.service import TransferService
from jetstream.transfers.store import TransferStore
from jetstream.watches.folder import FolderWatch, Ready
from jetstream.watches.model import (
    AfterDelivery,
    FileState,
    Watch,
    WatchedFile,
    WatchState,
    WatchStats,
    WatchStatus,
)
from jetstream.watches.store import WatchStore

log = logging.getLogger(__name__)

BATCH_FILES = 2000
"""Files per transfer at most (a manifest takes 10,000 mappings; smaller batches start
sooner)."""
MAX_ATTEMPTS = 3
RETRY_DELAY = 10.0
"""Seconds before a file that failed to arrive is tried again (times its attempts)."""
REATTACH_DELAY = 30.0
"""Seconds between attempts to watch a folder that is gone or cannot be read."""
MIN_SETTLE, MAX_SETTLE = 0.1, 3600.0
ENDED = {"send.transferComplete": TransferState.COMPLETED,
         "send.transferError": TransferState.FAILED,
         "send.transferCancelled": TransferState.CANCELLED,
         "send.transferDeleted": TransferState.CANCELLED}
"""The events that end a transfer, and how."""
WATCH_LABEL = "watch"


@dataclass(frozen=True)
class _Action:
    path: str
    place: Location
    size: int
    mtime_ns: int
    target: Location | None = None
    """MOVE: where to."""


class WatchService:
    def __init__(self, store: WatchStore, transfers: TransferService,
                 transfer_store: TransferStore, destinations: DestinationService,
                 sandboxes: Sandboxes, files: userfs.UserFS, watcher: DirWatcher,
                 events: EventLog, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._transfers = transfers
        self._transfer_store = transfer_store
        self._destinations = destinations
        self._sandboxes = sandboxes
        self._files = files
        self._watcher = watcher
        self._events = events
        self._clock = clock
        self._folders: dict[str, FolderWatch] = {}
        self._errors: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._retries: dict[str, asyncio.TimerHandle] = {}
        events.subscribe(self)
        watcher.on_overflow(self._rescan_all)

    # --- lifecycle ---------------------------------------------------------------------------

    def begin(self) -> None:
        """`start` in the background: scanning big folders must not hold the server up."""
        self._spawn(self.start())

    async def start(self) -> None:
        """Settle what happened while the server was down, then watch every folder."""
        for watch in self._store.every():
            for transfer_id in sorted({f.transfer_id for f in self._store.sending(watch.id)}):
                transfer = self._transfer_store.get(transfer_id)
                if transfer is None:
                    self._store.settle(watch.id, [], [f.path for f in
                                                     self._store.batch(transfer_id)], [],
                                       self._clock())
                elif transfer.state.terminal:
                    await self._settle_batch(transfer_id, transfer.state)
            await self._attach(watch)

    async def close(self) -> None:
        for handle in self._retries.values():
            handle.cancel()
        for folder in self._folders.values():
            folder.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- the API -----------------------------------------------------------------------------

    async def create(self, caller: Caller, wanted: Watch, requested_id: str) -> WatchStatus:
        if caller.token.read_only:
            raise PermissionDenied("a read-only token cannot create watch folders: a watch "
                                   "sends (and may delete or move) files on its own")
        watch_id = requested_id or uuid.uuid4().hex[:12]
        check_id(watch_id, "watch_id")
        if self._store.get(watch_id) is not None:
            raise AlreadyExists(f"watches/{watch_id} exists already")
        watch = _validated(wanted)
        writes = watch.after_delivery is not AfterDelivery.KEEP
        location = await self._sandboxes.locate_for(caller, watch.folder, write=writes,
                                                    what="folder")
        top = await self._files.run(caller.principal, userfs.stat, location)
        if top.kind != "directory":
            raise FailedPrecondition(f"{printable(watch.folder)} is not a directory")
        if watch.move_to:
            await self._sandboxes.locate_for(caller, watch.move_to, write=True, what="move_to")
        destination = self._destinations.get(caller, watch.destination_id)
        if destination.owner != caller.username:
            raise FailedPrecondition(f"destinations/{destination.id} belongs to "
                                     f"{destination.owner}: a watch sends with your own "
                                     "destinations")
        self._refuse_overlap(watch, location)
        watch = replace(watch, id=watch_id, owner=caller.username,
                        allowed_paths=caller.token.allowed_paths, created_at=self._clock())
        self._store.insert(watch)
        self._events.record("watch.created", f"watches/{watch_id} sends "
                            f"{printable(location.host_path)} to destinations/{destination.id}",
                            now=self._clock(), username=watch.owner,
                            subject=f"watches/{watch_id}", attributes=_attributes(
                                watch, location.host_path))
        await self._attach(watch)
        return self.status(watch)

    def get(self, caller: Caller, watch_id: str) -> WatchStatus:
        watch = self._store.get(watch_id)
        if watch is None or not caller.can_see(watch.owner):
            raise NotFound(f"watches/{watch_id} not found")
        return self.status(watch)

    def list(self, caller: Caller, *, owner: str, after: str, limit: int) -> list[WatchStatus]:
        return [self.status(w) for w in self._store.list(owner=caller.owner_scope(owner),
                                                         after=after, limit=limit)]

    def delete(self, caller: Caller, watch_id: str) -> None:
        if caller.token.read_only:
            raise PermissionDenied("a read-only token cannot delete watch folders")
        status = self.get(caller, watch_id)
        folder = self._folders.pop(watch_id, None)
        if folder is not None:
            folder.stop()
        retry = self._retries.pop(watch_id, None)
        if retry is not None:
            retry.cancel()
        self._errors.pop(watch_id, None)
        self._store.delete(watch_id)
        self._events.record("watch.deleted", f"watches/{watch_id} deleted by "
                            f"{caller.username}", now=self._clock(), username=status.watch.owner,
                            subject=f"watches/{watch_id}",
                            attributes=_attributes(status.watch, status.local_path))

    def status(self, watch: Watch) -> WatchStatus:
        counts = self._store.counts(watch.id)
        transfers, last = self._store.transfers(watch.id)
        folder = self._folders.get(watch.id)
        error = self._errors.get(watch.id, "")
        stats = WatchStats(waiting=folder.waiting if folder else 0,
                           sending=counts.get(FileState.SENDING.value, 0),
                           delivered=watch.files_delivered,
                           bytes_delivered=watch.bytes_delivered,
                           failed=counts.get(FileState.FAILED.value, 0),
                           transfer_count=transfers,
                           last_transfer=f"transfers/{last}" if last else "")
        return WatchStatus(watch, WatchState.ERROR if error else WatchState.ACTIVE, error,
                           stats, folder.location.host_path if folder else "")

    def _refuse_overlap(self, watch: Watch, location: Location) -> None:
        mine = location.host_path.rstrip("/") + "/"
        for other in self._folders.values():
            theirs = other.location.host_path.rstrip("/") + "/"
            overlap = mine.startswith(theirs) or theirs.startswith(mine)
            keeps = AfterDelivery.KEEP
            if overlap and (watch.after_delivery is not keeps
                            or other.watch.after_delivery is not keeps):
                raise FailedPrecondition(
                    f"watches/{other.watch.id} already watches {printable(theirs)}, and one "
                    "of the two deletes or moves what it sends: they would race")

    # --- watching ------------------------------------------------------------------------------

    async def _attach(self, watch: Watch) -> None:
        """Start watching `watch`'s folder as its owner sees it now."""
        self._retries.pop(watch.id, None)
        try:
            caller = await acting_as(watch.owner, f"watches/{watch.id}", watch.allowed_paths)
            location = await self._sandboxes.locate_for(
                caller, watch.folder, write=watch.after_delivery is not AfterDelivery.KEEP,
                what="folder")
        except JetstreamError as exc:
            self._fail(watch, f"cannot use the folder: {exc}")
            return
        folder = FolderWatch(watch, location, caller.principal, self._files, self._watcher,
                             ready=self._folder_ready, failed=self._folder_failed)
        self._folders[watch.id] = folder
        self._errors.pop(watch.id, None)
        await folder.start({f.path for f in self._store.sending(watch.id)})

    def _fail(self, watch: Watch, message: str) -> None:
        if self._errors.get(watch.id) != message:
            self._events.record("watch.error", f"watches/{watch.id}: {message}; trying again "
                                f"every {REATTACH_DELAY:g} s", now=self._clock(),
                                severity=Severity.WARNING, username=watch.owner,
                                subject=f"watches/{watch.id}")
        self._errors[watch.id] = message
        folder = self._folders.pop(watch.id, None)
        if folder is not None:
            folder.stop()
        loop = asyncio.get_running_loop()
        self._retries[watch.id] = loop.call_later(
            REATTACH_DELAY, lambda: self._spawn(self._reattach(watch.id)))

    async def _reattach(self, watch_id: str) -> None:
        watch = self._store.get(watch_id)
        if watch is not None and watch_id not in self._folders:
            await self._attach(watch)

    def _folder_failed(self, folder: FolderWatch, message: str) -> None:
        if self._folders.get(folder.watch.id) is folder:
            self._fail(folder.watch, message)

    def _rescan_all(self) -> None:
        for folder in self._folders.values():
            self._spawn(folder.rescan())

    # --- batches -------------------------------------------------------------------------------

    def _folder_ready(self, folder: FolderWatch, ready: list[Ready]) -> None:
        watch = folder.watch
        known = self._store.lookup(watch.id, [r.path for r in ready])
        send: list[Ready] = []
        current: list[str] = []
        for item in ready:
            row = known.get(item.path)
            same = row is not None and (row.size, row.mtime_ns) == (item.size, item.mtime_ns)
            if same and (row.state is FileState.SENT or  # type: ignore[union-attr]
                         row.attempts >= MAX_ATTEMPTS):  # type: ignore[union-attr]
                current.append(item.path)  # delivered, or given up on, in this version
            else:
                send.append(item)
        folder.release(current, done=True)
        for start in range(0, len(send), BATCH_FILES):
            self._spawn(self._send_batch(folder, send[start:start + BATCH_FILES]))

    async def _send_batch(self, folder: FolderWatch, batch: list[Ready]) -> None:
        watch = folder.watch
        transfer_id = uuid.uuid4().hex[:12]
        paths = [r.path for r in batch]
        self._store.begin_batch(watch.id, transfer_id,
                                [(r.path, r.size, r.mtime_ns) for r in batch], self._clock())
        base = watch.folder.rstrip("/")
        spec = ManifestSpec(mappings=tuple(Mapping(f"{base}/{p}", p) for p in paths))
        try:
            caller = await acting_as(watch.owner, f"watches/{watch.id}", watch.allowed_paths)
            self._transfers.create(
                caller, destination=watch.destination_id, manifest="",
                destination_path=watch.destination_path, direction=Direction.PUSH,
                priority=watch.priority, options=TransferOptions(),
                labels={**watch.labels, WATCH_LABEL: f"watches/{watch.id}"},
                requested_id=transfer_id, spec=spec)
        except JetstreamError as exc:
            self._store.settle(watch.id, [], paths, [], self._clock())
            folder.release(paths, done=False, retry_after=REATTACH_DELAY)
            self._fail(watch, f"cannot create a transfer: {exc}")

    # --- the event log's side: transfers that end ----------------------------------------------

    def wants(self, kind: str) -> bool:
        return kind in ENDED

    def heard(self, event: Event) -> None:
        transfer_id = event.attributes.get("transferId", "")
        if transfer_id and event.attributes.get("labels", "").find(f'"{WATCH_LABEL}"') >= 0:
            self._spawn(self._settle_batch(transfer_id, ENDED[event.kind]))

    async def _settle_batch(self, transfer_id: str, state: TransferState) -> None:
        files = self._store.batch(transfer_id)
        if not files:
            return
        watch = self._store.get(files[0].watch_id)
        if watch is None:
            return
        delivered = self._delivered(transfer_id, state, files)
        folder = self._folders.get(watch.id)
        now = self._clock()
        try:
            principal = await asyncio.to_thread(lookup_principal, watch.owner)
            plan = _plan(watch, self._sandboxes.for_principal(principal),
                         [f for f in files if f.path in delivered])
            outcomes = await self._files.run(principal, _after_delivery, watch.after_delivery,
                                             plan)
        except JetstreamError as exc:
            log.warning("watches/%s: after transfers/%s: %s", watch.id, transfer_id, exc)
            if folder is not None:
                folder.release([f.path for f in files], done=False, retry_after=RETRY_DELAY)
            return
        sent, forget, done, retry = [], [], [], []
        failed: list[tuple[str, str, int]] = []
        for action, outcome in zip(plan, outcomes, strict=True):
            if outcome in ("removed", "moved", "gone", "changed"):
                forget.append(action.path)  # a changed file goes again
                (retry if outcome == "changed" else done).append(action.path)
                continue
            if outcome != "kept":  # could not delete or move it: remembered as kept
                log.warning("watches/%s: %s stays: %s", watch.id, printable(action.path),
                            outcome)
            sent.append(action.path)
            done.append(action.path)
        cancelled = state is TransferState.CANCELLED
        why = "its transfer was cancelled" if cancelled \
            else f"it did not arrive (transfers/{transfer_id})"
        for file in files:
            if file.path not in delivered:
                attempts = MAX_ATTEMPTS if cancelled else file.attempts + 1
                failed.append((file.path, why, attempts))
                (done if attempts >= MAX_ATTEMPTS else retry).append(file.path)
        self._store.settle(watch.id, sent, forget, failed, now)
        self._store.count_delivered(watch.id, len(plan), sum(a.size for a in plan))
        if folder is not None:
            folder.release(done, done=True)
            attempts = max((f.attempts + 1 for f in files), default=1)
            folder.release(retry, done=False, retry_after=RETRY_DELAY * attempts)

    def _delivered(self, transfer_id: str, state: TransferState,
                   files: list[WatchedFile]) -> set[str]:
        """The files of the batch that arrived verified (or were already there, identical)."""
        if state is TransferState.COMPLETED:
            return {f.path for f in files}
        transfer = self._transfer_store.get(transfer_id)
        if transfer is None:
            return set()
        rows = self._transfer_store.files(transfer, after_seq=-1, limit=len(files) + 1,
                                          states=["done", "skipped"])
        return {row.dest_path for row in rows}

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _plan(watch: Watch, sandbox: Sandbox, files: list[WatchedFile]) -> list[_Action]:
    """Where each delivered file is in the owner's view now, and where it moves to."""
    base = parse_path(watch.folder, what="folder")
    move_to = parse_path(watch.move_to, what="move_to") if watch.move_to else None
    actions = []
    for file in files:
        relative = parse_path(file.path, what="file path")
        target = _locate(sandbox, move_to / relative) if move_to is not None else None
        actions.append(_Action(file.path, _locate(sandbox, base / relative), file.size,
                               file.mtime_ns, target))
    return actions


def _locate(sandbox: Sandbox, path: RelPath) -> Location:
    location = sandbox.resolve(path).location
    if location is None:
        raise FailedPrecondition(f"{printable(str(path))} is not in a sandbox resource")
    return location


def _after_delivery(policy: AfterDelivery, plan: list[_Action]) -> list[str]:
    """On a worker thread, as the owner: keep, delete or move each delivered file, if it is
    still the version that was sent. Returns per file: kept, removed, moved, changed, gone,
    or what went wrong."""
    outcomes: list[str] = []
    for action in plan:
        try:
            found = userfs.lookup(action.place)
        except JetstreamError:
            found = None
        if found is None:
            outcomes.append("gone")
        elif found.kind != "file" or (found.size, found.mtime_ns) != (action.size,
                                                                      action.mtime_ns):
            outcomes.append("changed")
        elif policy is AfterDelivery.KEEP:
            outcomes.append("kept")
        else:
            try:
                outcomes.append(_remove_or_move(action))
            except JetstreamError as exc:
                outcomes.append(str(exc))
    return outcomes


def _remove_or_move(action: _Action) -> str:
    if action.target is None:
        userfs.remove(action.place)
        return "removed"
    parent = Location(action.target.root, RelPath(action.target.path.parts[:-1]))
    if parent.path.parts:
        userfs.mkdir(parent, parents=True)
    try:
        userfs.rename(action.place, action.target)
    except AlreadyExists:  # an earlier version is there: keep both
        name = f"{action.target.path.name}.{time.strftime('%Y%m%dT%H%M%S')}"
        userfs.rename(action.place, Location(parent.root, parent.path / RelPath((name,))))
    return "moved"


def _validated(w: Watch) -> Watch:
    folder = str(parse_path(w.folder, what="folder")) if w.folder else ""
    if not folder or folder == "/":
        raise InvalidArgument("folder is required: a folder of your sandbox, not its root")
    if not w.destination_id:
        raise InvalidArgument("destination is required")
    path = str(parse_path(w.destination_path, what="destination_path", empty_is_root=True))
    PathFilter(w.include, w.exclude)
    if not MIN_SETTLE <= w.settle <= MAX_SETTLE:
        raise InvalidArgument("settle_time must be from 0.1 s to 1 hour")
    if not 0 <= w.priority <= 100:
        raise InvalidArgument("priority must be from 0 (first) to 100 (last)")
    if len(w.labels) > 63 or WATCH_LABEL in w.labels or any(
            len(k) > 63 or len(v) > 1024 for k, v in w.labels.items()):
        raise InvalidArgument("labels: at most 63, keys up to 63 and values up to 1024 "
                              f"characters, and not {WATCH_LABEL!r} (the server sets it)")
    move_to = ""
    if w.after_delivery is AfterDelivery.MOVE:
        if not w.move_to:
            raise InvalidArgument("move_to is required to move delivered files")
        move_to = str(parse_path(w.move_to, what="move_to"))
        if move_to == folder or move_to.startswith(folder.rstrip("/") + "/"):
            raise InvalidArgument("move_to must be outside the watched folder")
    elif w.move_to:
        raise InvalidArgument("move_to is only for after_delivery MOVE")
    return replace(w, folder=folder, destination_path=path, move_to=move_to)


def _attributes(watch: Watch, local_path: str) -> dict[str, str]:
    return {"watchId": watch.id, "owner": watch.owner, "folder": watch.folder,
            "localPath": local_path, "destinationId": watch.destination_id,
            "destinationPath": watch.destination_path,
            "afterDelivery": watch.after_delivery.value}
