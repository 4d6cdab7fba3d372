"""Real servers for the jetstreamctl tests, and the CLI run as a subprocess.

Two `jetstream server` processes per test module, on loopback with kernel-chosen ports:
`local` plays this machine's server (its Unix socket is in the test's directory, and the
CLI, running as root, reaches it without a password) and `remote` plays another machine's
(the CLI logs in there as the PAM test user jsalice).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import ServerProcess, free_port_args
from tests.system.users import ALICE, PASSWORDS, require_root
from tests.transfers.helpers import owned_dir, remove

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT = 180


@dataclass
class Servers:
    local: ServerProcess
    remote: ServerProcess
    socket: Path

    @property
    def remote_address(self) -> str:
        return f"127.0.0.1:{self.remote.api_port}"


def start_server(base: Path, name: str, *extra: str, socket: bool = False) -> ServerProcess:
    state = base / name
    state.mkdir(parents=True, exist_ok=True)
    args = free_port_args()
    if socket:
        args[args.index("--api-socket") + 1] = str(base / f"{name}.sock")
    server = ServerProcess(state / "state", [*args, *extra], state / "server.log")
    return server.start()


@contextmanager
def running_pair(base: Path) -> Iterator[Servers]:
    """`local` (with its socket in `base`) and `remote`, stopped on exit."""
    base.chmod(0o755)
    local = start_server(base, "local", socket=True)
    try:
        remote = start_server(base, "remote")
    except BaseException:
        local.stop()
        raise
    try:
        yield Servers(local, remote, base / "local.sock")
    finally:
        remote.stop()
        local.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    require_root(users=True)
    with running_pair(tmp_path_factory.mktemp("ctl-servers")) as pair:
        yield pair


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def one_error_line(self) -> bool:
        """Failed with exactly one error line on stderr (after any notes), no traceback."""
        lines = self.stderr.splitlines()
        return (self.code != 0 and bool(lines) and lines[-1].startswith("jetstreamctl: error: ")
                and sum("error:" in line for line in lines) == 1
                and "Traceback" not in self.stderr)

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout: {self.stdout}\nstderr: {self.stderr}"


class Ctl:
    """`jetstreamctl` in a subprocess with its own config directory and environment."""

    def __init__(self, home: Path, socket: Path | None) -> None:
        self.home = home
        self.config = home / "config"
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith("JETSTREAM_") and key != "NO_COLOR"}
        self.env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(self.config),
                         "PYTHONPATH": str(REPO), "COLUMNS": "200"})
        if socket is not None:
            self.env["JETSTREAM_API_SOCKET"] = str(socket)

    def __call__(self, *args: str, input: str | None = None, timeout: float = CLI_TIMEOUT,
                 **env: str) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "jetstream.cli.ctl", *args], cwd=REPO,
            env={**self.env, **env}, input=input if input is not None else "",
            capture_output=True, text=True, timeout=timeout,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str, **kwargs: Any) -> Result:
        result = self(*args, **kwargs)
        assert result.code == 0, str(result)
        return result

    def json(self, *args: str, **kwargs: Any) -> Any:
        """Run with --output json, expect success and exactly one JSON document on stdout."""
        return self.ok(*args, "--output", "json", **kwargs).json()

    def login(self, address: str, user: str = ALICE) -> Result:
        return self.ok("login", address, "--user", user, JETSTREAM_API_PASSWORD=PASSWORDS[user])


@pytest.fixture
def ctl(tmp_path: Path, servers: Servers) -> Ctl:
    return Ctl(tmp_path, servers.socket)


@pytest.fixture
def alice_dir() -> Iterator[Path]:
    """A directory jsalice owns (the remote server writes there as jsalice)."""
    path = owned_dir(ALICE, "js-ctl-")
    yield path
    remove(path)
