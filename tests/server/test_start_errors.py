"""A server that cannot start says which setting and which port or path, exits 2, and
prints no traceback: real processes against real occupied ports."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import ServerProcess, free_port_args


def run_server(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jetstream", "server", "--persistent-state-dir",
         str(tmp_path / "second"), *args],
        capture_output=True, text=True, timeout=60,
    )


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert f"jetstream: error: {expected}" in result.stderr.splitlines(), result.stderr


def test_second_server_on_the_default_metrics_port_names_it(tmp_path):
    first = ServerProcess(tmp_path / "first", ["--api-port", "0", "--recv-port", "0",
                                               "--metrics-port", "0", "--api-socket", ""],
                          tmp_path / "first.log").start()
    try:
        metrics_port = int(first.metrics.rsplit(":", 1)[1])
        result = run_server(tmp_path, "--api-port", "0", "--recv-port", "0", "--api-socket",
                            "", "--metrics-port", str(metrics_port))
    finally:
        first.stop()
    assert_one_line_exit_2(result, f"metrics port {metrics_port} is in use on 127.0.0.1: "
                                    "--metrics-port or --disable-telemetry")


@pytest.fixture
def busy_tcp_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_api_port_in_use_names_it(tmp_path, busy_tcp_port):
    result = run_server(tmp_path, "--api-port", str(busy_tcp_port), "--recv-port", "0",
                        "--disable-telemetry", "--api-socket", "")
    assert_one_line_exit_2(result, f"API port {busy_tcp_port} is in use on 127.0.0.1: --api-port")
    assert "add_port" not in result.stderr, "grpc's own log line is not shown"


def test_data_port_in_use_names_it(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        result = run_server(tmp_path, *free_port_args(), "--recv-host", "127.0.0.1",
                            "--recv-port", str(port))
    assert_one_line_exit_2(result, f"data channel UDP port {port} is in use on 127.0.0.1: "
                                   "--recv-port")


def test_metrics_address_not_on_this_machine(tmp_path):
    result = run_server(tmp_path, *free_port_args(), "--metrics-host", "192.0.2.1")
    assert_one_line_exit_2(result, "metrics address 192.0.2.1 is not an address of this "
                                   "machine: --metrics-host")


def test_state_dir_that_cannot_exist_names_the_path(tmp_path):
    (tmp_path / "file").write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "jetstream", "server", *free_port_args(),
         "--persistent-state-dir", str(tmp_path / "file" / "state")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"--persistent-state-dir {tmp_path / 'file' / 'state'}" in result.stderr


def test_missing_tls_certificate_names_the_flag_and_path(tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("")
    result = run_server(tmp_path, *free_port_args(), "--api-tls-cert",
                        str(tmp_path / "missing.pem"), "--api-tls-key", str(key))
    assert_one_line_exit_2(result, f"--api-tls-cert {tmp_path / 'missing.pem'}: "
                                   "No such file or directory")
