"""Server-wide bandwidth limits: one allowance for sending, one for receiving.

The limits live in the state database (superusers change them at run time) unless they
were given at start-up, which fixes them. The transfer engine asks `allowance()` how much
each direction may use now: with borrowing on, a direction that is idle lends its share
to the other, and takes it back as soon as it has traffic of its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from jetstream.errors import FailedPrecondition, InvalidArgument
from jetstream.services.auth import Caller
from jetstream.state.database import Database

META_KEY = "bandwidth_limits"
MAX_BPS = 10**13


@dataclass(frozen=True)
class BandwidthLimits:
    incoming_bps: int = 0
    """0: unlimited."""
    outgoing_bps: int = 0
    allow_borrowing: bool = False
    fixed: bool = False
    """Set at start-up; the API may read but not change them."""


class BandwidthService:
    def __init__(self, db: Database, fixed: BandwidthLimits | None) -> None:
        self._db = db
        self._limits = fixed if fixed is not None else self._load()

    @property
    def limits(self) -> BandwidthLimits:
        return self._limits

    def update(self, caller: Caller, wanted: BandwidthLimits, fields: set[str]) -> BandwidthLimits:
        caller.require_superuser()
        if self._limits.fixed:
            raise FailedPrecondition(
                "the bandwidth limits were set on the command line; change them there"
            )
        unknown = fields - {"incoming_bps", "outgoing_bps", "allow_borrowing"}
        if unknown:
            raise InvalidArgument(f"cannot update {', '.join(sorted(unknown))}")
        changed = replace(self._limits, **{name: getattr(wanted, name) for name in fields})
        for rate in (changed.incoming_bps, changed.outgoing_bps):
            if not 0 <= rate <= MAX_BPS:
                raise InvalidArgument("a rate must be between 0 (unlimited) and 10 Tbit/s")
        self._db.set_meta(META_KEY, json.dumps(asdict(changed)).encode())
        self._limits = changed
        return changed

    def allowance(self, *, outgoing_active: bool, incoming_active: bool) -> tuple[int, int]:
        """(outgoing, incoming) bit/s each direction may use now; 0 means unlimited."""
        limits = self._limits
        out, into = limits.outgoing_bps, limits.incoming_bps
        if limits.allow_borrowing and out and into:
            if not incoming_active:
                out += into
            if not outgoing_active:
                into += limits.outgoing_bps
        return out, into

    def _load(self) -> BandwidthLimits:
        raw = self._db.get_meta(META_KEY)
        if raw is None:
            return BandwidthLimits()
        data = json.loads(raw)
        return BandwidthLimits(int(data["incoming_bps"]), int(data["outgoing_bps"]),
                               bool(data["allow_borrowing"]))


def share(total_bps: int, flows: int) -> int:
    """One flow's part of an allowance (0 stays unlimited)."""
    return total_bps // max(flows, 1) if total_bps else 0
