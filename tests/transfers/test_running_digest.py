"""The receiver's running digest equals a full read-back, whatever order the bytes came in."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from jetstream.datachannel.rangeset import RangeSet
from jetstream.storage.directio import DirectWriter
from jetstream.transfers.filesink import RunningDigest, write_pieces
from jetstream.transfers.hashing import HashAlgorithm, new_hasher


class DiskFile:
    """The PartFile methods the digest and the writer use, over a real file."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.direct = DirectWriter(self.fd)

    def write_at(self, data: bytes, offset: int) -> None:
        os.pwrite(self.fd, data, offset)

    def write_uncached_at(self, buffers: list, offset: int, seen) -> None:  # type: ignore[no-untyped-def]
        self.direct.write(buffers, offset, seen)

    def writev_at(self, buffers: list, offset: int) -> None:
        for data in buffers:
            os.pwrite(self.fd, data, offset)
            offset += len(data)

    def read_at(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def size(self) -> int:
        return os.fstat(self.fd).st_size


def expected(data: bytes, algorithm: HashAlgorithm) -> bytes:
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return hasher.digest()


def pieces(data: bytes, size: int) -> list[tuple[int, bytes]]:
    return [(o, data[o:o + size]) for o in range(0, len(data), size)]


@pytest.mark.parametrize("algorithm", list(HashAlgorithm))
@pytest.mark.parametrize("order", ["in-order", "shuffled", "reversed", "resumed", "rewritten"])
def test_running_digest_matches_the_file(tmp_path: Path, algorithm: HashAlgorithm,
                                         order: str) -> None:
    data = os.urandom(3 << 20) + b"tail"
    part = DiskFile(tmp_path / "part")
    todo = pieces(data, 50_000)
    on_disk = RangeSet()
    if order == "shuffled":
        random.Random(7).shuffle(todo)
    elif order == "reversed":
        todo.reverse()
    elif order == "resumed":  # the first half is on disk from an earlier session
        half = len(todo) // 2
        for offset, chunk in todo[:half]:
            part.write_at(chunk, offset)
            on_disk.add(offset, offset + len(chunk))
        todo = todo[half:]
    elif order == "rewritten":  # a piece written twice, the second time after it was hashed
        todo.append(todo[3])
    digest = RunningDigest(algorithm, on_disk)
    for offset, chunk in todo:
        part.write_at(chunk, offset)
        digest.wrote(part, offset, chunk)  # type: ignore[arg-type]
    assert digest.digest(part, algorithm) == expected(data, algorithm)  # type: ignore[arg-type]


def test_a_corrupted_byte_is_caught(tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    part = DiskFile(tmp_path / "part")
    digest = RunningDigest(HashAlgorithm.BLAKE3, RangeSet())
    for offset, chunk in pieces(data, 65_536)[::-1]:  # all beyond the gap until the last
        bad = chunk if offset else bytes([chunk[0] ^ 0xFF]) + chunk[1:]  # always differs
        part.write_at(bad, offset)
        digest.wrote(part, offset, bad)  # type: ignore[arg-type]
    got = digest.digest(part, HashAlgorithm.BLAKE3)  # type: ignore[arg-type]
    assert got != expected(data, HashAlgorithm.BLAKE3)


@pytest.mark.parametrize("batch", [1, 7, 40])
def test_pieces_written_in_batches_hash_as_the_file(tmp_path: Path, batch: int) -> None:
    """write_pieces: runs of adjacent pieces in one call, gaps and a piece twice."""
    data = os.urandom(2 << 20)
    part = DiskFile(tmp_path / "part")
    todo = pieces(data, 30_000)
    random.Random(batch).shuffle(todo)
    todo.insert(len(todo) // 2, todo[0])  # a duplicate, after it may have been hashed
    digest = RunningDigest(HashAlgorithm.BLAKE3, RangeSet())
    for start in range(0, len(todo), batch):
        write_pieces(part, [(o, memoryview(c)) for o, c in todo[start:start + batch]],  # type: ignore[arg-type]
                     digest)
    assert digest.digest(part, HashAlgorithm.BLAKE3) == expected(data, HashAlgorithm.BLAKE3)  # type: ignore[arg-type]


def test_runs_of_datagrams_and_large_pieces_hash_as_the_file(tmp_path: Path) -> None:
    """In-order runs are hashed in joined groups: small pieces across a group's bound, a
    piece larger than a group between them, and a lone piece at the end."""
    sizes = [1428] * 400 + [600_000] + [1428] * 250 + [77]
    data = os.urandom(sum(sizes))
    part = DiskFile(tmp_path / "part")
    todo, offset = [], 0
    for size in sizes:
        todo.append((offset, memoryview(data)[offset:offset + size]))
        offset += size
    digest = RunningDigest(HashAlgorithm.BLAKE3, RangeSet())
    write_pieces(part, todo[:-1], digest)  # type: ignore[arg-type]
    write_pieces(part, todo[-1:], digest)  # type: ignore[arg-type]
    assert digest.digest(part, HashAlgorithm.BLAKE3) == expected(data, HashAlgorithm.BLAKE3)  # type: ignore[arg-type]
    assert not digest._stale and not digest._ahead  # hashed as it came, nothing read back


def test_pieces_beyond_a_gap_wait_in_memory_until_it_fills(tmp_path: Path) -> None:
    """With room to hold them, runs after a loss are handed back unwritten, then hashed and
    written in order with the repair: nothing is read back. Beyond the room they are
    written at once (and read back later), as they are with no room at all."""
    data = os.urandom(1 << 20)
    part = DiskFile(tmp_path / "part")
    todo = [(o, memoryview(c)) for o, c in pieces(data, 1428)]
    gap, rest = todo[10], todo[:10] + todo[11:]
    digest = RunningDigest(HashAlgorithm.BLAKE3, RangeSet())
    written, kept = write_pieces(part, list(rest), digest, hold=len(data))  # type: ignore[arg-type]
    assert written == [(0, gap[0])]
    assert [o for o, _ in kept] == [o for o, _ in todo[11:]]
    assert part.size() == gap[0]  # only the run before the gap is on disk
    assert write_pieces(part, kept + [gap], digest, hold=len(data)) == (  # type: ignore[arg-type]
        [(gap[0], len(data))], [])
    assert not digest._ahead and not digest._stale
    assert digest.digest(part, HashAlgorithm.BLAKE3) == expected(data, HashAlgorithm.BLAKE3)  # type: ignore[arg-type]

    small = RunningDigest(HashAlgorithm.BLAKE3, RangeSet())
    other = DiskFile(tmp_path / "other")
    written, kept = write_pieces(other, list(rest), small, hold=100_000)  # type: ignore[arg-type]
    assert kept == []  # one run of 1 MiB after the gap: more than the room, written now
    assert written == [(0, gap[0]), (gap[0] + len(gap[1]), len(data))]
    assert other.size() == len(data) and small._ahead
    write_pieces(other, [gap], small)  # type: ignore[arg-type]
    assert small.digest(other, HashAlgorithm.BLAKE3) == expected(data, HashAlgorithm.BLAKE3)  # type: ignore[arg-type]
