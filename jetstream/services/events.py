"""The event log: a durable, append-only record of what happened on this server.

Transfers, logins and configuration changes write here; superusers read it through the
API. Messages are for people, so they are short sentences with escaped names; the
details (ids, paths, byte counts) are `attributes`, lowerCamelCase keys with string values.

Event types are named like the trigger scripts they fire (`launch`, `send.transferComplete`,
`recv.fileComplete`, ...): the log is also the one place events are announced to listeners
(trigger scripts, watch folders). `record` stores and announces; `announce` only tells the
listeners that want the type, for occurrences too frequent to store (one per file).
"""

from __future__ import annotations

import json
import logging
import sqlite3
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
        details = dict(attributes or {})
        event_id = self._db.insert(
            "INSERT INTO events (time, severity, kind, username, subject, message, attributes)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (now, severity.value, kind, username, subject, message, json.dumps(details)),
        )
        log.log(_LEVELS[severity], "%s: %s", kind, message)
        event = Event(event_id, now, severity, kind, username, subject, message, details)
        self._tell(event)
        return event

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
