"""The events a trigger script can be named after, and what each one receives.

Every event of the event log fires the scripts named after its type (those of the trigger
runs themselves, `trigger.*`, excepted); this table says which of its attributes are the
positional arguments, in order, and is what docs/triggers.md describes. All attributes are
also in the environment (`JETSTREAM_` + the key in upper snake case) and in the JSON
document on standard input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from jetstream.services.events import Event


@dataclass(frozen=True)
class EventType:
    name: str
    arguments: tuple[str, ...]
    """Attribute keys passed as $1, $2, ..."""
    when: str


_SEND = ("transferId", "destinationId", "destinationPath", "state")
_RECV = ("transferId", "localPath", "state")
_DEST = ("destinationAddress", "destinationId")
_PULL = ("manifestId", "receiverName", "receiverTransfer")

EVENT_TYPES: tuple[EventType, ...] = (
    EventType("launch", ("apiPort",), "the server started and its API is listening"),
    EventType("shutdown", (), "the server is stopping (its API no longer answers)"),
    EventType("send.destinationCreated", _DEST, "a destination was created"),
    EventType("send.destinationDeleted", _DEST, "a destination was deleted"),
    EventType("send.transferCreated", _SEND, "a transfer (push or pull) was created"),
    EventType("send.transferStarted", _SEND, "a transfer started an attempt"),
    EventType("send.transferQueued", _SEND, "a transfer waits again (resumed, or retrying)"),
    EventType("send.transferPaused", _SEND, "a transfer was paused"),
    EventType("send.transferComplete", _SEND, "every file of a transfer arrived verified"),
    EventType("send.transferError", _SEND, "a transfer failed"),
    EventType("send.transferCancelled", _SEND, "a transfer was cancelled"),
    EventType("send.transferDeleted", _SEND, "a transfer was deleted"),
    EventType("send.pullStarted", _PULL, "another server started pulling files from here"),
    EventType("send.pullComplete", _PULL, "a pull served from here completed"),
    EventType("send.pullError", _PULL, "a pull served from here failed"),
    EventType("send.pullCancelled", _PULL, "a pull served from here was cancelled"),
    EventType("send.pullPaused", _PULL, "a pull served from here was interrupted"),
    EventType("recv.transferStarted", _RECV, "a transfer started arriving here (or resumed)"),
    EventType("recv.transferComplete", _RECV, "a transfer has been completely received"),
    EventType("recv.transferError", _RECV, "a transfer arriving here failed"),
    EventType("recv.transferCancelled", _RECV, "a transfer arriving here was cancelled"),
    EventType("recv.transferPaused", _RECV, "a transfer arriving here was interrupted"),
    EventType("recv.fileComplete", ("localPath", "transferId", "sizeBytes"),
              "one file arrived and was verified"),
    EventType("auth.login", (), "a user logged in"),
    EventType("auth.loginFailed", (), "a login failed"),
    EventType("sandbox.mappingSet", (), "a sandbox mapping was set"),
    EventType("sandbox.mappingDeleted", (), "a sandbox mapping was deleted"),
    EventType("watch.created", ("watchId", "localPath"), "a watch folder was created"),
    EventType("watch.deleted", ("watchId", "localPath"), "a watch folder was deleted"),
)
BY_NAME: Mapping[str, EventType] = {t.name: t for t in EVENT_TYPES}

RUN_PREFIX = "trigger."
"""Events about trigger runs; they never fire scripts (a script could loop forever)."""


def fires_scripts(kind: str) -> bool:
    return not kind.startswith(RUN_PREFIX)


def arguments(event: Event) -> list[str]:
    known = BY_NAME.get(event.kind)
    return [event.attributes.get(key, "") for key in (known.arguments if known else ())]


def environment_name(key: str) -> str:
    """`transferId` -> `JETSTREAM_TRANSFER_ID`."""
    return "JETSTREAM_" + re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).upper()


def environment(event: Event, base: Mapping[str, str]) -> dict[str, str]:
    """`base` (PATH and the like), the event's own fields, then its attributes."""
    env = dict(base)
    env.update({
        "JETSTREAM_EVENT": event.kind,
        "JETSTREAM_EVENT_ID": str(event.id),
        "JETSTREAM_EVENT_TIME": f"{event.time:.6f}",
        "JETSTREAM_EVENT_USER": event.username,
        "JETSTREAM_EVENT_SUBJECT": event.subject,
    })
    for key, value in event.attributes.items():
        env.setdefault(environment_name(key), value)
    return env


def document(event: Event) -> dict[str, object]:
    """The JSON object a script reads on standard input."""
    return {"event": event.kind, "id": event.id, "time": event.time,
            "severity": event.severity.value, "username": event.username,
            "subject": event.subject, "message": event.message,
            "attributes": dict(event.attributes)}
