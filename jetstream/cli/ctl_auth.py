"""`login`, `logout`, `whoami` and `tokens`: who you are on which server."""

from __future__ import annotations

import sys

import click
from google.protobuf.duration_pb2 import Duration

from jetstream.cli.ctl_base import (
    common_options,
    limit_option,
    list_all,
    out,
    owner_option,
    password_from_env_or_prompt,
    resource,
    settings,
)
from jetstream.cli.ctl_config import (
    LOCAL,
    ServerLogin,
    format_fingerprint,
    parse_fingerprint,
    save_credentials,
)
from jetstream.cli.ctl_connect import (
    Connection,
    canonical,
    connect,
    login_name,
    open_local,
    open_pinned,
)
from jetstream.cli.output import (
    EXIT_USAGE,
    CtlError,
    as_dict,
    enum_label,
    human_time,
    short_name,
    table,
)
from jetstream.v1 import auth_pb2, common_pb2, server_pb2


def parse_ttl(text: str) -> int:
    """`3600`, `90s`, `30m`, `12h`, `7d` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    factor = units.get(value[-1:], 0)
    number = value[:-1] if factor else value
    if not number.isdigit() or int(number) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration (examples: 3600, 30m, 12h, 7d)")
    return int(number) * (factor or 1)


def _server_name(name: str | None) -> str:
    try:
        return canonical(name) if name else settings().selected()
    except ValueError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None


@click.command()
@click.argument("server", required=False)
@click.option("--user", "-u", "username", metavar="NAME",
              help="User name on the server [env: JETSTREAM_API_USER; default: your login].")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input (else $JETSTREAM_API_PASSWORD, "
                   "else a prompt).")
@click.option("--token-stdin", is_flag=True,
              help="Log in with an API token read from standard input instead of a password.")
@click.option("--fingerprint", metavar="SHA256:HEX",
              help="The certificate fingerprint you expect (from the server's administrator); "
                   "without it the first one seen is trusted.")
@click.option("--plaintext", is_flag=True, help="The server runs with --api-plaintext (tests).")
@common_options
def login(server: str | None, username: str | None, password_stdin: bool, token_stdin: bool,
          fingerprint: str | None, plaintext: bool) -> None:
    """Log in to SERVER (HOST[:PORT]) and make it the default server.

    The session token is kept in ~/.config/jetstream/credentials.json (mode 0600); the
    server's TLS certificate is pinned in known_hosts on first contact."""
    current = settings()
    name = _server_name(server)
    if name == LOCAL:
        with open_local(current) as conn:
            who = conn.call(conn.auth.WhoAmI, auth_pb2.WhoAmIRequest())
        credentials = current.credentials()
        credentials.current = LOCAL
        save_credentials(credentials, current.config)
        out().result({"server": LOCAL, "principal": as_dict(who.principal)},
                     f"The local server needs no login: you are {who.principal.username}.")
        return
    if password_stdin and token_stdin:
        raise CtlError("--password-stdin and --token-stdin exclude each other", EXIT_USAGE)
    expect = None
    if fingerprint is not None:
        expect = parse_fingerprint(fingerprint)
        if expect is None:
            raise CtlError(f"--fingerprint {fingerprint!r} is not SHA256:<64 hex digits>",
                           EXIT_USAGE)
    channel, seen = open_pinned(current, name, plaintext=plaintext, expect=expect)
    with Connection(name, channel, None, seen) as conn:
        info = conn.call(conn.server.GetServerInfo, server_pb2.GetServerInfoRequest(),
                         authenticated=False).server_info
        if token_stdin:
            conn.token = sys.stdin.readline().strip()
            if not conn.token:
                raise CtlError("--token-stdin: standard input holds no token", EXIT_USAGE)
            who = conn.call(conn.auth.WhoAmI, auth_pb2.WhoAmIRequest())
            entry = ServerLogin(who.principal.username, conn.token, "api_token",
                                _stamp(who.expire_time), plaintext)
        else:
            user = username or login_name()
            if password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = password_from_env_or_prompt("JETSTREAM_API_PASSWORD",
                                                       f"Password for {user}@{name}")
            reply = conn.call(conn.auth.Login,
                              auth_pb2.LoginRequest(username=user, password=password),
                              authenticated=False)
            entry = ServerLogin(reply.principal.username, reply.session_token, "session",
                                _stamp(reply.expire_time), plaintext)
    credentials = current.credentials()
    credentials.servers[name] = entry
    credentials.current = name
    path = save_credentials(credentials, current.config)
    document = {"server": name, "display_name": info.display_name, "username": entry.username,
                "credential_kind": entry.kind, "expire_time": entry.expire_time,
                "fingerprint": format_fingerprint(seen) if seen else "",
                "credentials_file": str(path)}
    out().result(document, f"Logged in to {name} ({info.display_name}) as {entry.username}"
                           + (f" until {entry.expire_time}" if entry.expire_time else "") + ".")


def _stamp(stamp: object) -> str:
    text: str = stamp.ToJsonString() if stamp.ByteSize() else ""  # type: ignore[attr-defined]
    return text


@click.command()
@click.argument("server", required=False)
@click.option("--forget", is_flag=True,
              help="Also forget the server's pinned certificate (after a reinstall).")
@common_options
def logout(server: str | None, forget: bool) -> None:
    """End the session on SERVER (default: the current one) and forget its token."""
    current = settings()
    name = _server_name(server)
    if name == LOCAL:
        out().result({"server": LOCAL, "logged_out": False},
                     "The local server has no session to end.")
        return
    credentials = current.credentials()
    entry = credentials.servers.pop(name, None)
    ended = False
    if entry is not None and entry.kind == "session":
        try:
            with connect(current, name) as conn:
                conn.call(conn.auth.Logout, auth_pb2.LogoutRequest())
                ended = True
        except CtlError as exc:
            out().note(f"the server did not end the session ({exc}); the token is forgotten")
    if credentials.current == name:
        credentials.current = ""
    save_credentials(credentials, current.config)
    forgotten = current.known_hosts().forget(name) if forget else False
    document = {"server": name, "logged_out": entry is not None, "session_ended": ended,
                "fingerprint_forgotten": forgotten}
    if entry is None and not forgotten:
        text = f"Not logged in to {name}."
    else:
        text = f"Logged out of {name}." if entry is not None else f"Forgot {name}."
        if forgotten:
            text += " Its pinned certificate is forgotten too."
    out().result(document, text)


@click.command()
@common_options
def whoami() -> None:
    """Show who you are on the current server (or --server)."""
    with connect(settings()) as conn:
        who = conn.call(conn.auth.WhoAmI, auth_pb2.WhoAmIRequest())
    p = who.principal
    kind = enum_label(common_pb2.CredentialKind.Name(p.credential_kind))
    document = {"server": conn.name, "principal": as_dict(p),
                "expire_time": _stamp(who.expire_time)}
    extras = [kind] + (["superuser"] if p.superuser else []) + (
        ["read-only"] if p.read_only else [])
    out().result(document, f"{p.username} (uid {p.uid}) on {conn.name}: {', '.join(extras)}"
                           + (f", until {human_time(who.expire_time)}"
                              if who.expire_time.seconds else ""))


@click.group()
@common_options
def tokens() -> None:
    """API tokens: long-lived credentials for scripts and destinations."""


@tokens.command("create")
@click.option("--description", "-d", default="", help="What the token is for.")
@click.option("--ttl", "ttl", metavar="DURATION", default=None,
              help="Lifetime, e.g. 3600, 12h, 30d (default: the server's, 30 days).")
@click.option("--read-only", is_flag=True, help="The token may only read.")
@click.option("--path", "paths", multiple=True, metavar="PATH",
              help="Restrict the token to this path (repeatable).")
@click.option("--superuser", is_flag=True, help="Carry your superuser rights.")
@click.option("--id", "token_id", default="", help="Id for the token's name.")
@common_options
def tokens_create(description: str, ttl: str | None, read_only: bool, paths: tuple[str, ...],
                  superuser: bool, token_id: str) -> None:
    """Create an API token; its secret is printed once."""
    token = auth_pb2.ApiToken(description=description, read_only=read_only,
                              allowed_paths=list(paths), superuser=superuser)
    if ttl:
        token.ttl.CopyFrom(Duration(seconds=parse_ttl(ttl)))
    with connect(settings()) as conn:
        reply = conn.call(conn.auth.CreateApiToken, auth_pb2.CreateApiTokenRequest(
            api_token=token, api_token_id=token_id))
    out().note(f"created {reply.api_token.name}; the secret below is shown only once")
    out().result({"api_token": as_dict(reply.api_token), "secret": reply.secret}, reply.secret)


@tokens.command("ls")
@click.option("--all", "show_inactive", is_flag=True, help="Include revoked and expired tokens.")
@owner_option
@limit_option()
@common_options
def tokens_ls(show_inactive: bool, all_users: bool, limit: int) -> None:
    """List your API tokens (never their secrets)."""
    with connect(settings()) as conn:
        items = list_all(conn, conn.auth.ListApiTokens, auth_pb2.ListApiTokensRequest(
            owner="-" if all_users else "", show_inactive=show_inactive), "api_tokens", limit)
    rows = [(short_name(t.name), t.owner, t.description, human_time(t.expire_time),
             "revoked" if t.revoke_time.seconds else ("read-only" if t.read_only else "rw"),
             ",".join(t.allowed_paths) or "*") for t in items]
    out().result({"api_tokens": [as_dict(t) for t in items]},
                 table(["id", "owner", "description", "expires", "rights", "paths"], rows))


@tokens.command("revoke")
@click.argument("token")
@common_options
def tokens_revoke(token: str) -> None:
    """Revoke an API token: it stops working at once."""
    with connect(settings()) as conn:
        reply = conn.call(conn.auth.RevokeApiToken, auth_pb2.RevokeApiTokenRequest(
            name=resource("apiTokens", token)))
    out().result({"api_token": as_dict(reply.api_token)}, f"Revoked {reply.api_token.name}.")
