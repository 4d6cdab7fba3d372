"""The receiving side's records: incoming transfers and the checkpoints of their files.

A checkpoint row says which byte ranges of a file's temporary `.part` file are on stable
storage, for which source size and mtime. It is written only after the data was synced,
so after kill -9 or a reboot the ranges it names are really there.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace

from jetstream.errors import InvalidArgument
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
class Source:
    """A server that sent transfers here, summed over the incoming records kept."""

    server_uid: str
    display_name: str
    last_address: str
    active: int
    completed: int
    failed: int
    """Failed or cancelled."""
    bytes_received: int
    running_seconds: float
    """From each transfer's first session to its end (or its latest data)."""
    recent_rate_bps: float
    active_at: float
    """The latest of its transfers' creation and data: the list's order."""
    last_receive_at: float

    @property
    def cursor(self) -> str:
        """The page-token key: the position in the list's order."""
        return f"{self.active_at!r} {self.server_uid}"

    @property
    def average_rate_bps(self) -> float:
        return self.bytes_received * 8 / self.running_seconds if self.running_seconds else 0.0


RECENT_WINDOW = 60.0
"""Seconds over which `Source.recent_rate_bps` is measured."""
MAX_SAMPLED = 1024
"""Transfers with samples kept before stale ones are dropped while saving."""


@dataclass(frozen=True)
class FileCheckpoint:
    path: str
    size: int
    mtime_ns: int
    temp_name: str
    ranges: tuple[tuple[int, int], ...]
    complete: bool = False
    """Written and verified under its final name by this transfer: a sender that lost the
    outcome (a crash in between) need not send it again."""


class IncomingStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._samples: dict[str, tuple[str, deque[tuple[float, int]]]] = {}
        """Incoming id -> (source uid, (last_receive_at, bytes_done) as saved): what recent
        rates are measured from. In memory only, as a minute of history is all it needs."""

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
        _uid, samples = self._samples.setdefault(i.id, (i.source_uid, deque()))
        if not samples or samples[-1] != (i.last_receive_at, p.bytes_done):
            samples.append((i.last_receive_at, p.bytes_done))
        while len(samples) > 2 and samples[1][0] <= i.last_receive_at - RECENT_WINDOW:
            samples.popleft()  # one sample from before the window stays as the baseline
        if len(self._samples) > MAX_SAMPLED:
            self._forget_stale(time.time())

    def list(self, *, owner: str | None, after: str, limit: int) -> list[Incoming]:
        where = [("owner = ?", [owner])] if owner is not None else []
        rows = self._db.newest_first("incoming", where, after=after, limit=limit)
        return [_incoming(row) for row in rows]

    def sources(self, *, owner: str | None, after: str, limit: int, now: float
                ) -> list[Source]:
        """The servers that sent transfers (to `owner`, if given), most recently active
        first; `after` is the cursor of the last source of the previous page."""
        params: list[object] = [] if owner is None else [owner]
        having = ""
        if after:
            active_at, _, uid = after.partition(" ")
            try:
                params += [float(active_at), uid]
            except ValueError:
                raise InvalidArgument("page_token is not one this server issued") from None
            having = "HAVING (active_at, m.source_uid) < (?, ?)"
        rows = self._db.query(
            "WITH mine AS (SELECT *, max(created_at, last_receive_at) AS at FROM incoming"
            f" {'WHERE owner = ?' if owner is not None else ''}),"
            " latest AS (SELECT source_uid, source_name, source_address, row_number()"
            " OVER (PARTITION BY source_uid ORDER BY at DESC) AS n FROM mine)"
            " SELECT m.source_uid, l.source_name AS name, l.source_address AS address,"
            " max(m.at) AS active_at, max(m.last_receive_at) AS last_receive_at,"
            " sum(m.state IN ('queued', 'running', 'paused')) AS active,"
            " sum(m.state = 'completed') AS completed,"
            " sum(m.state IN ('failed', 'cancelled')) AS failed,"
            " sum(m.bytes_done) AS bytes, sum(max(iif(m.ended_at > 0, m.ended_at,"
            " m.last_receive_at) - m.created_at, 0)) AS seconds"
            " FROM mine AS m JOIN latest AS l ON l.source_uid = m.source_uid AND l.n = 1"
            f" GROUP BY m.source_uid {having}"
            " ORDER BY active_at DESC, m.source_uid DESC LIMIT ?",
            [*params, limit],
        )
        return [Source(row["source_uid"], row["name"], row["address"], row["active"],
                       row["completed"], row["failed"], row["bytes"], row["seconds"],
                       self._recent_rate(row["source_uid"], owner, now), row["active_at"],
                       row["last_receive_at"]) for row in rows]

    def _recent_rate(self, source_uid: str, owner: str | None, now: float) -> float:
        """bit/s received from `source_uid` (by `owner`'s transfers) over the last minute."""
        self._forget_stale(now)
        start = now - RECENT_WINDOW
        received = 0
        for incoming_id, (uid, samples) in self._samples.items():
            if uid != source_uid or (owner is not None and not self._owned(incoming_id, owner)):
                continue
            base = next((b for t, b in reversed(samples) if t <= start), samples[0][1])
            received += samples[-1][1] - base
        return received * 8 / RECENT_WINDOW

    def _forget_stale(self, now: float) -> None:
        """Drop the samples of transfers that received nothing within the window."""
        for incoming_id, (_uid, samples) in list(self._samples.items()):
            if samples[-1][0] < now - RECENT_WINDOW:
                del self._samples[incoming_id]

    def _owned(self, incoming_id: str, owner: str) -> bool:
        found = self.get(incoming_id)
        return found is not None and found.owner == owner

    def active_counts(self) -> list[tuple[str, int]]:
        rows = self._db.query("SELECT state, count(*) AS n FROM incoming WHERE state IN"
                              " ('running', 'paused') GROUP BY state")
        return [(row["state"], row["n"]) for row in rows]

    def checkpoints(self, incoming_id: str, *, complete: bool = False
                    ) -> list[FileCheckpoint]:
        """The partial files; with `complete`, also the large files already finished."""
        states = ("partial", "complete") if complete else ("partial",)
        rows = self._db.query(
            "SELECT * FROM incoming_files WHERE incoming_id = ? AND state IN"
            f" ({', '.join('?' * len(states))})", (incoming_id, *states),
        )
        return [
            FileCheckpoint(row["path"], row["size"], row["mtime_ns"], row["temp_name"],
                           tuple((a, b) for a, b in json.loads(row["ranges"])),
                           complete=row["state"] == "complete")
            for row in rows
        ]

    def finished(self, incoming_id: str, path: str, size: int, mtime_ns: int) -> None:
        """A large file is written and verified: remember it as complete, not partial."""
        self._db.execute(
            "INSERT INTO incoming_files (incoming_id, path, size, mtime_ns, temp_name, ranges,"
            " state) VALUES (?, ?, ?, ?, '', '[]', 'complete') ON CONFLICT (incoming_id, path)"
            " DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, temp_name='',"
            " ranges='[]', state='complete'", (incoming_id, path, size, mtime_ns))

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
