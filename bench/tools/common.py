"""What every tool runner shares: the run context, waiting for servers, measuring a copy."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.datasets import Dataset, fresh_dir, received_bytes, verify
from bench.nets import Net, Side
from bench.procs import Daemon, Measured, TreeMonitor, run_measured
from bench.profiles import Profile
from bench.results import Result

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BenchUser:
    """The system account jetstream's servers log in as (created by bench.prereqs)."""

    name: str
    password: str
    uid: int
    gid: int


@dataclass
class Ctx:
    """Everything a tool needs for one profile."""

    net: Net
    profile: Profile
    logs: Path
    data: Path
    user: BenchUser
    timeout_factor: float = 3.0
    min_timeout: float = 120.0
    max_timeout: float = 1800.0
    run: int = 0
    tcp_cc: str = ""
    flows: int = 0
    """Flows per jetstream push (0: the sending server chooses)."""
    python: str = field(default_factory=lambda: sys.executable)

    def timeout(self, nbytes: int, files: int = 1) -> float:
        """Time a transfer of nbytes in `files` files gets before it is stopped and reported
        as partial: the link's ideal time, plus a millisecond per file (a million files are
        not a gigabyte's worth of work)."""
        t = self.timeout_factor * self.profile.ideal_seconds(nbytes) + 30.0 + files / 1000
        return min(self.max_timeout, max(self.min_timeout, t))

    def dst(self, tool: str, owner: tuple[int, int] | None = None) -> Path:
        """An empty receive directory for a tool (the previous copy is removed first)."""
        return fresh_dir(self.data / "dst" / tool, owner)

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] ({self.profile.key}) {msg}", flush=True)


def wait_listen(
    net: Net,
    side: Side,
    port: int,
    proto: str = "tcp",
    daemon: Daemon | None = None,
    timeout: float = 15.0,
) -> None:
    """Block until something listens on port in the side's namespace (checked with `ss`)."""
    flag = "-Hltn" if proto == "tcp" else "-Hlun"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = subprocess.run(
            net.cmd(side, ["ss", flag, f"sport = :{port}"]),
            capture_output=True,
            text=True,
            timeout=10,
        )
        if p.stdout.strip():
            return
        if daemon is not None and not daemon.alive():
            raise RuntimeError(f"{daemon.name} exited: {daemon.log_tail()}")
        time.sleep(0.1)
    tail = daemon.log_tail() if daemon is not None else ""
    raise RuntimeError(f"nothing listens on {proto} port {port} after {timeout:g} s {tail}")


def link_delta(before: dict[str, int] | None, after: dict[str, int] | None, r: Result) -> None:
    if before is None or after is None:
        return
    r.wire_ab_bytes = after["ab_bytes_in"] - before["ab_bytes_in"]
    r.link_drops_ab = (after["ab_drop_queue"] - before["ab_drop_queue"]) + (
        after["ab_drop_loss"] - before["ab_drop_loss"]
    )
    r.extra["link"] = {k: after[k] - before[k] for k in after}


def finish_copy(
    ctx: Ctx,
    r: Result,
    ds: Dataset,
    dst: Path,
    m: Measured | None,
    log: Path | None = None,
) -> Result:
    """Fill in payload, goodput and integrity after a copy into dst, then remove the copy."""
    r.expected_bytes = ds.total_bytes
    r.files_expected = ds.file_count
    timed_out = m.timed_out if m is not None else r.status == "partial"
    failed = m is not None and not m.timed_out and m.returncode != 0
    if timed_out:
        got, complete = received_bytes(dst, ds)
        r.status = "partial"
        r.payload_bytes, r.files_complete = got, complete
        r.notes.append(
            f"stopped at the time-out ({r.wall_s:.0f} s): {complete:,} of {ds.file_count:,} "
            f"files complete; goodput from the bytes that arrived"
        )
        r.set_rate()
    else:
        integ = verify(dst, ds)
        r.integrity, r.integrity_ok = integ.describe(), integ.ok
        r.files_complete = integ.good
        if failed or not integ.ok:
            r.status = "failed"
            got, _ = received_bytes(dst, ds)
            r.payload_bytes = got
            if failed and m is not None:
                tail = log.read_text(errors="replace")[-400:].strip() if log else ""
                r.error = f"exit code {m.returncode}" + (f": {tail}" if tail else "")
        else:
            r.status = "ok"
            r.payload_bytes = ds.total_bytes
            r.set_rate()
    fresh_dir(dst)  # free the space (tmpfs) before the next tool
    return r


def measure_copy(
    ctx: Ctx,
    tool: str,
    label: str,
    ds: Dataset,
    dst: Path,
    argv: Sequence[str],
    receivers: Sequence[int],
    workload: str,
) -> Result:
    """Run a sending command in namespace A, the receiving daemons already up in B."""
    log = ctx.logs / f"{tool}-{workload}-{ctx.run}.log"
    timeout = ctx.timeout(ds.total_bytes, ds.file_count)
    r = Result(ctx.profile.key, workload, tool, "ok", label=label, run=ctx.run)
    before = ctx.net.counters()
    mon = TreeMonitor(receivers).start()
    try:
        with log.open("wb") as f:
            m = run_measured(ctx.net.cmd("a", argv), timeout, stdout=f, stderr=f)
    finally:
        r.cpu_receiver_s, r.rss_receiver_kib = mon.stop()
    link_delta(before, ctx.net.counters(), r)
    r.wall_s, r.cpu_sender_s, r.rss_sender_kib = m.wall_s, m.cpu_s, m.max_rss_kib
    r.extra["timeout_s"] = timeout
    return finish_copy(ctx, r, ds, dst, m, log)
