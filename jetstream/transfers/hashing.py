"""End-to-end file digests: BLAKE3 by default, SHA-256 where a site needs it."""

from __future__ import annotations

import hashlib
import os
from enum import StrEnum
from typing import Protocol

import blake3


class HashAlgorithm(StrEnum):
    BLAKE3 = "blake3"
    SHA256 = "sha256"


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...
    def digest(self) -> bytes: ...


def new_hasher(algorithm: HashAlgorithm) -> Hasher:
    if algorithm is HashAlgorithm.SHA256:
        return hashlib.sha256()
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def file_digest(fd: int, algorithm: HashAlgorithm, *, chunk: int = 4 << 20) -> bytes:
    """Digest of everything readable from `fd` (from offset 0), without moving its offset."""

    hasher = new_hasher(algorithm)
    offset = 0
    while True:
        data = os.pread(fd, chunk, offset)
        if not data:
            return hasher.digest()
        hasher.update(data)
        offset += len(data)
