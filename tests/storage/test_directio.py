"""Uncached writes: the file holds exactly what was written, wherever the writes fall."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from jetstream.storage import directio
from jetstream.storage.directio import ALIGN, DirectWriter

SHM = Path("/dev/shm")


def _write_randomly(path: Path, seed: int) -> tuple[bytes, DirectWriter]:
    """Unaligned and aligned writes, some longer than the staging buffer, some rewritten."""
    rng = random.Random(seed)
    size = 3 * directio.STAGING + 12_345
    expected = bytearray(size)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    writer = DirectWriter(fd)
    spans = [(0, ALIGN - 1), (ALIGN - 1, 3 * ALIGN + 5), (2 * ALIGN, 2 * ALIGN + 10),
             (5 * ALIGN, 5 * ALIGN + directio.STAGING + ALIGN), (size - 7_000, size)]
    spans += [(a, min(size, a + rng.randrange(1, 2 * directio.STAGING)))
              for a in (rng.randrange(size) for _ in range(12))]
    try:
        for start, stop in spans:
            data = os.urandom(stop - start)
            seen: list[bytes] = []
            pieces = [data[i:i + 1428] for i in range(0, len(data), 1428)]  # datagram-sized
            writer.write(pieces, start, lambda view, seen=seen: seen.append(bytes(view)))
            assert b"".join(seen) == data and len(seen) <= len(data) // directio.STAGING + 2
            expected[start:stop] = data
        os.fsync(fd)
    finally:
        writer.close()
        os.close(fd)
    return bytes(expected), writer


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_file_holds_what_was_written(tmp_path: Path, seed: int) -> None:
    expected, writer = _write_randomly(tmp_path / "f", seed)
    assert (tmp_path / "f").read_bytes() == expected
    assert writer._usable  # ext4 takes O_DIRECT: the aligned parts went that way


def test_on_tmpfs_too(tmp_path: Path) -> None:
    if not SHM.is_dir():
        pytest.skip("no /dev/shm")
    path = SHM / f"jetstream-directio-{os.getpid()}"
    try:
        expected, _writer = _write_randomly(path, 4)
        assert path.read_bytes() == expected
    finally:
        path.unlink(missing_ok=True)


def test_where_o_direct_is_refused_the_ordinary_descriptor_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system without O_DIRECT (EINVAL at open), which this kernel's do not show."""
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    expected, writer = _write_randomly(tmp_path / "f", 5)
    assert (tmp_path / "f").read_bytes() == expected
    assert not writer._usable


def test_a_reader_sees_direct_writes_over_cached_pages(tmp_path: Path) -> None:
    """A page read (so cached) before a direct write over it is not served stale later."""
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    writer = DirectWriter(fd)
    try:
        os.pwrite(fd, b"a" * (4 * ALIGN), 0)
        assert os.pread(fd, 4 * ALIGN, 0) == b"a" * (4 * ALIGN)
        writer.write([b"b" * (4 * ALIGN)], 0)
        assert os.pread(fd, 4 * ALIGN, 0) == b"b" * (4 * ALIGN)
    finally:
        writer.close()
        os.close(fd)
