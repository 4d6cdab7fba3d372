"""What the receiver does to the file system, each step run as the receiving user.

Every function here runs on a UserFS worker thread (through `UserFS.run`), so the kernel
checks each access against the user's own rights and what is created belongs to the user.
A file is written under a temporary name beside its final one and renamed into place only
after its digest matched the sender's: nothing that looks complete is ever partial.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from jetstream.datachannel.rangeset import RangeSet
from jetstream.errors import AlreadyExists, JetstreamError, NotFound
from jetstream.storage import userfs
from jetstream.storage.sandbox import Location
from jetstream.transfers.hashing import HashAlgorithm, file_digest, new_hasher
from jetstream.transfers.model import Overwrite

DIR_MODE_MASK = 0o777
READ_BACK_CHUNK = 4 << 20
UNCACHED_RUN = 128 << 10
"""Runs at least this long that are hashed as they are written bypass the page cache."""


@dataclass(frozen=True)
class Target:
    """Where one file goes and what it should look like."""

    location: Location
    size: int
    mode: int
    mtime_ns: int


def existing_is_current(target: Target, overwrite: Overwrite, *,
                        dirs: userfs.DirCache | None = None) -> bool:
    """Whether the final file may stay as it is (the file is then skipped)."""
    try:
        present = userfs.lookup(target.location, dirs=dirs)
    except NotFound:  # a directory on the way is missing
        return False
    if present is None:
        return False
    if overwrite is Overwrite.NEVER:
        return True
    if overwrite is Overwrite.ALWAYS:
        return False
    return (present.kind == "file" and present.size == target.size
            and present.mtime_ns == target.mtime_ns)


def open_part(target: Target, overwrite: Overwrite, *,
              dirs: userfs.DirCache | None = None) -> userfs.PartFile | None:
    """A temporary file for `target`, or None if the policy keeps the existing file."""
    if existing_is_current(target, overwrite, dirs=dirs):
        return None
    return userfs.create_part(target.location, overwrite=overwrite is not Overwrite.NEVER,
                              parents=True, mode=target.mode, dirs=dirs)


class RunningDigest:
    """A large file's digest, computed as it is written instead of read back whole at the end.

    Bytes written at the hashed prefix's end are hashed at once; bytes written beyond a gap (a
    loss not yet repaired, or data from an earlier session) are read back, from the page cache,
    once the gap fills. Only the thread writing the file touches it (writes are serialised).
    """

    def __init__(self, algorithm: HashAlgorithm, on_disk: RangeSet) -> None:
        self._hasher = new_hasher(algorithm)
        self._position = 0
        self._ahead = RangeSet(on_disk)
        self._stale = False
        """Hashed bytes were written again: only a full read is trustworthy."""

    def hashes_at_once(self, offset: int) -> bool:
        """Bytes written at ``offset`` now are hashed now, not read back later."""
        return offset == self._position

    def write_in_order(self, part: userfs.PartFile, offset: int,
                       run: list[bytes | memoryview]) -> None:
        """Write ``run``, which starts where the hashed prefix ends, past the page cache:
        hashed on its way to the disk, it is never read back."""
        assert offset == self._position
        part.write_uncached_at(run, offset, self._hash_next)
        self._catch_up(part)

    def _hash_next(self, data: memoryview) -> None:
        self._hasher.update(data)
        self._position += len(data)

    def wrote(self, part: userfs.PartFile, offset: int, data: bytes | memoryview) -> None:
        self.wrote_run(part, offset, [data])

    def wrote_run(self, part: userfs.PartFile, offset: int,
                  buffers: list[bytes | memoryview]) -> None:
        """``buffers`` were written back to back from ``offset``."""
        end = offset + sum(map(len, buffers))
        if offset > self._position:
            self._ahead.add(offset, end)
            return
        update = self._hasher.update
        if offset == self._position:
            # One update: BLAKE3 runs its SIMD over many 1 KiB chunks at a time only when one
            # update holds them (per datagram it costs six times the CPU). Such runs are
            # short: longer ones in order go through `write_in_order`.
            update(buffers[0] if len(buffers) == 1 else b"".join(buffers))
            self._position = end
            self._catch_up(part)
            return
        for data in buffers:
            stop = offset + len(data)
            if offset < self._position:
                self._stale = True
                if stop > self._position:
                    update(memoryview(data)[self._position - offset:])
                    self._position = stop
            else:
                update(data)
                self._position = stop
            offset = stop
        self._catch_up(part)

    def _catch_up(self, part: userfs.PartFile) -> None:
        stop = next((b for a, b in self._ahead if a <= self._position < b), self._position)
        self._read_back(part, stop)
        self._ahead = RangeSet((a, b) for a, b in self._ahead if b > stop)

    def digest(self, part: userfs.PartFile, algorithm: HashAlgorithm) -> bytes:
        """The digest of the whole file as it is on disk now."""
        if self._stale:
            return file_digest(part.fd, algorithm)
        self._read_back(part, part.size())
        return self._hasher.digest()

    def _read_back(self, part: userfs.PartFile, stop: int) -> None:
        while self._position < stop:
            chunk = part.read_at(self._position, min(READ_BACK_CHUNK, stop - self._position))
            if not chunk:
                return
            self._hasher.update(chunk)
            self._position += len(chunk)


def write_pieces(part: userfs.PartFile, pieces: list[tuple[int, bytes | memoryview]],
                 digest: RunningDigest, hold: int = 0
                 ) -> tuple[list[tuple[int, int]], list[tuple[int, bytes | memoryview]]]:
    """Write received pieces, one system call per run of adjacent ones, and hash them:
    returns the byte ranges written and the pieces kept back.

    Runs beyond the hashed prefix (after a loss not yet repaired) are kept back, unwritten,
    while they total at most ``hold`` bytes: given again once the gap is filled, they are
    hashed and written in one pass, where written now they would be read back to hash."""
    pieces.sort(key=lambda piece: piece[0])
    written: list[tuple[int, int]] = []
    kept: list[tuple[int, bytes | memoryview]] = []
    room = hold
    for start, run in _runs(pieces):
        buffers = [data for _offset, data in run]
        size = sum(map(len, buffers))
        if size <= room and not digest.hashes_at_once(start):
            kept += run
            room -= size
        else:
            _write_run(part, digest, buffers, start, size)
            written.append((start, start + size))
    return written, kept


def _runs(pieces: list[tuple[int, bytes | memoryview]]
          ) -> Iterator[tuple[int, list[tuple[int, bytes | memoryview]]]]:
    """Sorted pieces as runs of adjacent ones: (start, its pieces)."""
    run: list[tuple[int, bytes | memoryview]] = []
    end = -1
    for piece in pieces:
        if piece[0] != end and run:
            yield run[0][0], run
            run = []
        run.append(piece)
        end = piece[0] + len(piece[1])
    if run:
        yield run[0][0], run


def _write_run(part: userfs.PartFile, digest: RunningDigest,
               run: list[bytes | memoryview], offset: int, size: int) -> None:
    if digest.hashes_at_once(offset) and size >= UNCACHED_RUN:
        digest.write_in_order(part, offset, run)
    else:
        part.writev_at(run, offset)  # read back from the cache once the gap before it fills
        digest.wrote_run(part, offset, run)


def finish(part: userfs.PartFile, target: Target, digest: RunningDigest,
           algorithm: HashAlgorithm, expected: bytes) -> bool:
    """Verify the whole temporary file and rename it into place; False on a mismatch."""
    if digest.digest(part, algorithm) != expected:
        part.abort()
        return False
    part.commit(mtime_ns=target.mtime_ns)
    return True


@dataclass(frozen=True)
class WholeFile:
    """A small file that arrived whole, ready to be stored."""

    target: Target
    data: bytes
    expected: bytes


def store_many(files: list[WholeFile], algorithm: HashAlgorithm,
               overwrite: Overwrite) -> list[str | JetstreamError]:
    """Verify, write and commit many small files in one visit to a worker thread, with one
    flush of the file system for them all: 'ok', 'skipped', 'mismatch' or the error, per
    file."""
    results: list[str | JetstreamError] = []
    opened: list[tuple[int, userfs.PartFile]] = []
    with userfs.DirCache() as dirs:
        for index, item in enumerate(files):
            hasher = new_hasher(algorithm)
            hasher.update(item.data)
            if hasher.digest() != item.expected:
                results.append("mismatch")
                continue
            try:
                part = open_part(item.target, overwrite, dirs=dirs)
                if part is None:
                    results.append("skipped")
                    continue
                try:
                    part.write_at(item.data, 0)
                except BaseException:
                    part.abort()
                    raise
            except JetstreamError as exc:
                results.append(exc)
                continue
            results.append("ok")
            opened.append((index, part))
    outcomes = userfs.commit_many([(part, files[i].target.mtime_ns) for i, part in opened])
    for (index, part), error in zip(opened, outcomes, strict=True):
        if error is not None:
            part.abort()
            results[index] = error
    return results


def make_directory(location: Location, mode: int) -> None:
    try:
        userfs.mkdir(location, parents=True, mode=(mode & DIR_MODE_MASK) | 0o700)
    except AlreadyExists:
        pass


def make_symlink(location: Location, target: str, mtime_ns: int, overwrite: Overwrite) -> bool:
    """Recreate a link (the caller has checked where `target` leads); False if the policy
    keeps what is there: anything with NEVER, the same link otherwise unless ALWAYS."""
    try:
        present = userfs.stat(location)
    except NotFound:
        present = None
    if present is not None and (overwrite is Overwrite.NEVER or (
            overwrite is not Overwrite.ALWAYS and present.kind == "symlink"
            and present.target == target)):
        return False
    userfs.symlink(location, target, replace=present is not None, parents=True,
                   mtime_ns=mtime_ns)
    return True
