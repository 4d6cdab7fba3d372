"""jetstreamctl cp (push and pull of a tree) and the transfer controls, end to end.

Transfers cross the real data channel between two server processes on loopback. Files are
small (the data channel's pace on loopback is not what these tests are about) and the
controlled transfers are slowed down with --max-rate so they can be caught in flight.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import REPO, Ctl
from tests.transfers.helpers import tree_digest

pytestmark = pytest.mark.root


def make_tree(root: Path) -> Path:
    tree = root / "tree"
    (tree / "nested" / "deeper").mkdir(parents=True)
    (tree / "empty-dir").mkdir()
    for i in range(20):
        (tree / "nested" / f"f{i:02d}.bin").write_bytes(os.urandom(i * 1237 % 9000))
    (tree / "nested" / "deeper" / "big.bin").write_bytes(os.urandom(2 << 20))
    (tree / "empty.txt").write_bytes(b"")
    script = tree / "run.sh"
    script.write_bytes(b"#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    return tree


def ids(document: dict, key: str) -> list[str]:
    return [item["name"] for item in document[key]]


def test_push_a_tree_then_pull_it_back(tmp_path, ctl: Ctl, servers, alice_dir) -> None:
    remote = servers.remote_address
    tree = make_tree(tmp_path / "src")
    (tmp_path / "src" / "one.txt").write_text("one\n")
    ctl.login(remote)

    pushed = ctl("cp", str(tree), str(tmp_path / "src" / "one.txt"), f"{remote}:{alice_dir}/")
    assert pushed.code == 0, pushed
    assert "completed" in pushed.stdout and "completed" in pushed.stderr  # outcome + progress
    assert tree_digest(alice_dir / "tree") == tree_digest(tree)
    assert (alice_dir / "one.txt").read_text() == "one\n"
    assert (alice_dir / "tree" / "run.sh").stat().st_uid != 0  # written as jsalice

    # One source and a target that does not exist: the target is its new name (as scp does).
    renamed = ctl.json("cp", str(tmp_path / "src" / "one.txt"), f"{remote}:{alice_dir}/two.txt")
    assert renamed["transfer"]["state"] == "TRANSFER_STATE_COMPLETED"
    assert (alice_dir / "two.txt").read_text() == "one\n"

    # --flows spreads a push over that many flows; the server says how many it allows.
    big = tree / "nested" / "deeper" / "big.bin"
    spread = ctl.json("cp", "--flows", "2", str(big), f"{remote}:{alice_dir}/spread.bin")
    assert spread["transfer"]["state"] == "TRANSFER_STATE_COMPLETED"
    assert spread["transfer"]["flows"] == 2
    assert (alice_dir / "spread.bin").read_bytes() == big.read_bytes()
    too_many = ctl("cp", "--flows", "17", str(big), f"{remote}:{alice_dir}/no.bin")
    assert too_many.code == 1 and "flows: at most 16" in too_many.stderr, too_many
    # ... and the destination made by the first copy was reused.
    assert len(ctl.json("-s", "local", "destinations", "ls")["destinations"]) == 1

    # Pull: the local server fetches from the remote one (a native PULL transfer).
    back = tmp_path / "back"
    pulled = ctl.json("cp", f"{remote}:{alice_dir}/tree", f"{remote}:{alice_dir}/one.txt",
                      str(back))
    assert pulled["transfer"]["state"] == "TRANSFER_STATE_COMPLETED"
    progress = pulled["transfer"]["progress"]
    assert progress["files_done"] == progress["files_total"] != "0"
    assert tree_digest(back / "tree") == tree_digest(tree)
    assert (back / "one.txt").read_text() == "one\n"
    # Its one-off destination (on the remote) and token (on the local server) are gone.
    assert ctl.json("destinations", "ls")["destinations"] == []
    tokens = ctl.json("-s", "local", "tokens", "ls")["api_tokens"]
    assert not [t for t in tokens if "pull" in t["description"]]

    # Manifests of the copies can be inspected on the sending server.
    manifests = ctl.json("-s", "local", "manifests", "ls")["manifests"]
    assert manifests
    name = manifests[-1]["name"].split("/")[1]
    shown = ctl.json("-s", "local", "manifests", "show", name)
    assert shown["manifest"]["state"] == "MANIFEST_STATE_COMPLETE"
    files = ctl.json("-s", "local", "manifests", "files", name)["files"]
    assert "tree/nested/deeper/big.bin" in [f["destination_path"] for f in files]
    assert "big.bin" in ctl.ok("-s", "local", "manifests", "files", name).stdout


def test_missing_sources_and_not_logged_in(tmp_path, ctl: Ctl, servers, alice_dir) -> None:
    remote = servers.remote_address
    not_logged_in = ctl("cp", str(tmp_path), f"{remote}:{alice_dir}/")
    assert not_logged_in.code == 3 and "jetstreamctl login" in not_logged_in.stderr
    ctl.login(remote)
    missing = ctl("cp", str(tmp_path / "nothing-here"), f"{remote}:{alice_dir}/")
    assert missing.code == 4, missing
    assert ctl("cp", f"{remote}:{alice_dir}/nothing-here", str(tmp_path)).code == 4
    both_local = ctl("cp", str(tmp_path), str(tmp_path / "x"))
    assert both_local.code == 2


def start_slow(ctl: Ctl, tmp_path: Path, remote: str, target: Path) -> str:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 << 20))
    started = ctl.json("cp", "--detach", "--max-rate", "1M", str(big), f"{remote}:{target}/")
    assert started["transfer"]["state"] == "TRANSFER_STATE_QUEUED"
    assert started["server"] == "local"
    return str(started["transfer"]["name"]).split("/")[1]


def test_detach_pause_resume_priority_rate_watch(tmp_path, ctl: Ctl, servers,
                                                 alice_dir) -> None:
    ctl.login(servers.remote_address)
    tid = start_slow(ctl, tmp_path, servers.remote_address, alice_dir)
    local = ("-s", "local")

    paused = ctl.json(*local, "transfers", "pause", tid)
    assert paused["transfer"]["state"] == "TRANSFER_STATE_PAUSED"
    assert "paused" in ctl.ok(*local, "transfers", "show", tid).stdout
    assert ctl.json(*local, "transfers", "priority", tid, "5")["transfer"]["priority"] == 5
    rate = ctl.json(*local, "transfers", "rate", tid, "--max", "0", "--policy", "fair")
    assert rate["transfer"]["rate_limit"]["max_bps"] == "0"
    resumed = ctl.json(*local, "transfers", "resume", tid)
    assert resumed["transfer"]["state"] in ("TRANSFER_STATE_QUEUED", "TRANSFER_STATE_RUNNING")

    watched = ctl(*local, "transfers", "watch", tid)
    assert watched.code == 0, watched
    assert "completed" in watched.stdout
    assert (alice_dir / "big.bin").read_bytes() == (tmp_path / "big.bin").read_bytes()

    listed = ctl.json(*local, "transfers", "ls", "--state", "completed")
    assert f"transfers/{tid}" in ids(listed, "transfers")
    shown = ctl(*local, "-o", "json", "transfers", "show", tid, "--files")
    if shown.code == 0:
        assert [f["path"] for f in shown.json()["files"]] == ["big.bin"]
    else:  # ListTransferFiles is not built on the server yet: still one clean error line
        assert shown.one_error_line, shown
    assert tid in ctl.ok(*local, "transfers", "ls").stdout

    ctl.ok(*local, "transfers", "rm", tid)
    gone = ctl(*local, "transfers", "show", tid)
    assert gone.code == 4, gone
    assert gone.one_error_line


def test_cancel_then_watch_exits_5(tmp_path, ctl: Ctl, servers, alice_dir) -> None:
    ctl.login(servers.remote_address)
    tid = start_slow(ctl, tmp_path, servers.remote_address, alice_dir)
    cancelled = ctl.json("-s", "local", "transfers", "cancel", tid)
    assert cancelled["transfer"]["state"] == "TRANSFER_STATE_CANCELLED"
    watched = ctl("-s", "local", "-o", "json", "transfers", "watch", tid)
    assert watched.code == 5, watched
    assert watched.json()["transfer"]["state"] == "TRANSFER_STATE_CANCELLED"
    again = ctl("-s", "local", "transfers", "resume", tid)
    assert again.code == 1, again  # FAILED_PRECONDITION: a cancelled transfer stays cancelled
    assert ctl("-s", "local", "transfers", "cancel", "no-such-transfer").code == 4


def test_ctrl_c_stops_following_not_the_transfer(tmp_path, ctl: Ctl, servers, alice_dir) -> None:
    ctl.login(servers.remote_address)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 << 20))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jetstream.cli.ctl", "cp", "--max-rate", "1M", str(big),
         f"{servers.remote_address}:{alice_dir}/"],
        cwd=REPO, env=ctl.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    first = proc.stderr.readline()  # "transfers/ID on local: ..." once the transfer exists
    assert first.startswith("transfers/"), first
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "keeps running on local" in err
    tid = first.split()[0].split("/")[1]
    state = ctl.json("-s", "local", "transfers", "show", tid)["transfer"]["state"]
    assert state in ("TRANSFER_STATE_QUEUED", "TRANSFER_STATE_RUNNING")
    ctl.ok("-s", "local", "transfers", "cancel", tid)
