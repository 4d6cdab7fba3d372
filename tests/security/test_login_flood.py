"""A login flood from 50 addresses at a real server across a network namespace: the throttle
holds, every failure looks the same, and a legitimate user still logs in in normal time
(root: namespaces, real PAM users)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.netns import namespace_pair
from tests.support.servers import ServerProcess, free_port_args
from tests.system.users import ALICE, PASSWORDS, require_root

REPO = Path(__file__).resolve().parents[2]
SUBNET = "10.80.1.0/24"
FLOOD_ADDRESSES = 50
SOURCE_LIMIT = 20
"""LoginThrottle's default per-address limit; backoff then admits one more per window."""


def test_a_login_flood_from_many_addresses(tmp_path):
    require_root(users=True)
    with namespace_pair("jsf", SUBNET, client_addresses=FLOOD_ADDRESSES + 1) as net:
        server = ServerProcess(tmp_path / "state",
                               [*free_port_args(), "--api-allow-remote-control"],
                               tmp_path / "server.log", wrapper=net.run_in(net.server_ns))
        server.start()
        try:
            plan = {"server": net.server_ip, "port": server.api_port, "user": ALICE,
                    "legit_address": net.client_ips[0],
                    "flood_addresses": list(net.client_ips[1:]),
                    "seconds": 12.0, "rate": 10.0, "settle": 2.0, "samples": 8, "gap": 0.4}
            done = subprocess.run(
                net.run_in(net.client_ns, sys.executable, "-m", "tests.security.flood_client",
                           json.dumps(plan)),
                cwd=REPO, capture_output=True, text=True, timeout=180,
                env={**os.environ, "PYTHONPATH": str(REPO), "FLOOD_PASSWORD": PASSWORDS[ALICE]})
        finally:
            server.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    print(json.dumps(report, indent=1))  # the figures, for the closing note (pytest -s)

    assert report["addresses"] == FLOOD_ADDRESSES
    assert report["attempts"] >= FLOOD_ADDRESSES * 20
    shapes = {re.sub(r"\d+", "N", outcome) for outcome, _count in report["outcomes"]}
    assert shapes == {"UNAUTHENTICATED: invalid username or password",
                      "RESOURCE_EXHAUSTED: too many failed logins; try again in N s"}, shapes
    # The throttle holds: no address reached PAM more than its limit and the backoff allow.
    assert report["reached_pam_max_per_address"] <= SOURCE_LIMIT + 2, report
    baseline, during = report["baseline_median"], report["during_median"]
    assert during <= max(3 * baseline, baseline + 0.25), report
    assert max(report["during_seconds"]) <= baseline + 1.0, report
