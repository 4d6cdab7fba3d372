"""The receiving side's records: incoming transfers and the checkpoints of their files.

A checkpoint row says which byte ranges of a file's temporary `.part` file are on stable
storage, for which source size and mtime. It is written only after the data was synced,
so after kill -9 or a reboot the ranges it names are really there.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass, replace

from jetstream.state.database import Database
from jetstream.transfers.model import Failure, Progress, TransferOptions, TransferState


@dataclass(frozen=True)
class Incoming:
    id: str
    owner: str
    source_uid: str
    source_name: str
    sender_transfer: str
    destination_root: str
    destination_path: str
    options: TransferOptions
    state: TransferState = TransferState.RUNNING
    source_address: str = ""
    error: Failure | None = None
    progress: Progress = Progress()
    created_at: float = 0.0
    last_receive_at: float = 0.0
    ended_at: float = 0.0


@dataclass(frozen=True)
class FileCheckpoint:
    path: str
    size: int
    mtime_ns: int
    temp_name: str
    ranges: tuple[tuple[int, int], ...]


class IncomingStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def find(self, source_uid: str, sender_transfer: str) -> Incoming | None:
        rows = self._db.query(
            "SELECT * FROM incoming WHERE source_uid = ? AND sender_transfer = ?",
            (source_uid, sender_transfer),
        )
        return _incoming(rows[0]) if rows else None

    def get(self, incoming_id: str) -> Incoming | None:
        rows = self._db.query("SELECT * FROM incoming WHERE id = ?", (incoming_id,))
        return _incoming(rows[0]) if rows else None

    def create(self, incoming: Incoming) -> Incoming:
        created = replace(incoming, id=incoming.id or uuid.uuid4().hex[:12])
        self._db.execute(
            "INSERT INTO incoming (id, owner, source_uid, source_name, sender_transfer,"
            " source_address, destination_root, destination_path, options, state, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (created.id, created.owner, created.source_uid, created.source_name,
             created.sender_transfer, created.source_address, created.destination_root,
             created.destination_path, created.options.to_json(), created.state.value,
             created.created_at),
        )
        return created

    def save(self, i: Incoming) -> None:
        error = i.error or Failure("", "")
        p = i.progress
        self._db.execute(
            "UPDATE incoming SET state=?, source_address=?, options=?, error_reason=?,"
            " error_message=?, bytes_total=?, bytes_done=?, files_total=?, files_done=?,"
            " files_failed=?, files_skipped=?, last_receive_at=?, ended_at=? WHERE id=?",
            (i.state.value, i.source_address, i.options.to_json(), error.reason, error.message,
             p.bytes_total, p.bytes_done, p.files_total, p.files_done, p.files_failed,
             p.files_skipped, i.last_receive_at, i.ended_at, i.id),
        )

    def list(self, *, owner: str | None, after: str, limit: int) -> list[Incoming]:
        where = [("owner = ?", [owner])] if owner is not None else []
        rows = self._db.newest_first("incoming", where, after=after, limit=limit)
        return [_incoming(row) for row in rows]

    def active_counts(self) -> list[tuple[str, int]]:
        rows = self._db.query("SELECT state, count(*) AS n FROM incoming WHERE state IN"
                              " ('running', 'paused') GROUP BY state")
        return [(row["state"], row["n"]) for row in rows]

    def checkpoints(self, incoming_id: str) -> list[FileCheckpoint]:
        rows = self._db.query(
            "SELECT * FROM incoming_files WHERE incoming_id = ? AND state = 'partial'",
            (incoming_id,),
        )
        return [
            FileCheckpoint(row["path"], row["size"], row["mtime_ns"], row["temp_name"],
                           tuple((a, b) for a, b in json.loads(row["ranges"])))
            for row in rows
        ]

    def save_checkpoints(self, incoming_id: str, files: list[FileCheckpoint]) -> None:
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT INTO incoming_files (incoming_id, path, size, mtime_ns, temp_name,"
                " ranges, state) VALUES (?, ?, ?, ?, ?, ?, 'partial')"
                " ON CONFLICT (incoming_id, path) DO UPDATE SET size=excluded.size,"
                " mtime_ns=excluded.mtime_ns, temp_name=excluded.temp_name,"
                " ranges=excluded.ranges, state='partial'",
                [(incoming_id, f.path, f.size, f.mtime_ns, f.temp_name,
                  json.dumps([list(r) for r in f.ranges])) for f in files],
            )

    def forget_checkpoints(self, incoming_id: str, paths: list[str]) -> None:
        """The files are complete (or abandoned): their partial state is gone."""
        with self._db.transaction() as conn:
            conn.executemany(
                "DELETE FROM incoming_files WHERE incoming_id = ? AND path = ?",
                [(incoming_id, path) for path in paths],
            )

    def mark_interrupted(self, *, now: float) -> None:
        """After a restart, running incoming transfers wait for their sender to come back."""
        self._db.execute(
            "UPDATE incoming SET state = 'paused', last_receive_at = ? WHERE state = 'running'",
            (now,),
        )


def _incoming(row: sqlite3.Row) -> Incoming:
    error = None
    if row["error_reason"] or row["error_message"]:
        error = Failure(row["error_reason"], row["error_message"])
    return Incoming(
        id=row["id"],
        owner=row["owner"],
        source_uid=row["source_uid"],
        source_name=row["source_name"],
        sender_transfer=row["sender_transfer"],
        destination_root=row["destination_root"],
        destination_path=row["destination_path"],
        options=TransferOptions.from_json(row["options"]),
        state=TransferState(row["state"]),
        source_address=row["source_address"],
        error=error,
        progress=Progress(
            bytes_total=row["bytes_total"],
            bytes_done=row["bytes_done"],
            files_total=row["files_total"],
            files_done=row["files_done"],
            files_failed=row["files_failed"],
            files_skipped=row["files_skipped"],
        ),
        created_at=row["created_at"],
        last_receive_at=row["last_receive_at"],
        ended_at=row["ended_at"],
    )
