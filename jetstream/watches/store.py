"""Persistence of watch folders and of the files they handed to transfers."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence

from jetstream.state.database import Database
from jetstream.watches.model import AfterDelivery, FileState, Watch, WatchedFile

CHUNK = 500
"""Paths per query (SQLite's limit on parameters is far above, this keeps statements short)."""


class WatchStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def insert(self, w: Watch) -> None:
        self._db.execute(
            "INSERT INTO watches (id, owner, folder, destination_id, destination_path, include,"
            " exclude, settle_seconds, after_delivery, move_to, priority, allowed_paths, labels,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (w.id, w.owner, w.folder, w.destination_id, w.destination_path,
             json.dumps(w.include), json.dumps(w.exclude), w.settle, w.after_delivery.value,
             w.move_to, w.priority, json.dumps(w.allowed_paths), json.dumps(w.labels),
             w.created_at))

    def get(self, watch_id: str) -> Watch | None:
        rows = self._db.query("SELECT * FROM watches WHERE id = ?", (watch_id,))
        return _watch(rows[0]) if rows else None

    def every(self) -> list[Watch]:
        return [_watch(row) for row in self._db.query("SELECT * FROM watches ORDER BY id")]

    def list(self, *, owner: str | None, after: str, limit: int) -> list[Watch]:
        where = [("owner = ?", [owner])] if owner is not None else []
        return [_watch(row) for row in self._db.newest_first("watches", where, after=after,
                                                             limit=limit)]

    def delete(self, watch_id: str) -> None:
        self._db.execute("DELETE FROM watches WHERE id = ?", (watch_id,))

    def count_delivered(self, watch_id: str, files: int, nbytes: int) -> None:
        self._db.execute("UPDATE watches SET files_delivered = files_delivered + ?,"
                         " bytes_delivered = bytes_delivered + ? WHERE id = ?",
                         (files, nbytes, watch_id))

    # --- files ------------------------------------------------------------------------------

    def begin_batch(self, watch_id: str, transfer_id: str,
                    files: Sequence[tuple[str, int, int]], now: float) -> None:
        """(path, size, mtime_ns) of each file now SENDING in `transfer_id`, in one commit
        (written before the transfer exists: a crash in between is found at the next start
        and the files are sent again). A new version of a file starts its attempts anew."""
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT INTO watch_files (watch_id, path, size, mtime_ns, state, transfer_id,"
                " updated_at) VALUES (?, ?, ?, ?, 'sending', ?, ?) ON CONFLICT (watch_id, path)"
                " DO UPDATE SET attempts = iif(size = excluded.size AND mtime_ns ="
                " excluded.mtime_ns, attempts, 0), size = excluded.size,"
                " mtime_ns = excluded.mtime_ns, state = 'sending',"
                " transfer_id = excluded.transfer_id, error = '', updated_at = excluded.updated_at",
                [(watch_id, path, size, mtime, transfer_id, now) for path, size, mtime in files])

    def batch(self, transfer_id: str) -> list[WatchedFile]:
        rows = self._db.query("SELECT * FROM watch_files WHERE transfer_id = ? AND state ="
                              " 'sending'", (transfer_id,))
        return [_file(row) for row in rows]

    def sending(self, watch_id: str) -> list[WatchedFile]:
        rows = self._db.query("SELECT * FROM watch_files WHERE watch_id = ? AND state ="
                              " 'sending'", (watch_id,))
        return [_file(row) for row in rows]

    def lookup(self, watch_id: str, paths: Sequence[str]) -> dict[str, WatchedFile]:
        found: dict[str, WatchedFile] = {}
        for start in range(0, len(paths), CHUNK):
            chunk = paths[start:start + CHUNK]
            rows = self._db.query(
                f"SELECT * FROM watch_files WHERE watch_id = ? AND path IN"
                f" ({','.join('?' * len(chunk))})", [watch_id, *chunk])
            found.update((row["path"], _file(row)) for row in rows)
        return found

    def settle(self, watch_id: str, sent: Iterable[str], forget: Iterable[str],
               failed: Iterable[tuple[str, str, int]], now: float) -> None:
        """After a transfer: SENT (kept), forgotten (deleted, moved, changed) and FAILED
        (path, error, attempts so far), in one commit."""
        with self._db.transaction() as conn:
            conn.executemany("UPDATE watch_files SET state = 'sent', updated_at = ? WHERE"
                             " watch_id = ? AND path = ?", [(now, watch_id, p) for p in sent])
            conn.executemany("DELETE FROM watch_files WHERE watch_id = ? AND path = ?",
                             [(watch_id, p) for p in forget])
            conn.executemany("UPDATE watch_files SET state = 'failed', error = ?, attempts = ?,"
                             " updated_at = ? WHERE watch_id = ? AND path = ?",
                             [(error, n, now, watch_id, p) for p, error, n in failed])

    def counts(self, watch_id: str) -> dict[str, int]:
        rows = self._db.query("SELECT state, count(*) AS n FROM watch_files WHERE watch_id = ?"
                              " GROUP BY state", (watch_id,))
        return {row["state"]: row["n"] for row in rows}

    def transfers(self, watch_id: str) -> tuple[int, str]:
        """How many transfers the watch created, and the newest one's id."""
        rows = self._db.query(
            "SELECT count(*) AS n, (SELECT id FROM transfers WHERE json_extract(labels,"
            " '$.watch') = ?1 ORDER BY created_at DESC, id DESC LIMIT 1) AS last FROM transfers"
            " WHERE json_extract(labels, '$.watch') = ?1", (f"watches/{watch_id}",))
        return int(rows[0]["n"]), rows[0]["last"] or ""


def _watch(row: sqlite3.Row) -> Watch:
    return Watch(
        id=row["id"], owner=row["owner"], folder=row["folder"],
        destination_id=row["destination_id"], destination_path=row["destination_path"],
        settle=row["settle_seconds"], include=tuple(json.loads(row["include"])),
        exclude=tuple(json.loads(row["exclude"])),
        after_delivery=AfterDelivery(row["after_delivery"]), move_to=row["move_to"],
        priority=row["priority"], allowed_paths=tuple(json.loads(row["allowed_paths"])),
        labels=json.loads(row["labels"]), files_delivered=row["files_delivered"],
        bytes_delivered=row["bytes_delivered"], created_at=row["created_at"])


def _file(row: sqlite3.Row) -> WatchedFile:
    return WatchedFile(row["watch_id"], row["path"], row["size"], row["mtime_ns"],
                       FileState(row["state"]), row["transfer_id"], row["attempts"],
                       row["error"])
