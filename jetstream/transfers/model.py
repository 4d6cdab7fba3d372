"""Transfers as the service layer sees them: plain, frozen data."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from jetstream.errors import (
    AlreadyExists,
    InvalidArgument,
    JetstreamError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from jetstream.services.manifests import ManifestSpec
from jetstream.transfers.hashing import HashAlgorithm


class TransferState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TransferState.COMPLETED, TransferState.FAILED, TransferState.CANCELLED)


class Direction(StrEnum):
    PUSH = "push"
    PULL = "pull"


class Overwrite(StrEnum):
    NEVER = "never"
    ALWAYS = "always"
    IF_DIFFERENT = "if_different"
    RESUME = "resume"


class RatePolicy(StrEnum):
    FAIR = "fair"
    FIXED = "fixed"
    LOW_PRIORITY = "low_priority"


@dataclass(frozen=True)
class RateLimits:
    """Payload rates in bit/s; 0 means no floor, no target or no ceiling."""

    min_bps: int = 0
    target_bps: int = 0
    max_bps: int = 0
    policy: RatePolicy = RatePolicy.FAIR

    def problem(self) -> str | None:
        """Why no data channel could run at these limits (None: it can)."""
        if self.max_bps and self.min_bps > self.max_bps:
            return "min_bps exceeds max_bps"
        if self.max_bps and self.target_bps > self.max_bps:
            return "target_bps exceeds max_bps"
        if self.policy is RatePolicy.FIXED and not self.target_bps:
            return "the fixed policy needs target_bps"
        return None


@dataclass(frozen=True)
class TransferOptions:
    checkpoint_interval: float = 10.0
    rate: RateLimits = field(default_factory=RateLimits)
    overwrite: Overwrite = Overwrite.RESUME
    hash_algorithm: HashAlgorithm = HashAlgorithm.BLAKE3
    flows: int = 0
    """Data flows of a push (0: chosen when it starts, `grouprate.flow_count`)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TransferOptions:
        data = json.loads(text)
        rate = data["rate"]
        return cls(
            checkpoint_interval=data["checkpoint_interval"],
            rate=RateLimits(rate["min_bps"], rate["target_bps"], rate["max_bps"],
                            RatePolicy(rate["policy"])),
            overwrite=Overwrite(data["overwrite"]),
            hash_algorithm=HashAlgorithm(data["hash_algorithm"]),
            flows=data.get("flows", 0),  # absent in rows stored before flows existed
        )


@dataclass(frozen=True)
class Failure:
    """Why a transfer (or a file) failed, for people: `reason` is an UPPER_SNAKE code."""

    reason: str
    message: str
    path: str = ""


_REASONS: tuple[tuple[type[JetstreamError], str], ...] = (
    (PermissionDenied, "PERMISSION_DENIED"),
    (ResourceExhausted, "NO_SPACE"),
    (InvalidArgument, "INVALID_PATH"),
    (AlreadyExists, "ALREADY_EXISTS"),
    (NotFound, "NOT_FOUND"),
    (Unauthenticated, "PEER_AUTH_FAILED"),
    (Unavailable, "PEER_UNREACHABLE"),
)


def failure_reason(exc: JetstreamError) -> str:
    """The UPPER_SNAKE reason code the API reports for an error."""
    return next((reason for kind, reason in _REASONS if isinstance(exc, kind)), "FAILED")


@dataclass(frozen=True)
class Progress:
    bytes_total: int = 0
    bytes_done: int = 0
    files_total: int = 0
    files_done: int = 0
    files_failed: int = 0
    files_skipped: int = 0
    rate_bps: float = 0.0
    rtt: float = 0.0
    loss_ratio: float = 0.0
    bytes_retransmitted: int = 0
    bytes_on_wire: int = 0
    bytes_resumed: int = 0
    current_path: str = ""


@dataclass(frozen=True)
class Transfer:
    id: str
    owner: str
    direction: Direction
    destination_id: str
    manifest_id: str
    destination_path: str
    priority: int
    options: TransferOptions
    manifest_spec: ManifestSpec | None = None
    """PULL: what to fetch, paths on the remote; `manifest_id` is then the remote's manifest
    (empty until the first attempt builds it there)."""
    state: TransferState = TransferState.QUEUED
    status_message: str = ""
    error: Failure | None = None
    labels: dict[str, str] = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    attempt_count: int = 0
    created_at: float = 0.0
    started_at: float = 0.0
    ended_at: float = 0.0
    updated_at: float = 0.0
