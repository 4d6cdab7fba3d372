"""The systemd units of deploy/systemd/: valid for systemd (systemd-analyze verify), and
their hardening still lets the server work as it must: as root with only the unit's
capability bounding set and no new privileges (setpriv applies the same restrictions
here, where systemd is not PID 1), a PAM login works and a local user's copy is written
as that user."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import Ctl
from tests.cli.test_ctl_local_copy import as_alice
from tests.support.servers import ServerProcess, free_port_args
from tests.system.users import ALICE, require_root
from tests.transfers.helpers import owned_dir, remove

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "deploy" / "systemd").glob("*.service"))
JETSTREAM = Path(sys.executable).with_name("jetstream")
CAP_NUMBERS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
               "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_NET_BIND_SERVICE": 10,
               "CAP_NET_ADMIN": 12, "CAP_AUDIT_WRITE": 29}  # linux/capability.h


def unit_settings(unit: Path) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(.*)$", unit.read_text(), re.M))


def test_both_units_exist_and_systemd_accepts_every_line(tmp_path):
    assert [u.name for u in UNITS] == ["jetstream-relay.service", "jetstream-server.service"]
    for unit in UNITS:
        # The units name the installed command; here it is the venv's.
        text = unit.read_text().replace("/usr/local/bin/jetstream", str(JETSTREAM))
        (tmp_path / unit.name).write_text(text)
    checked = subprocess.run(["systemd-analyze", "verify", *sorted(map(str, tmp_path.iterdir()))],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr


def test_units_wait_for_readiness_and_are_hardened():
    server = unit_settings(REPO / "deploy" / "systemd" / "jetstream-server.service")
    assert server["Type"] == "notify" and server["ExecStart"] == "/usr/local/bin/jetstream server"
    assert server["RestartPreventExitStatus"] == "2"
    assert server["NoNewPrivileges"] == "yes" and server["ProtectSystem"] == "full"
    relay = unit_settings(REPO / "deploy" / "systemd" / "jetstream-relay.service")
    assert relay["ExecStart"].startswith("/usr/local/bin/jetstream relay_server --control-port")
    assert relay["Type"] == "notify"  # the relay says READY=1 once its ports are open
    assert "--persistent-state-dir /var/lib/jetstream-relay" in relay["ExecStart"]
    assert relay["DynamicUser"] == "yes" and relay["CapabilityBoundingSet"] == ""


@pytest.mark.root
def test_server_under_the_units_restrictions_still_serves_users(tmp_path):
    require_root(users=True)
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed")
    caps = unit_settings(REPO / "deploy" / "systemd" / "jetstream-server.service")[
        "CapabilityBoundingSet"].split()
    bounding = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])
    base = owned_dir(ALICE, "js-unit-")
    os.chown(base, 0, 0)
    args = free_port_args()
    args[args.index("--api-socket") + 1] = str(base / "api.sock")
    server = ServerProcess(base / "state", args, tmp_path / "server.log",
                           wrapper=["setpriv", "--bounding-set", bounding, "--inh-caps", "-all",
                                    "--no-new-privs", "--"])
    home, files = owned_dir(ALICE, "js-unit-home-"), owned_dir(ALICE, "js-unit-files-")
    try:
        server.start()
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
        bounded = int(re.search(r"^CapBnd:\s+([0-9a-f]+)$", status, re.M)[1], 16)
        assert bounded == sum(1 << CAP_NUMBERS[c] for c in caps)
        Ctl(tmp_path, None).login(f"127.0.0.1:{server.api_port}")  # PAM, as in production
        (files / "a.bin").write_bytes(os.urandom(100_000))
        os.chown(files / "a.bin", files.stat().st_uid, files.stat().st_gid)
        copied = as_alice(home, base / "api.sock", "cp", str(files / "a.bin"),
                          f"local:{files}/in/")
        assert copied.code == 0, copied
        assert (files / "in" / "a.bin").read_bytes() == (files / "a.bin").read_bytes()
        assert (files / "in" / "a.bin").stat().st_uid == files.stat().st_uid
    finally:
        server.stop()
        for path in (base, home, files):
            remove(path)
