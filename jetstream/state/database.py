"""The state database: SQLite in WAL mode with numbered, transactional migrations.

Why SQLite with WAL and `synchronous=FULL`: every committed change survives kill -9 and
power loss, a crash mid-migration rolls back as a whole (the schema version is bumped in
the same transaction), and readers never block the writer.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from jetstream.errors import ConfigError

DATABASE_NAME = "jetstream.db"

#: Migration N (1-based) brings the schema from version N-1 to N. Never edit a shipped one;
#: append a new one instead.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) STRICT;
    """,
    """
    CREATE TABLE sessions (
        token_hash  BLOB PRIMARY KEY,
        username    TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('session', 'api')),
        token_id    TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        allowed_paths TEXT NOT NULL DEFAULT '[]',
        read_only   INTEGER NOT NULL DEFAULT 0,
        created_at  REAL NOT NULL,
        expires_at  REAL NOT NULL
    ) STRICT;
    CREATE INDEX sessions_by_user ON sessions (username, kind);
    CREATE TABLE events (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        time      REAL NOT NULL,
        severity  TEXT NOT NULL,
        kind      TEXT NOT NULL,
        username  TEXT NOT NULL DEFAULT '',
        subject   TEXT NOT NULL DEFAULT '',
        message   TEXT NOT NULL
    ) STRICT;
    """,
    """
    CREATE TABLE destinations (
        id                 TEXT PRIMARY KEY,
        owner              TEXT NOT NULL,
        display_name       TEXT NOT NULL DEFAULT '',
        host               TEXT NOT NULL,
        api_port           INTEGER NOT NULL,
        udp_port           INTEGER NOT NULL DEFAULT 0,
        remote_username    TEXT NOT NULL DEFAULT '',
        token_secret       TEXT NOT NULL,
        pinned_fingerprint BLOB NOT NULL,
        pinned_server_uid  TEXT NOT NULL,
        local_udp_port     INTEGER NOT NULL DEFAULT 0,
        max_rate_bps       INTEGER NOT NULL DEFAULT 0,
        plaintext          INTEGER NOT NULL DEFAULT 0,
        labels             TEXT NOT NULL DEFAULT '{}',
        created_at         REAL NOT NULL,
        updated_at         REAL NOT NULL,
        last_contact_at    REAL NOT NULL DEFAULT 0,
        last_error         TEXT NOT NULL DEFAULT ''
    ) STRICT;
    CREATE INDEX destinations_by_owner ON destinations (owner, id);
    """,
    """
    CREATE TABLE manifests (
        id            TEXT PRIMARY KEY,
        owner         TEXT NOT NULL,
        spec          TEXT NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ('pending', 'complete', 'error')),
        error         TEXT NOT NULL DEFAULT '',
        file_count    INTEGER NOT NULL DEFAULT 0,
        dir_count     INTEGER NOT NULL DEFAULT 0,
        total_bytes   INTEGER NOT NULL DEFAULT 0,
        skipped_count INTEGER NOT NULL DEFAULT 0,
        labels        TEXT NOT NULL DEFAULT '{}',
        created_at    REAL NOT NULL,
        completed_at  REAL NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX manifests_by_owner ON manifests (owner, created_at);
    CREATE TABLE manifest_entries (
        manifest_id    TEXT NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
        seq            INTEGER NOT NULL,
        source_root    TEXT NOT NULL,
        source_path    TEXT NOT NULL,
        dest_path      TEXT NOT NULL,
        kind           TEXT NOT NULL CHECK (kind IN ('file', 'directory', 'symlink')),
        size           INTEGER NOT NULL,
        mode           INTEGER NOT NULL,
        mtime_ns       INTEGER NOT NULL,
        symlink_target TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (manifest_id, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE UNIQUE INDEX manifest_entries_by_dest ON manifest_entries (manifest_id, dest_path);
    """,
    """
    CREATE TABLE transfers (
        id                  TEXT PRIMARY KEY,
        owner               TEXT NOT NULL,
        direction           TEXT NOT NULL CHECK (direction IN ('push', 'pull')),
        destination_id      TEXT NOT NULL,
        manifest_id         TEXT NOT NULL,
        destination_path    TEXT NOT NULL,
        priority            INTEGER NOT NULL,
        options             TEXT NOT NULL,
        state               TEXT NOT NULL,
        status_message      TEXT NOT NULL DEFAULT '',
        error_reason        TEXT NOT NULL DEFAULT '',
        error_message       TEXT NOT NULL DEFAULT '',
        error_path          TEXT NOT NULL DEFAULT '',
        labels              TEXT NOT NULL DEFAULT '{}',
        bytes_total         INTEGER NOT NULL DEFAULT 0,
        bytes_done          INTEGER NOT NULL DEFAULT 0,
        files_total         INTEGER NOT NULL DEFAULT 0,
        files_done          INTEGER NOT NULL DEFAULT 0,
        files_failed        INTEGER NOT NULL DEFAULT 0,
        files_skipped       INTEGER NOT NULL DEFAULT 0,
        bytes_retransmitted INTEGER NOT NULL DEFAULT 0,
        bytes_on_wire       INTEGER NOT NULL DEFAULT 0,
        attempt_count       INTEGER NOT NULL DEFAULT 0,
        created_at          REAL NOT NULL,
        started_at          REAL NOT NULL DEFAULT 0,
        ended_at            REAL NOT NULL DEFAULT 0,
        updated_at          REAL NOT NULL
    ) STRICT;
    CREATE INDEX transfers_by_owner ON transfers (owner, created_at);
    CREATE INDEX transfers_by_state ON transfers (state, destination_id, priority, created_at);
    CREATE TABLE transfer_files (
        transfer_id TEXT NOT NULL REFERENCES transfers (id) ON DELETE CASCADE,
        seq         INTEGER NOT NULL,
        state       TEXT NOT NULL,
        bytes_done  INTEGER NOT NULL DEFAULT 0,
        digest      BLOB NOT NULL DEFAULT x'',
        error       TEXT NOT NULL DEFAULT '',
        ended_at    REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (transfer_id, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE incoming (
        id               TEXT PRIMARY KEY,
        owner            TEXT NOT NULL,
        source_uid       TEXT NOT NULL,
        source_name      TEXT NOT NULL,
        sender_transfer  TEXT NOT NULL,
        source_address   TEXT NOT NULL DEFAULT '',
        destination_root TEXT NOT NULL,
        destination_path TEXT NOT NULL,
        options          TEXT NOT NULL,
        state            TEXT NOT NULL,
        error_reason     TEXT NOT NULL DEFAULT '',
        error_message    TEXT NOT NULL DEFAULT '',
        bytes_total      INTEGER NOT NULL DEFAULT 0,
        bytes_done       INTEGER NOT NULL DEFAULT 0,
        files_total      INTEGER NOT NULL DEFAULT 0,
        files_done       INTEGER NOT NULL DEFAULT 0,
        files_failed     INTEGER NOT NULL DEFAULT 0,
        files_skipped    INTEGER NOT NULL DEFAULT 0,
        created_at       REAL NOT NULL,
        last_receive_at  REAL NOT NULL DEFAULT 0,
        ended_at         REAL NOT NULL DEFAULT 0,
        UNIQUE (source_uid, sender_transfer)
    ) STRICT;
    CREATE INDEX incoming_by_owner ON incoming (owner, created_at);
    CREATE TABLE incoming_files (
        incoming_id TEXT NOT NULL REFERENCES incoming (id) ON DELETE CASCADE,
        path        TEXT NOT NULL,
        size        INTEGER NOT NULL,
        mtime_ns    INTEGER NOT NULL,
        temp_name   TEXT NOT NULL DEFAULT '',
        ranges      TEXT NOT NULL DEFAULT '[]',
        state       TEXT NOT NULL,
        PRIMARY KEY (incoming_id, path)
    ) STRICT, WITHOUT ROWID;
    """,
    """
    ALTER TABLE transfers ADD COLUMN manifest_spec TEXT NOT NULL DEFAULT '';
    """,
    # Tokens made before this migration never carried superuser rights as the API promised:
    # they stay at 0, so an upgrade narrows them instead of widening anything.
    """
    ALTER TABLE sessions ADD COLUMN superuser INTEGER NOT NULL DEFAULT 0;
    """,
    """
    ALTER TABLE manifests ADD COLUMN skipped_examples TEXT NOT NULL DEFAULT '[]';
    """,
    # The limits of the credentials that asked for a manifest, to scan it again within them
    # after a restart ({"allowed_paths": [...], "read_only": bool}).
    """
    ALTER TABLE manifests ADD COLUMN scope TEXT NOT NULL DEFAULT '{}';
    """,
    # Events carry their details (what trigger scripts receive); watch folders and the files
    # they have handed to transfers (pending files live in memory: a scan finds them again).
    """
    ALTER TABLE events ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
    CREATE TABLE watches (
        id               TEXT PRIMARY KEY,
        owner            TEXT NOT NULL,
        folder           TEXT NOT NULL,
        destination_id   TEXT NOT NULL,
        destination_path TEXT NOT NULL,
        include          TEXT NOT NULL DEFAULT '[]',
        exclude          TEXT NOT NULL DEFAULT '[]',
        settle_seconds   REAL NOT NULL,
        after_delivery   TEXT NOT NULL CHECK (after_delivery IN ('keep', 'delete', 'move')),
        move_to          TEXT NOT NULL DEFAULT '',
        priority         INTEGER NOT NULL,
        allowed_paths    TEXT NOT NULL DEFAULT '[]',
        labels           TEXT NOT NULL DEFAULT '{}',
        files_delivered  INTEGER NOT NULL DEFAULT 0,
        bytes_delivered  INTEGER NOT NULL DEFAULT 0,
        created_at       REAL NOT NULL
    ) STRICT;
    CREATE INDEX watches_by_owner ON watches (owner, created_at);
    CREATE TABLE watch_files (
        watch_id    TEXT NOT NULL REFERENCES watches (id) ON DELETE CASCADE,
        path        TEXT NOT NULL,
        size        INTEGER NOT NULL,
        mtime_ns    INTEGER NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('sending', 'sent', 'failed')),
        transfer_id TEXT NOT NULL DEFAULT '',
        attempts    INTEGER NOT NULL DEFAULT 0,
        error       TEXT NOT NULL DEFAULT '',
        updated_at  REAL NOT NULL,
        PRIMARY KEY (watch_id, path)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX watch_files_by_transfer ON watch_files (transfer_id);
    """,
)


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) and make sure only root can enter it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise ConfigError(f"--persistent-state-dir {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"--persistent-state-dir {path}: not a directory")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


class Database:
    """A thread-safe handle on the state database.

    Calls are short (control-plane rows, not file data), so one connection behind a lock is
    enough; the asyncio side calls it directly for single-row work.
    """

    def __init__(self, state_dir: Path) -> None:
        ensure_private_dir(state_dir)
        self.path = state_dir / DATABASE_NAME
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            os.chmod(self.path, 0o600)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"state database {self.path}: {exc}") from None

    @property
    def schema_version(self) -> int:
        row = self._conn.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        with self._lock:
            current = self.schema_version
            if current > len(MIGRATIONS):
                raise ConfigError(
                    f"state database {self.path} has schema version {current}, newer than this "
                    f"jetstream understands ({len(MIGRATIONS)}); upgrade jetstream"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                with self.transaction() as conn:
                    for statement in _statements(MIGRATIONS[version - 1]):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {version}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block as one immediate transaction; roll back on any exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cursor = self._conn.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return list(cursor.fetchall())

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one statement in its own transaction; return the number of changed rows."""
        with self.transaction() as conn:
            return conn.execute(sql, params).rowcount

    def insert(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one INSERT in its own transaction; return the new row's rowid."""
        with self.transaction() as conn:
            return int(conn.execute(sql, params).lastrowid or 0)

    def newest_first(
        self, table: str, where: Sequence[tuple[str, Sequence[object]]], *, after: str,
        limit: int
    ) -> list[sqlite3.Row]:
        """A page of `table` (with `id` and `created_at`), newest first, after the row `after`.

        `where` holds (condition with ? placeholders, values) pairs, all of which must hold.
        Keyset paging: a page token is the last id, so pages stay stable while rows arrive.
        """
        clauses, params = ["1"], []
        for condition, values in where:
            clauses.append(condition)
            params.extend(values)
        if after:
            clauses.append(f"(created_at, id) < (SELECT created_at, id FROM {table} WHERE id = ?)")
            params.append(after)
        sql = (f"SELECT * FROM {table} WHERE {' AND '.join(clauses)}"
               " ORDER BY created_at DESC, id DESC LIMIT ?")
        return self.query(sql, [*params, limit])

    def get_meta(self, key: str) -> bytes | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return bytes(rows[0]["value"]) if rows else None

    def get_or_create_meta(self, key: str, make: bytes) -> bytes:
        """Return the stored value, storing `make` first if the key is new (atomically)."""
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, make))
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        """Store `value` under `key`, replacing what was there (one transaction)."""
        self.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _statements(script: str) -> list[str]:
    """Split a migration into statements (no migration uses ';' inside a literal)."""
    return [part.strip() for part in script.split(";") if part.strip()]
