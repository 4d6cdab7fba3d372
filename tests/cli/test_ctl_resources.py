"""jetstreamctl destinations, files, server info, events, bandwidth and sandbox."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Ctl
from tests.system.users import ALICE, PASSWORDS

pytestmark = pytest.mark.root


def test_destinations_add_ls_show_test_rm(ctl: Ctl, servers) -> None:
    remote = servers.remote_address
    ctl.login(remote)
    local = ("-s", "local")
    # With a login at the target: an API token is made there for the destination.
    made = ctl.json(*local, "destinations", "add", remote, "--name", "ci-dest",
                    "--max-rate", "1G")
    assert made["destination"]["name"] == "destinations/ci-dest"
    assert made["destination"]["credential_kind"] == "CREDENTIAL_KIND_API_TOKEN"
    assert made["destination"]["max_rate_bps"] == "1000000000"
    # With a user and password (from the environment, never a flag).
    ctl.ok(*local, "destinations", "add", remote, "--name", "by-password", "--user", ALICE,
           JETSTREAM_DEST_PASSWORD=PASSWORDS[ALICE])

    listed = ctl.json(*local, "destinations", "ls")["destinations"]
    assert {"destinations/ci-dest", "destinations/by-password"} <= {d["name"] for d in listed}
    assert "ci-dest" in ctl.ok(*local, "destinations", "ls").stdout
    shown = ctl.ok(*local, "destinations", "show", "ci-dest").stdout
    assert f"{remote}" in shown and ALICE in shown and "SHA256:" in shown
    tested = ctl.json(*local, "destinations", "test", "by-password")["test"]
    assert tested["reachable"] and tested["identity_verified"] and tested["authenticated"]
    assert f"yes, as {ALICE}" in ctl.ok(*local, "destinations", "test", "ci-dest").stdout

    for name in ("ci-dest", "by-password"):
        ctl.ok(*local, "destinations", "rm", name)
    assert ctl(*local, "destinations", "show", "ci-dest").code == 4
    wrong = ctl(*local, "destinations", "add", remote, "--name", "bad", "--user", ALICE,
                JETSTREAM_DEST_PASSWORD="wrong")
    assert wrong.code == 3, wrong


def test_files_ls_mkdir_mv_rm(ctl: Ctl, servers, alice_dir) -> None:
    ctl.login(servers.remote_address)
    base = str(alice_dir)
    made = ctl.json("files", "mkdir", "-p", f"{base}/x/y")
    assert made["file_info"]["path"] == f"{base}/x/y"
    (alice_dir / "x" / "y" / "note.txt").write_text("hello\n")
    entries = ctl.json("files", "ls", base)["entries"]
    assert [(e["name"], e["kind"]) for e in entries] == [("x", "FILE_KIND_DIRECTORY")]
    assert entries[0]["owner"] == ALICE
    assert "note.txt" in ctl.ok("files", "ls", f"{base}/x/y").stdout

    exists = ctl("files", "mkdir", f"{base}/x")
    assert exists.code == 1, exists  # ALREADY_EXISTS
    ctl.ok("files", "mv", f"{base}/x", f"{base}/z")
    assert (alice_dir / "z" / "y" / "note.txt").exists()
    not_empty = ctl("files", "rm", f"{base}/z")
    assert not_empty.code == 1 and not_empty.one_error_line, not_empty
    ctl.ok("files", "rm", "-r", f"{base}/z")
    assert not (alice_dir / "z").exists()
    assert ctl("files", "ls", f"{base}/z").code == 4
    denied = ctl("files", "ls", "/root")
    assert denied.code == 3, denied  # PERMISSION_DENIED: jsalice may not read /root


def test_server_info_needs_no_login(ctl: Ctl, servers) -> None:
    info = ctl.json("-s", servers.remote_address, "server", "info")
    assert info["server_info"]["api_port"] == servers.remote.api_port
    assert info["fingerprint"].startswith("SHA256:")
    text = ctl.ok("-s", servers.remote_address, "server", "info").stdout
    assert info["fingerprint"] in text


def test_events_and_sandbox(ctl: Ctl, servers) -> None:
    local = ("-s", "local")
    events = ctl.json(*local, "events", "--all-users", "--limit", "5")["events"]
    assert events and all("type" in e for e in events)
    started = ctl.ok(*local, "events", "-A", "--type", "launch").stdout
    assert "launch" in started

    ctl.ok(*local, "sandbox", "set", "--user", "jsbob", "--dir", "home=/tmp/%u,create",
           "--dir", "shared=/srv/shared,ro")
    mappings = ctl.json(*local, "sandbox", "ls")["sandbox_mappings"]
    assert "sandboxMappings/jsbob" in [m["name"] for m in mappings]
    assert "/srv/shared" in ctl.ok(*local, "sandbox", "ls").stdout
    ctl.ok(*local, "sandbox", "rm", "--user", "jsbob")

    ctl.login(servers.remote_address)  # jsalice is no superuser there
    assert ctl("sandbox", "ls").code == 3
    assert ctl("sandbox", "set", "--user", ALICE).code == 2  # --dir is required


def test_bandwidth(ctl: Ctl, servers) -> None:
    local = ("-s", "local")
    shown = ctl(*local, "-o", "json", "bandwidth", "show")
    if shown.code != 0:
        assert shown.one_error_line, shown
        if shown.json()["error"]["status"] in ("INTERNAL", "UNIMPLEMENTED"):
            pytest.skip("the server does not serve GetBandwidthLimits yet")
    assert shown.json()["bandwidth_limits"]["fixed"] is False
    changed = ctl.json(*local, "bandwidth", "set", "--incoming", "900M", "--borrow")
    assert changed["bandwidth_limits"]["incoming_bps"] == "900000000"
    ctl.ok(*local, "bandwidth", "set", "--incoming", "0", "--no-borrow")
    ctl.login(servers.remote_address)  # jsalice is no superuser there
    assert ctl("bandwidth", "set", "--outgoing", "1M").code == 3
