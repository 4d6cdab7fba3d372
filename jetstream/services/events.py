"""The event log: a durable, append-only record of what happened on this server.

Transfers, logins and configuration changes write here; superusers read it through the
API. Messages are for people, so they are short sentences with escaped names.

Writes are batched off the event loop: `record` queues the row and one writer thread
commits everything queued in one transaction. Each commit is an fsync (3-4 ms here), so
writing each row on the loop let a flood of failed logins stall the whole server; now a
burst costs one fsync. Readers call `flush` first, so they see every recorded event.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from dataclasses import dataclass
from enum import StrEnum

from jetstream.state.database import Database

log = logging.getLogger("jetstream.events")


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Event:
    id: int
    time: float
    severity: Severity
    kind: str
    username: str
    subject: str
    message: str


_Row = tuple[float, str, str, str, str, str]


class EventLog:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue_lock = threading.Lock()
        self._write_lock = threading.Lock()
        """Held while writing, so rows commit in the order they were recorded."""
        self._pending: list[_Row] = []
        self._writer_due = False

    def record(
        self,
        kind: str,
        message: str,
        *,
        now: float,
        severity: Severity = Severity.INFO,
        username: str = "",
        subject: str = "",
    ) -> None:
        log.log(_LEVELS[severity], "%s: %s", kind, message)
        with self._queue_lock:
            self._pending.append((now, severity.value, kind, username, subject, message))
            start_writer, self._writer_due = not self._writer_due, True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (start-up, tools): write now
            self.flush()
            return
        if start_writer:
            loop.run_in_executor(None, self._drain)

    def flush(self) -> None:
        """Write every queued row now (blocking)."""
        self._drain()

    def _drain(self) -> None:
        with self._write_lock:
            while True:
                with self._queue_lock:
                    rows, self._pending = self._pending, []
                    if not rows:
                        self._writer_due = False
                        return
                try:
                    with self._db.transaction() as conn:
                        conn.executemany(
                            "INSERT INTO events (time, severity, kind, username, subject,"
                            " message) VALUES (?, ?, ?, ?, ?, ?)", rows)
                except sqlite3.Error:
                    log.exception("could not write %d events to the event log", len(rows))


def event_from_row(row: sqlite3.Row) -> Event:
    return Event(
        id=row["id"],
        time=row["time"],
        severity=Severity(row["severity"]),
        kind=row["kind"],
        username=row["username"],
        subject=row["subject"],
        message=row["message"],
    )


_LEVELS = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING,
           Severity.ERROR: logging.ERROR}
