"""CPU per GiB of the receiver's disk side: a large file's pieces written, hashed, verified.

    sudo .venv/bin/python -m bench.disksink [--size 1G] [--dir /var/tmp] [--piece 1428]

Feeds `filesink.write_pieces` the pieces of a file of random bytes in batches of
`receiver.FLUSH_BYTES`, as the receiving server does, into a real temporary file
(`userfs.create_part` as root, on a worker thread), then takes the digest as `finish` does.
The table gives the process's CPU time (user + system) per GiB of the file and the wall
time, for pieces the size of a datagram's payload (1428) or of a loopback one (32 kB):

* **in order** and **lossy** (one piece in a thousand arrives two batches late, as a repair
  one round trip later does at (d)'s rate);
* **held** (the receiver's way: runs after a gap wait in memory, up to
  `receiver.HOLD_BYTES`, and everything hashed as it goes is written past the page cache),
  **uncached** (nothing held: runs after a gap are written through the cache and read back
  once it fills) and **cached** (every write through the page cache, the earlier way).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.datachannel import parse_size
from jetstream.auth.principal import lookup_principal
from jetstream.datachannel.rangeset import RangeSet
from jetstream.storage import userfs
from jetstream.storage.paths import parse_path
from jetstream.storage.sandbox import UNCONFINED, Location
from jetstream.transfers import filesink, receiver
from jetstream.transfers.hashing import HashAlgorithm, new_hasher

LATE_BATCHES = 2


@dataclass(frozen=True)
class Row:
    pattern: str
    mode: str
    piece: int
    cpu_per_gib: float
    wall_per_gib: float


def arrivals(size: int, piece: int, lossy: bool, seed: int = 1) -> list[list[tuple[int, int]]]:
    """Batches of (offset, length) in the order the receiver would hand them over."""
    rng = random.Random(seed)
    batch_pieces = max(1, receiver.FLUSH_BYTES // piece)
    batches: list[list[tuple[int, int]]] = [[] for _ in range(size // piece // batch_pieces + 3
                                                              + LATE_BATCHES)]
    for n, offset in enumerate(range(0, size, piece)):
        late = LATE_BATCHES if lossy and rng.random() < 0.001 else 0
        batches[n // batch_pieces + late].append((offset, min(piece, size - offset)))
    return [b for b in batches if b]


def run_one(part: userfs.PartFile, data: bytes, batches: list[list[tuple[int, int]]],
            mode: str) -> bytes:
    view = memoryview(data)
    hold = receiver.HOLD_BYTES if mode == "held" else 0
    digest = filesink.RunningDigest(HashAlgorithm.BLAKE3, RangeSet())
    kept: list[tuple[int, memoryview]] = []
    for batch in batches:
        pieces = kept + [(o, view[o:o + n]) for o, n in batch]
        _written, kept = filesink.write_pieces(part, pieces, digest, hold)
    filesink.write_pieces(part, kept, digest)
    return digest.digest(part, HashAlgorithm.BLAKE3)


def measure(directory: Path, size: int, piece: int, pattern: str, mode: str) -> Row:
    data = os.urandom(size)
    batches = arrivals(size, piece, pattern == "lossy")
    path = directory / f"jetstream-disksink-{os.getpid()}"
    uncached_run = filesink.UNCACHED_RUN
    if mode == "cached":
        filesink.UNCACHED_RUN = 1 << 62
    root = lookup_principal("root")

    def job() -> tuple[bytes, float, float]:
        with userfs.user_credentials(root):
            location = Location(UNCONFINED.roots[0], parse_path(str(path)))
            part = userfs.create_part(location, overwrite=True)
            try:
                start = resource.getrusage(resource.RUSAGE_SELF)
                wall = time.perf_counter()
                got = run_one(part, data, batches, mode)
                end = resource.getrusage(resource.RUSAGE_SELF)
                wall = time.perf_counter() - wall
            finally:
                part.abort()  # not timed: a receiver keeps the file (dropping its cache costs)
        cpu = (end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime)
        return got, cpu, wall

    try:
        with ThreadPoolExecutor(1) as pool:
            got, cpu, wall = pool.submit(job).result()
    finally:
        filesink.UNCACHED_RUN = uncached_run
    hasher = new_hasher(HashAlgorithm.BLAKE3)
    hasher.update(data)
    if got != hasher.digest():
        raise SystemExit(f"bench.disksink: digest mismatch ({pattern}, {mode})")
    gib = size / (1 << 30)
    return Row(pattern, mode, piece, cpu / gib, wall / gib)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1G", help="file size (K/M/G suffixes)")
    parser.add_argument("--dir", default="/var/tmp", help="where the file is written")
    parser.add_argument("--piece", default="1428,32768", help="piece sizes, comma-separated")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench.disksink: run as root (files are written as a user)")
    size = parse_size(args.size)
    print(f"receiver disk side: {size >> 20} MiB to {args.dir}, BLAKE3, batches of "
          f"{receiver.FLUSH_BYTES >> 10} KiB\n")
    print("| pieces | arrival | mode | CPU s per GiB | wall s per GiB |")
    print("|---|---|---|---|---|")
    for piece in (int(p) for p in args.piece.split(",")):
        for pattern in ("in order", "lossy"):
            for mode in ("held", "uncached", "cached"):
                row = measure(Path(args.dir), size, piece, pattern, mode)
                print(f"| {piece} B | {pattern} | {mode} | {row.cpu_per_gib:.2f} | "
                      f"{row.wall_per_gib:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
