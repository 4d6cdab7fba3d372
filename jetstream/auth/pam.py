"""Password logins through PAM, with one answer for every kind of failure.

python-pam runs the conversation and, after `pam_authenticate`, `pam_acct_mgmt`, so locked,
expired and must-change-password accounts fail like a wrong password. It has no API for
PAM items, so `_pam_login` wraps three of its per-instance libpam bindings to add:

- `PAM_RHOST`, so syslog, pam_access and fail2ban see the client's address;
- a `PAM_FAIL_DELAY` callback: a module's failure delay (pam_unix without `nodelay`,
  pam_faildelay) is recorded instead of slept, so a stack an admin edited cannot hold a
  worker thread for seconds per failed guess; the delay is served on the event loop;
- `PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK`, so even a stack with `nullok` refuses accounts
  without a password (and the empty password is refused before PAM is asked at all).

Every failure (unknown user, wrong password, no password, locked, expired, and input PAM
never sees) raises the same `Unauthenticated` after the same minimum time, measured from the
start of the call: unpadded, an unknown user fails in 1 ms and a wrong password in 40 ms
(yescrypt), which tells an attacker which names exist. Why a login failed goes to the log only.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import stat
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import pam

from jetstream.auth.principal import Principal, lookup_principal
from jetstream.auth.throttle import Standing
from jetstream.errors import NotFound, Unauthenticated
from jetstream.storage.paths import printable

log = logging.getLogger("jetstream.auth")

FAILURE_MESSAGE = "invalid username or password"
DEFAULT_SERVICE = "jetstream"
MAX_USERNAME_BYTES = 256
MAX_PASSWORD_BYTES = 512
"""pam_unix's limit (PAM_MAX_RESP_SIZE); longer passwords could never succeed."""

_PAM_RHOST = 4
_PAM_FAIL_DELAY = 10
_FLAGS = 0x8000 | 0x1  # PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK
_FailDelayFn = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)
SERVICE_DIRS = ("/etc/pam.d", "/usr/lib/pam.d")
"""Where libpam looks for service files, in order (the second is the distribution's)."""


class PamAuthenticator:
    """Checks passwords with PAM on a few dedicated threads, never on the event loop.

    Its own small pool bounds concurrent PAM calls (a slow LDAP server cannot starve the
    default executor) and is what a flood of guesses queues on; throttle in front of it.
    Checks are admitted by the address's standing (`_Lanes`): guesses spread over many
    addresses, which no per-address limit stops, queue behind the logins of addresses users
    log in from.
    """

    def __init__(
        self, service: str = DEFAULT_SERVICE, *, failure_delay: float = 1.0, workers: int = 4
    ) -> None:
        self.service = service
        self.failure_delay = failure_delay
        """Minimum duration of a failed login; keep it above the slowest PAM failure."""
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="jetstream-pam")
        self._lanes = _Lanes(workers)

    async def authenticate(
        self, username: str, password: str, *, source: str,
        standing: Standing = Standing.UNKNOWN,
    ) -> Principal:
        """The user's Principal, or Unauthenticated(FAILURE_MESSAGE) whatever went wrong.

        `source` is the client's address (for PAM_RHOST and the log); `standing` orders
        the check among those waiting.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        principal: Principal | None = None
        pam_delay = 0.0
        reason = _refusal(username, password)
        if reason is None:
            try:
                async with self._lanes.slot(standing):
                    principal, reason, pam_delay = await loop.run_in_executor(
                        self._pool, self._login, username, password, source
                    )
            except Exception:  # PAM or NSS broke: the client still gets the one answer
                log.exception("login check failed unexpectedly")
                reason = "internal error (logged above)"
        who, where = printable(username[:64]), printable(source)
        if principal is not None:
            log.info("login: %s from %s", who, where)
            return principal
        log.info("login failed: %s from %s: %s", who, where, reason)
        delay = max(self.failure_delay, pam_delay)
        await asyncio.sleep(max(0.0, started + delay - loop.time()))
        raise Unauthenticated(FAILURE_MESSAGE)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _login(
        self, username: str, password: str, source: str
    ) -> tuple[Principal | None, str, float]:
        ok, reason, delay = _pam_login(self.service, username, password, source)
        if not ok:
            return None, reason, delay
        try:
            return lookup_principal(username), "", 0.0
        except NotFound:
            return None, "PAM accepted a user the user database does not know", 0.0


class _Lanes:
    """At most `slots` checks at a time, at most a quarter of them (at least one) for suspect
    addresses; waiters are admitted by standing (trusted, unknown, suspect), each lane in
    arrival order.

    Why a quarter: a password check is CPU (yescrypt, ~40 ms), so guesses may use only part
    of the machine, and a user's check neither waits for a slot nor shares the cores with a
    full set of guesses."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._suspect_free = max(1, slots // 4)
        self._waiting: tuple[deque[asyncio.Future[None]], ...] = tuple(
            deque() for _ in Standing)

    @asynccontextmanager
    async def slot(self, standing: Standing) -> AsyncIterator[None]:
        if not any(self._waiting[: standing + 1]) and self._admissible(standing):
            self._take(standing)
        else:
            turn = asyncio.get_running_loop().create_future()
            self._waiting[standing].append(turn)
            try:
                await turn  # _give_back took the slot for us before waking us
            except asyncio.CancelledError:
                if not turn.cancelled():  # admitted and cancelled in one step: give it back
                    self._give_back(standing)
                elif turn in self._waiting[standing]:
                    self._waiting[standing].remove(turn)
                raise
        try:
            yield
        finally:
            self._give_back(standing)

    def _admissible(self, standing: Standing) -> bool:
        return self._free > 0 and (standing is not Standing.SUSPECT or self._suspect_free > 0)

    def _take(self, standing: Standing) -> None:
        self._free -= 1
        self._suspect_free -= standing is Standing.SUSPECT

    def _give_back(self, standing: Standing) -> None:
        self._free += 1
        self._suspect_free += standing is Standing.SUSPECT
        for lane_standing in Standing:
            lane = self._waiting[lane_standing]
            while lane and self._admissible(lane_standing):
                turn = lane.popleft()
                if not turn.done():  # a cancelled waiter may not have left its lane yet
                    self._take(lane_standing)
                    turn.set_result(None)


def _refusal(username: str, password: str) -> str | None:
    """Why the input is refused before PAM, or None; PAM must never see these."""
    if not password:
        return "empty password"
    if not username:
        return "empty user name"
    try:
        name, secret = username.encode(), password.encode()
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if len(name) > MAX_USERNAME_BYTES or len(secret) > MAX_PASSWORD_BYTES:
        return "user name or password too long"
    if any(c < 0x20 or c == 0x7F for c in name) or 0 in secret:
        return "control character in user name or NUL in password"
    return None


def _pam_login(service: str, username: str, password: str, source: str) -> tuple[bool, str, float]:
    """One PAM transaction: (success, PAM's reason, failure delay PAM asked for in seconds)."""
    conversation: Any = pam.pam()
    delays: list[int] = []
    on_delay = _FailDelayFn(lambda _status, usec, _appdata: delays.append(usec))
    start = conversation.pam_start
    authenticate = conversation.pam_authenticate
    account = conversation.pam_acct_mgmt

    def start_with_items(*args: Any) -> int:
        status = int(start(*args))
        if status == 0:
            handle = conversation.handle
            conversation.pam_set_item(handle, _PAM_RHOST, source.encode(errors="replace"))
            delay_fn = ctypes.cast(on_delay, ctypes.c_void_p)
            conversation.pam_set_item(handle, _PAM_FAIL_DELAY, delay_fn)
        return status

    conversation.pam_start = start_with_items
    conversation.pam_authenticate = lambda handle, flags: authenticate(handle, flags | _FLAGS)
    conversation.pam_acct_mgmt = lambda handle, flags: account(handle, flags | _FLAGS)
    ok = conversation.authenticate(username, password, service=service, resetcreds=False)
    return bool(ok), f"{conversation.reason} ({conversation.code})", max(delays, default=0) / 1e6


def pam_service_problem(
    service: str = DEFAULT_SERVICE, *, directories: Sequence[str] = SERVICE_DIRS
) -> str | None:
    """What is wrong with the installed PAM service file, or None; call it at server start.

    Without the file, PAM falls back to /etc/pam.d/other (on Debian: common-auth, which has
    `nullok` and a failure delay), so the server still works but not as designed.
    """
    for directory in directories:
        path = os.path.join(directory, service)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue
        except OSError as err:
            return f"PAM service file {path} cannot be read: {err.strerror}"
        if not stat.S_ISREG(info.st_mode):
            return f"PAM service file {path} is not a regular file"
        if info.st_uid != 0 or info.st_mode & 0o022:
            return f"PAM service file {path} must be owned by root and writable only by root"
        with open(path, encoding="utf-8", errors="replace") as file:
            if any("nullok" in line.split("#", 1)[0] for line in file):
                return f"PAM service file {path} allows empty passwords (nullok): remove it"
        return None
    return (
        f"PAM service file {os.path.join(directories[0], service)} is missing: logins use "
        "/etc/pam.d/other instead; install it with deploy/install-pam.sh"
    )
