"""Writes that bypass the page cache (O_DIRECT), for data that will not be read again.

A received file's bytes that arrive in order are hashed from memory as they are written, so
caching them only costs CPU: copying into the page cache and writing it back cost the
receiving server more than everything else it does per byte (docs/performance.md). Here the
4 KiB-aligned middle of a write goes through a second descriptor opened with O_DIRECT, from
an aligned staging buffer of the calling thread; the unaligned ends go through the ordinary
descriptor. The kernel keeps the two coherent (a direct write flushes and drops cached pages
of its range). Where the second descriptor cannot be had (a file system without O_DIRECT,
such as tmpfs before Linux 6.6 or some FUSE ones; no /proc) every write goes through the
ordinary one.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate

from jetstream.datachannel.native import FAST

ALIGN = 4096
"""Offsets, lengths and memory of direct writes: a multiple of any device's logical block."""
STAGING = 4 << 20
"""Bytes staged (and written) per direct write call."""

_local = threading.local()


def _staging() -> mmap.mmap:
    """The calling thread's aligned buffer (mmap memory is page-aligned), reused."""
    buffer: mmap.mmap | None = getattr(_local, "buffer", None)
    if buffer is None:
        buffer = _local.buffer = mmap.mmap(-1, STAGING)
    return buffer


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """All of ``data`` at ``offset`` (pwrite may write less than it was given)."""
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _gather(dest: mmap.mmap, pos: int, buffers: list[bytes | memoryview]) -> int:
    """The pure-Python twin of the compiled `gather`."""
    for data in buffers:
        end = pos + len(data)
        dest[pos:end] = data
        pos = end
    return pos


gather: Callable[[mmap.mmap, int, list[bytes | memoryview]], int] = (
    FAST.gather if FAST is not None else _gather)
"""Copies pieces into the staging buffer: the compiled one without the GIL, so that the
event loop goes on meanwhile."""


def _ignore(data: memoryview) -> None:
    pass


class DirectWriter:
    """Writes to the file open as ``fd`` (read-write), its aligned part without caching.

    Opened lazily by the first write, as whoever calls it (the reopened descriptor is
    checked against the caller's file-system identity like any open)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._direct_fd: int | None = None
        self._usable = True

    def write(self, buffers: Sequence[bytes | memoryview], offset: int,
              seen: Callable[[memoryview], object] = _ignore) -> None:
        """Write ``buffers`` back to back from ``offset``. They are copied into the staging
        buffer on their way, so ``seen`` gets them in order as a few large views, before
        they are written: to hash them without another copy."""
        staging = _staging()
        base = offset - offset % ALIGN
        low = fill = offset - base
        pending = list(buffers)
        starts = list(accumulate(map(len, pending), initial=0))
        i = 0
        while i < len(pending):
            room = STAGING - fill
            fit = bisect_right(starts, starts[i] + room, i) - 1
            if fit > i:  # buffers i..fit-1 fit whole
                fill = gather(staging, fill, pending[i:fit])
                i = fit
            else:  # buffer i is longer than the room left: its head fills the staging
                view = memoryview(pending[i]).cast("B")
                staging[fill:] = view[:room]
                pending[i], fill = view[room:], STAGING
                starts[i] += room
            if fill == STAGING:
                self._write_staged(staging, base, low, fill, seen)
                base, low, fill = base + STAGING, 0, 0
        if fill > low:
            self._write_staged(staging, base, low, fill, seen)

    def close(self) -> None:
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None

    def _write_staged(self, staging: mmap.mmap, base: int, low: int, high: int,
                      seen: Callable[[memoryview], object]) -> None:
        """Write ``staging[low:high]``, which belongs at ``base + low`` (``base`` aligned)."""
        with memoryview(staging) as view:
            seen(view[low:high])
            start = -(-low // ALIGN) * ALIGN
            stop = high // ALIGN * ALIGN
            if stop - start >= ALIGN and self._open() and self._write_direct(
                    view[start:stop], base + start):
                pwrite_all(self._fd, view[low:start], base + low)
                pwrite_all(self._fd, view[stop:high], base + stop)
            else:
                pwrite_all(self._fd, view[low:high], base + low)

    def _open(self) -> bool:
        if self._direct_fd is None and self._usable:
            try:
                self._direct_fd = os.open(f"/proc/self/fd/{self._fd}",
                                          os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
            except OSError:  # EINVAL: no O_DIRECT here; ENOENT: no /proc; or refused
                self._usable = False
        return self._direct_fd is not None

    def _write_direct(self, data: memoryview, offset: int) -> bool:
        """False if the device wants a coarser alignment than `ALIGN`: then never again
        (the caller writes ``data`` through the ordinary descriptor)."""
        assert self._direct_fd is not None
        try:
            pwrite_all(self._direct_fd, data, offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.close()
            self._usable = False
            return False
        return True
