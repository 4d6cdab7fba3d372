"""How one server is given credentials for another: destinations made from your logins.

The server that runs a transfer (the local one for pushes and pulls) needs credentials at
the other; jetstreamctl never hands over your password for that. It uses your session at
the other server to create an API token there, and gives the runner that token in a
destination that later copies reuse (found by host, port and user, and checked with
TestDestination; it is replaced once its token stops working).

If you logged in to the target with an API token, that token is given to the source as it is
(a token cannot create other tokens).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from google.protobuf.duration_pb2 import Duration

from jetstream.cli.ctl_connect import Connection
from jetstream.cli.output import EXIT_UNAVAILABLE, CtlError
from jetstream.client.channel import Endpoint
from jetstream.v1 import auth_pb2, destinations_pb2, server_pb2

LABEL = "jetstreamctl"
PUSH_TOKEN_TTL = 365 * 86400


@dataclass
class Grant:
    """An API token secret for the target."""

    secret: str


def grant_on(target: Connection, purpose: str, *, api_token: str | None = None) -> Grant:
    """A token the source can use at `target` (`api_token`: the one you logged in with)."""
    if api_token:
        return Grant(api_token)
    token = auth_pb2.ApiToken(description=purpose, ttl=Duration(seconds=PUSH_TOKEN_TTL))
    reply = target.call(target.auth.CreateApiToken, auth_pb2.CreateApiTokenRequest(
        api_token=token))
    return Grant(reply.secret)


def target_identity(target: Connection) -> server_pb2.ServerInfo:
    return target.call(target.server.GetServerInfo, server_pb2.GetServerInfoRequest()).server_info


def own_endpoint(server: Connection) -> Endpoint:
    """Where a server reaches its own API (for copies into this machine's server)."""
    return Endpoint("127.0.0.1", target_identity(server).api_port)


def _destination(endpoint: Endpoint, info: server_pb2.ServerInfo, grant: Grant,
                 labels: dict[str, str]) -> destinations_pb2.Destination:
    return destinations_pb2.Destination(
        display_name=f"{info.display_name} ({endpoint.target})"[:128], host=endpoint.host,
        api_port=endpoint.port, api_token_secret=grant.secret,
        pinned_tls_certificate_sha256=info.tls_certificate_sha256,
        pinned_server_uid=info.server_uid, labels=labels)


def create_destination(source: Connection, endpoint: Endpoint, info: server_pb2.ServerInfo,
                       grant: Grant, labels: dict[str, str],
                       destination_id: str = "") -> destinations_pb2.Destination:
    """Create it on `source` (which contacts the target at once and pins it)."""
    wanted = _destination(endpoint, info, grant, labels)
    try:
        return source.call(source.destinations.CreateDestination,
                           destinations_pb2.CreateDestinationRequest(
                               destination=wanted, destination_id=destination_id)).destination
    except CtlError as exc:
        if exc.exit_code == EXIT_UNAVAILABLE:
            raise CtlError(f"{source.name} cannot reach the API of {endpoint.target}: {exc}. "
                           "The receiving server must accept API connections from the sending "
                           "one (--api-allow-remote-control); for pulls, --local-address "
                           "names this machine's address as the other server sees it",
                           EXIT_UNAVAILABLE, exc.status) from None
        raise


def reusable_destination(source: Connection, endpoint: Endpoint, username: str,
                         server_uid: str) -> destinations_pb2.Destination | None:
    """A destination jetstreamctl made earlier for the same target and user that still works."""
    reply = source.call(source.destinations.ListDestinations,
                        destinations_pb2.ListDestinationsRequest(host=endpoint.host,
                                                                 page_size=1000))
    for candidate in reply.destinations:
        if (candidate.labels.get(LABEL) != "push" or candidate.api_port != endpoint.port
                or candidate.username != username
                or candidate.pinned_server_uid != server_uid):
            continue
        test = source.call(source.destinations.TestDestination,
                           destinations_pb2.TestDestinationRequest(name=candidate.name))
        if test.reachable and test.identity_verified and test.authenticated:
            return candidate
    return None


def push_destination(source: Connection, target: Connection, endpoint: Endpoint,
                     api_token: str | None) -> destinations_pb2.Destination:
    """The destination on `source` for pushing to `target`: reused, or made now."""
    info = target_identity(target)
    who = target.call(target.auth.WhoAmI, auth_pb2.WhoAmIRequest()).principal
    found = reusable_destination(source, endpoint, who.username, info.server_uid)
    if found is not None:
        return found
    grant = grant_on(target, f"jetstreamctl: destination on {source.name}",
                     api_token=api_token)
    return create_destination(source, endpoint, info, grant, {LABEL: "push"},
                              resource_id("to", endpoint.host))


def resource_id(prefix: str, text: str) -> str:
    """A fresh id like `to-example-org-1a2b3c4d` (ids match [a-z0-9][a-z0-9-]{0,62})."""
    middle = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]
    suffix = uuid.uuid4().hex[:8]
    return f"{prefix}-{middle}-{suffix}" if middle else f"{prefix}-{suffix}"
