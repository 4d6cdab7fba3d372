"""jetstreamctl contexts: many servers from one CLI (list, switch, run on all), against the
two real servers of the module (local over its socket, remote logged in as jsalice)."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Ctl
from tests.system.users import ALICE

pytestmark = pytest.mark.root


def test_list_switch_and_run_across_servers(ctl: Ctl, servers) -> None:
    remote = servers.remote_address
    ctl.login(remote)
    listed = ctl.json("context", "ls")
    assert [c["name"] for c in listed["contexts"]] == ["local", remote]
    assert listed["current"] == remote and [c["current"] for c in listed["contexts"]] == [
        False, True]

    assert ctl.json("context", "use", "local")["current"] == "local"
    assert ctl.json("whoami")["principal"]["username"] == "root"
    assert ctl.json("context", "ls")["current"] == "local"

    everywhere = ctl.ok("-o", "json", "context", "run", "whoami").json()["results"]
    assert [(r["server"], r["exit_code"], r["result"]["principal"]["username"])
            for r in everywhere] == [("local", 0, "root"), (remote, 0, ALICE)]
    human = ctl.ok("context", "run", "-c", remote, "transfers", "ls")
    assert human.stdout.startswith(f"== {remote}\n")


def test_one_server_down_is_reported_and_fails_the_run(ctl: Ctl, servers, tmp_path) -> None:
    remote = servers.remote_address
    ctl.login(remote)
    unknown = ctl("context", "use", "127.0.0.1:1")
    assert unknown.code == 4 and "jetstreamctl login 127.0.0.1:1" in unknown.stderr
    gone = Ctl(tmp_path / "other", tmp_path / "no-such.sock")  # no local server there
    gone.config.mkdir(parents=True)
    for name in ("credentials.json", "known_hosts"):
        (gone.config / "jetstream").mkdir(exist_ok=True)
        (gone.config / "jetstream" / name).write_bytes(
            (ctl.config / "jetstream" / name).read_bytes())
    servers.remote.stop()
    try:
        run = gone("-o", "json", "context", "run", "whoami")
    finally:
        servers.remote.start()
    assert run.code == 1, run
    [only] = run.json()["results"]
    assert only["server"] == remote and only["exit_code"] == 6
    assert f"failed on 1 of 1 server(s): {remote}" in run.stderr
