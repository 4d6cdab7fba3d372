"""Reading the event log with the API's filters (ServerService.ListEvents).

The rules: ordinary users see the events about themselves (`username` is theirs: their
objects, their logins); superusers may ask for another user's, or every event with `-`,
including the server's own. Pages continue after an event id, so a page token stays valid
while new events arrive.
"""

from __future__ import annotations

from dataclasses import dataclass

from jetstream.errors import InvalidArgument
from jetstream.services.auth import Caller
from jetstream.services.events import Event, EventLog, Severity, event_from_row
from jetstream.state.database import Database

_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}


@dataclass(frozen=True)
class EventFilter:
    start_time: float | None = None
    end_time: float | None = None
    min_severity: Severity = Severity.INFO
    subject: str = ""
    """Only events about this object, e.g. `transfers/t1`."""
    kind: str = ""
    owner: str = ""
    """"" for the caller's events, a user name, or "-" for every event."""
    newest_first: bool = False


class EventQueries:
    def __init__(self, db: Database, log: EventLog) -> None:
        self._db = db
        self._log = log

    def list(self, caller: Caller, query: EventFilter, *, after_id: int, limit: int
             ) -> list[Event]:
        """Events matching `query` in the requested order, continuing after `after_id`
        (0: from the start)."""
        if query.start_time is not None and query.end_time is not None \
                and query.start_time > query.end_time:
            raise InvalidArgument("start_time is after end_time")
        scope = caller.owner_scope(query.owner)
        self._log.flush()
        allowed = [s.value for s in Severity if _RANK[s] >= _RANK[query.min_severity]]
        sql = f"SELECT * FROM events WHERE severity IN ({','.join('?' * len(allowed))})"
        params: list[object] = [*allowed]
        for clause, value in (
            ("username = ?", scope),
            ("subject = ?", query.subject or None),
            ("kind = ?", query.kind or None),
            ("time >= ?", query.start_time),
            ("time < ?", query.end_time),
        ):
            if value is not None:
                sql += f" AND {clause}"
                params.append(value)
        if after_id:
            sql += " AND id < ?" if query.newest_first else " AND id > ?"
            params.append(after_id)
        sql += f" ORDER BY id {'DESC' if query.newest_first else 'ASC'} LIMIT ?"
        params.append(limit)
        return [event_from_row(row) for row in self._db.query(sql, params)]

    def latest_by(self, kind_prefix: str, attribute: str) -> dict[str, Event]:
        """The newest event of each value of `attribute` among the types starting with
        `kind_prefix` (e.g. each trigger script's last run)."""
        rows = self._db.query(
            "SELECT * FROM events WHERE id IN (SELECT max(id) FROM events WHERE kind LIKE ?"
            " GROUP BY json_extract(attributes, '$.' || ?))", (kind_prefix + "%", attribute))
        events = [event_from_row(row) for row in rows]
        return {e.attributes.get(attribute, ""): e for e in events}
