"""Which directories each user reaches, what a caller's credentials allow there, and the
sandbox mappings superusers manage.

The one access check: every path a client names (file browsing, manifests, transfers) goes
through `CallerView.resolve`/`locate` (or `Sandboxes.locate_for`, which also creates a
resource directory marked `create`). In that order it refuses

1. a write with read-only credentials (an API token created with `read_only`),
2. a path outside the token's `allowed_paths` (paths in the user's view; a path is inside
   an allowed path when it is that path or below it, component by component),
3. a path no sandbox root holds (NotFound to read, PermissionDenied to write),
4. a write below a resource marked read-only,

before any file is touched, so a refused call learns nothing about what exists.

Mappings: the all-users mapping and per-user mappings live as one JSON document under the
`sandbox_mappings` key of the state database's `meta` table (they are few and small, and
change rarely). `--sandbox-dir` is the all-users mapping while it is given; it is listed
as `fixed` and cannot be changed through the API. A change applies to the next call:
`Sandboxes` rebuilds its rules in memory at once. Changes go to the event log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from stat import S_ISDIR
from typing import Any

from jetstream.auth.principal import Principal
from jetstream.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from jetstream.services.auth import Caller
from jetstream.services.events import EventLog
from jetstream.state.database import Database
from jetstream.storage.paths import RelPath, parse_path, printable
from jetstream.storage.sandbox import (
    Location,
    Resource,
    Sandbox,
    SandboxRoot,
    SandboxRules,
    ViewPath,
    check_resources,
)

log = logging.getLogger(__name__)

META_KEY = "sandbox_mappings"
CREATED_DIR_MODE = 0o700
"""Mode of a resource directory made for its user (`create`): private until they change it."""


@dataclass(frozen=True)
class SandboxMapping:
    """The all-users mapping (`user` None) or one user's."""

    user: str | None
    resources: tuple[Resource, ...]
    fixed: bool = False
    """From the command line (--sandbox-dir); not changeable through the API."""
    update_time: float = 0.0

    @property
    def name(self) -> str:
        return f"sandboxMappings/{'-' if self.user is None else self.user}"

    @property
    def key(self) -> str:
        """Page-token key: "-" for all users, else the user name."""
        return "-" if self.user is None else self.user


def _order(key: str) -> tuple[int, str]:
    return (0, "") if key == "-" else (1, key)


@dataclass(frozen=True)
class CallerView:
    """One caller's view of the file system, with the limits of their credentials."""

    principal: Principal
    sandbox: Sandbox
    allowed: tuple[RelPath, ...] = ()
    restricted: bool = False
    """True if the credentials name allowed paths (even if none of them could be parsed)."""
    read_only: bool = False

    def check(self, path: RelPath, *, write: bool) -> None:
        """PermissionDenied unless the credentials allow this access to `path`."""
        if write and self.read_only:
            raise PermissionDenied("these credentials are read-only: they may not change files")
        if self.restricted and not any(
            path.parts[: len(scope.parts)] == scope.parts for scope in self.allowed
        ):
            shown = ", ".join(printable(str(scope)) for scope in self.allowed) or "none"
            raise PermissionDenied(
                f"{printable(str(path))} is outside the paths these credentials may use "
                f"({shown})"
            )

    def resolve(self, raw: str | RelPath, *, write: bool, what: str = "path") -> ViewPath:
        """Check and place a path of the user's view ("" and "/" are the view's root)."""
        path = raw if isinstance(raw, RelPath) else parse_path(raw, what=what, empty_is_root=True)
        self.check(path, write=write)
        try:
            view = self.sandbox.resolve(path)
        except NotFound:
            if not write:
                raise
            raise PermissionDenied(
                f"{printable(str(path))} is not in your sandbox; it holds "
                f"{self.mount_list()}"
            ) from None
        if write and view.location is not None and view.location.root.read_only:
            raise PermissionDenied(
                f"{printable(str(path))} is on a read-only resource "
                f"(/{printable(view.location.root.name)})"
            )
        return view

    def locate(self, raw: str | RelPath, *, write: bool, what: str = "path") -> Location:
        """Like `resolve`, for operations that need a real place (not a directory that only
        holds mounts)."""
        view = self.resolve(raw, write=write, what=what)
        if view.location is None:
            message = (f"{printable(str(view.path))} only holds your sandbox's resources "
                       f"({self.mount_list()}); use one of them")
            raise PermissionDenied(message) if write else FailedPrecondition(message)
        return view.location

    def mount_list(self) -> str:
        return ", ".join(f"/{printable(root.name)}" for root in self.sandbox.roots)


class Sandboxes:
    def __init__(
        self,
        rules: SandboxRules,
        *,
        db: Database | None = None,
        events: EventLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`rules`: the command-line part (`sandbox_dirs`); stored mappings come from `db`."""
        rules.check()
        self._fixed = rules
        self._db = db
        self._events = events
        self._clock = clock
        self._all_users: SandboxMapping | None = None
        self._users: dict[str, SandboxMapping] = {}
        self._load()
        self._rules = self._combine()

    # Views and the access check ------------------------------------------------------

    def for_principal(self, principal: Principal) -> Sandbox:
        return self._rules.sandbox_for(principal)

    def view_for(self, caller: Caller) -> CallerView:
        """The caller's view under the current mappings, with their token's limits."""
        token = caller.token
        allowed: list[RelPath] = []
        for raw in token.allowed_paths:
            try:
                allowed.append(parse_path(raw.rstrip("/"), what="allowed path",
                                          empty_is_root=True))
            except InvalidArgument:
                log.warning("token %s has an unusable allowed path %s; ignored",
                            token.token_id, printable(raw))
        return CallerView(
            caller.principal,
            self.for_principal(caller.principal),
            tuple(allowed),
            restricted=bool(token.allowed_paths),
            read_only=token.read_only,
        )

    async def resolve_for(
        self, caller: Caller, raw: str | RelPath, *, write: bool, what: str = "path"
    ) -> ViewPath:
        """`view_for(caller).resolve(...)`, creating the resource directory if it is marked
        `create` and missing."""
        view = self.view_for(caller).resolve(raw, write=write, what=what)
        if view.location is not None:
            await self.prepare(caller.principal, view.location.root)
        return view

    async def locate_for(
        self, caller: Caller, raw: str | RelPath, *, write: bool, what: str = "path"
    ) -> Location:
        """The one call for "may this caller read (write) here, and where is it": checks the
        credentials and the sandbox (see the module docstring) and returns the place to pass
        to userfs. PermissionDenied, NotFound, FailedPrecondition or InvalidArgument."""
        location = self.view_for(caller).locate(raw, write=write, what=what)
        await self.prepare(caller.principal, location.root)
        return location

    async def prepare(self, principal: Principal, root: SandboxRoot) -> None:
        """Create `root` for `principal` if it is marked `create` and does not exist yet."""
        if root.create:
            await asyncio.to_thread(_create_root, root, principal)

    # Mappings -------------------------------------------------------------------------

    def list_mappings(self, caller: Caller, *, after: str = "", limit: int = 1000
                      ) -> list[SandboxMapping]:
        """All-users first, then per-user by name; `after` is the key of the last one seen."""
        caller.require_superuser()
        every: list[SandboxMapping] = []
        if self._fixed.sandbox_dirs:
            every.append(SandboxMapping(None, self._fixed.fixed_resources(), fixed=True))
        elif self._all_users is not None:
            every.append(self._all_users)
        every.extend(self._users[name] for name in sorted(self._users))
        if after:
            every = [m for m in every if _order(m.key) > _order(after)]
        return every[:limit]

    def set_mapping(
        self, caller: Caller, user: str | None, resources: Sequence[Resource]
    ) -> SandboxMapping:
        caller.require_superuser()
        if user is not None:
            _check_user_name(user)
        self._refuse_fixed(user)
        try:
            check_resources(resources)
        except ConfigError as exc:
            raise InvalidArgument(str(exc)) from None
        mapping = SandboxMapping(user, tuple(resources), update_time=self._clock())
        all_users, users = self._all_users, dict(self._users)
        if user is None:
            all_users = mapping
        else:
            users[user] = mapping
        self._store(all_users, users)
        self._record("sandbox.mappingSet",
                     f"{printable(caller.username)} set {printable(mapping.name)}: "
                     f"{_describe(mapping.resources)}", mapping)
        return mapping

    def delete_mapping(self, caller: Caller, user: str | None) -> None:
        caller.require_superuser()
        self._refuse_fixed(user)
        all_users, users = self._all_users, dict(self._users)
        if user is None:
            if all_users is None:
                raise NotFound("there is no all-users sandbox mapping")
            old, all_users = all_users, None
        else:
            if user not in users:
                raise NotFound(f"sandboxMappings/{printable(user)} not found")
            old = users.pop(user)
        self._store(all_users, users)
        self._record("sandbox.mappingDeleted",
                     f"{printable(caller.username)} deleted {printable(old.name)}", old)

    def _refuse_fixed(self, user: str | None) -> None:
        if user is None and self._fixed.sandbox_dirs:
            raise FailedPrecondition(
                "the all-users sandbox is fixed on the command line (--sandbox-dir); change "
                "the server's configuration instead"
            )

    def _record(self, kind: str, message: str, mapping: SandboxMapping) -> None:
        if self._events is not None:
            self._events.record(kind, message, now=self._clock(),
                                username=mapping.user or "", subject=mapping.name)

    def _combine(self) -> SandboxRules:
        return replace(
            self._fixed,
            all_users=self._all_users.resources if self._all_users is not None else (),
            users={name: m.resources for name, m in self._users.items()},
        )

    def _store(self, all_users: SandboxMapping | None, users: dict[str, SandboxMapping]) -> None:
        """Persist first, then switch the rules the next call sees."""
        document = {
            "version": 1,
            "all_users": None if all_users is None else _mapping_json(all_users),
            "users": {name: _mapping_json(m) for name, m in sorted(users.items())},
        }
        if self._db is not None:
            self._db.set_meta(META_KEY, json.dumps(document, sort_keys=True).encode())
        self._all_users, self._users = all_users, users
        self._rules = self._combine()

    def _load(self) -> None:
        raw = None if self._db is None else self._db.get_meta(META_KEY)
        if raw is None:
            return
        try:
            document = json.loads(raw)
            if document.get("version") != 1:
                raise ValueError(f"unknown version {document.get('version')!r}")
            everyone = document.get("all_users")
            self._all_users = None if everyone is None else _mapping_from_json(None, everyone)
            self._users = {name: _mapping_from_json(name, data)
                           for name, data in document.get("users", {}).items()}
            for mapping in [self._all_users, *self._users.values()]:
                if mapping is not None:
                    check_resources(mapping.resources)
        except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
            raise ConfigError(
                f"the sandbox mappings stored in the state database are unusable ({exc}); "
                "fix or delete the meta row 'sandbox_mappings'"
            ) from None


def _mapping_json(mapping: SandboxMapping) -> dict[str, object]:
    return {
        "resources": [
            {"mount": r.mount, "path": r.path, "read_only": r.read_only, "create": r.create}
            for r in mapping.resources
        ],
        "update_time": mapping.update_time,
    }


def _mapping_from_json(user: str | None, data: dict[str, Any]) -> SandboxMapping:
    resources = tuple(
        Resource(str(item["mount"]), str(item["path"]), bool(item["read_only"]),
                 bool(item["create"]))
        for item in data["resources"]
    )
    return SandboxMapping(user, resources, update_time=float(data.get("update_time", 0.0)))


def _describe(resources: Sequence[Resource]) -> str:
    shown = []
    for resource in resources:
        flags = [flag for flag, on in (("read-only", resource.read_only),
                                       ("create", resource.create)) if on]
        extra = f" ({', '.join(flags)})" if flags else ""
        shown.append(f"/{printable(resource.mount)} -> {printable(resource.path)}{extra}")
    return "; ".join(shown)


def _check_user_name(user: str) -> None:
    if not user or user == "-":
        raise InvalidArgument("a sandbox mapping's user must be a user name")
    if len(user.encode()) > 256 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in user) \
            or "/" in user:
        raise InvalidArgument(f"'{printable(user)}' is not a valid user name")


def _create_root(root: SandboxRoot, principal: Principal) -> None:
    """mkdir the root (and, as root, missing parents), then hand it to the user by fd."""
    try:
        os.stat(root.path)
        return
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise Unavailable(f"sandbox resource /{printable(root.name)}: {exc.strerror}") from None
    parent, name = os.path.split(root.path)
    try:
        os.makedirs(parent, 0o755, exist_ok=True)
        parent_fd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                os.mkdir(name, 0o700, dir_fd=parent_fd)
            except FileExistsError:
                return  # made concurrently, or a link: never chown what we did not make
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=parent_fd)
            try:
                if not S_ISDIR(os.fstat(fd).st_mode):
                    return
                os.fchown(fd, principal.uid, principal.gid)
                os.fchmod(fd, CREATED_DIR_MODE)
            finally:
                os.close(fd)
        finally:
            os.close(parent_fd)
    except OSError as exc:
        raise Unavailable(
            f"cannot create the sandbox resource /{printable(root.name)}: {exc.strerror}"
        ) from None
    log.info("created sandbox directory %s for %s", printable(root.path),
             printable(principal.username))
