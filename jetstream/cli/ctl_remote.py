"""`destinations` (the servers a server sends to) and `files` (a server's files, in the
caller's sandbox)."""

from __future__ import annotations

import stat
import sys

import click

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
from jetstream.cli.ctl_config import format_fingerprint
from jetstream.cli.ctl_connect import canonical, connect, login_for, parse_address
from jetstream.cli.ctl_links import LABEL, grant_on, resource_id
from jetstream.cli.output import (
    EXIT_AUTH,
    EXIT_IDENTITY,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CtlError,
    as_dict,
    duration_seconds,
    enum_label,
    human_bytes,
    human_rate,
    human_time,
    key_values,
    parse_rate,
    short_name,
    table,
)
from jetstream.v1 import common_pb2, destinations_pb2, files_pb2


@click.group()
@common_options
def destinations() -> None:
    """The remote servers the current server sends to."""


@destinations.command("add")
@click.argument("address", metavar="HOST[:PORT]")
@click.option("--name", "destination_id", default="", help="Id (default: made from the host).")
@click.option("--user", "-u", "username", default=None,
              help="User on HOST; then the password comes from $JETSTREAM_DEST_PASSWORD, "
                   "standard input (--password-stdin) or a prompt. Default: your login at HOST "
                   "makes an API token there.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--display-name", default="", help="A friendly name.")
@click.option("--max-rate", metavar="RATE", default=None, help="Rate ceiling, e.g. 1G (bit/s).")
@common_options
def destinations_add(address: str, destination_id: str, username: str | None,
                     password_stdin: bool, display_name: str, max_rate: str | None) -> None:
    """Add a destination on the current server pointing at HOST[:PORT]."""
    current = settings()
    try:
        endpoint = parse_address(address)
    except ValueError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None
    wanted = destinations_pb2.Destination(host=endpoint.host, api_port=endpoint.port,
                                          display_name=display_name, labels={LABEL: "add"})
    if max_rate is not None:
        try:
            wanted.max_rate_bps = parse_rate(max_rate)
        except ValueError as exc:
            raise CtlError(str(exc), EXIT_USAGE) from None
    pinned = current.known_hosts().get(endpoint.target)
    if pinned is not None:
        wanted.pinned_tls_certificate_sha256 = pinned
    if username is not None:
        password = (sys.stdin.readline().rstrip("\n") if password_stdin else
                    password_from_env_or_prompt("JETSTREAM_DEST_PASSWORD",
                                                f"Password for {username}@{endpoint.target}"))
        wanted.password.username = username
        wanted.password.password = password
    else:
        login = login_for(current, canonical(address))
        if login is None:
            raise CtlError(f"give --user NAME, or log in to {endpoint.target} first "
                           f"(jetstreamctl login {endpoint.target})", EXIT_AUTH,
                           "UNAUTHENTICATED")
        with connect(current, endpoint.target) as target:
            grant = grant_on(target, "jetstreamctl destinations add",
                             api_token=login.token if login.kind == "api_token" else None)
        wanted.api_token_secret = grant.secret
    with connect(current) as conn:
        made = conn.call(conn.destinations.CreateDestination,
                         destinations_pb2.CreateDestinationRequest(
                             destination=wanted,
                             destination_id=destination_id or resource_id("to", endpoint.host)),
                         timeout=60).destination
    out().result({"destination": as_dict(made)},
                 f"Added {made.name} -> {made.host}:{made.api_port or 8886} as {made.username}.")


@destinations.command("ls")
@owner_option
@limit_option()
@common_options
def destinations_ls(all_users: bool, limit: int) -> None:
    """List destinations."""
    with connect(settings()) as conn:
        items = list_all(conn, conn.destinations.ListDestinations,
                         destinations_pb2.ListDestinationsRequest(
                             owner="-" if all_users else ""), "destinations", limit)
    rows = [(short_name(d.name), f"{d.host}:{d.api_port or 8886}", d.username,
             d.display_name, d.active_transfer_count, d.last_error.message or "-")
            for d in items]
    out().result({"destinations": [as_dict(d) for d in items]},
                 table(["id", "address", "user", "name", "active", "last error"], rows))


@destinations.command("show")
@click.argument("destination")
@common_options
def destinations_show(destination: str) -> None:
    """Show one destination (never its secrets)."""
    with connect(settings()) as conn:
        d = conn.call(conn.destinations.GetDestination, destinations_pb2.GetDestinationRequest(
            name=resource("destinations", destination))).destination
    pairs: list[tuple[str, object]] = [
        ("name", d.name), ("display name", d.display_name or "-"),
        ("address", f"{d.host}:{d.api_port or 8886}"), ("user", d.username),
        ("credentials", enum_label(common_pb2.CredentialKind.Name(d.credential_kind))),
        ("pinned certificate", format_fingerprint(d.pinned_tls_certificate_sha256)
         if d.pinned_tls_certificate_sha256 else "-"),
        ("pinned server uid", d.pinned_server_uid or "-"),
        ("max rate", human_rate(d.max_rate_bps) if d.max_rate_bps else "unlimited"),
        ("active transfers", d.active_transfer_count), ("owner", d.owner),
        ("created", human_time(d.create_time)), ("last contact", human_time(d.last_contact_time)),
        ("last error", d.last_error.message or "-"),
    ]
    out().result({"destination": as_dict(d)}, key_values(pairs))


@destinations.command("test")
@click.argument("destination")
@common_options
def destinations_test(destination: str) -> None:
    """Check that a destination answers, is who it was, and accepts its credentials."""
    with connect(settings()) as conn:
        reply = conn.call(conn.destinations.TestDestination,
                          destinations_pb2.TestDestinationRequest(
                              name=resource("destinations", destination)), timeout=60)
    pairs: list[tuple[str, object]] = [
        ("reachable", "yes" if reply.reachable else "no"),
        ("identity verified", "yes" if reply.identity_verified else "no"),
        ("authenticated", f"yes, as {reply.remote_principal.username}"
         if reply.authenticated else "no"),
        ("round trip", f"{duration_seconds(reply.rtt) * 1000:.1f} ms" if reply.reachable
         else "-"),
    ]
    if reply.error.message:
        pairs.append(("error", reply.error.message))
    out().result({"test": as_dict(reply)}, key_values(pairs))
    if not reply.reachable:
        sys.exit(EXIT_UNAVAILABLE)
    if not reply.identity_verified:
        sys.exit(EXIT_IDENTITY)
    if not reply.authenticated:
        sys.exit(EXIT_AUTH)


@destinations.command("rm")
@click.argument("destination")
@click.option("--force", "-f", is_flag=True, help="Cancel its active transfers first.")
@common_options
def destinations_rm(destination: str, force: bool) -> None:
    """Delete a destination."""
    name = resource("destinations", destination)
    with connect(settings()) as conn:
        conn.call(conn.destinations.DeleteDestination,
                  destinations_pb2.DeleteDestinationRequest(name=name, force=force))
    out().result({"deleted": name}, f"Deleted {name}.")


@click.group()
@common_options
def files() -> None:
    """A server's files, as your sandbox there shows them."""


def _kind(info: files_pb2.FileInfo) -> str:
    return {common_pb2.FILE_KIND_DIRECTORY: "d", common_pb2.FILE_KIND_SYMLINK: "l",
            common_pb2.FILE_KIND_FILE: "-"}.get(info.kind, "?")


@files.command("ls")
@click.argument("path", default="/")
@click.option("--all", "-a", "show_hidden", is_flag=True, help="Also entries starting with '.'.")
@limit_option(1000)
@common_options
def files_ls(path: str, show_hidden: bool, limit: int) -> None:
    """List a directory (default: your sandbox root)."""
    with connect(settings()) as conn:
        items = list_all(conn, conn.files.ListDirectory, files_pb2.ListDirectoryRequest(
            path=path, show_hidden=show_hidden), "entries", limit)
    rows = [(_kind(f) + stat.filemode(f.mode)[1:], f.owner, f.group, human_bytes(f.size_bytes),
             human_time(f.modify_time),
             f.name + ("/" if f.kind == common_pb2.FILE_KIND_DIRECTORY else "")
             + (f" -> {f.symlink_target}" if f.symlink_target else "")) for f in items]
    out().result({"path": path, "entries": [as_dict(f) for f in items]},
                 table(["mode", "owner", "group", "size", "modified", "name"], rows))


@files.command("mkdir")
@click.argument("path")
@click.option("--parents", "-p", is_flag=True, help="Make parents too; no error if it exists.")
@common_options
def files_mkdir(path: str, parents: bool) -> None:
    """Make a directory."""
    with connect(settings()) as conn:
        info = conn.call(conn.files.MakeDirectory, files_pb2.MakeDirectoryRequest(
            path=path, parents=parents)).file_info
    out().result({"file_info": as_dict(info)}, f"Made {info.path}.")


@files.command("rm")
@click.argument("path")
@click.option("--recursive", "-r", is_flag=True, help="Remove a directory and all below it.")
@common_options
def files_rm(path: str, recursive: bool) -> None:
    """Remove a file, link or directory."""
    with connect(settings()) as conn:
        conn.call(conn.files.Remove, files_pb2.RemoveRequest(path=path, recursive=recursive),
                  timeout=600)
    out().result({"removed": path}, f"Removed {path}.")


@files.command("mv")
@click.argument("source")
@click.argument("target")
@click.option("--overwrite", "-f", is_flag=True, help="Replace an existing target.")
@common_options
def files_mv(source: str, target: str, overwrite: bool) -> None:
    """Rename or move a path within the sandbox."""
    with connect(settings()) as conn:
        info = conn.call(conn.files.Rename, files_pb2.RenameRequest(
            source_path=source, target_path=target, overwrite=overwrite)).file_info
    out().result({"file_info": as_dict(info)}, f"Moved {source} to {info.path}.")
