"""`jetstreamctl context`: many servers from one command line.

A context is a server jetstreamctl can talk to: `local` (this machine's server, over its
Unix socket, when it runs) and every server you logged in to (credentials.json). `use`
picks the one commands talk to without --server (`login` does too); `run` runs one
jetstreamctl command against each of them, one process per server so that no failure of
one server (down, logged out, its certificate changed) stops the others, and reports every
server's outcome: the operator's view of N servers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

from jetstream.cli.ctl_base import common_options, out, settings
from jetstream.cli.ctl_config import LOCAL, save_credentials
from jetstream.cli.ctl_connect import Settings, canonical
from jetstream.cli.output import EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_USAGE, CtlError, table


def contexts(current: Settings) -> list[str]:
    """`local` (if its socket exists), then the servers logged in to, in name order."""
    names = [LOCAL] if Path(current.socket_path).exists() else []
    return names + sorted(current.credentials().servers)


@click.group()
@common_options
def context() -> None:
    """Many servers from one CLI: list them, switch between them, run a command on all."""


@context.command("ls")
@common_options
def context_ls() -> None:
    """The servers you can talk to; * marks the one commands use without --server."""
    current = settings()
    logins = current.credentials().servers
    selected = current.selected()
    documents = []
    for name in contexts(current):
        login = logins.get(name)
        documents.append({
            "name": name, "current": name == selected,
            "username": login.username if login else "(you, by the kernel's word)",
            "credential_kind": login.kind if login else "unix_socket",
            "expire_time": login.expire_time if login else ""})
    rows = [("*" if d["current"] else "", d["name"], d["username"], d["credential_kind"],
             d["expire_time"] or "-") for d in documents]
    out().result({"contexts": documents, "current": selected},
                 table(["", "server", "user", "credential", "expires"], rows))


@context.command("use")
@click.argument("name")
@common_options
def context_use(name: str) -> None:
    """Make NAME the server commands talk to without --server."""
    current = settings()
    try:
        target = canonical(name)
    except ValueError as exc:
        raise CtlError(f"{name!r}: {exc}", EXIT_USAGE) from None
    credentials = current.credentials()
    if target != LOCAL and target not in credentials.servers:
        raise CtlError(f"no context {target}: log in first (jetstreamctl login {target})",
                       EXIT_NOT_FOUND, "NOT_FOUND")
    credentials.current = target
    save_credentials(credentials, current.config)
    out().result({"current": target}, f"Commands now talk to {target}.")


@context.command("run", context_settings={"ignore_unknown_options": True,
                                          "allow_interspersed_args": False})
@click.option("--context", "-c", "only", multiple=True, metavar="SERVER",
              help="Only this server (repeatable); default: every context.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@common_options
def context_run(only: tuple[str, ...], command: tuple[str, ...]) -> None:
    """Run a jetstreamctl COMMAND on every server; exit 1 if it failed on any.

    \b
    jetstreamctl context run transfers ls         what every server is doing
    jetstreamctl context run server info          versions and identities
    jetstreamctl -o json context run whoami       one JSON document for all
    """
    current = settings()
    names = [canonical(n) for n in only] if only else contexts(current)
    if not names:
        raise CtlError("no contexts: log in to a server first (jetstreamctl login HOST)",
                       EXIT_NOT_FOUND, "NOT_FOUND")
    json_mode = current.output.json_mode
    results = []
    for name in names:
        args = [sys.executable, "-m", "jetstream.cli.ctl", "--server", name,
                "--socket", current.socket_path, *(["-o", "json"] if json_mode else []),
                *command]
        done = subprocess.run(args, capture_output=True, text=True,
                              env={**os.environ, "XDG_CONFIG_HOME": str(current.config.parent)},
                              stdin=subprocess.DEVNULL)
        results.append((name, done))
        if not json_mode:
            click.echo(f"== {name}" + (f" (exit {done.returncode})" if done.returncode else ""))
            click.echo(done.stdout, nl=False)
            click.echo(done.stderr, nl=False, err=True)
    if json_mode:
        out().result({"results": [
            {"server": name, "exit_code": done.returncode, "result": _json(done.stdout),
             "stderr": done.stderr} for name, done in results]})
    failed = [name for name, done in results if done.returncode]
    if failed:  # the results above are the document, so no error document after them
        click.echo(f"jetstreamctl: error: failed on {len(failed)} of {len(results)} "
                   f"server(s): {', '.join(failed)}", err=True)
        sys.exit(EXIT_FAILURE)


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None
