"""The server as a service: sd_notify readiness (systemd's Type=notify) and `jetstream
start`/`stop`, the supervisor where systemd is not PID 1 (as on this machine). Real
processes, real signals, real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jetstream.supervisor import running_pid
from tests.support.servers import ServerProcess, free_port_args, unused_tcp_port


def jetstream(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jetstream", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_server_tells_the_service_manager_ready_then_stopping(tmp_path):
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(tmp_path / "notify"))
    manager.settimeout(20)
    server = ServerProcess(tmp_path / "state", free_port_args(), tmp_path / "server.log",
                           env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
    try:
        server.start()
        ready = manager.recv(4096).decode().split("\n")
        assert "READY=1" in ready
        assert f"STATUS=serving, API port {server.api_port}" in ready
        server.signal(signal.SIGTERM)
        assert manager.recv(4096) == b"STOPPING=1"
        assert server.wait(timeout=10) == 0
    finally:
        server.stop()
        manager.close()


def stat(pid: int) -> list[str]:
    """State, parent pid, ... of a process; [] once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def alive(pid: int) -> bool:
    return stat(pid)[:1] not in ([], ["Z"])


def children(pid: int) -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and alive(int(entry.name))
            and stat(int(entry.name))[1:2] == [str(pid)]]


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(predicate)


@pytest.fixture
def service(tmp_path):
    run_dir = tmp_path / "run"
    api_port = unused_tcp_port()
    args = ["--run-dir", str(run_dir), "--log-file", str(tmp_path / "server.log"),
            "--persistent-state-dir", str(tmp_path / "state"), "--api-port", str(api_port),
            "--recv-port", "0", "--metrics-port", "0", "--api-socket", ""]
    yield run_dir, api_port, args
    pid = running_pid(run_dir, "server")
    if pid is not None:
        os.kill(pid, signal.SIGTERM)


def test_start_restarts_a_killed_server_and_stop_ends_both(tmp_path, service):
    run_dir, api_port, args = service
    started = jetstream("start", *args)
    assert started.returncode == 0, started.stderr
    assert f"jetstream server is ready (log {tmp_path / 'server.log'}" in started.stdout
    supervisor = running_pid(run_dir, "server")
    assert supervisor is not None
    [first] = children(supervisor)
    assert jetstream("status", "-q", "--api-port", str(api_port)).returncode == 0

    again = jetstream("start", *args)
    assert again.returncode == 0 and "already running" in again.stdout

    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: [p for p in children(supervisor) if p != first])
    wait_for(lambda: jetstream("status", "-q", "--api-port", str(api_port)).returncode == 0)
    log = (tmp_path / "server.log").read_text()
    assert f"pid {first} exited -9; restarting in 1 s" in log

    stopped = jetstream("stop", "--run-dir", str(run_dir))
    assert stopped.returncode == 0 and "jetstream server stopped" in stopped.stdout
    assert running_pid(run_dir, "server") is None
    assert not (run_dir / "server.pid").exists()
    assert not [pid for pid in second if alive(pid)]
    assert jetstream("status", "-q", "--api-port", str(api_port)).returncode == 1


def test_start_with_a_port_in_use_fails_at_once_and_does_not_loop(tmp_path, service):
    run_dir, api_port, args = service
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", api_port))
        busy.listen()
        result = jetstream("start", *args)
    assert result.returncode == 2, result
    assert f"API port {api_port} is in use on 127.0.0.1: --api-port" in result.stderr
    assert "jetstream: error: server did not start" in result.stderr
    assert running_pid(run_dir, "server") is None
    assert "not restarting" in (tmp_path / "server.log").read_text()


def test_health_port_answers_kubernetes_probes_in_plaintext_and_nothing_else(tmp_path):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from jetstream.v1 import server_pb2, server_pb2_grpc

    port = unused_tcp_port()
    server = ServerProcess(tmp_path / "state", [*free_port_args(), "--health-port", str(port)],
                           tmp_path / "server.log").start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as refused:
                server_pb2_grpc.ServerServiceStub(channel).GetServerInfo(
                    server_pb2.GetServerInfoRequest(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop()
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", port))
        busy.listen()
        again = jetstream("server", "--persistent-state-dir", str(tmp_path / "state"),
                          *free_port_args(), "--health-port", str(port))
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert f"health port {port} is in use on [::]: --health-port (0: off)" in again.stderr
