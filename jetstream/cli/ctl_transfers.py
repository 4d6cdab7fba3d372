"""`transfers` and `manifests`: follow and control what the server sends."""

from __future__ import annotations

import sys

import click
from google.protobuf.field_mask_pb2 import FieldMask

from jetstream.cli.ctl_base import (
    common_options,
    limit_option,
    list_all,
    out,
    owner_option,
    resource,
    settings,
)
from jetstream.cli.ctl_connect import connect
from jetstream.cli.ctl_watch import follow, outcome, state_name
from jetstream.cli.output import (
    EXIT_OK,
    EXIT_TRANSFER_FAILED,
    EXIT_USAGE,
    CtlError,
    as_dict,
    enum_label,
    human_bytes,
    human_rate,
    human_time,
    key_values,
    parse_rate,
    short_name,
    table,
)
from jetstream.v1 import common_pb2, manifests_pb2, transfers_pb2

STATES = ("queued", "running", "paused", "completed", "failed", "cancelled")
POLICIES = {"fixed": common_pb2.RATE_POLICY_FIXED, "fair": common_pb2.RATE_POLICY_FAIR,
            "low-priority": common_pb2.RATE_POLICY_LOW_PRIORITY}


def percent(transfer: transfers_pb2.Transfer) -> str:
    p = transfer.progress
    if not p.bytes_total:
        return "100%" if transfer.state == common_pb2.TRANSFER_STATE_COMPLETED else "-"
    return f"{100 * p.bytes_done // p.bytes_total}%"


def transfer_lines(t: transfers_pb2.Transfer) -> str:
    p = t.progress
    pairs: list[tuple[str, object]] = [
        ("name", t.name), ("state", state_name(t)), ("status", t.status_message or "-"),
        ("direction", enum_label(common_pb2.TransferDirection.Name(t.direction))),
        ("destination", t.destination), ("manifest", t.manifest),
        ("destination path", t.destination_path or "/"),
        ("priority", t.priority if t.HasField("priority") else 100),
        ("bytes", f"{human_bytes(p.bytes_done)} of {human_bytes(p.bytes_total)} "
                  f"({percent(t)})"),
        ("files", f"{p.files_done} of {p.files_total} done, {p.files_failed} failed, "
                  f"{p.files_skipped} skipped"),
        ("rate", f"{human_rate(p.rate_bps)} now, {human_rate(p.average_rate_bps)} average"),
        ("loss", f"{p.loss_ratio * 100:.2f}%"),
        ("rate limit", f"max {human_rate(t.rate_limit.max_bps) if t.rate_limit.max_bps else '-'}"
                       f", policy {enum_label(common_pb2.RatePolicy.Name(t.rate_limit.policy))}"),
        ("owner", t.owner), ("created", human_time(t.create_time)),
        ("started", human_time(t.start_time)), ("ended", human_time(t.end_time)),
        ("attempts", t.attempt_count),
    ]
    if t.error.message:
        pairs.append(("error", f"{t.error.message} [{t.error.reason}]"))
    return key_values(pairs)


@click.group()
@common_options
def transfers() -> None:
    """List, follow and control transfers."""


@transfers.command("ls")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES),
              help="Only transfers in this state (repeatable).")
@owner_option
@limit_option()
@common_options
def transfers_ls(states: tuple[str, ...], all_users: bool, limit: int) -> None:
    """List transfers, newest first."""
    request = transfers_pb2.ListTransfersRequest(
        owner="-" if all_users else "",
        states=[common_pb2.TransferState.Value(f"TRANSFER_STATE_{s.upper()}") for s in states])
    with connect(settings()) as conn:
        items = list_all(conn, conn.transfers.ListTransfers, request, "transfers", limit)
    rows = [(short_name(t.name), state_name(t), percent(t), human_bytes(t.progress.bytes_total),
             f"{t.progress.files_done}/{t.progress.files_total}",
             human_rate(t.progress.rate_bps), short_name(t.destination),
             t.destination_path or "/", human_time(t.create_time)) for t in items]
    out().result({"transfers": [as_dict(t) for t in items]},
                 table(["id", "state", "done", "size", "files", "rate", "destination", "path",
                        "created"], rows))


@transfers.command("show")
@click.argument("transfer")
@click.option("--files", "show_files", is_flag=True, help="Also list the per-file status.")
@limit_option(1000)
@common_options
def transfers_show(transfer: str, show_files: bool, limit: int) -> None:
    """Show one transfer (and with --files its files)."""
    name = resource("transfers", transfer)
    with connect(settings()) as conn:
        t = conn.call(conn.transfers.GetTransfer,
                      transfers_pb2.GetTransferRequest(name=name)).transfer
        files = list_all(conn, conn.transfers.ListTransferFiles,
                         transfers_pb2.ListTransferFilesRequest(parent=name), "files",
                         limit) if show_files else []
    document: dict[str, object] = {"transfer": as_dict(t)}
    text = transfer_lines(t)
    if show_files:
        document["files"] = [as_dict(f) for f in files]
        text += "\n\n" + "\n".join(
            f"{enum_label(transfers_pb2.TransferFileState.Name(f.state)):<10} "
            f"{human_bytes(f.size_bytes):>10}  {f.path}" for f in files)
    out().result(document, text)


@transfers.command("watch")
@click.argument("transfer")
@common_options
def transfers_watch(transfer: str) -> None:
    """Follow a transfer until it ends (exit 0 if completed, 5 if failed or cancelled)."""
    name = resource("transfers", transfer)
    with connect(settings()) as conn:
        final = follow(conn, name, out())
    finish(final)


def finish(final: transfers_pb2.Transfer) -> None:
    """Print the outcome of a followed transfer and exit 5 unless it completed."""
    out().result({"transfer": as_dict(final)}, outcome(final))
    if final.state != common_pb2.TRANSFER_STATE_COMPLETED:
        sys.exit(EXIT_TRANSFER_FAILED)
    sys.exit(EXIT_OK)


def _control(verb: str, transfer: str) -> None:
    name = resource("transfers", transfer)
    requests = {
        "pause": ("PauseTransfer", transfers_pb2.PauseTransferRequest),
        "resume": ("ResumeTransfer", transfers_pb2.ResumeTransferRequest),
        "cancel": ("CancelTransfer", transfers_pb2.CancelTransferRequest),
    }
    rpc_name, request_type = requests[verb]
    with connect(settings()) as conn:
        t = conn.call(getattr(conn.transfers, rpc_name), request_type(name=name)).transfer
    out().result({"transfer": as_dict(t)}, f"{short_name(t.name)}: {state_name(t)}")


@transfers.command("pause")
@click.argument("transfer")
@common_options
def transfers_pause(transfer: str) -> None:
    """Pause a queued or running transfer (it keeps its progress)."""
    _control("pause", transfer)


@transfers.command("resume")
@click.argument("transfer")
@common_options
def transfers_resume(transfer: str) -> None:
    """Resume a paused or failed transfer from its last checkpoint."""
    _control("resume", transfer)


@transfers.command("cancel")
@click.argument("transfer")
@common_options
def transfers_cancel(transfer: str) -> None:
    """Cancel a transfer (files already verified at the receiver stay)."""
    _control("cancel", transfer)


@transfers.command("rm")
@click.argument("transfer")
@click.option("--force", "-f", is_flag=True, help="Cancel it first if it is still going.")
@common_options
def transfers_rm(transfer: str, force: bool) -> None:
    """Delete a finished transfer's record."""
    name = resource("transfers", transfer)
    with connect(settings()) as conn:
        conn.call(conn.transfers.DeleteTransfer,
                  transfers_pb2.DeleteTransferRequest(name=name, force=force))
    out().result({"deleted": name}, f"Deleted {name}.")


def _update(name: str, transfer: transfers_pb2.Transfer, paths: list[str]) -> None:
    transfer.name = name
    with connect(settings()) as conn:
        t = conn.call(conn.transfers.UpdateTransfer, transfers_pb2.UpdateTransferRequest(
            transfer=transfer, update_mask=FieldMask(paths=paths))).transfer
    limit = t.rate_limit
    out().result({"transfer": as_dict(t)},
                 f"{short_name(t.name)}: priority {t.priority if t.HasField('priority') else 100}"
                 f", max rate {human_rate(limit.max_bps) if limit.max_bps else 'unlimited'}"
                 f", policy {enum_label(common_pb2.RatePolicy.Name(limit.policy))}")


@transfers.command("priority")
@click.argument("transfer")
@click.argument("priority", type=click.IntRange(0, 100))
@common_options
def transfers_priority(transfer: str, priority: int) -> None:
    """Set the queue priority (0 first ... 100 last)."""
    _update(resource("transfers", transfer), transfers_pb2.Transfer(priority=priority),
            ["priority"])


@transfers.command("rate")
@click.argument("transfer")
@click.option("--max", "max_rate", metavar="RATE", help="Ceiling, e.g. 100M (bit/s); 0: none.")
@click.option("--min", "min_rate", metavar="RATE", help="Floor, e.g. 10M; 0: none.")
@click.option("--target", "target_rate", metavar="RATE", help="Target rate, e.g. 500M.")
@click.option("--policy", type=click.Choice(list(POLICIES)), help="Bandwidth sharing policy.")
@common_options
def transfers_rate(transfer: str, max_rate: str | None, min_rate: str | None,
                   target_rate: str | None, policy: str | None) -> None:
    """Change a transfer's rate limits (bit/s with k/M/G suffixes)."""
    changes: dict[str, int] = {}
    for field, value in (("max_bps", max_rate), ("min_bps", min_rate),
                         ("target_bps", target_rate)):
        if value is not None:
            try:
                changes[field] = parse_rate(value)
            except ValueError as exc:
                raise CtlError(str(exc), EXIT_USAGE) from None
    if policy is not None:
        changes["policy"] = POLICIES[policy]
    if not changes:
        raise CtlError("give at least one of --max, --min, --target, --policy", EXIT_USAGE)
    name = resource("transfers", transfer)
    with connect(settings()) as conn:  # the whole rate_limit is sent: others stay as they are
        limit = conn.call(conn.transfers.GetTransfer,
                          transfers_pb2.GetTransferRequest(name=name)).transfer.rate_limit
    for field, number in changes.items():
        setattr(limit, field, number)
    _update(name, transfers_pb2.Transfer(rate_limit=limit), ["rate_limit"])


@click.group()
@common_options
def manifests() -> None:
    """Inspect manifests (the file lists transfers send)."""


def _manifest_state(m: manifests_pb2.Manifest) -> str:
    return enum_label(manifests_pb2.ManifestState.Name(m.state))


@manifests.command("ls")
@owner_option
@limit_option()
@common_options
def manifests_ls(all_users: bool, limit: int) -> None:
    """List manifests, newest first."""
    with connect(settings()) as conn:
        items = list_all(conn, conn.manifests.ListManifests, manifests_pb2.ListManifestsRequest(
            owner="-" if all_users else ""), "manifests", limit)
    rows = [(short_name(m.name), _manifest_state(m), m.file_count, m.dir_count,
             human_bytes(m.total_bytes), ", ".join(x.source_path for x in m.spec.mappings),
             human_time(m.create_time)) for m in items]
    out().result({"manifests": [as_dict(m) for m in items]},
                 table(["id", "state", "files", "dirs", "size", "sources", "created"], rows))


@manifests.command("show")
@click.argument("manifest")
@common_options
def manifests_show(manifest: str) -> None:
    """Show one manifest."""
    with connect(settings()) as conn:
        m = conn.call(conn.manifests.GetManifest, manifests_pb2.GetManifestRequest(
            name=resource("manifests", manifest))).manifest
    pairs: list[tuple[str, object]] = [
        ("name", m.name), ("state", _manifest_state(m)), ("files", m.file_count),
        ("directories", m.dir_count), ("size", human_bytes(m.total_bytes)),
        ("skipped", m.skipped_count), ("owner", m.owner), ("created", human_time(m.create_time)),
        *((f"mapping {i + 1}", f"{x.source_path} -> {x.destination_path or '(base name)'}")
          for i, x in enumerate(m.spec.mappings)),
    ]
    if m.error.message:
        pairs.append(("error", m.error.message))
    out().result({"manifest": as_dict(m)}, key_values(pairs))


@manifests.command("files")
@click.argument("manifest")
@limit_option(1000)
@common_options
def manifests_files(manifest: str, limit: int) -> None:
    """List the entries of a complete manifest."""
    with connect(settings()) as conn:
        items = list_all(conn, conn.manifests.ListManifestFiles,
                         manifests_pb2.ListManifestFilesRequest(
                             parent=resource("manifests", manifest)), "files", limit)
    rows = [(enum_label(common_pb2.FileKind.Name(f.kind)), human_bytes(f.size_bytes),
             f.destination_path, f.source_path) for f in items]
    out().result({"files": [as_dict(f) for f in items]},
                 table(["kind", "size", "path", "source"], rows))
