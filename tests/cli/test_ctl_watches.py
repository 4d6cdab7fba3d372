"""jetstreamctl triggers and watches (watch) against real server processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.cli.conftest import Ctl
from tests.system.users import ALICE
from tests.transfers.helpers import owned_dir, remove
from tests.triggers.helpers import install, make_trigger_dir, recorder

pytestmark = pytest.mark.root


def wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_triggers_and_watches(ctl: Ctl, servers, alice_dir: Path, tmp_path: Path) -> None:
    local = ("-s", "local")
    trig = make_trigger_dir(servers.local.state_dir / "triggers")
    recorder(trig / "send.destinationCreated", tmp_path / "out")
    unsafe = install(trig / "send.destinationDeleted", "#!/bin/sh\n", mode=0o777)
    install(trig / "send.transferComplet", "#!/bin/sh\n")  # misspelt
    time.sleep(0.5)  # the server reads the directory again by itself

    ctl.login(servers.remote_address)
    here = f"127.0.0.1:{servers.local.api_port}"
    ctl.login(here)  # files are read and deleted as the watch's owner, alice
    alice = ("-s", here)
    ctl.ok(*alice, "destinations", "add", servers.remote_address, "--name", "hot-dest")
    wait(lambda: any((tmp_path / "out").glob("*.json")))
    wait(lambda: "exited 0" in str(ctl.json(*local, "triggers", "ls")))
    listed = ctl.json(*local, "triggers", "ls")
    by_event = {t["event"]: t for t in listed["triggers"]}
    assert listed["directory"] == str(trig)
    assert by_event["send.destinationCreated"]["last_run"]["outcome"] == \
        "TRIGGER_OUTCOME_COMPLETED"
    assert not by_event["send.destinationDeleted"]["runnable"]
    assert "chmod go-w" in by_event["send.destinationDeleted"]["problem"]
    assert not by_event["send.transferComplet"]["known_event"]
    text = ctl.ok(*local, "triggers", "ls").stdout
    assert "refused" in text and "(unknown event)" in text and str(unsafe) in text

    target = owned_dir(ALICE, "js-ctl-watch-")
    try:
        made = ctl.json(*alice, "watches", "add", str(alice_dir), "hot-dest", "--to",
                        str(target), "--settle", "0.3", "--after", "delete", "--exclude", ".*",
                        "--name", "hot")["watch"]
        assert made["name"] == "watches/hot" and made["state"] == "WATCH_STATE_ACTIVE"
        (alice_dir / "report.txt").write_text("quarterly\n")
        wait(lambda: (target / "report.txt").exists() and not
             (alice_dir / "report.txt").exists())
        assert (target / "report.txt").read_text() == "quarterly\n"
        wait(lambda: ctl.json(*alice, "watches", "show", "hot")["watch"]["stats"]
             ["files_delivered"] == "1")
        assert "hot" in ctl.ok(*alice, "watch", "ls").stdout  # the product's name for it
        assert "hot" in ctl.ok(*local, "watches", "ls", "-A").stdout
        shown = ctl.ok(*alice, "watches", "show", "hot").stdout
        assert "delete" in shown and "1 files" in shown and "transfers/" in shown

        missing = ctl(*alice, "watches", "add", str(alice_dir / "nope"), "hot-dest")
        assert missing.code == 4 and missing.one_error_line, missing
        usage = ctl(*alice, "watches", "add", str(alice_dir), "hot-dest", "--after", "move")
        assert usage.code == 2 and usage.one_error_line, usage
        ctl.ok(*alice, "watches", "rm", "hot")
        assert ctl(*alice, "watches", "show", "hot").code == 4
    finally:
        remove(target)
        ctl(*alice, "destinations", "rm", "hot-dest", "--force")
