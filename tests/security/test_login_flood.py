"""A login flood from 50 addresses at a real server across a network namespace: the throttle
holds, every failure looks the same, and a legitimate user still logs in in normal time
(root: namespaces, real PAM users)."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
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
        plan = {"server": net.server_ip, "port": server.api_port, "user": ALICE,
                "legit_address": net.client_ips[0],
                "flood_addresses": list(net.client_ips[1:]),
                "seconds": 12.0, "rate": 10.0, "samples": 8, "gap": 0.4}

        def client(mode: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                net.run_in(net.client_ns, sys.executable, "-m", "tests.security.flood_client",
                           mode, json.dumps(plan)),
                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "PYTHONPATH": str(REPO),
                     "FLOOD_PASSWORD": PASSWORDS[ALICE]})

        def result(proc: subprocess.Popen[str]) -> dict:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err[-3000:]
            return json.loads(out)

        try:
            baseline = result(client("legit"))["seconds"]
            flooding = client("flood")
            time.sleep(2.0)  # the flood's first wave has reached the server
            during = result(client("legit"))["seconds"]
            report = result(flooding)
        finally:
            server.stop()
    report |= {"baseline_seconds": baseline, "during_seconds": during}
    print(json.dumps(report, indent=1))  # the figures, for the closing note (pytest -s)

    assert report["addresses"] == FLOOD_ADDRESSES
    assert report["attempts"] >= FLOOD_ADDRESSES * 20
    shapes = {re.sub(r"\d+", "N", outcome) for outcome, _count in report["outcomes"]}
    assert shapes == {"UNAUTHENTICATED: invalid username or password",
                      "RESOURCE_EXHAUSTED: too many failed logins; try again in N s"}, shapes
    # The throttle holds: no address reached PAM more than its limit and the backoff allow.
    assert report["reached_pam_max_per_address"] <= SOURCE_LIMIT + 2, report
    normal = statistics.median(baseline)
    assert statistics.median(during) <= max(3 * normal, normal + 0.25), report
    assert max(during) <= normal + 2.0, report
