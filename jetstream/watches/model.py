"""Watch folders as the service layer sees them: plain, frozen data."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class AfterDelivery(StrEnum):
    KEEP = "keep"
    DELETE = "delete"
    MOVE = "move"


class WatchState(StrEnum):
    ACTIVE = "active"
    ERROR = "error"


class FileState(StrEnum):
    """A file handed to a transfer, and what became of it (files still waiting to be sent are
    only in memory: a scan finds them again after a restart)."""

    SENDING = "sending"
    SENT = "sent"
    """Delivered and kept in the folder (KEEP): not sent again while unchanged."""
    FAILED = "failed"
    """Not delivered; sent again when it changes, or (attempts left) after a delay."""


@dataclass(frozen=True)
class Watch:
    id: str
    owner: str
    folder: str
    """A path in the owner's view, as `RelPath` renders it ("/outgoing")."""
    destination_id: str
    destination_path: str
    settle: float = 5.0
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    after_delivery: AfterDelivery = AfterDelivery.KEEP
    move_to: str = ""
    priority: int = 100
    allowed_paths: tuple[str, ...] = ()
    """The limits of the credentials that created the watch: its batches never go wider."""
    labels: dict[str, str] = field(default_factory=dict)
    files_delivered: int = 0
    bytes_delivered: int = 0
    created_at: float = 0.0


@dataclass(frozen=True)
class WatchedFile:
    watch_id: str
    path: str
    """Below the folder, "a/b.txt"."""
    size: int
    mtime_ns: int
    state: FileState
    transfer_id: str = ""
    attempts: int = 0
    error: str = ""


@dataclass(frozen=True)
class WatchStats:
    waiting: int = 0
    sending: int = 0
    delivered: int = 0
    bytes_delivered: int = 0
    failed: int = 0
    transfer_count: int = 0
    last_transfer: str = ""


@dataclass(frozen=True)
class WatchStatus:
    watch: Watch
    state: WatchState
    error: str
    stats: WatchStats
    local_path: str
