"""Destinations: the remote jetstream servers a user sends to, and how to reach them.

A password given at creation is used once, to obtain an API token from the remote server
(valid for a year, named after this server); only that token is stored. The remote's TLS
certificate fingerprint and server uid are pinned on that first contact, like ssh's
known_hosts, so a server that changes identity is refused rather than trusted.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Protocol

from jetstream.client.channel import Endpoint
from jetstream.client.remote import RemoteServer, connect
from jetstream.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    JetstreamError,
    NotFound,
    PermissionDenied,
)
from jetstream.ids import check_id
from jetstream.services.auth import Caller
from jetstream.services.events import EventLog
from jetstream.state.database import Database

DEFAULT_API_PORT = 8886
REMOTE_TOKEN_TTL = 365 * 24 * 3600


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    api_token: str = field(default="", repr=False)


@dataclass(frozen=True)
class Destination:
    id: str
    owner: str
    host: str
    api_port: int = DEFAULT_API_PORT
    udp_port: int = 0
    display_name: str = ""
    remote_username: str = ""
    token_secret: str = field(default="", repr=False)
    pinned_fingerprint: bytes = b""
    pinned_server_uid: str = ""
    local_udp_port: int = 0
    max_rate_bps: int = 0
    plaintext: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    last_contact_at: float = 0.0
    last_error: str = ""

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.host, self.api_port)


#: Fields a user may change with UpdateDestination (credentials go through their own path).
UPDATABLE = frozenset(
    {"display_name", "udp_port", "local_udp_port", "max_rate_bps", "labels",
     "pinned_fingerprint", "pinned_server_uid", "api_port", "host"}
)


@dataclass(frozen=True)
class ProbeResult:
    reachable: bool
    rtt: float
    fingerprint: bytes
    server_info: object | None
    """The remote's jetstream.v1.ServerInfo message, passed through to the API as is."""
    identity_verified: bool
    remote_principal: object | None
    error: str


class Connector(Protocol):
    def __call__(
        self, endpoint: Endpoint, *, plaintext: bool, pinned: bytes | None, token: str | None
    ) -> AbstractAsyncContextManager[RemoteServer]: ...


class DestinationService:
    def __init__(
        self,
        db: Database,
        *,
        local_name: str = "",
        allow_plaintext: bool = False,
        connector: Connector = connect,
        events: EventLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._events = events
        self._local_name = local_name or socket.gethostname()
        self._allow_plaintext = allow_plaintext
        self._connect = connector
        self._clock = clock

    async def create(
        self, caller: Caller, wanted: Destination, credentials: Credentials, requested_id: str
    ) -> Destination:
        destination_id = requested_id or uuid.uuid4().hex[:12]
        check_id(destination_id, "destination_id")
        _validate(wanted)
        if wanted.plaintext and not self._allow_plaintext:
            raise FailedPrecondition(
                "plaintext destinations are refused; start the server with --allow-plaintext-peers"
            )
        if self._find(destination_id) is not None:
            raise AlreadyExists(f"destinations/{destination_id} exists already")
        now = self._clock()
        destination = replace(
            wanted, id=destination_id, owner=caller.username, created_at=now, updated_at=now
        )
        destination = await self._enroll(destination, credentials)
        self._insert(destination)
        self._event("send.destinationCreated", destination,
                    f"destination {destination_id} -> {destination.endpoint.target} created")
        return destination

    def open(self, destination: Destination) -> AbstractAsyncContextManager[RemoteServer]:
        """The destination's control API, pinned, carrying its stored token."""
        return self._connect(destination.endpoint, plaintext=destination.plaintext,
                             pinned=destination.pinned_fingerprint or None,
                             token=destination.token_secret)

    async def _enroll(self, destination: Destination, credentials: Credentials) -> Destination:
        """First contact: pin the remote's identity and end up holding an API token."""
        pinned = destination.pinned_fingerprint or None
        async with self._connect(destination.endpoint, plaintext=destination.plaintext,
                                 pinned=pinned, token=None) as remote:
            info, _rtt = await remote.server_info()
            if destination.pinned_server_uid and info.server_uid != destination.pinned_server_uid:
                raise PermissionDenied(
                    f"{destination.endpoint.target} is server {info.server_uid}, "
                    f"not the pinned {destination.pinned_server_uid}"
                )
            if credentials.api_token:
                remote.token = credentials.api_token
                principal = await remote.whoami()
                secret = credentials.api_token
            elif credentials.username and credentials.password:
                principal = await remote.login(credentials.username, credentials.password)
                secret = await remote.create_api_token(
                    f"destination on {self._local_name}", REMOTE_TOKEN_TTL
                )
                await remote.logout()
            else:
                raise InvalidArgument(
                    "credentials are required: a user name and password, or an API token"
                )
        return replace(
            destination,
            token_secret=secret,
            remote_username=principal.username,
            pinned_fingerprint=remote.fingerprint or b"",
            pinned_server_uid=info.server_uid,
            last_contact_at=self._clock(),
        )

    def peek(self, destination_id: str) -> Destination | None:
        """The destination whoever owns it (for the transfer engine, not for callers)."""
        return self._find(destination_id)

    def get(self, caller: Caller, destination_id: str) -> Destination:
        destination = self._find(destination_id)
        if destination is None or not caller.can_see(destination.owner):
            raise NotFound(f"destinations/{destination_id} not found")
        return destination

    def list(self, caller: Caller, *, owner: str, after: str, limit: int) -> list[Destination]:
        sql, params = "SELECT * FROM destinations WHERE id > ?", [after]
        scope = caller.owner_scope(owner)
        if scope is not None:
            sql += " AND owner = ?"
            params.append(scope)
        rows = self._db.query(sql + " ORDER BY id LIMIT ?", [*params, limit])
        return [_from_row(row) for row in rows]

    def update(
        self, caller: Caller, destination_id: str, changes: dict[str, object]
    ) -> Destination:
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise InvalidArgument(f"cannot update {', '.join(sorted(unknown))}")
        current = self.get(caller, destination_id)
        updated = replace(current, **changes, updated_at=self._clock())  # type: ignore[arg-type]
        _validate(updated)
        self._db.execute(
            "UPDATE destinations SET display_name=?, host=?, api_port=?, udp_port=?,"
            " local_udp_port=?, max_rate_bps=?, labels=?, pinned_fingerprint=?,"
            " pinned_server_uid=?, updated_at=? WHERE id=?",
            (updated.display_name, updated.host, updated.api_port, updated.udp_port,
             updated.local_udp_port, updated.max_rate_bps, json.dumps(updated.labels),
             updated.pinned_fingerprint, updated.pinned_server_uid, updated.updated_at,
             destination_id),
        )
        return updated

    def delete(self, caller: Caller, destination_id: str) -> None:
        destination = self.get(caller, destination_id)
        self._db.execute("DELETE FROM destinations WHERE id = ?", (destination_id,))
        self._event("send.destinationDeleted", destination,
                    f"destination {destination_id} -> {destination.endpoint.target} deleted "
                    f"by {caller.username}")

    def _event(self, kind: str, d: Destination, message: str) -> None:
        if self._events is not None:
            self._events.record(kind, message, now=self._clock(), username=d.owner,
                                subject=f"destinations/{d.id}", attributes={
                "destinationId": d.id, "destinationAddress": d.endpoint.target,
                "host": d.host, "apiPort": str(d.api_port), "owner": d.owner,
                "remoteUsername": d.remote_username,
                "remoteServerUid": d.pinned_server_uid})

    async def test(self, caller: Caller, destination_id: str) -> ProbeResult:
        """Reach the remote, check its pinned identity and our token; never raises for that."""
        destination = self.get(caller, destination_id)
        info: object | None = None
        principal: object | None = None
        fingerprint, rtt, verified, error = b"", 0.0, False, ""
        try:
            async with self.open(destination) as remote:
                fingerprint = remote.fingerprint or b""
                info_message, rtt = await remote.server_info()
                info = info_message
                verified = info_message.server_uid == destination.pinned_server_uid
                if not verified:
                    raise PermissionDenied(
                        f"remote server uid {info_message.server_uid} is not the pinned "
                        f"{destination.pinned_server_uid}"
                    )
                principal = await remote.whoami()
        except JetstreamError as exc:
            error = str(exc)
        self._record_contact(destination_id, error)
        return ProbeResult(
            reachable=info is not None,
            rtt=rtt,
            fingerprint=fingerprint,
            server_info=info,
            identity_verified=verified,
            remote_principal=principal,
            error=error,
        )

    def _record_contact(self, destination_id: str, error: str) -> None:
        if error:
            self._db.execute("UPDATE destinations SET last_error=? WHERE id=?",
                             (error, destination_id))
        else:
            self._db.execute("UPDATE destinations SET last_error='', last_contact_at=? WHERE id=?",
                             (self._clock(), destination_id))

    def _find(self, destination_id: str) -> Destination | None:
        rows = self._db.query("SELECT * FROM destinations WHERE id = ?", (destination_id,))
        return _from_row(rows[0]) if rows else None

    def _insert(self, d: Destination) -> None:
        self._db.execute(
            "INSERT INTO destinations (id, owner, display_name, host, api_port, udp_port,"
            " remote_username, token_secret, pinned_fingerprint, pinned_server_uid,"
            " local_udp_port, max_rate_bps, plaintext, labels, created_at, updated_at,"
            " last_contact_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (d.id, d.owner, d.display_name, d.host, d.api_port, d.udp_port, d.remote_username,
             d.token_secret, d.pinned_fingerprint, d.pinned_server_uid,
             d.local_udp_port, d.max_rate_bps, int(d.plaintext), json.dumps(d.labels),
             d.created_at, d.updated_at, d.last_contact_at),
        )


def _validate(d: Destination) -> None:
    if not d.host or any(c.isspace() or c in "/[]" for c in d.host) or len(d.host) > 253:
        raise InvalidArgument(f"host {d.host!r} is not a host name or IP address")
    for name in ("api_port", "udp_port", "local_udp_port"):
        if not 0 <= getattr(d, name) <= 65535:
            raise InvalidArgument(f"{name} must be a port number from 0 to 65535")
    if d.api_port == 0:
        raise InvalidArgument("api_port must not be 0")
    if len(d.display_name) > 128:
        raise InvalidArgument("display_name is longer than 128 characters")
    if len(d.pinned_fingerprint) not in (0, 32):
        raise InvalidArgument("pinned_tls_certificate_sha256 must be 32 bytes")
    if len(d.labels) > 64 or any(len(k) > 63 or len(v) > 1024 for k, v in d.labels.items()):
        raise InvalidArgument("labels: at most 64, keys up to 63 and values up to 1024 characters")


def _from_row(row: sqlite3.Row) -> Destination:
    return Destination(
        id=row["id"],
        owner=row["owner"],
        host=row["host"],
        api_port=row["api_port"],
        udp_port=row["udp_port"],
        display_name=row["display_name"],
        remote_username=row["remote_username"],
        token_secret=row["token_secret"],
        pinned_fingerprint=bytes(row["pinned_fingerprint"]),
        pinned_server_uid=row["pinned_server_uid"],
        local_udp_port=row["local_udp_port"],
        max_rate_bps=row["max_rate_bps"],
        plaintext=bool(row["plaintext"]),
        labels=json.loads(row["labels"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_contact_at=row["last_contact_at"],
        last_error=row["last_error"],
    )
