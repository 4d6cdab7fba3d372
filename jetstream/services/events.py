"""The event log: a durable, append-only record of what happened on this server.

Transfers, logins and configuration changes write here; superusers read it through the
API. Messages are for people, so they are short sentences with escaped names; the
details (ids, paths, byte counts) are `attributes`, lowerCamelCase keys with string values.

Event types are named like the trigger scripts they fire (`launch`, `send.transferComplete`,
`recv.fileComplete`, ...): the log is also the one place events are announced to listeners
(trigger scripts, watch folders). `record` stores and announces; `announce` only tells the
listeners that want the type, for occurrences too frequent to store (one per file).

Writes are batched off the event loop: `record` numbers the event, queues it and one writer
thread commits everything queued in one transaction. Each commit is an fsync (3-4 ms
here), so writing each row on the loop let a flood of failed logins stall the whole server;
now a burst costs one fsync. The log is the only writer of its table, so it numbers events
itself and listeners get the id at once. Readers call `flush` first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from jetstream.state.database import Database

log = logging.getLogger("jetstream.events")


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Event:
    id: int
    """0 for an event announced without being stored."""
    time: float
    severity: Severity
    kind: str
    username: str
    subject: str
    message: str
    attributes: Mapping[str, str] = field(default_factory=dict)


class EventListener(Protocol):
    def wants(self, kind: str) -> bool:
        """Whether events of this type concern the listener (asked before building one
        that is only announced)."""

    def heard(self, event: Event) -> None:
        """Called on the thread that recorded the event; must not block."""


class EventLog:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._listeners: list[EventListener] = []
        self._queue_lock = threading.Lock()
        self._write_lock = threading.Lock()
        """Held while writing, so events commit in the order they were numbered."""
        self._pending: list[Event] = []
        self._writer_due = False
        self._last_id = int(db.query("SELECT COALESCE(MAX(id), 0) FROM events")[0][0])

    def subscribe(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def wants(self, kind: str) -> bool:
        return any(listener.wants(kind) for listener in self._listeners)

    def record(
        self,
        kind: str,
        message: str,
        *,
        now: float,
        severity: Severity = Severity.INFO,
        username: str = "",
        subject: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> Event:
        with self._queue_lock:
            self._last_id += 1
            event = Event(self._last_id, now, severity, kind, username, subject, message,
                          dict(attributes or {}))
            self._pending.append(event)
            start_writer, self._writer_due = not self._writer_due, True
        log.log(_LEVELS[severity], "%s: %s", kind, message)
        self._tell(event)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop in this thread (start-up, a worker): write now
            self.flush()
            return event
        if start_writer:
            loop.run_in_executor(None, self._drain)
        return event

    def flush(self) -> None:
        """Write every queued event now (blocking)."""
        self._drain()

    def _drain(self) -> None:
        with self._write_lock:
            while True:
                with self._queue_lock:
                    events, self._pending = self._pending, []
                    if not events:
                        self._writer_due = False
                        return
                try:
                    with self._db.transaction() as conn:
                        conn.executemany(
                            "INSERT INTO events (id, time, severity, kind, username, subject,"
                            " message, attributes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [(e.id, e.time, e.severity.value, e.kind, e.username, e.subject,
                              e.message, json.dumps(dict(e.attributes))) for e in events])
                except sqlite3.Error:
                    log.exception("could not write %d events to the event log", len(events))

    def announce(
        self,
        kind: str,
        message: str,
        *,
        now: float,
        username: str = "",
        subject: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        """Tell the listeners that want `kind`, without storing anything."""
        if self.wants(kind):
            self._tell(Event(0, now, Severity.INFO, kind, username, subject, message,
                             dict(attributes or {})))

    def _tell(self, event: Event) -> None:
        for listener in self._listeners:
            if listener.wants(event.kind):
                try:
                    listener.heard(event)
                except Exception:  # noqa: BLE001 - a listener's bug must not fail the caller
                    log.exception("event listener %r failed on %s", listener, event.kind)


def event_from_row(row: sqlite3.Row) -> Event:
    return Event(
        id=row["id"],
        time=row["time"],
        severity=Severity(row["severity"]),
        kind=row["kind"],
        username=row["username"],
        subject=row["subject"],
        message=row["message"],
        attributes=json.loads(row["attributes"]),
    )


_LEVELS = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING,
           Severity.ERROR: logging.ERROR}
