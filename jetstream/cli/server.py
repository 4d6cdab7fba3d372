"""`jetstream`: runs the server and the relay.

Flags are generated from `jetstream.config.SETTINGS` (and `RELAY_SETTINGS`), so `--help`,
the environment variables, the TOML keys and docs/configuration.md always agree.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from jetstream import __version__
from jetstream.cli.errors import EXIT_FAILURE, EXIT_USAGE, fail, run_click
from jetstream.cli.service import start, stop, supervision
from jetstream.config import RELAY_SETTINGS, SETTINGS, Setting, load_config, load_relay_config
from jetstream.errors import ConfigError

PROGRAM = "jetstream"


def _option(setting: Setting) -> Any:
    """A click option for one setting; values stay raw so config.py validates them once."""
    help_text = f"{setting.help} [env: {setting.env}]"
    if setting.is_switch:
        name = setting.flag[2:]
        return click.option(f"{setting.flag}/--no-{name}", setting.name, default=None,
                            help=help_text)
    return click.option(setting.flag, setting.name, default=None, multiple=setting.multiple,
                        metavar=setting.metavar, help=help_text)


def _with_settings(settings: Iterable[Setting] = SETTINGS) -> Callable[[Any], Any]:
    def decorate(func: Any) -> Any:
        for setting in reversed(tuple(settings)):
            func = _option(setting)(func)
        return func

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROGRAM)
def cli() -> None:
    """jetstream: fast, open file transfer over long, lossy networks."""


@cli.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="TOML configuration file [env: JETSTREAM_CONFIG; default "
                   "/etc/jetstream/server.toml if present].")
@_with_settings()
def server(config_file: Path | None, **flags: Any) -> None:
    """Run the jetstream server: the gRPC API plus the UDP data channel."""
    try:
        config = load_config(flags, config_file=config_file)
    except ConfigError as exc:
        fail(PROGRAM, str(exc), EXIT_USAGE)
    from jetstream.app import run_server  # imported late: grpc start-up is slow

    try:
        run_server(config)
    except ConfigError as exc:
        fail(PROGRAM, str(exc), EXIT_USAGE)
    except OSError as exc:
        fail(PROGRAM, str(exc), EXIT_FAILURE)


@cli.command()
@click.option("--api-host", default="127.0.0.1", show_default=True, help="Server API address.")
@click.option("--api-port", default=8886, show_default=True, type=int, envvar="JETSTREAM_API_PORT",
              help="Server API port [env: JETSTREAM_API_PORT].")
@click.option("--plaintext", is_flag=True, help="The server runs with --api-plaintext.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing; the exit code tells.")
def status(api_host: str, api_port: int, plaintext: bool, quiet: bool) -> None:
    """Is a jetstream server up? Exit 0 when it answers SERVING, 1 otherwise."""
    from jetstream.cli.probe import probe  # imported late: grpc start-up is slow

    try:
        report = probe(api_host, api_port, plaintext=plaintext)
    except ConnectionError as exc:
        if quiet:
            sys.exit(EXIT_FAILURE)
        fail(PROGRAM, f"{exc}; {supervision().strip()}", EXIT_FAILURE)
    if not quiet:
        click.echo(report)
        click.echo(supervision())


@cli.command()
@click.option("--size", "size_mb", default=256, show_default=True, type=click.IntRange(1),
              help="Size of the large file, in MiB.")
@click.option("--files", "small_files", default=2000, show_default=True,
              type=click.IntRange(0), help="Number of small (4-8 KiB) files.")
def demo(size_mb: int, small_files: int) -> None:
    """Start two servers on loopback, send a generated tree between them, verify it."""
    import asyncio
    import os
    import shutil

    if os.geteuid() != 0:  # the servers read and write files as a user: that takes root
        if shutil.which("sudo") is None:
            fail(PROGRAM, "the demo runs as root: su -c 'jetstream demo'", EXIT_USAGE)
        click.echo("jetstream demo: runs as root; asking sudo", err=True)
        os.execvp("sudo", ["sudo", "--", sys.executable, "-m", "jetstream", "demo",
                           "--size", str(size_mb), "--files", str(small_files)])

    from jetstream.cli.demo import run_demo
    from jetstream.errors import JetstreamError

    click.echo(f"jetstream demo: a {size_mb} MiB file and {small_files} small files, "
               "between two servers on loopback, over the encrypted data channel")
    try:
        result = asyncio.run(run_demo(big_bytes=size_mb << 20, small_files=small_files))
    except JetstreamError as exc:
        fail(PROGRAM, str(exc), EXIT_FAILURE)
    verdict = "identical" if result.identical else "DIFFERENT"
    click.echo(f"sent {result.files} entries, {result.bytes / 1e6:.1f} MB in "
               f"{result.seconds:.2f} s: {result.mbit_per_s:.0f} Mbit/s; received tree is "
               f"{verdict} (SHA-256 of every file)")
    if not result.identical:
        sys.exit(EXIT_FAILURE)


@cli.command("relay_server")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="TOML configuration file, [relay] table [env: JETSTREAM_RELAY_CONFIG; "
                   "default /etc/jetstream/relay.toml if present].")
@click.option("--print-fingerprint", is_flag=True,
              help="Print the SHA-256 fingerprint of the relay's certificate (made on first "
                   "use) for the servers' --recv-relay-fingerprint, and exit.")
@_with_settings(RELAY_SETTINGS)
def relay_server(config_file: Path | None, print_fingerprint: bool, **flags: Any) -> None:
    """Run the relay (service jetstream-relay): receive on public ports on behalf of servers
    that dial it from inside a firewall (docs/relay.md)."""
    try:
        config = load_relay_config(flags, config_file=config_file)
    except ConfigError as exc:
        fail(PROGRAM, str(exc), EXIT_USAGE)
    from jetstream.relay.app import relay_identity, run_relay  # late: grpc start-up is slow

    try:
        if print_fingerprint:
            click.echo(f"SHA256:{relay_identity(config).fingerprint.hex()}")
            return
        run_relay(config)
    except ConfigError as exc:
        fail(PROGRAM, str(exc), EXIT_USAGE)
    except OSError as exc:
        fail(PROGRAM, str(exc), EXIT_FAILURE)


cli.add_command(start)
cli.add_command(stop)


def main(argv: list[str] | None = None) -> None:
    run_click(cli, PROGRAM, argv)()


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
