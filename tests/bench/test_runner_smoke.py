"""Smoke run of the side-by-side benchmark runner (bench/run.py), so it cannot rot.

One tiny run: a 1 MiB file over a 50 Mbit/s, 10 ms link, jetstream and scp only, no installs.
It checks the harness end to end (link, sshd in the namespace, both jetstream servers, the
API client, measurement, integrity, results.json, table.md, both charts), not performance.

Needs root, /dev/net/tun, sshd/scp and matplotlib; skips without them, except under
CI=true, where a missing prerequisite is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREFIX = f"jsbs{os.getpid() % 100000}-"


def _missing() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root (namespaces, TUN devices, a system user)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    for tool in ("ip", "ss", "scp", "ssh-keygen", os.environ.get("CC", "cc")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.path.exists("/usr/sbin/sshd"):
        return "sshd is not installed (apt-get install openssh-server)"
    if not os.path.exists("/usr/bin/time"):
        return "GNU time is not installed (apt-get install time)"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib is not installed"
    return None


@pytest.fixture
def prerequisites() -> None:
    why = _missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the benchmark smoke run cannot run: {why}")
        pytest.skip(why)


@pytest.mark.root
@pytest.mark.timeout(120)
def test_smoke_run(prerequisites: None, tmp_path: Path) -> None:
    out = tmp_path / "results"
    data = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/var/tmp")
    argv = [
        sys.executable,
        "-m",
        "bench.run",
        "--profiles",
        "smoke",
        "--workloads",
        "big",
        "--size",
        "1M",
        "--tools",
        "jetstream,scp",
        "--no-install",
        "--min-timeout",
        "30",
        "--out",
        str(out),
        "--prefix",
        PREFIX,
        "--data-dir",
        str(data / f"jetstream-bench-smoke-{os.getpid()}"),
    ]
    try:
        p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=100)
    finally:
        shutil.rmtree(data / f"jetstream-bench-smoke-{os.getpid()}", ignore_errors=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    runs = list(out.iterdir())
    assert len(runs) == 1
    run = runs[0]
    for name in ("results.json", "table.md", "goodput.png", "jetstream_timeline.png"):
        assert (run / name).stat().st_size > 0, name
    results = json.loads((run / "results.json").read_text())["results"]
    by_tool = {r["tool"]: r for r in results}
    assert set(by_tool) == {"jetstream", "scp"}, by_tool

    scp = by_tool["scp"]
    assert scp["status"] == "ok", scp
    assert scp["integrity_ok"] is True and scp["integrity"] == "ok 1/1"
    assert scp["payload_bytes"] == 1 << 20
    assert 0 < scp["goodput_bps"] < 50e6  # cannot beat the link
    assert scp["cpu_sender_s"] > 0 and scp["rss_sender_kib"] > 0
    assert scp["wire_ab_bytes"] >= 1 << 20  # the bytes crossed the emulated link

    # jetstream: a real transfer through the API, verified, with its progress timeline.
    js = by_tool["jetstream"]
    assert js["status"] == "ok", js
    assert js["integrity_ok"] is True and 0 < js["goodput_bps"] < 50e6
    assert js["extra"]["timeline"], "WatchTransfer progress was recorded"

    table = (run / "table.md").read_text()
    assert "| jetstream" in table and "| scp (" in table
    assert "(smoke) 50 Mbit/s, RTT 10 ms, loss 0 %" in table

    # nothing left behind: namespaces and the servers the runner started are gone
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert PREFIX not in netns
    leftovers = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if str(out).encode() in cmdline:
                leftovers.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    assert not leftovers, leftovers
