"""Password logins in the event log: an `Authenticator` that records what the real one says.

Only the user name, the client's address and the outcome are recorded, never the password.
The failure message is the one every failure gets (the reason stays in the server log), so
the event log cannot tell a guesser which user names exist.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from jetstream.auth.principal import Principal
from jetstream.auth.throttle import Standing
from jetstream.errors import Unauthenticated
from jetstream.services.auth import Authenticator
from jetstream.services.events import EventLog, Severity
from jetstream.storage.paths import printable

MAX_RECORDED_NAME = 256


class RecordingAuthenticator:
    def __init__(
        self, inner: Authenticator, events: EventLog, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._inner = inner
        self._events = events
        self._clock = clock

    async def authenticate(
        self, username: str, password: str, *, source: str,
        standing: Standing = Standing.UNKNOWN,
    ) -> Principal:
        try:
            principal = await self._inner.authenticate(username, password, source=source,
                                                       standing=standing)
        except Unauthenticated:
            name = username[:MAX_RECORDED_NAME]
            self._events.record(
                "auth.loginFailed",
                f"failed login as '{printable(name)}' from {printable(source)}",
                now=self._clock(), severity=Severity.WARNING, username=name,
            )
            raise
        self._events.record(
            "auth.login",
            f"{printable(principal.username)} logged in from {printable(source)}",
            now=self._clock(), username=principal.username,
        )
        return principal
