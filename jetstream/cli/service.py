"""`jetstream start` and `jetstream stop`: run the server as a service on any machine.

Where systemd runs and deploy/install.sh installed the unit, they are `systemctl start` and
`systemctl stop` of jetstream-NAME. Elsewhere (containers, machines without systemd as
PID 1) `start` launches jetstream.supervisor, which restarts the server if it dies, and
waits until the server says it is ready; `stop` stops that supervisor and its server.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from jetstream.cli.errors import EXIT_FAILURE, EXIT_USAGE, fail
from jetstream.supervisor import STOP_TIMEOUT, running_pid

PROGRAM = "jetstream"
RUN_DIR = Path("/run/jetstream")
LOG_DIR = Path("/var/log/jetstream")
SYSTEMD_UNITS = Path("/etc/systemd/system")


def systemd_unit(name: str) -> str | None:
    """`jetstream-NAME.service` if systemd is running and that unit is installed."""
    unit = f"jetstream-{name}.service"
    if Path("/run/systemd/system").is_dir() and (SYSTEMD_UNITS / unit).is_file():
        return unit
    return None


def supervision(name: str = "server", run_dir: Path = RUN_DIR) -> str:
    """Who keeps the server running and where its log is, for `jetstream status`."""
    unit = systemd_unit(name)
    if unit is not None:
        return f"  service: systemd unit {unit}; log: journalctl -u {unit}"
    pid = running_pid(run_dir, name)
    if pid is not None:
        return (f"  service: jetstream start (supervisor pid {pid}); log: "
                f"{LOG_DIR / (name + '.log')}; stop: jetstream stop")
    return "  service: none (not started by systemd or jetstream start; nothing restarts it)"


def _systemctl(action: str, unit: str) -> None:
    done = subprocess.run(["systemctl", action, unit], check=False)
    if done.returncode != 0:
        fail(PROGRAM, f"systemctl {action} {unit} failed (journalctl -u {unit})",
             EXIT_FAILURE)
    click.echo(f"systemctl {action} {unit}: done")


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.option("--name", default="server", show_default=True,
              help="Service name: the pid file, notify socket and log are named after it.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=RUN_DIR,
              show_default=True, help="Directory of the pid file and the notify socket.")
@click.option("--log-file", type=click.Path(path_type=Path), default=None,
              help="Where the server's output goes [default: /var/log/jetstream/NAME.log].")
@click.option("--timeout", type=click.FloatRange(1), default=60.0, show_default=True,
              help="Seconds to wait for the server to be ready.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def start(name: str, run_dir: Path, log_file: Path | None, timeout: float,
          command: tuple[str, ...]) -> None:
    """Start the server as a service; COMMAND defaults to `server` (flags may follow).

    \b
    jetstream start                              the server, settings from server.toml
    jetstream start --api-port 9000              the server with a flag
    jetstream start --name relay relay_server --control-port 8887

    Uses systemd where it runs and the unit is installed; elsewhere a supervisor that
    restarts the server if it dies. Returns once the server is ready.
    """
    args = list(command) if command and not command[0].startswith("-") else ["server",
                                                                             *command]
    unit = systemd_unit(name)
    if unit is not None and not command:
        _systemctl("start", unit)
        return
    pid = running_pid(run_dir, name)
    if pid is not None:
        click.echo(f"jetstream {name} is already running (supervisor pid {pid}); "
                   "jetstream stop first to start it with other settings")
        return
    log_path = log_file or LOG_DIR / f"{name}.log"
    try:
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
    except OSError as exc:
        fail(PROGRAM, f"--run-dir {run_dir} or --log-file {log_path}: {exc.strerror}",
             EXIT_USAGE)
    news, news_to_us = os.pipe()
    with log:
        subprocess.Popen(
            [sys.executable, "-m", "jetstream.supervisor", str(run_dir), name,
             str(news_to_us), *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            pass_fds=(news_to_us,),
        )
    os.close(news_to_us)
    heard = _first_news(news, timeout)
    if heard == "ready":
        click.echo(f"jetstream {name} is ready (log {log_path}; stop: jetstream stop"
                   + (f" --name {name}" if name != "server" else "") + ")")
        return
    tail = _tail(log_path)
    if heard.startswith("exited"):
        code = int(heard.split()[1]) if heard.split()[1:] else EXIT_FAILURE
        click.echo(tail, err=True)
        fail(PROGRAM, f"{name} did not start (log {log_path})", code or EXIT_FAILURE)
    fail(PROGRAM, f"{name} is not ready after {timeout:.0f} s; it keeps trying "
         f"(log {log_path})", EXIT_FAILURE)


def _first_news(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while b"\n" not in data and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([pipe], [], [], left)
            if not ready:
                break
            chunk = pipe.read(256)
            if not chunk:
                return "exited"
            data += chunk
    return data.decode(errors="replace").strip()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@click.command()
@click.option("--name", default="server", show_default=True, help="Service name.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=RUN_DIR,
              show_default=True, help="Directory of the pid file.")
def stop(name: str, run_dir: Path) -> None:
    """Stop the server started by `jetstream start` (or its systemd unit)."""
    pid = running_pid(run_dir, name)
    if pid is None:
        unit = systemd_unit(name)
        if unit is not None and shutil.which("systemctl"):
            _systemctl("stop", unit)
            return
        click.echo(f"jetstream {name} is not running under jetstream start")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT + 5
    while running_pid(run_dir, name) == pid and time.monotonic() < deadline:
        time.sleep(0.1)
    if running_pid(run_dir, name) == pid:
        fail(PROGRAM, f"supervisor pid {pid} did not stop", EXIT_FAILURE)
    click.echo(f"jetstream {name} stopped")
