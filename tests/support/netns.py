"""Two network namespaces made for one test, joined by a veth pair: a "server" host and a
"client" host that may hold many addresses (to be many clients at once).

The root namespace first gets a blackhole route for the subnet, so a mistake fails on this
machine instead of sending packets out of it. Everything made is removed on exit.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class NamespacePair:
    server_ns: str
    client_ns: str
    server_ip: str
    client_ips: tuple[str, ...]
    """The client host's addresses; the first is its default source address."""

    def run_in(self, ns: str, *command: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *command]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@contextmanager
def namespace_pair(prefix: str, subnet: str, *, client_addresses: int = 1
                   ) -> Iterator[NamespacePair]:
    """`subnet` is a /24 like 10.78.0.0/24: the server is .1, the clients .10 onwards."""
    base = subnet.rsplit(".", 1)[0]
    if not 1 <= client_addresses <= 200:
        raise ValueError("between 1 and 200 client addresses")
    tag = secrets.token_hex(3)
    pair = NamespacePair(f"{prefix}s-{tag}", f"{prefix}c-{tag}", f"{base}.1",
                         tuple(f"{base}.{10 + i}" for i in range(client_addresses)))
    veth_server, veth_client = f"{prefix}vs{tag}"[:15], f"{prefix}vc{tag}"[:15]
    ip("route", "replace", "blackhole", subnet)
    try:
        ip("netns", "add", pair.server_ns)
        ip("netns", "add", pair.client_ns)
        ip("link", "add", veth_server, "type", "veth", "peer", "name", veth_client)
        ip("link", "set", veth_server, "netns", pair.server_ns)
        ip("link", "set", veth_client, "netns", pair.client_ns)
        for ns, dev, addresses in ((pair.server_ns, veth_server, (pair.server_ip,)),
                                   (pair.client_ns, veth_client, pair.client_ips)):
            for address in addresses:
                ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield pair
    finally:
        for ns in (pair.server_ns, pair.client_ns):  # deleting a namespace deletes its veth end
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
