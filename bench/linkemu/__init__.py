"""WAN link emulator for benchmarks: two namespaces joined by a user-space forwarder.

See README.md in this directory. Quick use:

    from bench.linkemu import Link
    with Link(rate="200mbit", rtt="100ms", loss="1%", prefix="js-x-") as link:
        link.run("b", ["iperf3", "-s", "-1"]) ...   # link.ns_a, link.addr_b, link.stats()
"""

from __future__ import annotations

from .config import Direction, LinkConfig, parse_prob, parse_queue, parse_rate, parse_time
from .link import Link, LinkError, Names, build, down, icmp_ping, netns_socket

__all__ = [
    "Direction",
    "Link",
    "LinkConfig",
    "LinkError",
    "Names",
    "build",
    "down",
    "icmp_ping",
    "netns_socket",
    "parse_prob",
    "parse_queue",
    "parse_rate",
    "parse_time",
]
