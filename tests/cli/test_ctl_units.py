"""The pure parts of jetstreamctl: argument parsing, config files, output (no server)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jetstream.cli.ctl_config import (
    Credentials,
    KnownHosts,
    ServerLogin,
    load_credentials,
    parse_fingerprint,
    save_credentials,
)
from jetstream.cli.ctl_connect import canonical, parse_address
from jetstream.cli.ctl_copy import Location, parse_location
from jetstream.cli.output import EXIT_CODES, Output, parse_rate

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("text", "expected"), [
    ("host:/data/x", Location("host:8886", "/data/x")),
    ("host:9000:/data/x", Location("host:9000", "/data/x")),
    ("alice@host:9000:rel", Location("host:9000", "rel", "alice")),
    ("[::1]:9000:/x", Location("[::1]:9000", "/x")),
    ("bob@[::1]:/x", Location("[::1]:8886", "/x", "bob")),
    ("host:", Location("host:8886", "/")),
    ("local:/srv/x", Location("local", "/srv/x")),
    ("/abs/path", Location("local", "/abs/path")),
    ("/abs/dir/", Location("local", "/abs/dir/")),
])
def test_cp_arguments(text: str, expected: Location) -> None:
    assert parse_location(text) == expected


def test_cp_local_paths_are_made_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_location("file.txt") == Location("local", str(tmp_path / "file.txt"))
    assert parse_location("./a:b") == Location("local", str(tmp_path / "a:b"))


def test_server_addresses() -> None:
    assert parse_address("example.org").port == 8886
    assert canonical("example.org:9000") == "example.org:9000"
    assert canonical("[::1]") == "[::1]:8886"
    assert canonical("local") == "local"
    for bad in ("host:0", "host:x", "[::1", ":80", ""):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_rates() -> None:
    assert parse_rate("100M") == 100_000_000
    assert parse_rate("1.5G") == 1_500_000_000
    assert parse_rate("500k") == 500_000
    assert parse_rate("2Gbit/s") == 2_000_000_000
    assert parse_rate("0") == 0
    for bad in ("fast", "-1M", ""):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_known_hosts_and_fingerprints(tmp_path) -> None:
    known = KnownHosts(tmp_path)
    assert known.get("h:1") is None
    known.set("h:1", b"\x01" * 32)
    known.set("h:2", b"\x02" * 32)
    known.set("h:1", b"\x03" * 32)
    assert KnownHosts(tmp_path).get("h:1") == b"\x03" * 32
    assert stat.S_IMODE(known.path.stat().st_mode) == 0o600
    assert known.forget("h:2") and not known.forget("h:2")
    assert KnownHosts(tmp_path).get("h:2") is None
    assert parse_fingerprint("SHA256:" + "ab" * 32) == b"\xab" * 32
    assert parse_fingerprint(":".join(["AB"] * 32)) == b"\xab" * 32
    assert parse_fingerprint("SHA256:abcd") is None


def test_credentials_round_trip(tmp_path) -> None:
    saved = Credentials({"h:1": ServerLogin("alice", "tok", "session", "2030-01-01T00:00:00Z")},
                        "h:1")
    path = save_credentials(saved, tmp_path / "cfg")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_credentials(tmp_path / "cfg") == saved
    path.write_text("{not json")
    with pytest.raises(Exception, match="damaged"):
        load_credentials(tmp_path / "cfg")


def test_no_color_is_honoured(monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    output = Output()
    assert output.err.no_color and output.out.no_color


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jetstream.cli.ctl", *args], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env},
                          capture_output=True, text=True, timeout=60)


def test_help_lists_every_exit_code_and_command() -> None:
    done = run("--help")
    assert done.returncode == 0
    for code, _text in EXIT_CODES:
        assert f"  {code:>3}  " in done.stdout
    for command in ("login", "logout", "whoami", "cp", "transfers", "destinations",
                    "manifests", "files", "server", "events", "tokens", "sandbox",
                    "bandwidth", "completion"):
        assert f"  {command} " in done.stdout


def test_a_damaged_credentials_file_is_one_line(tmp_path) -> None:
    (tmp_path / "jetstream").mkdir()
    (tmp_path / "jetstream" / "credentials.json").write_text("[")
    done = run("-o", "json", "whoami", XDG_CONFIG_HOME=str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "damaged" in done.stderr
    assert json.loads(done.stdout)["error"]["exit_code"] == 1


def test_docs_list_every_exit_code() -> None:
    text = (REPO / "docs" / "api.md").read_text()
    for code, _ in EXIT_CODES:
        assert f"| {code} |" in text
