"""Real jetstream servers for tests: in this process (`serve`) or as a process of their own
(`ServerProcess`, whose ports are read from its log). Both make the run's SUPERGROUP the only
superuser group, so no account on the machine is a superuser of a test server by accident."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jetstream.app import Server, start_server
from jetstream.config import ServerConfig, load_config
from tests.system.users import SUPERGROUP

READY = re.compile(
    r"ready: api (?P<api_host>\S+):(?P<api>\d+), data udp (?P<udp>\S+), metrics (?P<metrics>\S+)"
)


@dataclass
class ServerProcess:
    state_dir: Path
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    api_port: int = 0
    metrics: str = "off"
    env: dict[str, str] = field(default_factory=dict)
    wrapper: list[str] = field(default_factory=list)
    """Prefix for the command, e.g. ["ip", "netns", "exec", "ns"] to run in a namespace."""

    @property
    def api_address(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Start the server and wait for the ready line it logs for this launch."""
        offset = len(self.log())
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.wrapper, sys.executable, "-m", "jetstream", "server",
                 "--persistent-state-dir", str(self.state_dir), "--supergroup", SUPERGROUP,
                 "--trigger-dir", str(self.state_dir / "triggers"), *self.args],
                stdout=log, stderr=log, env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log()}")
            match = READY.search(self.log()[offset:])
            if match:
                self.api_port = int(match["api"])
                self.metrics = match["metrics"]
                return self
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port_args() -> list[str]:
    """Let the kernel choose every port, so tests run side by side (and no shared socket)."""
    return ["--api-port", "0", "--recv-port", "0", "--metrics-port", "0", "--api-socket", ""]


def unused_tcp_port() -> int:
    """A port free now, for a server that must come back on the same port after a restart."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_config(state: Path, **settings: Any) -> ServerConfig:
    """A test server's settings: kernel-chosen ports, no telemetry or shared socket, the
    run's supergroup, trigger scripts only from its own state directory, no config file or
    environment; `settings` override."""
    flags = {"api_port": 0, "recv_port": [0], "disable_telemetry": True, "api_socket": "",
             "supergroup": [SUPERGROUP], "persistent_state_dir": str(state),
             "trigger_dir": str(state / "triggers"), **settings}
    return load_config(flags, env={}, config_file=None)


async def serve(stack: AsyncExitStack, state: Path, **settings: Any) -> Server:
    """A server in this event loop, stopped when `stack` closes."""
    server = await start_server(server_config(state, **settings))
    stack.push_async_callback(server.stop)
    return server
