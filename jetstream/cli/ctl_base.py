"""What every `jetstreamctl` command shares: the global options and the run's settings.

The global options (`--server`, `--output`, `--socket`, `--quiet`) are accepted both before
the command and after it (`jetstreamctl -o json transfers ls` = `jetstreamctl transfers ls
-o json`), so each command is decorated with `common_options`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
from click.shell_completion import CompletionItem

from jetstream.cli.ctl_config import LOCAL, ConfigFileError, load_credentials
from jetstream.cli.ctl_connect import Connection, Settings
from jetstream.cli.output import EXIT_USAGE, CtlError, Output

F = TypeVar("F", bound=Callable[..., Any])
_settings = Settings()


def settings() -> Settings:
    return _settings


def reset_settings() -> Settings:
    global _settings
    _settings = Settings()
    return _settings


def _store(attribute: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def store(_ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is None or value is False:
            return
        current = settings()
        if attribute == "output":
            current.output.json_mode = value == "json"
        elif attribute == "quiet":
            current.output.quiet = True
        else:
            setattr(current, attribute, value)

    return store


def _complete_servers(_ctx: click.Context, _param: click.Parameter,
                      incomplete: str) -> list[CompletionItem]:
    try:
        names = [LOCAL, *load_credentials().servers]
    except ConfigFileError:
        names = [LOCAL]
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def common_options(func: F) -> F:
    """Add the global options to a command or group (values land in `settings()`)."""
    options = [
        click.option("--server", "-s", "global_server", metavar="SERVER", default=None,
                     expose_value=False, callback=_store("server"),
                     shell_complete=_complete_servers,
                     help="Server to talk to: HOST[:PORT] or 'local' (the Unix socket) "
                          "[env: JETSTREAM_SERVER; default: the last server logged in to, "
                          "else local]."),
        click.option("--output", "-o", "global_output", type=click.Choice(["table", "json"]),
                     default=None, expose_value=False, callback=_store("output"),
                     help="table (for people, the default) or json (one document on stdout)."),
        click.option("--socket", "global_socket", metavar="PATH", default=None,
                     expose_value=False, callback=_store("socket"),
                     help="Unix socket of the local server [env: JETSTREAM_API_SOCKET; "
                          "default /run/jetstream/api.sock]."),
        click.option("--quiet", "-q", "global_quiet", is_flag=True, default=None,
                     expose_value=False, callback=_store("quiet"),
                     help="No progress and no messages on stderr."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def out() -> Output:
    return settings().output


def resource(collection: str, value: str) -> str:
    """`abc` or `transfers/abc` -> `transfers/abc` (a name from another collection is refused)."""
    if "/" in value:
        if not value.startswith(f"{collection}/"):
            raise CtlError(f"{value!r} is not a {collection} name", EXIT_USAGE)
        return value
    return f"{collection}/{value}"


def pages(call: Callable[..., Any], rpc: Callable[..., Any], request: Any, items: str,
          limit: int) -> Iterator[Any]:
    """Every item of a List RPC, page after page, stopping after `limit` (0: no limit)."""
    count = 0
    while True:
        if limit:
            request.page_size = min(1000, limit - count)
        reply = call(rpc, request)
        for item in getattr(reply, items):
            yield item
            count += 1
            if limit and count >= limit:
                return
        if not reply.next_page_token:
            return
        request.page_token = reply.next_page_token


def list_all(conn: Connection, rpc: Callable[..., Any], request: Any, items: str,
             limit: int) -> list[Any]:
    return list(pages(conn.call, rpc, request, items, limit))


def password_from_env_or_prompt(variable: str, prompt: str) -> str:
    """The password in $variable, else a hidden prompt on the terminal; never a flag."""
    value = os.environ.get(variable)
    if value:
        return value
    if not sys.stdin.isatty():
        raise CtlError(f"no password: set {variable} or run in a terminal to be asked",
                       EXIT_USAGE)
    return str(click.prompt(prompt, hide_input=True, err=True))


def limit_option(default: int = 100) -> Callable[[F], F]:
    return click.option("--limit", "-n", type=click.IntRange(min=0), default=default,
                        show_default=True, help="At most this many (0: all).")


def owner_option(func: F) -> F:
    return click.option("--all-users", "-A", is_flag=True,
                        help="Everyone's, not just yours (superusers).")(func)


