"""`triggers`: the server's trigger scripts and how their last runs ended (superusers)."""

from __future__ import annotations

import click

from jetstream.cli.ctl_base import common_options, list_all, out, settings
from jetstream.cli.ctl_connect import connect
from jetstream.cli.output import as_dict, duration_seconds, enum_label, human_time, table
from jetstream.v1 import triggers_pb2


@click.group()
@common_options
def triggers() -> None:
    """Scripts the server runs on events (--trigger-dir; superusers)."""


@triggers.command("ls")
@common_options
def triggers_ls() -> None:
    """List the scripts, whether each may run, and how its last run ended.

    Every run is also in the event log: jetstreamctl events -A --type trigger.failed
    """
    with connect(settings()) as conn:
        reply = conn.call(conn.triggers.ListTriggers, triggers_pb2.ListTriggersRequest())
        found = list_all(conn, conn.triggers.ListTriggers, triggers_pb2.ListTriggersRequest(),
                         "triggers", 0)
    rows = []
    for t in found:
        run = t.last_run
        last = "-"
        if t.HasField("last_run"):
            outcome = enum_label(triggers_pb2.TriggerOutcome.Name(run.outcome))
            code = f" {run.exit_code}" if run.HasField("exit_code") else ""
            last = (f"{human_time(run.end_time)} {outcome}{code} "
                    f"({duration_seconds(run.duration):.1f} s)")
        event = t.event if t.known_event else f"{t.event} (unknown event)"
        rows.append((event, t.path, "ok" if t.runnable else "refused", last, t.problem or "-"))
    out().result({"directory": reply.directory, "log_file": reply.log_file,
                  "triggers": [as_dict(t) for t in found]},
                 table(["event", "script", "state", "last run", "problem"], rows)
                 if rows else f"No trigger scripts in {reply.directory}.")
