"""Run a real `jetstream server` process for a test and find its ports from its log."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

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
                 "--persistent-state-dir", str(self.state_dir), *self.args],
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
