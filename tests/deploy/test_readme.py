"""The README's commands as a newcomer types them: the two first ones need no sudo, and
its grpcurl lines work against a real server (TLS on TCP, plaintext on the local socket)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import ServerProcess, free_port_args

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
GRPCURL = Path(sys.executable).with_name("grpcurl")


def first_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", README, re.S)[1]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_the_first_two_commands_need_no_sudo():
    assert first_commands() == ["deploy/install.sh --start && jetstream demo", "tests/run.sh"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "exec bash tests/run.sh\n" in ci, ".ci/run runs the README's test command"


@pytest.fixture
def server(tmp_path):
    args = free_port_args()
    args[args.index("--api-socket") + 1] = str(tmp_path / "api.sock")
    proc = ServerProcess(tmp_path / "state", args, tmp_path / "server.log").start()
    yield proc, tmp_path
    proc.stop()


def test_the_grpcurl_lines_work(server):
    proc, base = server
    lines = [line.split("  #")[0] for line in README.splitlines()
             if line.startswith("grpcurl ")]
    assert len(lines) == 2 and not any("-plaintext 127.0.0.1" in line for line in lines)
    for line in lines:
        line = (line.replace("/run/jetstream/api.sock", str(base / "api.sock"))
                .replace("/var/lib/jetstream/state", str(base / "state"))
                .replace("127.0.0.1:8886", f"127.0.0.1:{proc.api_port}"))
        done = subprocess.run([str(GRPCURL), *shlex.split(line)[1:]], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, (line, done.stderr)
        assert "jetstream.v1.TransferService\n" in done.stdout, done.stdout
