"""The event log: a durable, append-only record of what happened on this server.

Transfers, logins and configuration changes write here; superusers read it through the
API. Messages are for people, so they are short sentences with escaped names.
"""

from __future__ import annotations

import logging
import sqlite3
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


class EventLog:
    def __init__(self, db: Database) -> None:
        self._db = db

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
        self._db.execute(
            "INSERT INTO events (time, severity, kind, username, subject, message)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (now, severity.value, kind, username, subject, message),
        )
        log.log(_LEVELS[severity], "%s: %s", kind, message)


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
