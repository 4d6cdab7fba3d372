"""One measured tool run, as stored in results.json and shown in table.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "partial", "failed", "unavailable", "skipped"]
"""ok: finished, every file verified. partial: stopped at the time-out, goodput from what
arrived. failed: finished but wrong, or crashed. unavailable: the tool could not run here
(error says why). skipped: not run by choice (note says why)."""


@dataclass
class Result:
    profile: str
    workload: str  # "big", "small", or "memory" for iperf3 (no files)
    tool: str  # "jetstream", "scp", "rsync", "uftp", "iperf3-bbr", "iperf3-cubic", "iperf3-udp"
    status: Status
    label: str = ""  # how the table names it, e.g. "scp (chacha20-poly1305, bbr)"
    error: str | None = None
    payload_bytes: int = 0  # delivered payload (all of it when ok)
    expected_bytes: int = 0
    files_expected: int = 0
    files_complete: int = 0
    wall_s: float | None = None
    goodput_bps: float | None = None
    cpu_sender_s: float | None = None
    cpu_receiver_s: float | None = None
    rss_sender_kib: int | None = None
    rss_receiver_kib: int | None = None
    integrity: str | None = None  # "ok 1/1", "FAIL: ...", None when not applicable
    integrity_ok: bool | None = None
    wire_ab_bytes: int | None = None  # IP bytes the link carried A->B during the run
    link_drops_ab: int | None = None  # queue + random-loss drops A->B
    run: int = 0
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        return cls(**d)

    def set_rate(self) -> None:
        if self.wall_s and self.wall_s > 0 and self.payload_bytes > 0:
            self.goodput_bps = self.payload_bytes * 8 / self.wall_s
