"""Follow a transfer to its end with WatchTransfer, showing progress on stderr.

On a terminal: a live bar with bytes, files, rate, ETA and loss. Elsewhere (a pipe, a log):
one line per state change and a progress line every few seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from jetstream.cli.ctl_connect import Connection
from jetstream.cli.output import (
    EXIT_INTERRUPTED,
    CtlError,
    Output,
    duration_seconds,
    enum_label,
    human_bytes,
    human_duration,
    human_rate,
    rpc_failure,
    short_name,
)
from jetstream.v1 import common_pb2, transfers_pb2

TERMINAL = (common_pb2.TRANSFER_STATE_COMPLETED, common_pb2.TRANSFER_STATE_FAILED,
            common_pb2.TRANSFER_STATE_CANCELLED)
PLAIN_EVERY = 5.0


def state_name(transfer: transfers_pb2.Transfer) -> str:
    return enum_label(common_pb2.TransferState.Name(transfer.state))


def progress_fields(transfer: transfers_pb2.Transfer) -> dict[str, str]:
    p = transfer.progress
    eta = human_duration(duration_seconds(p.eta)) if p.HasField("eta") else "-"
    return {
        "state": state_name(transfer),
        "bytes": f"{human_bytes(p.bytes_done)} / {human_bytes(p.bytes_total)}",
        "files": f"{p.files_done}/{p.files_total} files"
                 + (f" ({p.files_failed} failed)" if p.files_failed else ""),
        "rate": human_rate(p.rate_bps),
        "eta": f"ETA {eta}",
        "loss": f"loss {p.loss_ratio * 100:.1f}%",
    }


def plain_line(transfer: transfers_pb2.Transfer) -> str:
    f = progress_fields(transfer)
    return (f"{short_name(transfer.name)}: {f['state']}  {f['bytes']}  {f['files']}  "
            f"{f['rate']}  {f['eta']}  {f['loss']}"
            + (f"  ({transfer.status_message})" if transfer.status_message else ""))


def _updates(conn: Connection, name: str) -> Iterator[transfers_pb2.Transfer]:
    request = transfers_pb2.WatchTransferRequest(
        name=name, progress_interval=Duration(nanos=500_000_000))
    try:
        for update in conn.stream(conn.transfers.WatchTransfer, request):
            yield update.transfer
    except grpc.RpcError as exc:
        raise rpc_failure(exc, conn.name) from None


def follow(conn: Connection, name: str, output: Output) -> transfers_pb2.Transfer:
    """Watch `name` until it is terminal; return its last state.

    Ctrl-C stops watching (exit 130) but never the transfer."""
    last: transfers_pb2.Transfer | None = None
    live = not output.quiet and sys.stderr.isatty()
    try:
        if live:
            last = _follow_live(conn, name, output)
        else:
            last = _follow_plain(conn, name, output)
    except KeyboardInterrupt:
        raise CtlError(f"interrupted; {name} keeps running on {conn.name}: jetstreamctl -s "
                       f"{conn.name} transfers watch {short_name(name)}",
                       EXIT_INTERRUPTED) from None
    if last is None:
        raise CtlError(f"{conn.name}: the watch of {name} ended without a message")
    return last


def _follow_live(conn: Connection, name: str, output: Output) -> transfers_pb2.Transfer | None:
    columns = (
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[state]}"),
        BarColumn(),
        TextColumn("{task.fields[bytes]}"),
        TextColumn("{task.fields[files]}"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        TextColumn("{task.fields[loss]}"),
    )
    last = None
    with Progress(*columns, console=output.err, transient=False) as bar:
        task: TaskID | None = None
        for transfer in _updates(conn, name):
            last = transfer
            fields: dict[str, Any] = dict(progress_fields(transfer))
            total = transfer.progress.bytes_total or None
            if task is None:
                task = bar.add_task(short_name(name), total=total, **fields)
            bar.update(task, completed=transfer.progress.bytes_done, total=total, **fields)
            if transfer.state in TERMINAL:
                break
    return last


def _follow_plain(conn: Connection, name: str, output: Output) -> transfers_pb2.Transfer | None:
    last = None
    shown_state = -1
    shown_at = 0.0
    for transfer in _updates(conn, name):
        last = transfer
        now = time.monotonic()
        if transfer.state != shown_state or now - shown_at >= PLAIN_EVERY:
            output.note(plain_line(transfer))
            shown_state, shown_at = transfer.state, now
        if transfer.state in TERMINAL:
            break
    return last


def outcome(transfer: transfers_pb2.Transfer) -> str:
    """One sentence on how a terminal transfer ended."""
    p = transfer.progress
    state = state_name(transfer)
    text = (f"{short_name(transfer.name)} {state}: {p.files_done}/{p.files_total} files, "
            f"{human_bytes(p.bytes_done)}")
    if p.average_rate_bps:
        text += f" at {human_rate(p.average_rate_bps)}"
    if transfer.state != common_pb2.TRANSFER_STATE_COMPLETED and transfer.error.message:
        reason = f" [{transfer.error.reason}]" if transfer.error.reason else ""
        text += f"; {transfer.error.message}{reason}"
    return text
