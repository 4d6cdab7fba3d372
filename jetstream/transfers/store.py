"""Persistence of outgoing transfers and their per-file outcomes."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace

from jetstream.services.manifests import ManifestSpec
from jetstream.state.database import Database
from jetstream.transfers.model import (
    Direction,
    Failure,
    Progress,
    Transfer,
    TransferOptions,
    TransferState,
)


@dataclass(frozen=True)
class FileRow:
    seq: int
    source_root: str
    source_path: str
    dest_path: str
    kind: str
    size: int
    state: str
    """pending, done, skipped or failed."""
    bytes_done: int
    digest: bytes
    error: str
    ended_at: float


FileRecord = tuple[int, str, int, bytes, str, float]
"""(manifest seq, state, bytes done, digest, error, ended at) of one finished file."""


class TransferStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def insert(self, t: Transfer) -> None:
        self._db.execute(
            "INSERT INTO transfers (id, owner, direction, destination_id, manifest_id,"
            " destination_path, priority, options, state, labels, created_at, updated_at,"
            " manifest_spec) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (t.id, t.owner, t.direction.value, t.destination_id, t.manifest_id,
             t.destination_path, t.priority, t.options.to_json(), t.state.value,
             json.dumps(t.labels), t.created_at, t.updated_at,
             t.manifest_spec.to_json() if t.manifest_spec else ""),
        )

    def set_manifest(self, transfer_id: str, manifest_id: str) -> None:
        """A pull's manifest, once built on the remote server."""
        self._db.execute("UPDATE transfers SET manifest_id = ? WHERE id = ?",
                         (manifest_id, transfer_id))

    def get(self, transfer_id: str) -> Transfer | None:
        rows = self._db.query("SELECT * FROM transfers WHERE id = ?", (transfer_id,))
        return _transfer(rows[0]) if rows else None

    def list(
        self,
        *,
        owner: str | None,
        states: Sequence[TransferState],
        destination_id: str,
        direction: Direction | None,
        after: str,
        limit: int,
    ) -> list[Transfer]:
        """Newest first; `after` is the id of the last transfer of the previous page."""
        where: list[tuple[str, Sequence[object]]] = []
        if owner is not None:
            where.append(("owner = ?", [owner]))
        if states:
            where.append((f"state IN ({','.join('?' * len(states))})", [s.value for s in states]))
        if destination_id:
            where.append(("destination_id = ?", [destination_id]))
        if direction is not None:
            where.append(("direction = ?", [direction.value]))
        rows = self._db.newest_first("transfers", where, after=after, limit=limit)
        return [_transfer(row) for row in rows]

    def queued(self) -> list[Transfer]:
        """Every queued transfer in the order the scheduler serves them."""
        rows = self._db.query(
            "SELECT * FROM transfers WHERE state = 'queued' ORDER BY priority, created_at, id"
        )
        return [_transfer(row) for row in rows]

    def save(self, t: Transfer) -> None:
        """Write the mutable fields of `t` (state, progress, options, timestamps)."""
        error = t.error or Failure("", "")
        p = t.progress
        self._db.execute(
            "UPDATE transfers SET priority=?, options=?, state=?, status_message=?,"
            " error_reason=?, error_message=?, error_path=?, bytes_total=?, bytes_done=?,"
            " files_total=?, files_done=?, files_failed=?, files_skipped=?,"
            " bytes_retransmitted=?, bytes_on_wire=?, attempt_count=?, started_at=?,"
            " ended_at=?, updated_at=? WHERE id=?",
            (t.priority, t.options.to_json(), t.state.value, t.status_message, error.reason,
             error.message, error.path, p.bytes_total, p.bytes_done, p.files_total,
             p.files_done, p.files_failed, p.files_skipped, p.bytes_retransmitted,
             p.bytes_on_wire, t.attempt_count, t.started_at, t.ended_at, t.updated_at, t.id),
        )

    def active_counts(self) -> list[tuple[str, int]]:
        rows = self._db.query("SELECT state, count(*) AS n FROM transfers WHERE state IN"
                              " ('queued', 'running', 'paused') GROUP BY state")
        return [(row["state"], row["n"]) for row in rows]

    def delete(self, transfer_id: str) -> None:
        self._db.execute("DELETE FROM transfers WHERE id = ?", (transfer_id,))

    def requeue_interrupted(self, *, now: float) -> int:
        """After a restart, transfers that were running continue from their checkpoint."""
        return self._db.execute(
            "UPDATE transfers SET state = 'queued', status_message = ?, updated_at = ?"
            " WHERE state = 'running'",
            ("the server restarted; resuming from the last checkpoint", now),
        )

    def record_files(self, transfer_id: str, outcomes: Sequence[FileRecord]) -> None:
        """Upsert (seq, state, bytes_done, digest, error, ended_at) per file, in one commit."""
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT INTO transfer_files (transfer_id, seq, state, bytes_done, digest, error,"
                " ended_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (transfer_id, seq) DO"
                " UPDATE SET state=excluded.state, bytes_done=excluded.bytes_done,"
                " digest=excluded.digest, error=excluded.error, ended_at=excluded.ended_at",
                [(transfer_id, *o) for o in outcomes],
            )

    def files(self, transfer: Transfer, *, after_seq: int, limit: int,
              states: Sequence[str]) -> list[FileRow]:
        """Manifest entries with what happened to each, in manifest order."""
        sql = ("SELECT e.seq, e.source_root, e.source_path, e.dest_path, e.kind, e.size,"
               " coalesce(f.state, 'pending') AS state, coalesce(f.bytes_done, 0) AS done,"
               " coalesce(f.digest, x'') AS digest, coalesce(f.error, '') AS error,"
               " coalesce(f.ended_at, 0) AS ended_at FROM manifest_entries e"
               " LEFT JOIN transfer_files f ON f.transfer_id = ? AND f.seq = e.seq"
               " WHERE e.manifest_id = ? AND e.seq > ?")
        params: list[object] = [transfer.id, transfer.manifest_id, after_seq]
        if states:
            sql += f" AND coalesce(f.state, 'pending') IN ({','.join('?' * len(states))})"
            params += list(states)
        rows = self._db.query(sql + " ORDER BY e.seq LIMIT ?", [*params, limit])
        return [FileRow(row["seq"], row["source_root"], row["source_path"], row["dest_path"],
                        row["kind"], row["size"], row["state"], row["done"],
                        bytes(row["digest"]), row["error"], row["ended_at"]) for row in rows]


def _transfer(row: sqlite3.Row) -> Transfer:
    error = None
    if row["error_reason"] or row["error_message"]:
        error = Failure(row["error_reason"], row["error_message"], row["error_path"])
    transfer = Transfer(
        id=row["id"],
        owner=row["owner"],
        direction=Direction(row["direction"]),
        destination_id=row["destination_id"],
        manifest_id=row["manifest_id"],
        destination_path=row["destination_path"],
        priority=row["priority"],
        options=TransferOptions.from_json(row["options"]),
        manifest_spec=(ManifestSpec.from_json(row["manifest_spec"]) if row["manifest_spec"]
                       else None),
        state=TransferState(row["state"]),
        status_message=row["status_message"],
        error=error,
        labels=json.loads(row["labels"]),
        attempt_count=row["attempt_count"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        updated_at=row["updated_at"],
    )
    return replace(transfer, progress=Progress(
        bytes_total=row["bytes_total"],
        bytes_done=row["bytes_done"],
        files_total=row["files_total"],
        files_done=row["files_done"],
        files_failed=row["files_failed"],
        files_skipped=row["files_skipped"],
        bytes_retransmitted=row["bytes_retransmitted"],
        bytes_on_wire=row["bytes_on_wire"],
    ))
