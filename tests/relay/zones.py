"""Three network namespaces as a site with a DMZ: outside, dmz and inside.

    jsrl-out: out0 10.79.1.1 ──veth── dmz0 10.79.1.2 :jsrl-dmz
    jsrl-dmz: dmz1 10.79.2.1 ──veth── in0  10.79.2.2 :jsrl-in

There is no route from outside to inside (nor back): the dmz namespace does not forward,
and neither end has a route to the other's subnet. The root namespace gets blackhole routes
for both subnets before anything else, so a command aimed there by mistake fails locally.
Everything (processes in the namespaces, the namespaces, the routes) is removed on exit,
also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bench.linkemu.link import netns_socket

OUTSIDE, DMZ, INSIDE = "jsrl-out", "jsrl-dmz", "jsrl-in"
SUBNETS = ("10.79.1.0/24", "10.79.2.0/24")


@dataclass(frozen=True)
class Zones:
    outside: str = OUTSIDE
    dmz: str = DMZ
    inside: str = INSIDE
    outside_ip: str = "10.79.1.1"
    dmz_public_ip: str = "10.79.1.2"
    dmz_inner_ip: str = "10.79.2.1"
    inside_ip: str = "10.79.2.2"

    def wrap(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def run(self, ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.wrap(ns), *argv], capture_output=True, text=True,
                              timeout=30)


def _ip(*argv: str, check: bool = True) -> None:
    result = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {result.stderr.strip()}")


def _remove() -> None:
    for ns in (OUTSIDE, DMZ, INSIDE):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        _ip("netns", "del", ns, check=False)


@contextlib.contextmanager
def zones() -> Iterator[Zones]:
    for subnet in SUBNETS:  # safety first
        _ip("route", "replace", "blackhole", subnet)
    _remove()  # leftovers of a run that was killed
    z = Zones()
    try:
        for ns in (OUTSIDE, DMZ, INSIDE):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            z.run(ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
            z.run(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        _ip("link", "add", "out0", "netns", OUTSIDE, "type", "veth", "peer", "name", "dmz0",
            "netns", DMZ)
        _ip("link", "add", "dmz1", "netns", DMZ, "type", "veth", "peer", "name", "in0",
            "netns", INSIDE)
        for ns, dev, addr in ((OUTSIDE, "out0", z.outside_ip), (DMZ, "dmz0", z.dmz_public_ip),
                              (DMZ, "dmz1", z.dmz_inner_ip), (INSIDE, "in0", z.inside_ip)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        yield z
    finally:
        _remove()
        for subnet in SUBNETS:
            _ip("route", "del", "blackhole", subnet, check=False)


def reachable(ns: str, host: str, port: int, timeout: float = 2.0) -> str:
    """'ok', or the error a TCP connect from `ns` to host:port ends with."""
    with netns_socket(ns, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return "ok"


def http_get(ns: str, host: str, port: int, path: str = "/metrics") -> str:
    """A plain HTTP GET from inside a namespace (the relay's metrics live there)."""
    with netns_socket(ns, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect((host, port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").partition("\r\n\r\n")[2]


def metric(text: str, series: str) -> float:
    """The value of one series (`name{labels}` exactly as exported) in a scrape."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in the scrape")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
