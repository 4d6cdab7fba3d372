"""Self-check: does the emulated link deliver the RTT and rate it was asked for?

Test equipment must prove itself before its numbers are believed: RTT by ICMP
echo on the idle link, delivered rate with iperf3 UDP (receiver side), offered
once at the link rate and once 10 % above it (a forwarder that ignored the
rate would pass the first but not the second), plus the forwarder's own CPU
use. Results are a markdown table.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass, replace
from typing import Any

from .config import Direction, LinkConfig, fmt_rate
from .link import Link, LinkError, Names

TOLERANCE = 0.05
IPERF_PORT = 5201


@dataclass
class Row:
    """One measured line of the table."""

    link: str
    rtt_asked_ms: float
    rtt_ms: float | None
    offered_bps: float
    delivered_bps: float | None
    rate_bps: float
    queue_drops: int = 0
    tun_drops: int = 0
    cpu_frac: float = 0.0
    us_per_pkt: float = 0.0
    note: str = ""

    @property
    def rtt_err(self) -> float | None:
        if self.rtt_ms is None or self.rtt_asked_ms <= 0:
            return None
        return (self.rtt_ms - self.rtt_asked_ms) / self.rtt_asked_ms

    @property
    def rate_err(self) -> float | None:
        if self.delivered_bps is None:
            return None
        return (self.delivered_bps - self.rate_bps) / self.rate_bps

    @property
    def ok(self) -> bool:
        rtt_ok = self.rtt_err is None or abs(self.rtt_err) <= TOLERANCE
        return rtt_ok and self.rate_err is not None and abs(self.rate_err) <= TOLERANCE


def ensure_iperf3() -> str:
    """Path of iperf3, or a LinkError saying how to install it."""
    path = shutil.which("iperf3")
    if path is None:
        raise LinkError("iperf3 is missing: apt-get update && apt-get install -y iperf3")
    return path


def _tun_tx_dropped(link: Link) -> int:
    """Packets the kernel dropped at A's TUN because the forwarder did not read in time."""
    out = link.run("a", ["ip", "-j", "-s", "link", "show", link.names.dev], timeout=10).stdout
    with_stats = json.loads(out or "[]")
    return int(with_stats[0]["stats64"]["tx"]["dropped"]) if with_stats else 0


def _wait_listening(link: Link, port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = link.run("b", ["ss", "-Hltn", f"sport = :{port}"], timeout=5).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise LinkError(f"iperf3 server in {link.ns_b} not listening on {port} after {timeout:g} s")


def iperf3_udp(
    link: Link, offered_ip_bps: float, duration: float, port: int = IPERF_PORT
) -> tuple[float, dict[str, Any]]:
    """Run iperf3 UDP A->B at an offered IP-layer rate; return the delivered IP-layer rate.

    iperf3 counts UDP payload; the link counts IP bytes, so rates are scaled by
    (payload + 28) / payload. Delivered = receiver bytes / seconds over the
    receiver's full 1-s intervals after the first (start-up and the final
    queue drain excluded).
    """
    ensure_iperf3()
    payload = link.config.mtu - 28
    scale = link.config.mtu / payload
    server = link.popen(
        "b",
        ["iperf3", "-s", "-1", "--json", "-B", link.addr_b, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(link, port)
        argv = [
            "iperf3",
            "-c",
            link.addr_b,
            "-p",
            str(port),
            "-u",
            "-l",
            str(payload),
            "-b",
            str(int(offered_ip_bps / scale)),
            "-t",
            f"{duration:g}",
            "-w",
            "16M",
            "--json",
            "--get-server-output",
        ]
        p = link.run("a", argv, timeout=duration + 30)
        if p.returncode != 0:
            raise LinkError(f"iperf3 client failed: {p.stdout[-500:]} {p.stderr[-500:]}")
        result: dict[str, Any] = json.loads(p.stdout)
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    srv = result.get("server_output_json") or {}
    intervals = [i["sum"] for i in srv.get("intervals", [])]
    full = [i for i in intervals[1:] if i["seconds"] >= 0.9]
    if not full:
        raise LinkError("iperf3 server reported no full intervals; try a longer duration")
    bps = sum(i["bytes"] for i in full) * 8 / sum(i["seconds"] for i in full)
    return bps * scale, result


def measure(
    link: Link, name: str, duration: float, overload: float = 1.1, pings: int = 30
) -> list[Row]:
    """RTT on the idle link, then iperf3 at 1.0x and `overload` x the A->B rate."""
    cfg = link.config
    rtts = [r for r in link.ping(count=pings, interval=0.01, timeout=2 + cfg.rtt_s * 2) if r]
    rtt_ms = statistics.median(rtts) * 1e3 if rtts else None
    rows = []
    for mult in (1.0, overload):
        tun0 = _tun_tx_dropped(link)
        s0 = link.stats()
        delivered, _ = iperf3_udp(link, cfg.ab.rate_bps * mult, duration)
        s1 = link.stats()
        pkts = s1["ab"]["pkts_in"] - s0["ab"]["pkts_in"] + s1["ba"]["pkts_in"] - s0["ba"]["pkts_in"]
        cpu = s1["cpu_s"] - s0["cpu_s"]
        rows.append(
            Row(
                link=name,
                rtt_asked_ms=cfg.rtt_s * 1e3,
                rtt_ms=rtt_ms,
                offered_bps=cfg.ab.rate_bps * mult,
                delivered_bps=delivered,
                rate_bps=cfg.ab.rate_bps,
                queue_drops=s1["ab"]["drop_queue"] - s0["ab"]["drop_queue"],
                tun_drops=_tun_tx_dropped(link) - tun0,
                cpu_frac=cpu / max(1e-9, s1["wall_s"] - s0["wall_s"]),
                us_per_pkt=cpu / max(1, pkts) * 1e6,
            )
        )
    return rows


def scenarios(base: LinkConfig, gbit: bool) -> list[tuple[str, LinkConfig]]:
    """The asked link, then 1 Gbit/s with ~0 and 20 ms RTT (the forwarder's headroom)."""

    def name(c: LinkConfig) -> str:
        q = c.ab.queue_bytes / 1e3
        return f"{fmt_rate(c.ab.rate_bps)}, {c.rtt_s * 1e3:g} ms, queue {q:.0f} kB"

    def quiet(d: Direction) -> Direction:  # the check measures the clean link
        return replace(d, loss=0.0, reorder=0.0, duplicate=0.0, corrupt=0.0)

    clean = replace(base, ab=quiet(base.ab), ba=quiet(base.ba))
    out = [(name(clean), clean)]
    if gbit:
        for rtt, queue in (("0", "10ms"), ("20ms", None)):
            c = LinkConfig.make(
                "1gbit", rtt, queue=queue, mtu=base.mtu, seed=base.seed, tick=base.tick_s
            )
            out.append((name(c), c))
    return out


def table(rows: list[Row]) -> str:
    """Markdown table of the rows."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v * 100:+.2f} %"

    lines = [
        "| link (A->B) | RTT asked | RTT measured | RTT error | offered (IP) | delivered (IP) "
        "| rate error | queue drops | TUN drops | forwarder CPU | µs/pkt | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.link} | {r.rtt_asked_ms:g} ms | "
            + ("n/a" if r.rtt_ms is None else f"{r.rtt_ms:.2f} ms")
            + f" | {pct(r.rtt_err)} | {r.offered_bps / 1e6:.0f} Mbit/s | "
            + ("n/a" if r.delivered_bps is None else f"{r.delivered_bps / 1e6:.1f} Mbit/s")
            + f" | {pct(r.rate_err)} | {r.queue_drops} | {r.tun_drops}"
            + f" | {r.cpu_frac * 100:.0f} % of a core"
            + f" | {r.us_per_pkt:.1f} | {'yes' if r.ok else 'NO'} |"
        )
    return "\n".join(lines)


def run_check(
    base: LinkConfig, names: Names, duration: float = 5.0, gbit: bool = True
) -> tuple[bool, str]:
    """Run every scenario on its own link (same prefix, one after the other)."""
    ensure_iperf3()
    rows: list[Row] = []
    for label, cfg in scenarios(base, gbit):
        print(f"linkemu check: {label} ...", flush=True)
        with Link(cfg, names) as link:
            rows.extend(measure(link, label, duration))
    ok = all(r.ok for r in rows)
    return ok, table(rows)
