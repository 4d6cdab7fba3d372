"""The API from another host: refused by default, TLS only with --api-allow-remote-control.

Two network namespaces made for the test, joined by a veth pair on 10.78.0.0/24 (server
10.78.0.1, client 10.78.0.10). The root namespace gets a blackhole route for that subnet
first, so nothing of the test can leak onto a real network. Everything the test creates is
removed in a `finally`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import namespace_pair
from tests.system.users import require_root

REPO = Path(__file__).resolve().parents[2]
SUBNET = "10.78.0.0/24"
SERVER_IP, CLIENT_IP = "10.78.0.1", "10.78.0.10"
READY = re.compile(r"ready: api (?P<host>\S+):(?P<port>\d+),")

PROBE = r"""
import json, sys
import grpc
from jetstream.client.channel import Endpoint, open_channel
from jetstream.v1 import server_pb2, server_pb2_grpc

host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    if mode == "plaintext":
        channel = grpc.insecure_channel(f"{host}:{port}")
    else:
        channel, _ = open_channel(Endpoint(host, port))
    with channel:
        info = server_pb2_grpc.ServerServiceStub(channel).GetServerInfo(
            server_pb2.GetServerInfoRequest(), timeout=5).server_info
    print(json.dumps({"ok": True, "server_uid": info.server_uid}))
except Exception as exc:  # what the client saw, for the assertion message
    print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}))
"""


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    require_root()
    with namespace_pair("jsr", SUBNET) as pair:
        assert (pair.server_ip, pair.client_ips[0]) == (SERVER_IP, CLIENT_IP)
        yield pair.server_ns, pair.client_ns


def in_namespace(ns: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *command]


class NamespacedServer:
    def __init__(self, ns: str, state: Path, *flags: str) -> None:
        self.log = state.parent / f"{state.name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                in_namespace(ns, sys.executable, "-m", "jetstream", "server",
                             "--persistent-state-dir", str(state), "--api-port", "0",
                             "--recv-port", "0", "--disable-telemetry", "--api-socket", "",
                             *flags),
                stdout=out, stderr=out, cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = READY.search(self.log.read_text(errors="replace"))
            if match:
                self.bind_host, self.port = match["host"], int(match["port"])
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def probe(ns: str, host: str, port: int, mode: str) -> dict[str, object]:
    done = subprocess.run(
        in_namespace(ns, sys.executable, "-c", PROBE, host, str(port), mode),
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_by_default_the_api_answers_on_loopback_only(tmp_path, namespaces):
    server_ns, client_ns = namespaces
    for flags in ((), ("--api-plaintext",)):
        mode = "plaintext" if flags else "tls"
        server = NamespacedServer(server_ns, tmp_path / f"state-{mode}", *flags)
        try:
            assert server.bind_host == "127.0.0.1"
            local = probe(server_ns, "127.0.0.1", server.port, mode)
            assert local["ok"], local
            for remote_mode in ("plaintext", "tls"):
                remote = probe(client_ns, SERVER_IP, server.port, remote_mode)
                assert not remote["ok"], (flags, remote_mode, remote)
                assert "refused" in str(remote["error"]), remote  # nothing listens there
        finally:
            server.stop()


def test_remote_control_serves_tls_and_refuses_plaintext(tmp_path, namespaces):
    server_ns, client_ns = namespaces
    server = NamespacedServer(server_ns, tmp_path / "state", "--api-allow-remote-control")
    try:
        plaintext = probe(client_ns, SERVER_IP, server.port, "plaintext")
        assert not plaintext["ok"], plaintext
        assert "refused" not in str(plaintext["error"]), plaintext  # it listens, TLS only
        tls = probe(client_ns, SERVER_IP, server.port, "tls")
        assert tls["ok"] and tls["server_uid"], tls
    finally:
        server.stop()
