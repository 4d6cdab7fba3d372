"""Workload data: made once per run from a seeded AES-CTR stream, hashed while written, and
every received copy checked against those hashes (BLAKE3, the hash jetstream uses too).

Layout under the data root (tmpfs by default, see run.py):

    src/big-1073741824/file.bin              one file: sent as a file
    src/small-10000x16384/small/d000/f00000.bin ...   many files: sent as the directory `small`
    dst/<tool>/                              each tool's copy lands here, checked, then removed

The data is incompressible, so no tool gains from compression.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import blake3
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bench.profiles import Workload

CHUNK = 8 << 20
FILES_PER_DIR = 100


class _Stream:
    """Deterministic, incompressible bytes (AES-128-CTR over zeros), several GB/s."""

    def __init__(self, seed: int) -> None:
        key = seed.to_bytes(16, "big")
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._zeros = bytes(CHUNK)

    def read(self, n: int) -> bytes:
        if n <= CHUNK:
            return self._enc.update(self._zeros[:n])
        return self._enc.update(bytes(n))


@dataclass(frozen=True)
class Dataset:
    """A workload on disk: `item` is what a tool is asked to send (a file or a directory)."""

    workload: Workload
    item: Path
    hashes: dict[str, str]  # path relative to item.parent -> BLAKE3 hex
    sizes: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    @property
    def file_count(self) -> int:
        return len(self.sizes)


@dataclass(frozen=True)
class Integrity:
    checked: int
    good: int
    bad: int  # present with the right size but the wrong content, or the wrong size
    missing: int

    @property
    def ok(self) -> bool:
        return self.good == self.checked and self.checked > 0

    def describe(self) -> str:
        if self.ok:
            return f"ok {self.good}/{self.checked}"
        return f"FAIL: {self.bad} bad, {self.missing} missing of {self.checked}"


def _hash_file(path: Path) -> str:
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with path.open("rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def make(root: Path, workload: Workload, seed: int = 7) -> Dataset:
    """Create (or reuse, if complete) the workload's files under root/src; mode 0644, dirs 0755.

    Files must be readable by the bench user (jetstream reads them as the user who logs in).
    """
    base = root / "src" / f"{workload.key}-{workload.count}x{workload.size}"
    index = base / "hashes.json"
    item = base / ("file.bin" if workload.count == 1 else "small")
    if index.exists():
        data = json.loads(index.read_text())
        ds = Dataset(workload, item, data["hashes"], data["sizes"])
        if all((item.parent / rel).stat().st_size == n for rel, n in ds.sizes.items()):
            return ds
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True, mode=0o755)
    os.chmod(base, 0o755)
    stream = _Stream(seed + workload.count)
    hashes: dict[str, str] = {}
    sizes: dict[str, int] = {}
    if workload.count == 1:
        paths = [item]
    else:
        paths = [
            item / f"d{i // FILES_PER_DIR:03d}" / f"f{i:05d}.bin" for i in range(workload.count)
        ]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        h = blake3.blake3()
        left = workload.size
        with path.open("wb") as f:
            while left > 0:
                chunk = stream.read(min(CHUNK, left))
                f.write(chunk)
                h.update(chunk)
                left -= len(chunk)
        os.chmod(path, 0o644)
        rel = str(path.relative_to(item.parent))
        hashes[rel] = h.hexdigest()
        sizes[rel] = workload.size
    for d in [item, *item.rglob("*")] if item.is_dir() else []:
        if d.is_dir():
            os.chmod(d, 0o755)
    tmp = index.with_suffix(".tmp")
    tmp.write_text(json.dumps({"hashes": hashes, "sizes": sizes}))
    os.replace(tmp, index)
    return Dataset(workload, item, hashes, sizes)


def verify(dst: Path, ds: Dataset) -> Integrity:
    """Hash every file the dataset should have produced under dst (dst/<item name>/...)."""
    good = bad = missing = 0
    for rel, digest in ds.hashes.items():
        path = dst / rel
        try:
            size = path.stat().st_size
        except OSError:
            missing += 1
            continue
        if size == ds.sizes[rel] and _hash_file(path) == digest:
            good += 1
        else:
            bad += 1
    return Integrity(len(ds.hashes), good, bad, missing)


def received_bytes(dst: Path, ds: Dataset) -> tuple[int, int]:
    """(bytes, complete files) under dst now: what a tool stopped at its time-out delivered.

    Counts every regular file (temporary names too), capped at the dataset's total.
    """
    total = 0
    complete = 0
    if not dst.exists():
        return 0, 0
    for dirpath, _dirs, files in os.walk(dst):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    for rel, n in ds.sizes.items():
        try:
            if (dst / rel).stat().st_size == n:
                complete += 1
        except OSError:
            pass
    return min(total, ds.total_bytes), complete


def fresh_dir(path: Path, owner: tuple[int, int] | None = None) -> Path:
    """An empty directory (mode 0755), owned by (uid, gid) if given."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o755)
    os.chmod(path, 0o755)
    if owner is not None:
        os.chown(path, *owner)
    return path
