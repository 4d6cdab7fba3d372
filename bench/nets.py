"""Where the tools run: two namespaces joined by the emulated link, or one loopback namespace.

Every tool talks only inside these namespaces (the link's subnet has a blackhole route in
the root namespace, set up by linkemu before anything else), so nothing a benchmark sends
can leave the machine.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any, Literal

from bench.linkemu import Link
from bench.linkemu.link import LinkError
from bench.profiles import Profile

Side = Literal["a", "b"]


class Net:
    """Side A sends, side B receives. Subclasses say where each side lives."""

    profile: Profile
    ns_a: str
    ns_b: str
    addr_a: str
    addr_b: str

    def up(self) -> Net:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Net:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def ns(self, side: Side) -> str:
        return self.ns_a if side == "a" else self.ns_b

    def addr(self, side: Side) -> str:
        return self.addr_a if side == "a" else self.addr_b

    def port(self, side: Side, base: int) -> int:
        """A port for a server of side `side`; distinct per side when both share a namespace."""
        return base

    def cmd(self, side: Side, argv: Sequence[str]) -> list[str]:
        """argv wrapped to run inside the side's namespace (`ip netns exec` execs it)."""
        return ["ip", "netns", "exec", self.ns(side), *argv]

    def run(self, side: Side, argv: Sequence[str], timeout: float = 30) -> str:
        """Run a short command in a namespace; its stdout, or RuntimeError with stderr."""
        p = subprocess.run(self.cmd(side, argv), capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {self.ns(side)}: {p.stderr.strip()}")
        return p.stdout

    def counters(self) -> dict[str, int] | None:
        """Link counters (bytes and drops per direction) now; None without an emulator."""
        return None

    def describe(self) -> str:
        return self.profile.describe()


class LinkNet(Net):
    """Namespaces `<prefix>a` and `<prefix>b` joined by bench.linkemu with the profile's link."""

    def __init__(self, profile: Profile, prefix: str) -> None:
        assert profile.rate is not None
        self.profile = profile
        self.link = Link(rate=profile.rate, rtt=profile.rtt, loss=profile.loss, prefix=prefix)
        self.ns_a, self.ns_b = self.link.ns_a, self.link.ns_b
        self.addr_a, self.addr_b = self.link.addr_a, self.link.addr_b

    def up(self) -> LinkNet:
        self.link.up()
        return self

    def down(self) -> None:
        self.link.down()

    def counters(self) -> dict[str, int] | None:
        try:
            st: dict[str, Any] = self.link.stats()
        except (LinkError, OSError):
            return None
        out = {}
        for d in ("ab", "ba"):
            for k in ("bytes_in", "pkts_in", "drop_queue", "drop_loss"):
                out[f"{d}_{k}"] = int(st[d][k])
        return out

    def describe(self) -> str:
        return self.link.config.describe().replace("\n", "; ")


class LoopNet(Net):
    """One namespace `<prefix>lo` with only `lo`: loopback, isolated from the machine's own."""

    def __init__(self, profile: Profile, prefix: str) -> None:
        self.profile = profile
        self.ns_a = self.ns_b = f"{prefix}lo"
        self.addr_a = self.addr_b = "127.0.0.1"

    def port(self, side: Side, base: int) -> int:
        return base if side == "a" else base + 1

    def _ip(self, *args: str, check: bool = True) -> None:
        p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
        if check and p.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")

    def up(self) -> LoopNet:
        self.down()
        self._ip("netns", "add", self.ns_a)
        self._ip("-n", self.ns_a, "link", "set", "lo", "up")
        for key, value in (
            ("net.ipv4.tcp_rmem", "4096 131072 67108864"),
            ("net.ipv4.tcp_wmem", "4096 16384 67108864"),
        ):
            self._ip("netns", "exec", self.ns_a, "sysctl", "-qw", f"{key}={value}", check=False)
        return self

    def down(self) -> None:
        # Deleting the name is enough: the runner has stopped its processes by now, and a
        # namespace with a straggler in it lives on unnamed, out of everyone's way.
        self._ip("netns", "del", self.ns_a, check=False)


def make_net(profile: Profile, prefix: str) -> Net:
    return LoopNet(profile, prefix) if profile.loopback else LinkNet(profile, prefix)
