"""Bearer tokens: login sessions and API tokens, stored only as hashes.

A token is 32 random bytes shown to its owner once. The database keeps its SHA-256, so a
copy of the state directory does not let anyone act as a user. Sessions and API tokens
share one table and one check; they differ in lifetime and in being listable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sqlite3
import uuid
from dataclasses import dataclass
from enum import StrEnum

from jetstream.errors import AlreadyExists, NotFound, Unauthenticated
from jetstream.state.database import Database

TOKEN_PREFIX = "jst_"


class TokenKind(StrEnum):
    SESSION = "session"
    API = "api"


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    """Public handle used to list and revoke; never usable as a credential."""
    username: str
    kind: TokenKind
    description: str
    allowed_paths: tuple[str, ...]
    """Empty: the owner's whole sandbox; else the sandbox-relative directories the token is
    limited to."""
    read_only: bool
    created_at: float
    expires_at: float
    superuser: bool = False
    """API tokens: carries the owner's superuser rights (only if the owner still has them).
    Sessions ignore it: a login's rights are the owner's."""


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class SessionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def issue(
        self,
        username: str,
        kind: TokenKind,
        *,
        now: float,
        ttl: float,
        description: str = "",
        allowed_paths: tuple[str, ...] = (),
        read_only: bool = False,
        superuser: bool = False,
        token_id: str = "",
    ) -> tuple[str, TokenRecord]:
        """Create a token; return the secret (shown once) and its record.

        AlreadyExists if `token_id` is taken (by any user's token: ids are server-wide)."""
        secret = TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        record = TokenRecord(
            token_id=token_id or uuid.uuid4().hex,
            username=username,
            kind=kind,
            description=description,
            allowed_paths=allowed_paths,
            read_only=read_only,
            created_at=now,
            expires_at=now + ttl,
            superuser=superuser,
        )
        try:
            self._insert(secret, record)
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"apiTokens/{record.token_id} exists already") from None
        return secret, record

    def _insert(self, secret: str, record: TokenRecord) -> None:
        self._db.execute(
            "INSERT INTO sessions (token_hash, username, kind, token_id, description,"
            " allowed_paths, read_only, created_at, expires_at, superuser)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _hash(secret),
                record.username,
                record.kind.value,
                record.token_id,
                record.description,
                json.dumps(list(record.allowed_paths)),
                int(record.read_only),
                record.created_at,
                record.expires_at,
                int(record.superuser),
            ),
        )

    def check(self, token: str, *, now: float) -> TokenRecord:
        """The record behind a presented token, or Unauthenticated (expired, revoked, unknown)."""
        rows = self._db.query("SELECT * FROM sessions WHERE token_hash = ?", (_hash(token),))
        if not rows or rows[0]["expires_at"] <= now:
            raise Unauthenticated("the token is invalid or has expired; log in again")
        return _record(rows[0])

    def list(self, username: str, kind: TokenKind, *, now: float) -> list[TokenRecord]:
        rows = self._db.query(
            "SELECT * FROM sessions WHERE username = ? AND kind = ? AND expires_at > ?"
            " ORDER BY created_at",
            (username, kind.value, now),
        )
        return [_record(row) for row in rows]

    def get(self, token_id: str, username: str, kind: TokenKind) -> TokenRecord:
        """One of `username`'s tokens; another user's token is reported as absent."""
        rows = self._db.query(
            "SELECT * FROM sessions WHERE token_id = ? AND username = ? AND kind = ?",
            (token_id, username, kind.value),
        )
        if not rows:
            raise NotFound(f"no API token {token_id!r}")
        return _record(rows[0])

    def revoke(self, token_id: str) -> None:
        self._db.execute("DELETE FROM sessions WHERE token_id = ?", (token_id,))

    def purge_expired(self, *, now: float) -> int:
        return self._db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))


def _record(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        token_id=row["token_id"],
        username=row["username"],
        kind=TokenKind(row["kind"]),
        description=row["description"],
        allowed_paths=tuple(json.loads(row["allowed_paths"])),
        read_only=bool(row["read_only"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        superuser=bool(row["superuser"]),
    )
