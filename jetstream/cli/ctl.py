"""`jetstreamctl`: the command-line client of the jetstream API.

The commands live in small modules beside this one (ctl_auth, ctl_copy, ctl_transfers,
ctl_remote, ctl_admin); this module builds the command tree and turns every failure into
one line on stderr and a documented exit code (see `output.EXIT_CODES`), never a traceback.
Set JETSTREAM_DEBUG=1 to see the traceback of an unexpected error.
"""

from __future__ import annotations

import os
import sys

import click
import grpc

from jetstream import __version__
from jetstream.cli.ctl_admin import bandwidth, completion, events, sandbox, server
from jetstream.cli.ctl_auth import login, logout, tokens, whoami
from jetstream.cli.ctl_base import common_options, reset_settings
from jetstream.cli.ctl_context import context
from jetstream.cli.ctl_copy import cp
from jetstream.cli.ctl_remote import destinations, files
from jetstream.cli.ctl_transfers import manifests, transfers
from jetstream.cli.ctl_triggers import triggers
from jetstream.cli.ctl_watches import watch, watches
from jetstream.cli.errors import run_click
from jetstream.cli.output import (
    EXIT_CODES,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    CtlError,
    rpc_failure,
)

PROGRAM = "jetstreamctl"


class CtlGroup(click.Group):
    """Ctrl-C anywhere in a command is exit 130, not click's "Aborted!" (exit 1)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise CtlError("interrupted", EXIT_INTERRUPTED) from None

EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES)


@click.group(cls=CtlGroup, epilog=EPILOG,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name=PROGRAM)
@common_options
def cli() -> None:
    """Control jetstream servers: log in, copy files, follow and manage transfers.

    \b
    jetstreamctl login HOST                  log in (password prompt or
                                             $JETSTREAM_API_PASSWORD); pins the certificate
    jetstreamctl cp SRC... HOST:DIR          push files through the local server
    jetstreamctl cp HOST:SRC... DIR          pull files to the local server
    jetstreamctl transfers ls                what is going on
    jetstreamctl -o json transfers show ID   the same for scripts
    jetstreamctl context run transfers ls    the same on every server you manage
    """


for command in (login, logout, whoami, tokens, cp, transfers, manifests, destinations, files,
                server, events, sandbox, bandwidth, triggers, watches, watch, completion,
                context):
    cli.add_command(command)


def _exit_now(code: int) -> None:
    """Exit without the interpreter's clean-up: after Ctrl-C, grpc's threads may be caught
    mid-call and waiting for them could hang."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    current = reset_settings()
    invoke = run_click(cli, PROGRAM, argv)
    try:
        invoke()
    except CtlError as exc:
        current.output.error(PROGRAM, exc)
        if exc.exit_code == EXIT_INTERRUPTED:
            _exit_now(EXIT_INTERRUPTED)
        sys.exit(exc.exit_code)
    except grpc.RpcError as exc:
        error = rpc_failure(exc, "")
        current.output.error(PROGRAM, error)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        current.output.error(PROGRAM, CtlError("interrupted", EXIT_INTERRUPTED))
        _exit_now(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(EXIT_FAILURE)
    except OSError as exc:
        current.output.error(PROGRAM, CtlError(str(exc), EXIT_FAILURE))
        sys.exit(EXIT_FAILURE)
    except Exception as exc:  # never a traceback for a person, unless asked
        if os.environ.get("JETSTREAM_DEBUG"):
            raise
        current.output.error(PROGRAM, CtlError(
            f"unexpected {type(exc).__name__}: {exc} (JETSTREAM_DEBUG=1 shows where)",
            EXIT_FAILURE))
        sys.exit(EXIT_FAILURE)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
