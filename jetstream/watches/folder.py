"""One watched folder: which files are there, and when each is written and may be sent.

The kernel tells (inotify, through DirWatcher) when an entry of the folder or of a subfolder
is created, written, closed, renamed or removed; a scan when the watch starts (and after the
kernel dropped events) finds what arrived unseen. A file is ready once

- no writer that inotify saw has it open (every IN_MODIFY is matched by an IN_CLOSE_WRITE),
- nothing happened to it for the settle time,

and then its size and modification time, read as the owner, are handed on with it. There is
no polling: one timer fires when the next file's settle time is up. Files handed on are
"busy" until the service says their transfer ended; new events for them are still noted, so
a file changed while it was being sent is sent again afterwards.

Everything here only learns names: files are read, listed and stat'ed through userfs, with
the owner's credentials and without following links.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from inotify_simple import flags

from jetstream.auth.principal import Principal
from jetstream.errors import JetstreamError, NotFound
from jetstream.services.globs import PathFilter
from jetstream.storage import userfs
from jetstream.storage.dirwatch import Change, DirWatcher
from jetstream.storage.paths import parse_path, printable
from jetstream.storage.sandbox import Location
from jetstream.watches.model import Watch

log = logging.getLogger(__name__)

GATHER = 0.25
"""Seconds a check waits past the first file's settle time, so files written together
leave together in one transfer."""


@dataclass
class _Seen:
    changed_at: float
    writing: bool = False
    not_before: float = 0.0
    """A file whose transfer failed waits until then before it is tried again."""


@dataclass(frozen=True)
class Ready:
    path: str
    size: int
    mtime_ns: int


class FolderWatch:
    def __init__(self, watch: Watch, location: Location, principal: Principal,
                 files: userfs.UserFS, watcher: DirWatcher, *,
                 ready: Callable[[FolderWatch, list[Ready]], None],
                 failed: Callable[[FolderWatch, str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.watch = watch
        self.location = location
        self._principal = principal
        self._files = files
        self._watcher = watcher
        self._ready = ready
        self._failed = failed
        self._clock = clock
        self._filter = PathFilter(watch.include, watch.exclude)
        self._seen: dict[str, _Seen] = {}
        self._busy: set[str] = set()
        self._dirs: dict[str, tuple[int, Callable[[Change], None]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self.error = ""
        self.stopped = False

    @property
    def waiting(self) -> int:
        return sum(1 for path in self._seen if path not in self._busy)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, busy: set[str]) -> None:
        """Watch the folder and scan it; `busy`: files already in a transfer."""
        self._busy |= busy
        await self._scan("")

    def stop(self) -> None:
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
        for task in self._tasks:
            task.cancel()
        for wd, handler in self._dirs.values():
            self._watcher.remove(wd, handler)
        self._dirs.clear()

    async def rescan(self) -> None:
        """After the kernel dropped events: what is there now, as if never seen."""
        for entry in self._seen.values():
            entry.writing = False
        await self._scan("")

    def release(self, paths: list[str], *, done: bool, retry_after: float = 0.0) -> None:
        """The service is through with these busy files: `done` forgets them (until they
        change), else they are tried again (not before `retry_after` seconds)."""
        now = self._clock()
        for path in paths:
            self._busy.discard(path)
            entry = self._seen.get(path)
            if entry is None:
                continue
            if done:
                del self._seen[path]
            else:
                entry.not_before = now + retry_after
        self._schedule()

    # --- what the kernel says -------------------------------------------------------------------

    async def _scan(self, relative: str) -> None:
        """Watch `relative` (a folder below the watched one, "" for itself) and note what it
        holds, subfolders first watched then scanned, as the owner."""
        if self.stopped:
            return
        if not self._watch_dir(relative):
            return
        place = self.place(relative)
        after: str | None = None
        while True:
            try:
                page = await self._files.run(self._principal, userfs.list_dir, place,
                                             after=after)
            except JetstreamError as exc:
                if not relative:
                    self._failed(self, f"cannot list the folder: {exc}")
                return
            for entry in page.entries:
                path = f"{relative}/{entry.name}" if relative else entry.name
                if entry.kind == "directory":
                    if not self._filter.excluded(path):
                        await self._scan(path)
                elif entry.kind == "file" and self._filter.wanted_file(path):
                    self._seen.setdefault(path, _Seen(self._clock()))
            if page.next_after is None:
                break
            after = page.next_after
        self._schedule()

    def _watch_dir(self, relative: str) -> bool:
        if relative in self._dirs:
            return True
        handler = self._handler(relative)
        host = os.path.join(self.location.host_path, *relative.split("/")) if relative \
            else self.location.host_path
        try:
            wd = self._watcher.add(host, handler)
        except OSError as exc:
            problem = f"cannot watch {printable(host)}: {exc.strerror}"
            if not relative:
                self._failed(self, problem)
            else:
                log.warning("watches/%s: %s", self.watch.id, problem)
            return False
        self._dirs[relative] = (wd, handler)
        return True

    def _handler(self, relative: str) -> Callable[[Change], None]:
        def changed(change: Change) -> None:
            if change.gone:
                self._dirs.pop(relative, None)
                if not relative and not self.stopped:
                    self._failed(self, "the folder is gone")
                return
            if not change.name:
                return
            path = f"{relative}/{change.name}" if relative else change.name
            if change.has(flags.ISDIR):
                self._directory_changed(path, change)
            elif self._filter.wanted_file(path):
                self._file_changed(path, change)

        return changed

    def _directory_changed(self, path: str, change: Change) -> None:
        if change.has(flags.CREATE | flags.MOVED_TO) and not self._filter.excluded(path):
            self._spawn(self._scan(path))
        elif change.has(flags.DELETE | flags.MOVED_FROM):
            prefix = path + "/"
            for gone in [p for p in self._seen if p.startswith(prefix)]:
                del self._seen[gone]
            for below in [d for d in self._dirs if d == path or d.startswith(prefix)]:
                wd, handler = self._dirs.pop(below)
                self._watcher.remove(wd, handler)

    def _file_changed(self, path: str, change: Change) -> None:
        if change.has(flags.DELETE | flags.MOVED_FROM):
            if path not in self._busy:
                self._seen.pop(path, None)
            return
        entry = self._seen.setdefault(path, _Seen(self._clock()))
        entry.changed_at = self._clock()
        if change.has(flags.MODIFY):
            entry.writing = True
        if change.has(flags.CLOSE_WRITE | flags.MOVED_TO):
            entry.writing = False
        self._schedule()

    # --- settling ------------------------------------------------------------------------------

    def _schedule(self) -> None:
        """One timer, at the earliest moment a file may be ready."""
        if self.stopped:
            return
        settle = self.watch.settle
        due = [max(e.changed_at + settle, e.not_before) for p, e in self._seen.items()
               if not e.writing and p not in self._busy]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if due:
            delay = max(0.0, min(due) - self._clock()) + GATHER
            self._timer = self._loop.call_later(delay, self._check)

    def _check(self) -> None:
        self._timer = None
        now, settle = self._clock(), self.watch.settle
        due = [p for p, e in self._seen.items() if p not in self._busy and not e.writing
               and now - e.changed_at >= settle and now >= e.not_before]
        if due:
            self._busy.update(due)
            self._spawn(self._hand_over(due))
        self._schedule()

    async def _hand_over(self, paths: list[str]) -> None:
        """Read size and time of the files that settled, as the owner, and pass on those
        still there and still regular files."""
        places = [self.place(p) for p in paths]
        try:
            found = await self._files.run(self._principal, _stat_many, places)
        except JetstreamError as exc:
            self.release(paths, done=False, retry_after=self.watch.settle)
            log.warning("watches/%s: %s", self.watch.id, exc)
            return
        ready: list[Ready] = []
        gone: list[str] = []
        for path, entry in zip(paths, found, strict=True):
            if entry is None or entry.kind != "file":
                gone.append(path)
            else:
                ready.append(Ready(path, entry.size, entry.mtime_ns))
        self.release(gone, done=True)
        if ready:
            self._ready(self, ready)

    def place(self, relative: str) -> Location:
        """Where a file or folder below the watched folder is ("" for the folder)."""
        if not relative:
            return self.location
        return Location(self.location.root,
                        self.location.path / parse_path(relative, what="file path"))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _stat_many(places: list[Location]) -> list[userfs.Entry | None]:
    """`lookup` of many files in one visit to a worker thread (as the owner)."""
    found: list[userfs.Entry | None] = []
    with userfs.DirCache() as dirs:
        for place in places:
            try:
                found.append(userfs.lookup(place, dirs=dirs))
            except NotFound:
                found.append(None)
    return found
