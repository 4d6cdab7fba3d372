"""A relay for tests: in this event loop (`relay_in_loop`), or as a process of its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from jetstream.config import load_relay_config
from jetstream.relay.app import RunningRelay, start_relay
from jetstream.tls import TlsIdentity, load_tls_identity

READY = re.compile(r"relay ready: control (?P<host>\S+):(?P<port>\d+), public \S+, "
                   r"fingerprint SHA256:(?P<fp>[0-9a-f]{64}), metrics (?P<metrics>\S+)")


def server_identity(state: Path) -> TlsIdentity:
    """A server's API certificate, made before the server starts so a relay can trust it."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    return load_tls_identity(state, None, None)


async def relay_in_loop(stack: AsyncExitStack, state: Path, trusted: list[TlsIdentity],
                        ports: list[int], **settings: object) -> RunningRelay:
    flags = {"persistent_state_dir": str(state), "control_host": "127.0.0.1",
             "control_port": 0, "host": "127.0.0.1", "recv_port": ports,
             "trust_server": [t.fingerprint.hex() for t in trusted],
             "disable_telemetry": True, **settings}
    running = await start_relay(load_relay_config(flags, env={}, config_file=None))
    stack.push_async_callback(running.stop)
    return running


@dataclass
class RelayProcess:
    """`jetstream relay_server` as its own process (optionally in a namespace)."""

    state_dir: Path
    args: list[str]
    log_path: Path
    wrapper: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    control_port: int = 0
    fingerprint: str = ""
    metrics: str = "off"

    def start(self, timeout: float = 20.0) -> RelayProcess:
        offset = len(self.log())
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.wrapper, sys.executable, "-m", "jetstream", "relay_server",
                 "--persistent-state-dir", str(self.state_dir), *self.args],
                stdout=log, stderr=log, env=dict(os.environ))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited {self.proc.returncode}: {self.log()}")
            match = READY.search(self.log()[offset:])
            if match:
                self.control_port = int(match["port"])
                self.fingerprint = match["fp"]
                self.metrics = match["metrics"]
                return self
            time.sleep(0.05)
        raise TimeoutError(f"relay not ready after {timeout}s: {self.log()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the relay gets no chance to say goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
