"""Login throttling per (user, client address) and per client address; the caller passes `now`.

Why these keys: a limit per user alone lets anyone who knows a user name lock that user out
(the pam_faillock problem), so the user's limit counts failures per (user, address) pair: an
attacker at X throttles "alice from X", never "alice from Y". A second, higher limit per
address stops one address from guessing across many user names; it is higher because an
office behind one NAT address shares it. A success clears its pair but never the address's
earlier failures, so logging in to one's own account does not buy more guesses at others.
IPv6 clients are counted per /64, the block one subscriber typically holds. Guessing spread
over many addresses is left to password strength (and pam_faillock if a site wants it).

Every attempt is charged as a failure when it starts and refunded if it succeeds, so a burst
of concurrent guesses cannot all pass the check before the first failure is recorded, and a
caller that never reports the outcome errs on the safe side.

After `limit` failures a key is refused for `base_delay`, doubling with each further failure
up to `max_delay`; refused attempts do not extend the window, so it always ends. Failures are
forgotten `forget_after` seconds after the last one. Memory is bounded by `max_entries`:
stale entries are dropped first, then the least recently charged.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from urllib.parse import unquote

from jetstream.errors import ResourceExhausted

_Key = tuple[str, ...]


class LoginThrottled(ResourceExhausted):
    """Too many failed logins from this address (for this user); `retry_after` in seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; try again in {math.ceil(retry_after)} s")
        self.retry_after = retry_after


class Standing(IntEnum):
    """What an address's recent logins say about it; password checks run in this order
    (PamAuthenticator), so guesses cannot queue ahead of the users."""

    TRUSTED = 0
    """A login from it succeeded lately, and none failed since."""
    UNKNOWN = 1
    """No recent login from it."""
    SUSPECT = 2
    """A login from it failed lately."""


@dataclass
class _Entry:
    failures: int
    last: float
    """When the latest failure was charged."""


@dataclass(frozen=True)
class Attempt:
    """A login in progress; pass it to `LoginThrottle.succeeded` if the password was right."""

    pair: _Key
    source: _Key
    charged_at: float
    source_last_before: float
    standing: Standing
    """The address's standing before this attempt."""


class LoginThrottle:
    def __init__(
        self,
        *,
        user_limit: int = 5,
        source_limit: int = 20,
        base_delay: float = 5.0,
        max_delay: float = 300.0,
        forget_after: float = 1800.0,
        max_entries: int = 100_000,
    ) -> None:
        if not 0 < base_delay <= max_delay <= forget_after:
            raise ValueError("need 0 < base_delay <= max_delay <= forget_after")
        self._limits = {"pair": user_limit, "source": source_limit}
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._forget_after = forget_after
        self._max_entries = max_entries
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._good: OrderedDict[str, float] = OrderedDict()
        """Address -> time of its latest successful login."""

    def begin(self, username: str, source: str, now: float) -> Attempt:
        """Charge one failure to the pair and the address, or raise LoginThrottled."""
        src = _source_key(source)
        keys = {"pair": ("pair", username[:256].casefold(), src), "source": ("source", src)}
        for kind, key in keys.items():
            entry = self._live(key, now)
            if entry is not None:
                until = entry.last + self._window(entry.failures, self._limits[kind])
                if until > now:
                    raise LoginThrottled(until - now)
        standing = self._standing(src, now)
        source_last_before = self._charge(keys["source"], now)
        self._charge(keys["pair"], now)
        self._evict(now)
        return Attempt(keys["pair"], keys["source"], now, source_last_before, standing)

    def succeeded(self, attempt: Attempt) -> None:
        """Clear the pair's failures, refund the address's charge for this attempt, and
        remember the address as one users log in from."""
        self._good[attempt.source[1]] = attempt.charged_at
        self._good.move_to_end(attempt.source[1])
        while len(self._good) > self._max_entries:
            self._good.popitem(last=False)
        self._entries.pop(attempt.pair, None)
        entry = self._entries.get(attempt.source)
        if entry is None:
            return
        entry.failures -= 1
        if entry.failures <= 0:
            del self._entries[attempt.source]
        elif entry.last == attempt.charged_at:
            entry.last = attempt.source_last_before

    def __len__(self) -> int:
        return len(self._entries)

    def _standing(self, source: str, now: float) -> Standing:
        if self._live(("source", source), now) is not None:
            return Standing.SUSPECT
        if now - self._good.get(source, -math.inf) < self._forget_after:
            return Standing.TRUSTED
        return Standing.UNKNOWN

    def _window(self, failures: int, limit: int) -> float:
        if failures < limit:
            return 0.0
        return min(self._base_delay * 2.0 ** min(failures - limit, 64), self._max_delay)

    def _live(self, key: _Key, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry.last >= self._forget_after:
            del self._entries[key]
            return None
        return entry

    def _charge(self, key: _Key, now: float) -> float:
        """Count a failure for `key`; returns its previous `last` (0 if new)."""
        entry = self._live(key, now) or _Entry(0, 0.0)
        before = entry.last
        entry.failures += 1
        entry.last = now
        self._entries[key] = entry
        self._entries.move_to_end(key)
        return before

    def _evict(self, now: float) -> None:
        while self._entries:
            key, oldest = next(iter(self._entries.items()))
            stale = now - oldest.last >= self._forget_after
            if not stale and len(self._entries) <= self._max_entries:
                return
            del self._entries[key]


def peer_address(peer: str) -> str:
    """The client's IP address in a gRPC peer string (`ipv4:192.0.2.1:5678`,
    `ipv6:[2001:db8::1]:5678`, possibly %-encoded); anything else is returned unchanged."""
    kind, sep, rest = peer.partition(":")
    if sep and kind in ("ipv4", "ipv6"):
        return unquote(rest).rpartition(":")[0].strip("[]")
    return peer


def _source_key(source: str) -> str:
    address = peer_address(source)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:256]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
