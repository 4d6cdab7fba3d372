"""`server info`, `events`, the superuser commands `sandbox` and `bandwidth`, and
`completion`."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class
from google.protobuf.field_mask_pb2 import FieldMask

from jetstream.cli.ctl_base import common_options, limit_option, list_all, out, settings
from jetstream.cli.ctl_config import format_fingerprint
from jetstream.cli.ctl_connect import connect, login_for
from jetstream.cli.output import (
    EXIT_USAGE,
    CtlError,
    as_dict,
    enum_label,
    human_rate,
    human_time,
    key_values,
    parse_rate,
    short_name,
    table,
)
from jetstream.v1 import server_pb2

SEVERITIES = {"info": server_pb2.EVENT_SEVERITY_INFO,
              "warning": server_pb2.EVENT_SEVERITY_WARNING,
              "error": server_pb2.EVENT_SEVERITY_ERROR}


@click.group()
@common_options
def server() -> None:
    """The server itself."""


@server.command("info")
@common_options
def server_info() -> None:
    """Identity, version, ports and certificate fingerprint of the server (no login needed)."""
    current = settings()
    name = current.selected()
    anonymous = name != "local" and login_for(current, name) is None
    with connect(current, name, anonymous=anonymous) as conn:
        info = conn.call(conn.server.GetServerInfo, server_pb2.GetServerInfoRequest(),
                         authenticated=not anonymous).server_info
    fingerprint = format_fingerprint(info.tls_certificate_sha256) if (
        info.tls_certificate_sha256) else ""
    pairs: list[tuple[str, object]] = [
        ("server", conn.name), ("name", info.display_name), ("host name", info.hostname),
        ("version", f"{info.version} (API {info.api_version})"),
        ("server uid", info.server_uid), ("api port", info.api_port),
        ("data ports (udp)", ", ".join(str(p) for p in info.receive_ports)),
        ("external address", info.external_address or "-"),
        ("remote control", "allowed" if info.allow_remote_control else "loopback only"),
        ("tls certificate", fingerprint or "none (plaintext)"),
        ("certificate days left", info.tls_certificate_days_left),
        ("capabilities", ", ".join(info.capabilities) or "-"),
        ("api tokens", "enabled" if info.api_tokens_enabled else "disabled"),
        ("started", human_time(info.start_time)),
    ]
    out().result({"server": conn.name, "fingerprint": fingerprint,
                  "server_info": as_dict(info)}, key_values(pairs))


@click.command()
@click.option("--type", "event_type", default="",
              help="Only this type, e.g. send.transferComplete.")
@click.option("--transfer", default="", help="Only events about this transfer.")
@click.option("--severity", type=click.Choice(list(SEVERITIES)), default=None,
              help="Only events at least this severe.")
@click.option("--all-users", "-A", is_flag=True, help="Everyone's and the server's (superusers).")
@limit_option(50)
@common_options
def events(event_type: str, transfer: str, severity: str | None, all_users: bool,
           limit: int) -> None:
    """The server's event log: the most recent events, oldest first."""
    request = server_pb2.ListEventsRequest(type=event_type, newest_first=True,
                                           owner="-" if all_users else "")
    if transfer:
        request.transfer = transfer if "/" in transfer else f"transfers/{transfer}"
    if severity:
        request.min_severity = SEVERITIES[severity]
    with connect(settings()) as conn:
        items = list_all(conn, conn.server.ListEvents, request, "events", limit)
    items.reverse()
    rows = [(human_time(e.event_time), enum_label(server_pb2.EventSeverity.Name(e.severity)),
             e.type, e.username or "-", short_name(e.transfer) or "-", e.message)
            for e in items]
    out().result({"events": [as_dict(e) for e in items]},
                 table(["time", "severity", "type", "user", "transfer", "message"], rows))


@click.group()
@common_options
def sandbox() -> None:
    """Which directories users may reach (superusers)."""


def _mapping_rows(mappings: list[server_pb2.SandboxMapping]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for m in mappings:
        who = "(all users)" if m.WhichOneof("subject") == "all_users" else m.user
        for r in m.resources:
            flags = ",".join(f for f, on in (("ro", r.read_only), ("create", r.create),
                                             ("fixed", m.fixed)) if on)
            rows.append((who, r.mount or "/", r.path, flags or "-"))
    return rows


@sandbox.command("ls")
@common_options
def sandbox_ls() -> None:
    """List the sandbox mappings."""
    with connect(settings()) as conn:
        items = list_all(conn, conn.server.ListSandboxMappings,
                         server_pb2.ListSandboxMappingsRequest(), "sandbox_mappings", 0)
    out().result({"sandbox_mappings": [as_dict(m) for m in items]},
                 table(["user", "mount", "path", "flags"], _mapping_rows(items)))


def parse_resource(spec: str) -> server_pb2.SandboxResource:
    """`[MOUNT=]PATH[,ro][,create]` -> a SandboxResource."""
    head, *flags = spec.split(",")
    mount, sep, path = head.partition("=")
    if not sep:
        mount, path = "", head
    unknown = set(flags) - {"ro", "create"}
    if unknown or not path:
        raise CtlError(f"--dir {spec!r}: expected [MOUNT=]PATH[,ro][,create]", EXIT_USAGE)
    return server_pb2.SandboxResource(mount=mount, path=path, read_only="ro" in flags,
                                      create="create" in flags)


def _subject(user: str | None, all_users: bool) -> dict[str, object]:
    if bool(user) == all_users:
        raise CtlError("give exactly one of --user NAME and --all-users", EXIT_USAGE)
    return {"user": user} if user else {"all_users": True}


@sandbox.command("set")
@click.option("--user", "-u", default=None, help="The user the mapping is for.")
@click.option("--all-users", is_flag=True, help="The mapping for every user without their own.")
@click.option("--dir", "dirs", multiple=True, required=True, metavar="[MOUNT=]PATH[,ro][,create]",
              help="A directory to grant (repeatable); %u is the user name.")
@common_options
def sandbox_set(user: str | None, all_users: bool, dirs: tuple[str, ...]) -> None:
    """Create or replace a sandbox mapping."""
    mapping = server_pb2.SandboxMapping(resources=[parse_resource(d) for d in dirs],
                                        **_subject(user, all_users))  # type: ignore[arg-type]
    with connect(settings()) as conn:
        made = conn.call(conn.server.SetSandboxMapping, server_pb2.SetSandboxMappingRequest(
            sandbox_mapping=mapping)).sandbox_mapping
    out().result({"sandbox_mapping": as_dict(made)}, f"Set {made.name}.")


@sandbox.command("rm")
@click.option("--user", "-u", default=None, help="The user whose mapping to delete.")
@click.option("--all-users", is_flag=True, help="Delete the all-users mapping.")
@common_options
def sandbox_rm(user: str | None, all_users: bool) -> None:
    """Delete a sandbox mapping."""
    request = server_pb2.DeleteSandboxMappingRequest(
        **_subject(user, all_users))  # type: ignore[arg-type]
    with connect(settings()) as conn:
        conn.call(conn.server.DeleteSandboxMapping, request)
    which = f"sandboxMappings/{user}" if user else "sandboxMappings/-"
    out().result({"deleted": which}, f"Deleted {which}.")


@click.group()
@common_options
def bandwidth() -> None:
    """Server-wide bandwidth limits (changing them needs a superuser)."""


def _limits_text(limits: server_pb2.BandwidthLimits) -> str:
    return key_values([
        ("incoming", human_rate(limits.incoming_bps) if limits.incoming_bps else "unlimited"),
        ("outgoing", human_rate(limits.outgoing_bps) if limits.outgoing_bps else "unlimited"),
        ("borrowing", "allowed" if limits.allow_borrowing else "no"),
        ("fixed on the command line", "yes" if limits.fixed else "no"),
    ])


@bandwidth.command("show")
@common_options
def bandwidth_show() -> None:
    """Show the limits."""
    with connect(settings()) as conn:
        limits = conn.call(conn.server.GetBandwidthLimits,
                           server_pb2.GetBandwidthLimitsRequest()).bandwidth_limits
    out().result({"bandwidth_limits": as_dict(limits)}, _limits_text(limits))


@bandwidth.command("set")
@click.option("--incoming", metavar="RATE", default=None, help="e.g. 500M; 0: unlimited.")
@click.option("--outgoing", metavar="RATE", default=None, help="e.g. 1G; 0: unlimited.")
@click.option("--borrow/--no-borrow", default=None,
              help="May a direction use the other's unused allowance?")
@common_options
def bandwidth_set(incoming: str | None, outgoing: str | None, borrow: bool | None) -> None:
    """Change the limits (bit/s with k/M/G suffixes)."""
    limits = server_pb2.BandwidthLimits()
    paths = []
    for field, value in (("incoming_bps", incoming), ("outgoing_bps", outgoing)):
        if value is not None:
            try:
                setattr(limits, field, parse_rate(value))
            except ValueError as exc:
                raise CtlError(str(exc), EXIT_USAGE) from None
            paths.append(field)
    if borrow is not None:
        limits.allow_borrowing = borrow
        paths.append("allow_borrowing")
    if not paths:
        raise CtlError("give at least one of --incoming, --outgoing, --borrow", EXIT_USAGE)
    with connect(settings()) as conn:
        made = conn.call(conn.server.UpdateBandwidthLimits,
                         server_pb2.UpdateBandwidthLimitsRequest(
                             bandwidth_limits=limits,
                             update_mask=FieldMask(paths=paths))).bandwidth_limits
    out().result({"bandwidth_limits": as_dict(made)}, _limits_text(made))


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script.

    \b
    bash: eval "$(jetstreamctl completion bash)"   (or save it in
          /etc/bash_completion.d/jetstreamctl)
    zsh:  eval "$(jetstreamctl completion zsh)"    (after compinit)
    """
    cls = get_completion_class(shell)
    assert cls is not None
    root = ctx.find_root().command
    click.echo(cls(root, {}, "jetstreamctl", "_JETSTREAMCTL_COMPLETE").source())
