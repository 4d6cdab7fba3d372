"""Logins, sessions and API tokens: the rules, without gRPC.

Passwords are checked by an `Authenticator` (PAM in production); everything after that is
a bearer token from `SessionStore`. Both kinds of token resolve to the same `Caller`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import grp
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from jetstream.auth.principal import Principal, lookup_principal
from jetstream.auth.sessions import SessionStore, TokenKind, TokenRecord
from jetstream.auth.throttle import LoginThrottle, Standing
from jetstream.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from jetstream.ids import check_id
from jetstream.storage.paths import parse_path

DEFAULT_SESSION_TTL = 12 * 3600.0
MAX_TOKEN_TTL = 366 * 24 * 3600.0


class Authenticator(Protocol):
    async def authenticate(
        self, username: str, password: str, *, source: str,
        standing: Standing = Standing.UNKNOWN,
    ) -> Principal:
        """Return who logged in, or raise Unauthenticated. `standing`: what the address's
        recent logins say about it; checks may be ordered by it."""
        ...


@dataclass(frozen=True)
class SuperuserPolicy:
    """Who may see everything: root, named users, and members of named groups."""

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset({"sudo", "wheel", "admin"})

    def applies_to(self, principal: Principal) -> bool:
        if principal.uid == 0 or principal.username in self.users:
            return True
        return any(_group_name(gid) in self.groups for gid in principal.groups)


@dataclass(frozen=True)
class Caller:
    """Who is making the current call, as established by a token."""

    token: TokenRecord
    peer: str
    principal: Principal
    local: bool = False
    """Authenticated by the kernel on the local Unix socket; `token` is a stand-in."""

    @property
    def username(self) -> str:
        return self.token.username

    @property
    def is_superuser(self) -> bool:
        return self.principal.is_superuser

    def require_superuser(self) -> None:
        if not self.is_superuser:
            raise PermissionDenied("only a superuser may do this")

    def can_see(self, owner: str) -> bool:
        """Whether objects owned by `owner` exist as far as this caller is concerned."""
        return self.is_superuser or owner == self.username

    def owner_scope(self, owner: str) -> str | None:
        """The owner a List call filters on (None: everyone's), per the API's `owner` rule."""
        if owner in ("", self.username):
            return self.username
        if not self.is_superuser:
            raise PermissionDenied("only a superuser may list other users' objects")
        return None if owner == "-" else owner


class AuthService:
    def __init__(
        self,
        sessions: SessionStore,
        authenticator: Authenticator,
        *,
        superusers: SuperuserPolicy = SuperuserPolicy(),
        throttle: LoginThrottle | None = None,
        session_ttl: float = DEFAULT_SESSION_TTL,
        api_tokens_enabled: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self._authenticator = authenticator
        self._superusers = superusers
        self._throttle = throttle or LoginThrottle()
        self._session_ttl = session_ttl
        self.api_tokens_enabled = api_tokens_enabled
        self._clock = clock

    async def login(
        self, username: str, password: str, *, source: str, ttl: float | None = None
    ) -> tuple[str, Caller]:
        attempt = self._throttle.begin(username, source, self._clock())
        principal = await self._authenticator.authenticate(
            username, password, source=source, standing=attempt.standing)
        self._throttle.succeeded(attempt)
        lifetime = self._session_ttl if not ttl else min(ttl, self._session_ttl)
        secret, record = self._sessions.issue(
            principal.username, TokenKind.SESSION, now=self._clock(), ttl=lifetime
        )
        return secret, self._caller(record, source, principal)

    async def authenticate_token(self, token: str, peer: str) -> Caller:
        record = self._sessions.check(token, now=self._clock())
        if record.kind is TokenKind.API and not self.api_tokens_enabled:
            raise PermissionDenied("API tokens are disabled on this server")
        try:
            principal = await asyncio.to_thread(lookup_principal, record.username)
        except NotFound:
            raise Unauthenticated("the account behind this token no longer exists") from None
        return self._caller(record, peer, principal)

    async def local_caller(self, uid: int, peer: str) -> Caller:
        """The caller behind a local-socket connection whose kernel credentials say `uid`:
        no password and no token (see jetstream.api.localsocket)."""
        try:
            entry = await asyncio.to_thread(pwd.getpwuid, uid)
            principal = await asyncio.to_thread(lookup_principal, entry.pw_name)
        except (KeyError, NotFound):
            raise Unauthenticated(f"uid {uid} has no account on this server") from None
        now = self._clock()
        record = TokenRecord(
            token_id="", username=principal.username, kind=TokenKind.SESSION,
            description="local socket", allowed_paths=(), read_only=False,
            created_at=now, expires_at=now + self._session_ttl,
        )
        superuser = self._superusers.applies_to(principal)
        return Caller(record, peer, dataclasses.replace(principal, is_superuser=superuser),
                      local=True)

    def _caller(self, record: TokenRecord, peer: str, principal: Principal) -> Caller:
        # An API token acts with the rights it was given AND those its owner still has: a
        # token made without superuser never gains it, and one made with it loses it when the
        # owner leaves the superuser groups.
        superuser = self._superusers.applies_to(principal) and (
            record.kind is TokenKind.SESSION or record.superuser)
        return Caller(record, peer, dataclasses.replace(principal, is_superuser=superuser))

    def logout(self, caller: Caller) -> None:
        if caller.local:
            raise FailedPrecondition("this call came over the local socket: no session to end")
        if caller.token.kind is not TokenKind.SESSION:
            raise FailedPrecondition("this call used an API token; revoke it instead")
        self._sessions.revoke(caller.token.token_id)

    def create_api_token(
        self,
        caller: Caller,
        *,
        ttl: float,
        description: str,
        allowed_paths: tuple[str, ...],
        read_only: bool,
        superuser: bool = False,
        token_id: str = "",
    ) -> tuple[str, TokenRecord]:
        """A token at most as wide as the caller's own credentials: the paths within theirs,
        read-only if they are, superuser only if they are one now."""
        if not self.api_tokens_enabled:
            raise PermissionDenied("API tokens are disabled on this server")
        if not 0 < ttl <= MAX_TOKEN_TTL:
            raise InvalidArgument("an API token's lifetime must be between 1 s and 366 days")
        if token_id:
            check_id(token_id, "api_token_id")
        # Stored in the form every later check parses ("/a/b"): a path no check could parse
        # would silently allow nothing.
        allowed_paths = tuple(str(parse_path(p, what="allowed path")) for p in allowed_paths)
        parent = caller.token
        if parent.allowed_paths and not all(
            any(_within(p, scope) for scope in parent.allowed_paths) for p in allowed_paths
        ):
            raise PermissionDenied("a token cannot reach paths the token creating it cannot")
        if superuser and not caller.is_superuser:
            raise PermissionDenied("only a superuser may create a token with superuser rights")
        return self._sessions.issue(
            caller.username,
            TokenKind.API,
            now=self._clock(),
            ttl=ttl,
            description=description,
            allowed_paths=allowed_paths or parent.allowed_paths,
            read_only=read_only or parent.read_only,
            superuser=superuser,
            token_id=token_id,
        )

    def now(self) -> float:
        return self._clock()

    def list_api_tokens(self, caller: Caller) -> list[TokenRecord]:
        return self._sessions.list(caller.username, TokenKind.API, now=self._clock())

    def get_api_token(self, caller: Caller, token_id: str) -> TokenRecord:
        return self._sessions.get(token_id, caller.username, TokenKind.API)

    def revoke_api_token(self, caller: Caller, token_id: str) -> TokenRecord:
        record = self.get_api_token(caller, token_id)
        self._sessions.revoke(token_id)
        return record


async def acting_as(username: str, description: str, allowed_paths: tuple[str, ...] = (),
                    read_only: bool = False) -> Caller:
    """`username` with their own rights (never a superuser's), for work the server does for
    them without a call in progress (a pull's job, a watch folder's batches, a scan resumed
    after a restart). `allowed_paths`, `read_only`: the limits of the credentials that
    ordered the work. NotFound if the account is gone."""
    principal = await asyncio.to_thread(lookup_principal, username)
    now = time.time()
    token = TokenRecord(token_id="", username=username, kind=TokenKind.SESSION,
                        description=description, allowed_paths=allowed_paths,
                        read_only=read_only, created_at=now, expires_at=now)
    return Caller(token, "", principal)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def _within(path: str, scope: str) -> bool:
    path, scope = path.strip("/"), scope.strip("/")
    return path == scope or path.startswith(scope + "/")
