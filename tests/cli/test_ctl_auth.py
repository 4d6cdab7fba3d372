"""jetstreamctl login/logout/whoami/tokens against real servers, as a subprocess."""

from __future__ import annotations

import json
import stat

import pytest

from tests.cli.conftest import Ctl, start_server
from tests.support.servers import unused_tcp_port
from tests.system.users import ALICE, PASSWORDS, require_root

pytestmark = pytest.mark.root


def test_login_whoami_logout_and_the_token_file(ctl: Ctl, servers) -> None:
    address = servers.remote_address
    result = ctl.login(address)
    assert "pinned the TLS certificate" in result.stderr
    assert f"Logged in to {address}" in result.stdout

    files = ctl.config / "jetstream"
    assert stat.S_IMODE(files.stat().st_mode) == 0o700
    for name in ("credentials.json", "known_hosts"):
        assert stat.S_IMODE((files / name).stat().st_mode) == 0o600
    stored = json.loads((files / "credentials.json").read_text())
    assert stored["current"] == address
    assert stored["servers"][address]["username"] == ALICE
    assert PASSWORDS[ALICE] not in (files / "credentials.json").read_text()
    assert (files / "known_hosts").read_text().startswith(f"{address} SHA256:")

    who = ctl.json("whoami")  # the server logged in to last is the default
    assert who["server"] == address
    assert who["principal"]["username"] == ALICE
    assert who["principal"]["credential_kind"] == "CREDENTIAL_KIND_SESSION"

    assert "Logged out" in ctl.ok("logout").stdout
    gone = ctl("-s", address, "whoami")
    assert gone.code == 3 and "not logged in" in gone.stderr, gone


def test_local_server_needs_no_password(ctl: Ctl) -> None:
    who = ctl.json("whoami")  # nobody logged in: the local server, over its Unix socket
    assert who["server"] == "local"
    assert who["principal"]["username"] == "root"
    info = ctl.json("server", "info")
    assert info["fingerprint"].startswith("SHA256:")
    assert "Unix socket" not in ctl.ok("-s", "local", "whoami").stderr


def test_authentication_failures_exit_3(ctl: Ctl, servers) -> None:
    address = servers.remote_address
    wrong = ctl("login", address, "--user", ALICE, JETSTREAM_API_PASSWORD="not-it")
    assert wrong.code == 3, wrong
    assert wrong.one_error_line

    ctl.login(address)
    expired = ctl("-s", address, "whoami", JETSTREAM_API_TOKEN="not-a-token")
    assert expired.code == 3 and "log in again" in expired.stderr, expired

    as_json = ctl("-o", "json", "-s", address, "whoami", JETSTREAM_API_TOKEN="nope")
    assert as_json.code == 3
    assert as_json.json()["error"]["status"] == "UNAUTHENTICATED"


def test_api_tokens_create_login_list_revoke(ctl: Ctl, servers) -> None:
    address = servers.remote_address
    ctl.login(address)
    made = ctl.json("tokens", "create", "--description", "ci script", "--ttl", "1h")
    secret, name = made["secret"], made["api_token"]["name"]
    assert made["api_token"]["description"] == "ci script"

    other = Ctl(ctl.home / "other", None)
    login = other.ok("login", address, "--token-stdin", input=secret + "\n")
    assert ALICE in login.stdout
    who = other.json("whoami")
    assert who["principal"]["credential_kind"] == "CREDENTIAL_KIND_API_TOKEN"

    listed = ctl.json("tokens", "ls")
    assert name in [t["name"] for t in listed["api_tokens"]]
    assert "ci script" in ctl.ok("tokens", "ls").stdout

    ctl.ok("tokens", "revoke", name.split("/")[1])
    revoked = other("whoami")
    assert revoked.code == 3, revoked
    assert ctl("tokens", "revoke", "no-such-token").code == 4


def test_unreachable_server_exits_6(ctl: Ctl) -> None:
    port = unused_tcp_port()
    result = ctl("login", f"127.0.0.1:{port}", "--user", ALICE, JETSTREAM_API_PASSWORD="x")
    assert result.code == 6, result
    assert "cannot reach" in result.stderr
    assert ctl("-s", f"127.0.0.1:{port}", "server", "info").code == 6
    missing_socket = ctl("whoami", JETSTREAM_API_SOCKET="/nonexistent/api.sock")
    assert missing_socket.code == 6 and "no local jetstream server" in missing_socket.stderr


def test_usage_errors_exit_2_in_one_line(ctl: Ctl) -> None:
    for args in (["transfers", "frobnicate"], ["cp", "onlyone"], ["--output", "xml", "whoami"],
                 ["transfers", "priority", "x", "101"], ["login", "host:notaport"],
                 ["transfers", "rate", "x", "--max", "fast"]):
        result = ctl(*args)
        assert result.code == 2, (args, result)
        assert result.one_error_line, (args, result)


def test_a_changed_certificate_is_refused(tmp_path, ctl: Ctl) -> None:
    require_root(users=True)
    port = str(unused_tcp_port())
    first = start_server(tmp_path / "one", "s", "--api-port", port)
    address = f"127.0.0.1:{first.api_port}"
    try:
        ctl.login(address)
        assert ctl.json("whoami")["server"] == address
    finally:
        first.stop()
    # Same address, another server (a new state directory: a new self-signed certificate).
    second = start_server(tmp_path / "two", "s", "--api-port", port)
    try:
        refused = ctl("whoami")
        assert refused.code == 7, refused
        assert f"the TLS certificate of {address} changed" in refused.stderr
        assert "refusing to connect" in refused.stderr and refused.one_error_line
        again = ctl("login", address, "--user", ALICE, JETSTREAM_API_PASSWORD=PASSWORDS[ALICE])
        assert again.code == 7, again
        # After checking with the administrator: forget the pin, then trust the new one.
        assert "pinned certificate is forgotten" in ctl.ok("logout", "--forget", address).stdout
        ctl.login(address)
        assert ctl.json("whoami")["principal"]["username"] == ALICE
    finally:
        second.stop()


def test_an_expected_fingerprint_is_checked_on_first_contact(ctl: Ctl, servers) -> None:
    address = servers.remote_address
    wrong = "SHA256:" + "00" * 32
    result = ctl("login", address, "--user", ALICE, "--fingerprint", wrong,
                 JETSTREAM_API_PASSWORD=PASSWORDS[ALICE])
    assert result.code == 7, result
    right = ctl.json("-s", address, "server", "info")["fingerprint"]
    ctl.ok("logout", "--forget", address)
    ctl.ok("login", address, "--user", ALICE, "--fingerprint", right,
           JETSTREAM_API_PASSWORD=PASSWORDS[ALICE])


def test_shell_completion_scripts(ctl: Ctl) -> None:
    bash = ctl.ok("completion", "bash").stdout
    assert "_JETSTREAMCTL_COMPLETE" in bash and "complete " in bash
    assert "compdef" in ctl.ok("completion", "zsh").stdout
    words = ctl.ok(_JETSTREAMCTL_COMPLETE="bash_complete", COMP_WORDS="jetstreamctl tra",
                   COMP_CWORD="1").stdout
    assert "transfers" in words
