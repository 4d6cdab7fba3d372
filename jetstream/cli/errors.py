"""How every jetstream command reports a failure: one readable line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import click

EXIT_FAILURE = 1
EXIT_USAGE = 2


def fail(program: str, message: str, code: int) -> NoReturn:
    click.echo(f"{program}: error: {message}", err=True)
    sys.exit(code)


def run_click(
    command: click.Command, program: str, argv: Sequence[str] | None = None
) -> Callable[[], None]:
    """Run a click command so that usage errors are one line with exit 2, never a banner."""

    def invoke() -> None:
        try:
            command.main(args=list(argv) if argv is not None else None, prog_name=program,
                         standalone_mode=False)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(EXIT_USAGE)
        except click.UsageError as exc:
            fail(program, exc.format_message(), EXIT_USAGE)
        except click.Abort:
            fail(program, "aborted", EXIT_FAILURE)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)

    return invoke
