"""`jetstream relay_server` as an operator runs it: a real process, its fingerprint, its
errors, its signals."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from tests.relay.support import RelayProcess
from tests.support.servers import unused_tcp_port

TRUST = ["--trust-server", "cd" * 32]


def relay_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jetstream", "relay_server", *args],
                          capture_output=True, text=True, timeout=30)


def test_the_fingerprint_printed_is_the_one_the_running_relay_has(tmp_path):
    state = tmp_path / "relay"
    printed = relay_cli("--persistent-state-dir", str(state), "--print-fingerprint")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("SHA256:") and len(printed.stdout.strip()) == 71
    again = relay_cli("--persistent-state-dir", str(state), "--print-fingerprint")
    assert again.stdout == printed.stdout, "made once, kept in the state directory"
    relay = RelayProcess(state, ["--control-port", "0", "--recv-port", str(unused_tcp_port()),
                                 "--metrics-port", "0", *TRUST], tmp_path / "relay.log")
    try:
        relay.start()
        assert f"SHA256:{relay.fingerprint}" == printed.stdout.strip()
        relay.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert relay.proc.wait(10) == 0  # type: ignore[union-attr]
    finally:
        relay.stop()


@pytest.mark.parametrize(
    ("args", "needle", "code"),
    [
        ([], "no --trust-server given", 2),
        (["--trust-server", "xyz"], "--trust-server: must be a SHA-256 fingerprint", 2),
        (["--recv-port", "70000", *TRUST], "--recv-port: must be a port number", 2),
        (["--persistent-state-dir", "/dev/null/relay", *TRUST], "--persistent-state-dir", 2),
    ],
)
def test_bad_settings_exit_with_one_line(tmp_path, args, needle, code):
    if "--persistent-state-dir" not in args:
        args = ["--persistent-state-dir", str(tmp_path / "relay"), *args]
    result = relay_cli(*args)
    assert result.returncode == code, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("jetstream: error: ") and needle in result.stderr


def test_a_public_port_in_use_stops_the_start(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        result = relay_cli("--persistent-state-dir", str(tmp_path / "relay"), "--host",
                           "127.0.0.1", "--recv-port", str(port), "--control-port", "0",
                           "--disable-telemetry", *TRUST)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("jetstream: error: ")
    assert "in use" in result.stderr
