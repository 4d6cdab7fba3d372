"""jetstream: two real servers, one per namespace, and a real push through the gRPC API.

Server A (sender) runs in namespace A, server B (receiver) in namespace B, each with its own
state directory, the API on TLS (self-signed, pinned on first use) and open to the
namespace address (`--api-allow-remote-control`), telemetry off. `bench.jsclient` runs in
namespace A and drives A's API over loopback: it logs in as the bench user, registers B as
a destination with the same user's password, builds a manifest, creates the transfer and
watches it to the end, recording rate and RTT from the progress updates.

Anything that keeps the transfer from happening (a server that does not start, an RPC
that is not implemented yet) is reported as "not available (stage: error)".
"""

from __future__ import annotations

import json
import os
import re
import time

from bench.datasets import Dataset, fresh_dir
from bench.nets import Side
from bench.procs import Daemon, TreeMonitor, run_measured
from bench.results import Result
from bench.tools.common import ROOT, Ctx, finish_copy, link_delta

API_PORT = 8886
READY = re.compile(r"ready: api \S+:(\d+), data udp (\S+)")
SETUP_STAGES = {
    "connect",
    "Login",
    "CreateDestination",
    "CreateManifest",
    "WaitManifest",
    "CreateTransfer",
    "client",
}


class JetstreamPair:
    """Both servers for one profile. Start failures are kept in `error`, not raised."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.servers: dict[str, Daemon] = {}
        self.ports = {"a": ctx.net.port("a", API_PORT), "b": ctx.net.port("b", API_PORT)}
        self.error: str | None = None

    def _start(self, side: Side) -> Daemon:
        ctx = self.ctx
        state = ctx.logs / f"jetstream-{side}-state"
        port = str(self.ports[side])
        argv = [
            ctx.python,
            "-m",
            "jetstream",
            "server",
            "--persistent-state-dir",
            str(state),
            "--trigger-dir",
            str(ctx.logs / f"jetstream-{side}-triggers"),
            "--api-port",
            port,
            "--recv-port",
            port,
            "--api-allow-remote-control",
            "--disable-telemetry",
            "--server-name",
            f"bench-{side}",
            "--log-level",
            "info",
        ]
        log = ctx.logs / f"jetstream-{side}.log"
        return Daemon(f"jetstream server {side.upper()}", ctx.net.cmd(side, argv), log).start()

    def _wait_ready(self, d: Daemon, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY.search(d.log_tail(100_000)):
                return
            if not d.alive():
                raise RuntimeError(f"{d.name} exited: {d.log_tail(600)}")
            time.sleep(0.1)
        raise RuntimeError(f"{d.name} not ready after {timeout:g} s: {d.log_tail(600)}")

    def __enter__(self) -> JetstreamPair:
        try:
            sides: tuple[Side, Side] = ("b", "a")
            for side in sides:
                self.servers[side] = self._start(side)
            for d in self.servers.values():
                self._wait_ready(d)
        except (RuntimeError, OSError) as exc:
            self.error = f"server start: {exc}"
        return self

    def __exit__(self, *exc: object) -> None:
        for d in self.servers.values():
            d.stop(grace=10)

    def transfer(self, ds: Dataset, workload: str, fixed_share: float | None = None) -> Result:
        """One push through the API; with ``fixed_share``, at that share of the link rate
        under RATE_POLICY_FIXED (tool ``jetstream-fixed``, uftp's terms), else FAIR."""
        ctx = self.ctx
        tool, label, fixed_bps = "jetstream", "jetstream", 0
        if fixed_share is not None:
            fixed_bps = int(ctx.profile.rate_bps * fixed_share)
            tool, label = "jetstream-fixed", f"jetstream (fixed {fixed_share:.0%} of link rate)"
        if ctx.flows:
            label += f", {ctx.flows} flow{'s' if ctx.flows > 1 else ''}"
        r = Result(ctx.profile.key, workload, tool, "ok", label=label, run=ctx.run)
        r.expected_bytes, r.files_expected = ds.total_bytes, ds.file_count
        if self.error:
            r.status, r.error = "unavailable", self.error
            return r
        for d in self.servers.values():
            if not d.alive():
                r.status, r.error = "unavailable", f"{d.name} died: {d.log_tail(400)}"
                return r
        dst = ctx.dst(tool, owner=(ctx.user.uid, ctx.user.gid))
        timeout = ctx.timeout(ds.total_bytes, ds.file_count)
        out = ctx.logs / f"{tool}-{workload}-{ctx.run}.json"
        out.unlink(missing_ok=True)
        argv = [
            ctx.python,
            "-m",
            "bench.jsclient",
            "--api",
            f"127.0.0.1:{self.ports['a']}",
            "--user",
            ctx.user.name,
            "--dest-host",
            ctx.net.addr_b,
            "--dest-api-port",
            str(self.ports["b"]),
            "--source",
            str(ds.item),
            "--dest-path",
            str(dst),
            "--timeout",
            f"{timeout:.0f}",
            "--out",
            str(out),
            "--fixed-bps",
            str(fixed_bps),
            "--flows",
            str(ctx.flows),
        ]
        env = {**os.environ, "BENCH_JS_PASSWORD": ctx.user.password, "PYTHONPATH": str(ROOT)}
        before = ctx.net.counters()
        mon_a = TreeMonitor([self.servers["a"].pid]).start()
        mon_b = TreeMonitor([self.servers["b"].pid]).start()
        log = ctx.logs / f"{tool}-client-{workload}-{ctx.run}.log"
        try:
            with log.open("wb") as f:
                m = run_measured(
                    ctx.net.cmd("a", argv), timeout + 90, stdout=f, stderr=f, env=env, cwd=ROOT
                )
        finally:
            r.cpu_sender_s, r.rss_sender_kib = mon_a.stop()
            r.cpu_receiver_s, r.rss_receiver_kib = mon_b.stop()
        link_delta(before, ctx.net.counters(), r)
        r.extra["timeout_s"] = timeout
        try:
            res = json.loads(out.read_text())
        except (OSError, ValueError):
            tail = log.read_text(errors="replace")[-500:].strip()
            r.status = "unavailable"
            r.error = f"client: exit {m.returncode}, timed out {m.timed_out}: {tail}"
            return r
        r.extra.update(
            timeline=res.get("points", []),
            manifest=res.get("manifest"),
            state=res.get("state"),
            progress=res.get("progress"),
            transfer_s=res.get("transfer_s"),
        )
        if res.get("ok"):
            r.wall_s = float(res["wall_s"])
            return finish_copy(ctx, r, ds, dst, None)
        stage, error = res.get("stage") or "client", res.get("error") or "unknown error"
        r.error = f"{stage}: {error}"
        if stage in SETUP_STAGES:
            r.status = "unavailable"
        elif res.get("timed_out"):
            r.status = "partial"
            r.wall_s = float(res.get("wall_s") or timeout)
            prog = res.get("progress") or {}
            r.payload_bytes = int(prog.get("bytes_done", 0))
            r.files_complete = int(prog.get("files_done", 0))
            r.set_rate()
        else:
            r.status = "failed"
            r.wall_s = res.get("wall_s")
        fresh_dir(dst)
        return r
