"""`jetstream server` as a user runs it: a real process, real ports, real signals."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jetstream.client.channel import Endpoint, open_channel
from jetstream.config import datapath_choice
from jetstream.v1 import server_pb2, server_pb2_grpc
from tests.support.servers import ServerProcess, free_port_args


@pytest.fixture
def server(tmp_path):
    proc = ServerProcess(tmp_path / "state", free_port_args(), tmp_path / "server.log")
    yield proc
    proc.stop()


def server_uid(port: int) -> str:
    channel, _ = open_channel(Endpoint("127.0.0.1", port))
    with channel:
        stub = server_pb2_grpc.ServerServiceStub(channel)
        reply = stub.GetServerInfo(server_pb2.GetServerInfoRequest(), timeout=5)
    return reply.server_info.server_uid


def test_sigterm_drains_and_exits_zero_within_5s(server):
    server.start()
    channel, _ = open_channel(Endpoint("127.0.0.1", server.api_port))
    with channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=5) == 0
    assert time.monotonic() - started < 5
    assert "shutting down" in server.log()


def test_kill_9_then_restart_keeps_server_uid(server):
    server.start()
    first = server_uid(server.api_port)
    server.signal(signal.SIGKILL)
    server.wait(timeout=5)
    server.start()
    assert server_uid(server.api_port) == first


def test_metrics_endpoint_serves_build_info(server):
    server.start()
    host_port = server.metrics
    assert host_port.startswith("127.0.0.1:"), "metrics are local by default"
    body = urllib.request.urlopen(f"http://{host_port}/metrics", timeout=5).read().decode()
    assert "jetstream_build_info{" in body
    path = "python" if datapath_choice() == "python" else "compiled"
    assert f'data_path="{path}"' in body
    assert "process_resident_memory_bytes" in body


def test_disable_telemetry_listens_on_nothing(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = ServerProcess(
        tmp_path / "state",
        ["--api-port", "0", "--recv-port", "0", "--metrics-port", str(port),
         "--disable-telemetry"],
        tmp_path / "server.log",
    )
    try:
        proc.start()
        assert proc.metrics == "off"
        with socket.socket() as client, pytest.raises(ConnectionRefusedError):
            client.connect(("127.0.0.1", port))
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--api-port", "99999"], "--api-port: must be a port number from 0 to 65535"),
        (["--no-such-flag"], "No such option '--no-such-flag'"),
        (["--persistent-state-dir", "relative"], "--persistent-state-dir: must be an absolute"),
    ],
)
def test_bad_flag_exits_2_with_one_line(args, needle):
    result = subprocess.run(
        [sys.executable, "-m", "jetstream", "server", *args],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jetstream: error: ")
    assert needle in lines[0]


def test_state_dir_unusable_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = subprocess.run(
        [sys.executable, "-m", "jetstream", "server", *free_port_args(),
         "--persistent-state-dir", str(blocker / "state")],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("jetstream: error: ")


def jetstream(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jetstream", *args],
                          capture_output=True, text=True, timeout=30)


def test_status_reports_a_running_server_and_fails_when_gone(server):
    server.start()
    up = jetstream("status", "--api-port", str(server.api_port))
    assert up.returncode == 0, up.stderr
    assert "SERVING" in up.stdout and server_uid(server.api_port) in up.stdout
    server.stop()
    down = jetstream("status", "--api-port", str(server.api_port))
    assert down.returncode == 1
    assert down.stderr.startswith("jetstream: error: no jetstream server answers at")
    assert len(down.stderr.strip().splitlines()) == 1


def test_plaintext_flag_serves_plaintext(tmp_path):
    proc = ServerProcess(tmp_path / "state", [*free_port_args(), "--api-plaintext"],
                         tmp_path / "server.log")
    try:
        proc.start()
        up = jetstream("status", "--plaintext", "--api-port", str(proc.api_port))
        assert up.returncode == 0, up.stderr
        assert "API plaintext" in up.stdout
        assert not (tmp_path / "state" / "api-tls.crt").exists()
    finally:
        proc.stop()
