"""`watches` (also `watch`): folders on the server that send themselves to a destination.

Named `watches` like the other collections (`transfers`, `destinations`); `watch` is the
same group under the name the product's users expect. The module is not `ctl_watch`, which
follows a transfer's progress (`transfers watch`).
"""

from __future__ import annotations

import click
from google.protobuf.duration_pb2 import Duration

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
from jetstream.cli.output import (
    EXIT_USAGE,
    CtlError,
    as_dict,
    duration_seconds,
    enum_label,
    human_bytes,
    human_time,
    key_values,
    short_name,
    table,
)
from jetstream.v1 import watches_pb2

W = watches_pb2
AFTER = {"keep": W.AFTER_DELIVERY_KEEP, "delete": W.AFTER_DELIVERY_DELETE,
         "move": W.AFTER_DELIVERY_MOVE}


@click.group()
@common_options
def watches() -> None:
    """Folders on the server whose files send themselves to a destination."""


@watches.command("add")
@click.argument("folder")
@click.argument("destination")
@click.option("--to", "destination_path", default="", metavar="PATH",
              help="Directory on the destination (default: the root of your sandbox there).")
@click.option("--settle", type=click.FloatRange(0.1, 3600), default=5.0, show_default=True,
              help="Seconds a file must stay unchanged (and closed) before it is sent.")
@click.option("--include", multiple=True, metavar="GLOB", help="Only matching files.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Never these, e.g. '.*'.")
@click.option("--after", "after", type=click.Choice(list(AFTER)), default="keep",
              show_default=True, help="What becomes of a file once it arrived verified.")
@click.option("--move-to", default="", metavar="DIR", help="For --after move: where to.")
@click.option("--priority", type=click.IntRange(0, 100), default=None,
              help="Priority of its transfers (0 first).")
@click.option("--name", "watch_id", default="", help="Id (default: one is made).")
@common_options
def watches_add(folder: str, destination: str, destination_path: str, settle: float,
                include: tuple[str, ...], exclude: tuple[str, ...], after: str, move_to: str,
                priority: int | None, watch_id: str) -> None:
    """Watch FOLDER (on the server, in your sandbox) and send what is written there to
    DESTINATION."""
    if (after == "move") != bool(move_to):
        raise CtlError("--move-to DIR goes with --after move, and only with it", EXIT_USAGE)
    wanted = W.Watch(folder=folder, destination=resource("destinations", destination),
                     destination_path=destination_path, include=include, exclude=exclude,
                     after_delivery=AFTER[after], move_to=move_to,
                     settle_time=Duration(seconds=int(settle), nanos=int(settle % 1 * 1e9)))
    if priority is not None:
        wanted.priority = priority
    with connect(settings()) as conn:
        made = conn.call(conn.watches.CreateWatch, W.CreateWatchRequest(
            watch=wanted, watch_id=watch_id), timeout=60).watch
    out().result({"watch": as_dict(made)},
                 f"Watching {made.local_path or made.folder} as {made.name} -> "
                 f"{made.destination}:{made.destination_path or '/'}.")


@watches.command("ls")
@owner_option
@limit_option()
@common_options
def watches_ls(all_users: bool, limit: int) -> None:
    """List watch folders."""
    with connect(settings()) as conn:
        items = list_all(conn, conn.watches.ListWatches, W.ListWatchesRequest(
            owner="-" if all_users else ""), "watches", limit)
    rows = [(short_name(w.name), w.folder, f"{short_name(w.destination)}:"
             f"{w.destination_path or '/'}", enum_label(W.AfterDelivery.Name(w.after_delivery)),
             enum_label(W.WatchState.Name(w.state)), w.stats.files_waiting,
             w.stats.files_sending, w.stats.files_delivered, w.stats.files_failed)
            for w in items]
    out().result({"watches": [as_dict(w) for w in items]},
                 table(["id", "folder", "to", "after", "state", "waiting", "sending",
                        "delivered", "failed"], rows))


@watches.command("show")
@click.argument("watch")
@common_options
def watches_show(watch: str) -> None:
    """Show one watch folder and its counters."""
    with connect(settings()) as conn:
        w = conn.call(conn.watches.GetWatch, W.GetWatchRequest(
            name=resource("watches", watch))).watch
    s = w.stats
    pairs: list[tuple[str, object]] = [
        ("name", w.name), ("folder", w.folder), ("on the server", w.local_path or "-"),
        ("destination", f"{w.destination}:{w.destination_path or '/'}"),
        ("include", ", ".join(w.include) or "everything"),
        ("exclude", ", ".join(w.exclude) or "-"),
        ("settle time", f"{duration_seconds(w.settle_time):g} s"),
        ("after delivery", enum_label(W.AfterDelivery.Name(w.after_delivery))
         + (f" to {w.move_to}" if w.move_to else "")),
        ("state", enum_label(W.WatchState.Name(w.state))), ("error", w.error.message or "-"),
        ("waiting", s.files_waiting), ("sending", s.files_sending),
        ("delivered", f"{s.files_delivered} files, {human_bytes(s.bytes_delivered)}"),
        ("failed", s.files_failed), ("transfers", s.transfer_count),
        ("last transfer", s.last_transfer or "-"), ("owner", w.owner),
        ("created", human_time(w.create_time)),
    ]
    out().result({"watch": as_dict(w)}, key_values(pairs))


@watches.command("rm")
@click.argument("watch")
@common_options
def watches_rm(watch: str) -> None:
    """Stop and delete a watch folder (its running transfers go on)."""
    name = resource("watches", watch)
    with connect(settings()) as conn:
        conn.call(conn.watches.DeleteWatch, W.DeleteWatchRequest(name=name))
    out().result({"deleted": name}, f"Deleted {name}.")


watch = click.Group("watch", commands=watches.commands, hidden=True,
                    help="The same as `watches`.")
