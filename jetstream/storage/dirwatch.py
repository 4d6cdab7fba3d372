"""Directory change notifications from the kernel (inotify), delivered on the event loop.

One inotify descriptor serves every directory the server watches (the trigger directory,
every watch folder and its subdirectories): the kernel allows a process few descriptors
(`fs.inotify.max_user_instances`, 128 by default) but many watches. The descriptor is read
when the event loop says it is readable, never polled. Watches are added by path with
IN_ONLYDIR | IN_DONT_FOLLOW, so a symbolic link planted where a directory was expected is
never watched; the names reported are only hints: whoever acts on them opens the files
through userfs, with the owner's rights, without following links.

The kernel gives one watch descriptor per directory inode, whoever asks: two watchers of the
same directory share it, so each descriptor keeps the list of handlers interested in it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from inotify_simple import INotify, flags

log = logging.getLogger(__name__)

CHANGES = (flags.CREATE | flags.MODIFY | flags.ATTRIB | flags.CLOSE_WRITE | flags.MOVED_FROM
           | flags.MOVED_TO | flags.DELETE | flags.DELETE_SELF | flags.MOVE_SELF)
"""Everything that can make a directory's entries appear, change or go."""


@dataclass(frozen=True)
class Change:
    name: str
    """The entry of the watched directory concerned; "" for the directory itself."""
    mask: int
    """inotify_simple.flags bits (IN_ISDIR set for a directory)."""

    def has(self, flag: int) -> bool:
        return bool(self.mask & flag)

    @property
    def gone(self) -> bool:
        """The watched directory itself is gone (or unwatched): no more changes come."""
        return self.has(flags.IGNORED)


Handler = Callable[[Change], None]
OverflowHandler = Callable[[], None]


class WatchLimitReached(OSError):
    """The kernel's limit on watches (fs.inotify.max_user_watches) was reached."""


class DirWatcher:
    def __init__(self) -> None:
        self._inotify = INotify(nonblocking=True)
        self._handlers: dict[int, list[Handler]] = {}
        self._on_overflow: list[OverflowHandler] = []
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._inotify.fileno(), self._read)

    def add(self, path: str, handler: Handler) -> int:
        """Watch the directory `path` (not following a final link); returns the handle to
        pass to `remove`. OSError if it is not a directory or cannot be watched;
        WatchLimitReached if the kernel's limit is reached."""
        try:
            wd = int(self._inotify.add_watch(path, CHANGES | flags.ONLYDIR | flags.DONT_FOLLOW))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise WatchLimitReached(exc.errno, "the kernel's limit on inotify watches "
                                        "(fs.inotify.max_user_watches) is reached") from None
            raise
        self._handlers.setdefault(wd, []).append(handler)
        return wd

    def remove(self, wd: int, handler: Handler) -> None:
        handlers = self._handlers.get(wd)
        if handlers is None or handler not in handlers:
            return
        handlers.remove(handler)
        if not handlers:
            del self._handlers[wd]
            try:
                self._inotify.rm_watch(wd)
            except OSError:
                pass  # the directory is gone: the kernel dropped the watch already

    def on_overflow(self, handler: OverflowHandler) -> None:
        """`handler` runs when the kernel dropped events (its queue overflowed): whoever
        relies on them must look at their directories again."""
        self._on_overflow.append(handler)

    def close(self) -> None:
        self._loop.remove_reader(self._inotify.fileno())
        self._inotify.close()
        self._handlers.clear()

    def _read(self) -> None:
        try:
            events = self._inotify.read(timeout=0)
        except OSError as exc:  # never expected; stop reading rather than spin
            log.error("reading inotify events failed: %s", os.strerror(exc.errno or 0))
            self._loop.remove_reader(self._inotify.fileno())
            return
        for event in events:
            if event.mask & flags.Q_OVERFLOW:
                log.warning("the kernel dropped directory change events (queue overflow); "
                            "looking at the watched directories again")
                for overflow in list(self._on_overflow):
                    overflow()
                continue
            handlers = self._handlers.get(event.wd, [])
            if event.mask & flags.IGNORED:  # the directory is gone or was unwatched
                self._handlers.pop(event.wd, None)
            change = Change(event.name, event.mask)
            for handler in list(handlers):
                try:
                    handler(change)
                except Exception:  # noqa: BLE001 - one watcher's bug must not stop the others
                    log.exception("directory change handler failed")
