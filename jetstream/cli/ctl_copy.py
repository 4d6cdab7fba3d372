"""`jetstreamctl cp`: copy files between this machine and a server, in the spirit of scp.

    jetstreamctl cp file dir/ HOST[:PORT]:/dest/       push: the local server sends
    jetstreamctl cp HOST:/data/file HOST:/data/dir .   pull: the local server fetches
    jetstreamctl cp HOST1:/a HOST2:/b                  HOST1 sends to HOST2
    jetstreamctl cp file local:/dir/                   the local server sends to itself

Either way the local server (or HOST1) runs the transfer, through a destination holding an
API token made with your session at the other server (see ctl_links for the credentials).

Targets follow scp: a target that is an existing directory (or ends in `/`, or receives
several sources) gets the sources inside it, under their base names; with one source, a
target that does not exist is the new name of that source.
"""

from __future__ import annotations

import os
import posixpath
import re
import sys
from dataclasses import dataclass, field

import click

from jetstream.cli.ctl_base import common_options, out, password_from_env_or_prompt, settings
from jetstream.cli.ctl_config import LOCAL
from jetstream.cli.ctl_connect import (
    Connection,
    Settings,
    canonical,
    connect,
    login_for,
    login_name,
    open_local,
    open_local_as,
    open_pinned,
    parse_address,
)
from jetstream.cli.ctl_links import (
    LABEL,
    own_endpoint,
    push_destination,
)
from jetstream.cli.ctl_transfers import finish
from jetstream.cli.ctl_watch import follow
from jetstream.cli.output import (
    EXIT_AUTH,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    CtlError,
    as_dict,
    parse_rate,
    short_name,
)
from jetstream.v1 import (
    auth_pb2,
    common_pb2,
    files_pb2,
    manifests_pb2,
    transfers_pb2,
)

OVERWRITE = {"never": common_pb2.OVERWRITE_POLICY_NEVER,
             "always": common_pb2.OVERWRITE_POLICY_ALWAYS,
             "if-different": common_pb2.OVERWRITE_POLICY_IF_DIFFERENT,
             "resume": common_pb2.OVERWRITE_POLICY_RESUME}
SYMLINKS = {"skip": manifests_pb2.SYMLINK_POLICY_SKIP,
            "follow": manifests_pb2.SYMLINK_POLICY_FOLLOW_WITHIN_SANDBOX,
            "preserve": manifests_pb2.SYMLINK_POLICY_PRESERVE}
MANIFEST_TIMEOUT = 3600.0
_PORT_PATH = re.compile(r"^(\d{1,5}):(.*)$", re.S)


@dataclass(frozen=True)
class Location:
    """One cp argument: a path on a server (`LOCAL` for this machine's server)."""

    server: str
    path: str
    user: str = ""

    @property
    def is_local(self) -> bool:
        return self.server == LOCAL


def parse_location(text: str) -> Location:
    """`path` (local), `local:path`, `[user@]host[:port]:path`, `[user@][v6][:port]:path`."""
    if not text:
        raise CtlError("an empty path", EXIT_USAGE)
    if text.startswith(("/", "./", "../", "~")) or ":" not in text:
        return Location(LOCAL, os.path.abspath(os.path.expanduser(text))
                        + ("/" if text.endswith("/") and text != "/" else ""))
    user = ""
    at, colon = text.find("@"), text.find(":")
    if 0 < at < colon or (text.find("[") > at > 0):
        user, text = text[:at], text[at + 1:]
    if text.startswith("["):
        host, _, after = text[1:].partition("]")
        if not after.startswith(":"):
            raise CtlError(f"{text!r}: expected [ADDRESS]:PATH", EXIT_USAGE)
        after = after[1:]
        host = f"[{host}]"
    else:
        host, _, after = text.partition(":")
    port_path = _PORT_PATH.match(after)
    if port_path:
        host, after = f"{host}:{port_path[1]}", port_path[2]
    if host == LOCAL:
        path = after or "/"
        return Location(LOCAL, path if path.startswith("/") else "/" + path, user)
    try:
        server = canonical(host)
    except ValueError as exc:
        raise CtlError(f"{text!r}: {exc}", EXIT_USAGE) from None
    return Location(server, after or "/", user)


@dataclass
class Plan:
    """What the source server is asked to do."""

    mappings: list[manifests_pb2.FileMapping] = field(default_factory=list)
    destination_path: str = ""


def _stat(conn: Connection, path: str) -> files_pb2.FileInfo | None:
    try:
        return conn.call(conn.files.Stat, files_pb2.StatRequest(
            path=path, follow_symlinks=True)).file_info
    except CtlError as exc:
        if exc.exit_code == EXIT_NOT_FOUND:
            return None
        raise


def check_sources(source: Connection, paths: list[str]) -> list[files_pb2.FileInfo]:
    infos = []
    for path in paths:
        if source.is_local and not os.path.lexists(path.rstrip("/") or "/"):
            raise CtlError(f"{path}: no such file or directory", EXIT_NOT_FOUND, "NOT_FOUND")
        info = _stat(source, path.rstrip("/") or "/")
        if info is None:
            raise CtlError(f"{source.name}:{path}: no such file or directory", EXIT_NOT_FOUND,
                           "NOT_FOUND")
        infos.append(info)
    return infos


def plan_copy(target: Connection, sources: list[str], dest: str) -> Plan:
    """Where the sources land, following scp's rules (see the module docstring)."""
    as_dir = dest.endswith("/") or len(sources) > 1
    clean = dest.rstrip("/") or "/"
    existing = _stat(target, clean)
    plan = Plan()
    if existing is not None and existing.kind == common_pb2.FILE_KIND_DIRECTORY:
        as_dir = True
    elif existing is not None and as_dir:
        raise CtlError(f"{target.name}:{clean} is not a directory", EXIT_FAILURE,
                       "FAILED_PRECONDITION")
    if as_dir:
        plan.destination_path = clean
        plan.mappings = [manifests_pb2.FileMapping(source_path=s.rstrip("/") or "/")
                         for s in sources]
    else:
        parent, base = posixpath.split(clean)
        plan.destination_path = parent or "/"
        plan.mappings = [manifests_pb2.FileMapping(source_path=sources[0].rstrip("/"),
                                                   destination_path=base)]
    return plan


def _remote(current: Settings, location: Location) -> tuple[Connection, str | None]:
    """A connection to a remote server of a cp argument, and the API token to hand on (if the
    login is one). Without a stored login: this machine's own server under another address
    is reached over the local socket, without a password; any other server is logged in to
    now as `user@`, else $JETSTREAM_API_USER, else your own account name."""
    login = login_for(current, location.server)
    if login is not None:
        if location.user and login.username and location.user != login.username:
            raise CtlError(f"you are logged in to {location.server} as {login.username}, not "
                           f"{location.user}: jetstreamctl login {location.server} "
                           f"--user {location.user}", EXIT_AUTH, "UNAUTHENTICATED")
        conn = connect(current, location.server)
        return conn, (login.token if login.kind == "api_token" else None)
    if not location.user:
        own = open_local_as(current, location.server)
        if own is not None:
            return own, None
    user = location.user or login_name()
    if not (os.environ.get("JETSTREAM_API_PASSWORD") or sys.stdin.isatty()):
        raise CtlError(f"not logged in to {location.server}: run jetstreamctl login "
                       f"{location.server}, or set JETSTREAM_API_PASSWORD to log in as {user}",
                       EXIT_AUTH, "UNAUTHENTICATED")
    channel, fingerprint = open_pinned(current, location.server)
    conn = Connection(location.server, channel, None, fingerprint, user)
    password = password_from_env_or_prompt("JETSTREAM_API_PASSWORD",
                                           f"Password for {user}@{location.server}")
    conn.token = conn.call(conn.auth.Login, auth_pb2.LoginRequest(
        username=user, password=password), authenticated=False).session_token
    return conn, None


def _open(current: Settings, location: Location) -> tuple[Connection, str | None]:
    return (open_local(current), None) if location.is_local else _remote(current, location)


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="SRC... DEST")
@click.option("--detach", "-d", is_flag=True,
              help="Start the transfer and print its id at once; do not follow it.")
@click.option("--overwrite", type=click.Choice(list(OVERWRITE)), default=None,
              help="What to do with existing files at the target [default: resume].")
@click.option("--include", "includes", multiple=True, metavar="GLOB",
              help="Only send files matching GLOB (repeatable; ** spans directories).")
@click.option("--exclude", "excludes", multiple=True, metavar="GLOB",
              help="Leave out files and directories matching GLOB (repeatable).")
@click.option("--symlinks", type=click.Choice(list(SYMLINKS)), default=None,
              help="Symbolic links: skip them (default), follow them, or preserve them.")
@click.option("--priority", type=click.IntRange(0, 100), default=None,
              help="Queue priority, 0 (first) to 100 (last, the default).")
@click.option("--max-rate", metavar="RATE", default=None, help="Rate ceiling, e.g. 200M (bit/s).")
@click.option("--flows", type=click.IntRange(min=1), default=None,
              help="Data flows of a push, each with a socket and a sending thread of its own "
                   "[default: chosen from the sending server's cores].")
@common_options
def cp(paths: tuple[str, ...], detach: bool, overwrite: str | None, includes: tuple[str, ...],
       excludes: tuple[str, ...], symlinks: str | None, priority: int | None,
       max_rate: str | None, flows: int | None) -> None:
    """Copy SRC... to DEST, where either side is HOST[:PORT]:PATH (or both are).

    \b
    jetstreamctl cp a.mov dir/ HOST:/in/       push (the local server sends)
    jetstreamctl cp HOST:/out/x HOST:/out/y .  pull (the local server fetches from HOST)
    jetstreamctl cp -d a.mov HOST:/in/new.mov  print the transfer id and return

    Shows a live progress bar until the transfer ends; exit 5 if it failed or was cancelled.
    A directory is copied with everything below it.
    """
    if len(paths) < 2:
        raise CtlError("cp needs at least one SRC and a DEST", EXIT_USAGE)
    locations = [parse_location(p) for p in paths]
    sources, dest = locations[:-1], locations[-1]
    servers = {s.server for s in sources}
    if len(servers) > 1:
        raise CtlError("all sources must be on the same server", EXIT_USAGE)
    source_server = servers.pop()
    through_local = dest.is_local and paths[-1].startswith(f"{LOCAL}:")
    if source_server == dest.server and not through_local:
        where = "this machine" if dest.is_local else dest.server
        hint = " (or write local:PATH to send through the local server)" if dest.is_local else ""
        raise CtlError(f"source and target are both on {where}: use cp or mv there{hint}",
                       EXIT_USAGE)
    rate = None
    if max_rate is not None:
        try:
            rate = parse_rate(max_rate)
        except ValueError as exc:
            raise CtlError(str(exc), EXIT_USAGE) from None
    current = settings()
    source, source_token = _open(current, sources[0])
    target, target_token = _open(current, dest)
    with source, target:
        source_paths = [s.path for s in sources]
        check_sources(source, source_paths)
        plan = plan_copy(target, source_paths, dest.path)
        spec = manifests_pb2.ManifestSpec(mappings=plan.mappings,
                                          include_patterns=list(includes),
                                          exclude_patterns=list(excludes))
        if symlinks:
            spec.symlink_policy = SYMLINKS[symlinks]
        transfer = transfers_pb2.Transfer(destination_path=plan.destination_path)
        if dest.is_local and not sources[0].is_local:  # pull: the local server fetches
            runner = target
            transfer.destination = push_destination(target, source,
                                                    parse_address(source.name),
                                                    source_token).name
            transfer.direction = common_pb2.TRANSFER_DIRECTION_PULL
            transfer.manifest_spec.CopyFrom(spec)
        else:
            runner = source
            endpoint = own_endpoint(target) if dest.is_local else parse_address(dest.server)
            transfer.destination = push_destination(source, target, endpoint,
                                                    target_token).name
            transfer.manifest = build_manifest(source, spec)
        if overwrite:
            transfer.overwrite_policy = OVERWRITE[overwrite]
        if priority is not None:
            transfer.priority = priority
        if rate is not None:
            transfer.rate_limit.max_bps = rate
        if flows is not None:
            transfer.flows = flows
        created = runner.call(runner.transfers.CreateTransfer,
                              transfers_pb2.CreateTransferRequest(transfer=transfer)).transfer
        try:
            final = _after_create(runner, created, detach, transfer.destination, plan, dest)
        except KeyboardInterrupt:
            raise CtlError(f"interrupted; {created.name} keeps running on {runner.name}: "
                           f"jetstreamctl -s {runner.name} transfers watch "
                           f"{short_name(created.name)}", EXIT_INTERRUPTED) from None
        if final is None:
            return
    finish(final)


def _after_create(source: Connection, created: transfers_pb2.Transfer, detach: bool,
                  destination: str, plan: Plan,
                  dest: Location) -> transfers_pb2.Transfer | None:
    """Print the id (--detach, then None) or follow the transfer to its end."""
    if detach:
        out().note(f"started {created.name} on {source.name}; follow it with: jetstreamctl "
                   f"-s {source.name} transfers watch {short_name(created.name)}")
        out().result({"transfer": as_dict(created), "server": source.name,
                      "destination": destination}, short_name(created.name))
        return None
    out().note(f"{created.name} on {source.name}: {len(plan.mappings)} source(s) -> "
               f"{dest.server}:{plan.destination_path}")
    return follow(source, created.name, out())


def build_manifest(source: Connection, spec: manifests_pb2.ManifestSpec) -> str:
    made = source.call(source.manifests.CreateManifest, manifests_pb2.CreateManifestRequest(
        manifest=manifests_pb2.Manifest(spec=spec, labels={LABEL: "cp"}))).manifest
    done = source.call(source.manifests.WaitManifest,
                       manifests_pb2.WaitManifestRequest(name=made.name),
                       timeout=MANIFEST_TIMEOUT).manifest
    if done.state != manifests_pb2.MANIFEST_STATE_COMPLETE:
        raise CtlError(f"{source.name}: cannot list the files to send: {done.error.message}",
                       EXIT_FAILURE, "FAILED_PRECONDITION")
    return done.name
