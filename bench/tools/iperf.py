"""iperf3 on the same link: TCP with BBR and with CUBIC (the TCP ceiling) and UDP at the link
rate (the link ceiling). Memory to memory for a fixed time, so no files and no integrity.

Goodput is what the receiver counted (TCP: `end.sum_received`; UDP: bytes sent minus the
datagrams the receiver reports lost). UDP is offered at the link's payload rate with
1472-byte datagrams (1500-byte IP packets): R * 1472/1500.
"""

from __future__ import annotations

import json
from typing import Any

from bench.procs import Daemon, TreeMonitor, run_measured
from bench.profiles import MTU, UDP_PAYLOAD
from bench.results import Result
from bench.tools.common import Ctx, link_delta, wait_listen

PORT = 5201
VARIANTS = ("iperf3-bbr", "iperf3-cubic", "iperf3-udp")


def _label(tool: str, seconds: float) -> str:
    what = {"iperf3-bbr": "TCP BBR", "iperf3-cubic": "TCP CUBIC", "iperf3-udp": "UDP at link rate"}
    return f"iperf3 {what[tool]} ({seconds:g} s, memory)"


def _parse(tool: str, data: dict[str, Any], r: Result) -> None:
    end = data.get("end", {})
    if tool == "iperf3-udp":
        s = end.get("sum", {})
        sent, lost, total = int(s.get("bytes", 0)), s.get("lost_packets", 0), s.get("packets", 0)
        secs = float(s.get("seconds", 0) or 0)
        frac = (lost / total) if total else 0.0
        r.payload_bytes = int(sent * (1 - frac))
        r.wall_s = secs or None
        r.extra.update(
            udp_lost_percent=s.get("lost_percent"), udp_packets=total, jitter_ms=s.get("jitter_ms")
        )
    else:
        recv, sent = end.get("sum_received", {}), end.get("sum_sent", {})
        r.payload_bytes = int(recv.get("bytes", 0))
        r.wall_s = float(recv.get("seconds", 0) or 0) or None
        r.extra.update(retransmits=sent.get("retransmits"))
        cc = end.get("sender_tcp_congestion")
        if cc:
            r.extra["sender_tcp_congestion"] = cc
    cpu = end.get("cpu_utilization_percent", {})
    if cpu:
        r.extra["iperf_cpu_percent"] = cpu
    r.set_rate()


def run(ctx: Ctx, tool: str, seconds: float) -> Result:
    """One iperf3 measurement (a fresh one-shot server in B each time)."""
    r = Result(ctx.profile.key, "memory", tool, "ok", label=_label(tool, seconds), run=ctx.run)
    if tool == "iperf3-udp" and ctx.profile.rate_bps is None:
        r.status, r.error = "skipped", "no link rate on loopback"
        return r
    net = ctx.net
    port = net.port("b", PORT)
    log = ctx.logs / f"{tool}-{ctx.run}.json"
    server = Daemon(
        f"iperf3 server ({tool})",
        net.cmd("b", ["iperf3", "-s", "-1", "-B", net.addr_b, "-p", str(port)]),
        ctx.logs / f"{tool}-server.log",
    ).start()
    try:
        wait_listen(net, "b", port, "tcp", server)
        argv = ["iperf3", "-c", net.addr_b, "-p", str(port), "-t", f"{seconds:g}", "-J"]
        if tool == "iperf3-udp":
            assert ctx.profile.rate_bps is not None
            rate = int(ctx.profile.rate_bps * UDP_PAYLOAD / MTU)
            argv += ["-u", "-b", str(rate), "-l", str(UDP_PAYLOAD)]
            r.extra["offered_bps"] = rate
        else:
            argv += ["-C", tool.removeprefix("iperf3-")]
        before = net.counters()
        mon = TreeMonitor([server.pid]).start()
        try:
            with log.open("wb") as f:
                m = run_measured(
                    net.cmd("a", argv), seconds + 60 + 10 * ctx.profile.rtt_s, stdout=f
                )
        finally:
            r.cpu_receiver_s, r.rss_receiver_kib = mon.stop()
        link_delta(before, net.counters(), r)
        r.cpu_sender_s, r.rss_sender_kib = m.cpu_s, m.max_rss_kib
        try:
            data = json.loads(log.read_text())
        except ValueError:
            data = {}
        if m.timed_out or m.returncode != 0 or "error" in data:
            r.status = "failed"
            r.error = str(data.get("error") or f"exit code {m.returncode}, timed out {m.timed_out}")
            return r
        _parse(tool, data, r)
        if not r.goodput_bps:
            r.status, r.error = "failed", "iperf3 reported no received bytes"
    except RuntimeError as exc:
        r.status, r.error = "failed", str(exc)
    finally:
        server.stop()
    return r
