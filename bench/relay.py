"""Goodput through a relay as a share of the direct path, on one emulated link, in one run.

    sudo flock /run/jetstream-tests.lock .venv/bin/python -m bench.relay --profile b --size 1G

Three namespaces: the sender outside (A), the relay in a DMZ (B), the receiver inside (C).
A and B are the two ends of a bench.linkemu link with the profile; B and C share a LAN
(a veth pair). The same two servers make both copies, one after the other:

    A: jetstream server ──emulated WAN── B: relay_server ──LAN── C: jetstream server
       (sender)                             (kernel routes A<->C      (receives through the
                                             for the direct path)      relay, API open too)

* direct: A pushes to C's own address; B's kernel forwards the packets (no relay involved);
* relay:  A pushes to the relay's public port in B; C's API is reached through the relay's
  tunnel and the data through its datagram forwarding.

C tells a caller that came through the relay to send data to the relay, and a caller that
came directly to send it to C, so one receiver serves both. Goodput is file payload over the
wall time of the copy (CreateManifest to COMPLETED, as in bench.run); every copy is checked
with BLAKE3. CPU is utime + stime per process tree over the copy, per GiB delivered.
Results: bench/results/relay-<UTC time>/ (results.json, table.md; logs/ is git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import datasets
from bench.linkemu import Link
from bench.linkemu.link import netns_socket
from bench.prereqs import bench_user
from bench.procs import Daemon, TreeMonitor
from bench.profiles import Workload, fmt_bytes, parse_profile, parse_size
from bench.tools.common import ROOT, BenchUser
from jetstream.tls import load_tls_identity

PREFIX = "jsrl-b-"
SUBNET = os.environ.get("LINKEMU_SUBNET", "10.79.20.0/24")
LAN = "10.79.9.0/24"
LAN_DMZ, LAN_INSIDE = "10.79.9.1", "10.79.9.2"
PORT = 8886
RELAY_METRICS = 9887
READY = re.compile(r"ready: api \S+:(\d+), data udp")
RELAY_READY = re.compile(r"relay ready: .* fingerprint SHA256:([0-9a-f]{64})")


@dataclass
class Copy:
    path: str
    run: int
    ok: bool = False
    error: str = ""
    wall_s: float = 0.0
    payload_bytes: int = 0
    goodput_mbps: float = 0.0
    integrity: str = ""
    cpu_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    relay_drops: dict[str, float] = field(default_factory=dict)


def _ip(*argv: str, check: bool = True) -> None:
    result = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {result.stderr.strip()}")


@contextlib.contextmanager
def site(profile: str) -> Iterator[Link]:
    """The emulated link A<->B plus the LAN B<->C; torn down on exit, also on failure."""
    prof = parse_profile(profile)
    assert prof.rate is not None, "the relay benchmark needs an emulated link, not loopback"
    inside = f"{PREFIX}c"
    _ip("route", "replace", "blackhole", LAN)  # safety first, like linkemu's own subnet
    _ip("netns", "del", inside, check=False)
    link = Link(rate=prof.rate, rtt=prof.rtt, loss=prof.loss, prefix=PREFIX, subnet=SUBNET)
    try:
        with link:
            _ip("netns", "add", inside)
            _ip("-n", inside, "link", "set", "lo", "up")
            _ip("link", "add", "rl0", "netns", link.ns_b, "type", "veth", "peer", "name", "rl1",
                "netns", inside)
            for ns, dev, addr in ((link.ns_b, "rl0", LAN_DMZ), (inside, "rl1", LAN_INSIDE)):
                _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
            # The direct path: A reaches C through B's kernel, over the same emulated link.
            _ip("-n", link.ns_a, "route", "add", LAN, "dev", "emu0")
            _ip("-n", inside, "route", "add", SUBNET, "via", LAN_DMZ)
            subprocess.run(["ip", "netns", "exec", link.ns_b, "sysctl", "-qw",
                            "net.ipv4.ip_forward=1"], check=True, capture_output=True)
            yield link
    finally:
        pids = subprocess.run(["ip", "netns", "pids", inside], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        _ip("netns", "del", inside, check=False)
        _ip("route", "del", "blackhole", LAN, check=False)


def _wait(daemon: Daemon, pattern: re.Pattern[str], timeout: float = 60) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.search(daemon.log_tail(200_000))
        if found:
            return found
        if not daemon.alive():
            raise RuntimeError(f"{daemon.name} exited: {daemon.log_tail(800)}")
        time.sleep(0.1)
    raise RuntimeError(f"{daemon.name}: not ready after {timeout:g} s: {daemon.log_tail(800)}")


def _server(name: str, ns: str, logs: Path, *extra: str) -> Daemon:
    state = logs / f"{name}-state"
    argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "jetstream", "server",
            "--persistent-state-dir", str(state), "--trigger-dir", str(logs / f"{name}-trig"),
            "--api-port", str(PORT), "--recv-port", str(PORT), "--api-allow-remote-control",
            "--disable-telemetry", "--api-socket", "", "--server-name", f"bench-{name}", *extra]
    return Daemon(f"jetstream server {name}", argv, logs / f"{name}.log").start()


def _scrape_drops(ns: str) -> dict[str, float]:
    with netns_socket(ns, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(("127.0.0.1", RELAY_METRICS))
        sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        text = b"".join(iter(lambda: sock.recv(65536), b"")).decode(errors="replace")
    found = re.findall(r'jetstream_relay_dropped_datagrams_total\{reason="(\w+)"\} (\S+)', text)
    return {reason: float(value) for reason, value in found}


def copy(args: argparse.Namespace, link: Link, user: BenchUser, ds: datasets.Dataset,
         data: Path, logs: Path, procs: dict[str, Daemon], path: str, run: int) -> Copy:
    result = Copy(path, run)
    host = LAN_INSIDE if path == "direct" else link.addr_b
    dst = datasets.fresh_dir(data / "dst" / path, (user.uid, user.gid))
    out = logs / f"client-{path}-{run}.json"
    argv = ["ip", "netns", "exec", link.ns_a, sys.executable, "-m", "bench.jsclient",
            "--api", f"127.0.0.1:{PORT}", "--user", user.name, "--dest-host", host,
            "--dest-api-port", str(PORT), "--source", str(ds.item), "--dest-path", str(dst),
            "--timeout", str(args.timeout), "--out", str(out)]
    env = {**os.environ, "BENCH_JS_PASSWORD": user.password, "PYTHONPATH": str(ROOT)}
    drops_before = _scrape_drops(link.ns_b)
    monitors = {name: TreeMonitor([d.pid]).start() for name, d in procs.items()}
    try:
        with (logs / f"client-{path}-{run}.log").open("wb") as log:
            subprocess.run(argv, stdout=log, stderr=log, env=env, cwd=ROOT,
                           timeout=args.timeout + 90)
    finally:
        for name, monitor in monitors.items():
            cpu, rss = monitor.stop()
            result.cpu_s[name] = round(cpu, 2)
            result.peak_rss_mib[name] = round(rss / 1024, 1)
    after = _scrape_drops(link.ns_b)
    result.relay_drops = {k: v - drops_before.get(k, 0) for k, v in after.items() if v}
    try:
        answer = json.loads(out.read_text())
    except (OSError, ValueError) as exc:
        result.error = f"client: {exc}"
        return result
    integrity = datasets.verify(dst, ds)
    result.integrity = integrity.describe()
    result.ok = bool(answer.get("ok")) and integrity.ok
    result.error = "" if answer.get("ok") else f"{answer.get('stage')}: {answer.get('error')}"
    result.wall_s = float(answer.get("wall_s") or 0)
    result.payload_bytes = ds.total_bytes if result.ok else 0
    if result.ok and result.wall_s:
        result.goodput_mbps = round(ds.total_bytes * 8 / result.wall_s / 1e6, 1)
    shutil.rmtree(dst, ignore_errors=True)
    return result


def table(copies: list[Copy], gib: float, profile: str) -> str:
    direct = [c.goodput_mbps for c in copies if c.path == "direct" and c.ok]
    best_direct = max(direct) if direct else 0.0
    lines = [
        f"| path (profile {profile}) | goodput Mbit/s | share of direct | relay CPU s/GiB | "
        "receiver CPU s/GiB | sender CPU s/GiB | relay peak RSS MiB | relay drops | integrity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in copies:
        share = f"{c.goodput_mbps / best_direct:.1%}" if best_direct and c.ok else "–"
        relay = f"{c.cpu_s['relay'] / gib:.2f}" if c.path == "relay" else "–"
        drops = ", ".join(f"{k} {v:.0f}" for k, v in c.relay_drops.items()) or "0"
        lines.append(
            f"| {c.path} (run {c.run + 1}) | {c.goodput_mbps if c.ok else 'failed: ' + c.error}"
            f" | {share} | {relay} | {c.cpu_s['receiver'] / gib:.2f} | "
            f"{c.cpu_s['sender'] / gib:.2f} | {c.peak_rss_mib['relay']:.0f} | {drops} | "
            f"{c.integrity} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="b", help="link profile (bench/profiles.py)")
    parser.add_argument("--size", default="1G", help="the file to copy (binary units)")
    parser.add_argument("--runs", type=int, default=1, help="copies per path (alternating)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per copy")
    parser.add_argument("--data-dir", default="/dev/shm/jetstream-bench",
                        help="where the file and its copies live (tmpfs by default)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (namespaces, the emulated link, PAM logins)")
    size = parse_size(args.size)
    load = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_dir = ROOT / "bench" / "results" / f"relay-{stamp}"
    logs = out_dir / "logs"
    logs.mkdir(parents=True)
    data = Path(args.data_dir) / f"relay-{os.getpid()}"
    data.mkdir(parents=True, mode=0o755)
    for d in (data.parent, data):
        os.chmod(d, 0o755)
    user = bench_user()
    print(f"making {fmt_bytes(size)} of test data in {data}", flush=True)
    ds = datasets.make(data, Workload("big", 1, size))
    copies: list[Copy] = []
    procs: dict[str, Daemon] = {}
    try:
        with site(args.profile) as link:
            state = logs / "receiver-state"
            state.mkdir(mode=0o700)
            pin = load_tls_identity(state, None, None).fingerprint.hex()  # the relay trusts it
            procs["relay"] = Daemon("relay", [
                "ip", "netns", "exec", link.ns_b, sys.executable, "-m", "jetstream",
                "relay_server", "--persistent-state-dir", str(logs / "relay-state"),
                "--host", link.addr_b, "--control-host", LAN_DMZ, "--recv-port", str(PORT),
                "--trust-server", pin, "--metrics-port", str(RELAY_METRICS)],
                logs / "relay.log").start()
            relay_pin = _wait(procs["relay"], RELAY_READY)[1]
            procs["receiver"] = _server("receiver", f"{PREFIX}c", logs, "--recv-relay-host",
                                        LAN_DMZ, "--recv-relay-fingerprint", relay_pin,
                                        "--recv-relay-public-port", str(PORT))
            procs["sender"] = _server("sender", link.ns_a, logs)
            for name in ("receiver", "sender"):
                _wait(procs[name], READY)
            _wait(procs["receiver"], re.compile("registered at relay"))
            for run in range(args.runs):
                order = ("direct", "relay") if run % 2 == 0 else ("relay", "direct")
                for path in order:
                    print(f"run {run + 1}: {path} ...", flush=True)
                    copies.append(copy(args, link, user, ds, data, logs, procs, path, run))
                    print(f"  {copies[-1].goodput_mbps} Mbit/s {copies[-1].error}", flush=True)
    finally:
        for daemon in procs.values():
            daemon.stop(grace=10)
        shutil.rmtree(data, ignore_errors=True)
    prof = parse_profile(args.profile)
    text = (f"jetstream through a relay vs. direct, {fmt_bytes(size)} file, profile "
            f"{prof.key}: {prof.describe()}; load average at the start {load:.1f}\n\n"
            + table(copies, size / (1 << 30), prof.key))
    relay = [c.goodput_mbps for c in copies if c.path == "relay" and c.ok]
    direct = [c.goodput_mbps for c in copies if c.path == "direct" and c.ok]
    if relay and direct:
        share = (sum(relay) / len(relay)) / (sum(direct) / len(direct))
        text += f"\n\nmean goodput through the relay: {share:.1%} of the direct path's"
    (out_dir / "table.md").write_text(text + "\n")
    (out_dir / "results.json").write_text(json.dumps(
        {"command": " ".join(sys.argv), "profile": asdict(prof), "size": size, "load": load,
         "copies": [asdict(c) for c in copies]}, indent=2))
    print(text)
    print(f"\nresults: {out_dir}")
    return 0 if copies and all(c.ok for c in copies) else 1


if __name__ == "__main__":
    sys.exit(main())
