"""The side-by-side benchmark (issue #7): jetstream against scp, rsync, uftp and iperf3 on the
same emulated link, in the same run, for each link profile.

    sudo bench/run.sh                                   # the full run (fresh machine: installs)
    sudo .venv/bin/python -m bench.run --profiles a,b --workloads big --size 256M
    sudo .venv/bin/python -m bench.run --quick          # a,b with 64 MiB / 1000 files, 5 s iperf3

For each profile: the link comes up (bench.linkemu: namespaces <prefix>a and <prefix>b, or
one loopback namespace), then iperf3 TCP BBR, TCP CUBIC and UDP at the link rate, then for
each workload jetstream, scp, rsync and uftp, one after the other; then the link goes down.
Every copy is hashed against its source. Results go to bench/results/<UTC time>/:
results.json (written after every measurement), table.md (also printed), goodput.png and
jetstream_timeline.png; server and tool logs under logs/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from bench import datasets, prereqs
from bench.nets import make_net
from bench.profiles import FULL_RUN, Profile, Workload, fmt_bytes, parse_profile, parse_size
from bench.report import write_all
from bench.results import Result
from bench.tools import iperf
from bench.tools.common import ROOT, BenchUser, Ctx
from bench.tools.jetstream import JetstreamPair
from bench.tools.ssh import Sshd
from bench.tools.uftp import RATE_SHARE as UFTP_RATE_SHARE
from bench.tools.uftp import Uftpd
from bench.tools.uftp import unavailable as uftp_unavailable

ALL_TOOLS = ("jetstream", "scp", "rsync", "uftp", "iperf3-bbr", "iperf3-cubic", "iperf3-udp")
OPTIONAL_TOOLS = ("jetstream-fixed",)
"""Run only when named in --tools: jetstream under RATE_POLICY_FIXED at uftp's share of the
link rate, the comparison on uftp's terms."""
COPY_TOOLS = ("jetstream", "jetstream-fixed", "scp", "rsync", "uftp")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--profiles",
        default=None,
        help=f"comma-separated keys ({','.join(FULL_RUN)}, smoke) or name=RATE,RTT,LOSS;"
        f" default {','.join(FULL_RUN)} (--quick: a,b)",
    )
    ap.add_argument("--workloads", default="big,small", help="big (one file), small (many files)")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help="which tools to run")
    ap.add_argument("--size", default=None, help="size of the big file on a link (default 1G)")
    ap.add_argument("--loopback-size", default=None, help="big file on loopback (default 4G)")
    ap.add_argument(
        "--small-count", type=int, default=None, help="files in the small workload (default 10000)"
    )
    ap.add_argument("--small-size", default="16K", help="size of each small file")
    ap.add_argument(
        "--iperf-seconds",
        type=float,
        default=None,
        help="duration of each iperf3 test (default 20)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of everything per profile; the table shows the median",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a,b; 64 MiB and 1000 files (loopback 256 MiB); 5 s iperf3",
    )
    ap.add_argument(
        "--tcp-cc",
        default="system",
        help="TCP congestion control for scp/rsync in the namespaces (system = leave"
        " the kernel default, recorded in the table)",
    )
    ap.add_argument(
        "--timeout-factor",
        type=float,
        default=3.0,
        help="a copy may take this many times its ideal time (+30 s) before it is"
        " stopped and reported as partial",
    )
    ap.add_argument("--min-timeout", type=float, default=None, help="seconds (default 120)")
    ap.add_argument("--max-timeout", type=float, default=1800.0, help="seconds")
    ap.add_argument(
        "--data-dir",
        default=None,
        help="where the test data lives (default: tmpfs /dev/shm if it has room, else /var/tmp)",
    )
    ap.add_argument("--keep-data", action="store_true", help="keep the generated data")
    ap.add_argument("--flows", type=int, default=0,
                    help="flows per jetstream push, 1-16 (default: the sending server chooses)")
    ap.add_argument(
        "--out", default=str(ROOT / "bench" / "results"), help="results go to OUT/<UTC time>/"
    )
    ap.add_argument("--prefix", default="jsbench-", help="namespace name prefix")
    ap.add_argument(
        "--no-install",
        action="store_true",
        help="do not apt-get/pip install anything (missing tools: not available)",
    )
    args = ap.parse_args(argv)
    q = args.quick
    args.profiles = args.profiles or ("a,b" if q else ",".join(FULL_RUN))
    args.size = args.size or ("64M" if q else "1G")
    args.loopback_size = args.loopback_size or ("256M" if q else "4G")
    args.small_count = args.small_count or (1000 if q else 10000)
    args.iperf_seconds = args.iperf_seconds if args.iperf_seconds is not None else (5 if q else 20)
    args.min_timeout = args.min_timeout if args.min_timeout is not None else (60 if q else 120)
    return args


# ---------------------------------------------------------------- machine facts


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f"{kib / (1 << 20):.0f} GiB"
    osname = "?"
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip('"')
    la = os.getloadavg()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem": mem,
        "os": osname,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_start": f"{la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f}",
        "host": platform.node(),
    }


def mem_available() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def choose_data_dir(args: argparse.Namespace, need: int) -> tuple[Path, str]:
    """tmpfs (/dev/shm) when it and the RAM have room for the data plus copies, else disk."""
    if args.data_dir:
        base = Path(args.data_dir)
        kind = "as given"
    else:
        shm = Path("/dev/shm")
        room = 0
        if shm.is_dir():
            st = os.statvfs(shm)
            room = min(st.f_bavail * st.f_frsize, mem_available())
        if room > need + (2 << 30):
            base, kind = shm / "jetstream-bench", "tmpfs"
        else:
            base, kind = Path("/var/tmp/jetstream-bench"), "disk"
    root = base / f"run-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    # The bench user must reach the data: jetstream reads and writes as that user.
    for d in (base, root):
        os.chmod(d, 0o755)
    p = root
    while p != p.parent:
        if not os.stat(p).st_mode & 0o001:
            print(
                f"warning: {p} is not searchable by others; jetstream's user cannot reach the data",
                file=sys.stderr,
            )
            break
        p = p.parent
    return root, f"{kind} ({root})"


def set_tcp_cc(ctx: Ctx, want: str) -> str:
    """Set (or read) the TCP congestion control scp and rsync use in both namespaces."""
    key = "net.ipv4.tcp_congestion_control"
    if want != "system":
        ctx.net.run("a", ["sysctl", "-qw", f"{key}={want}"])
        ctx.net.run("b", ["sysctl", "-qw", f"{key}={want}"])
    out = ctx.net.run("a", ["sysctl", "-n", key]).strip()
    return out + ("" if want != "system" else " (kernel default)")


# ---------------------------------------------------------------- the run


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
        bad = [t for t in self.tools if t not in ALL_TOOLS + OPTIONAL_TOOLS]
        if bad:
            raise SystemExit(
                f"unknown tools {bad}; choose from {', '.join(ALL_TOOLS + OPTIONAL_TOOLS)}")
        self.profiles = [parse_profile(p.strip()) for p in args.profiles.split(",") if p.strip()]
        wk = [w.strip() for w in args.workloads.split(",") if w.strip()]
        if any(w not in ("big", "small") for w in wk):
            raise SystemExit("workloads: big, small")
        small = Workload("small", args.small_count, parse_size(args.small_size))
        self.workloads = {"big": Workload("big", 1, parse_size(args.size)), "small": small}
        self.workloads = {k: v for k, v in self.workloads.items() if k in wk}
        self.lo_workloads = dict(self.workloads)
        if "big" in self.lo_workloads:
            self.lo_workloads["big"] = Workload("big", 1, parse_size(args.loopback_size))
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.outdir = Path(args.out) / stamp
        self.logs = self.outdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.results: list[Result] = []
        self.meta: dict[str, Any] = {}
        self.datasets: dict[tuple[str, int, int], datasets.Dataset] = {}

    def save(self) -> None:
        tmp = self.outdir / "results.json.tmp"
        tmp.write_text(
            json.dumps(
                {"meta": self.meta, "results": [r.to_dict() for r in self.results]}, indent=1
            )
        )
        os.replace(tmp, self.outdir / "results.json")

    def add(self, r: Result) -> None:
        self.results.append(r)
        rate = f"{r.goodput_bps / 1e6:.2f} Mbit/s" if r.goodput_bps else "-"
        extra = f" ({r.integrity})" if r.integrity else ""
        err = f": {r.error[:200]}" if r.error else ""
        print(f"    -> {r.tool} {r.workload}: {r.status} {rate}{extra}{err}", flush=True)
        self.save()

    def dataset(self, w: Workload) -> datasets.Dataset:
        key = (w.key, w.count, w.size)
        if key not in self.datasets:
            t = time.monotonic()
            self.datasets[key] = datasets.make(self.data_root, w)
            print(f"  data: {w.describe()} ready in {time.monotonic() - t:.1f} s", flush=True)
        return self.datasets[key]

    def guarded(self, ctx: Ctx, tool: str, workload: str, fn: Callable[[], Result]) -> None:
        """Run one measurement; a crash becomes a 'failed' row, never the end of the run."""
        ctx.log(f"{tool} {workload} ...")
        try:
            r = fn()
        except Exception as exc:  # the run goes on; the row says what broke
            r = Result(
                ctx.profile.key,
                workload,
                tool,
                "failed",
                label=tool,
                error=f"{type(exc).__name__}: {exc}",
                run=ctx.run,
            )
        self.add(r)

    def run(self) -> Path:
        args = self.args
        notes = prereqs.ensure(install=not args.no_install)
        for n in notes:
            print(f"setup: {n}", flush=True)
        user = prereqs.bench_user()
        need = sum(w.total_bytes for w in self.workloads.values())
        need += max([w.total_bytes for w in self.lo_workloads.values()], default=0) * 2
        self.data_root, data_note = choose_data_dir(args, need)
        self.meta = {
            "command": "python -m bench.run " + shlex.join(sys.argv[1:]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "machine": machine(),
            "versions": prereqs.tool_versions(),
            "setup_notes": notes,
            "data_note": data_note + ", incompressible (AES-CTR stream)",
            "profiles": [asdict(p) for p in self.profiles],
            "workloads": [
                {"key": w.key, "count": w.count, "size": w.size} for w in self.workloads.values()
            ],
            "loopback_workloads": [
                {"key": w.key, "count": w.count, "size": w.size} for w in self.lo_workloads.values()
            ],
            "tools": self.tools,
            "links": {},
            "args": vars(args),
        }
        self.save()
        print(f"results: {self.outdir}", flush=True)
        try:
            for prof in self.profiles:
                self.run_profile(prof, user)
        finally:
            if not args.keep_data:
                shutil.rmtree(self.data_root, ignore_errors=True)
                with contextlib.suppress(OSError):
                    self.data_root.parent.rmdir()  # only if no other run uses it
        self.meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.save()
        return self.outdir

    def run_profile(self, prof: Profile, user: BenchUser) -> None:
        args = self.args
        workloads = self.lo_workloads if prof.loopback else self.workloads
        plogs = self.logs / prof.key
        plogs.mkdir(parents=True, exist_ok=True)
        print(f"== profile ({prof.key}) {prof.describe()}", flush=True)
        for w in workloads.values():
            self.dataset(w)
        net = make_net(prof, args.prefix)
        with net:
            ctx = Ctx(
                net,
                prof,
                plogs,
                self.data_root,
                user,
                args.timeout_factor,
                args.min_timeout,
                args.max_timeout,
                flows=args.flows,
            )
            self.meta["links"][prof.key] = net.describe()
            ctx.tcp_cc = set_tcp_cc(ctx, args.tcp_cc)
            for run in range(args.repeat):
                ctx.run = run
                for tool in ("iperf3-bbr", "iperf3-cubic", "iperf3-udp"):
                    if tool in self.tools:
                        self.guarded(
                            ctx, tool, "memory", partial(iperf.run, ctx, tool, args.iperf_seconds)
                        )
                with ExitStack() as stack:
                    servers = self.start_servers(ctx, stack)
                    for wkey, w in workloads.items():
                        ds = self.dataset(w)
                        for tool in COPY_TOOLS:
                            if tool in self.tools:
                                self.guarded(
                                    ctx,
                                    tool,
                                    wkey,
                                    partial(self.copy, ctx, servers, tool, ds, wkey),
                                )

    def start_servers(self, ctx: Ctx, stack: ExitStack) -> dict[str, Any]:
        """The receiving daemons for this profile; a failure is kept as the tool's error."""
        servers: dict[str, Any] = {}
        if "jetstream" in self.tools or "jetstream-fixed" in self.tools:
            ctx.log("starting jetstream servers")
            servers["jetstream"] = stack.enter_context(JetstreamPair(ctx))
        if "scp" in self.tools or "rsync" in self.tools:
            try:
                servers["ssh"] = stack.enter_context(Sshd(ctx, self.logs / "ssh-keys"))
            except Exception as exc:
                servers["ssh"] = f"sshd: {type(exc).__name__}: {exc}"
        if "uftp" in self.tools:
            if ctx.profile.loopback:
                servers["uftp"] = "no link rate on loopback to set uftp's fixed rate"
            elif shutil.which("uftpd") is None or shutil.which("uftp") is None:
                servers["uftp"] = "uftp is not installed (apt-get install uftp)"
            else:
                try:
                    servers["uftp"] = stack.enter_context(Uftpd(ctx))
                except Exception as exc:
                    servers["uftp"] = f"uftpd: {type(exc).__name__}: {exc}"
        return servers

    def copy(
        self, ctx: Ctx, servers: dict[str, Any], tool: str, ds: datasets.Dataset, workload: str
    ) -> Result:
        if tool in ("jetstream", "jetstream-fixed"):
            pair: JetstreamPair = servers["jetstream"]
            if tool == "jetstream":
                return pair.transfer(ds, workload)
            if ctx.profile.loopback:
                return Result(ctx.profile.key, workload, tool, "skipped", label=tool,
                              error="no link rate on loopback to fix the rate at", run=ctx.run)
            return pair.transfer(ds, workload, fixed_share=UFTP_RATE_SHARE)
        if tool in ("scp", "rsync"):
            sshd = servers["ssh"]
            if isinstance(sshd, str):
                return Result(
                    ctx.profile.key,
                    workload,
                    tool,
                    "unavailable",
                    label=tool,
                    error=sshd,
                    run=ctx.run,
                )
            assert isinstance(sshd, Sshd)
            return sshd.scp(ds, workload) if tool == "scp" else sshd.rsync(ds, workload)
        u = servers["uftp"]
        if isinstance(u, str):
            return uftp_unavailable(ctx, workload, u)
        result: Result = u.send(ds, workload)
        return result


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so servers are stopped and namespaces removed."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runner = Runner(args)
    except ValueError as exc:
        print(f"bench.run: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    with sigterm_as_interrupt():
        try:
            outdir = runner.run()
        except prereqs.PrereqError as exc:
            print(f"bench.run: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("bench.run: interrupted; writing what was measured", file=sys.stderr)
            outdir = runner.outdir
    table = write_all(outdir)
    print()
    print(table)
    total = sum(w.total_bytes for w in runner.workloads.values())
    print(
        f"done in {time.monotonic() - started:.0f} s ({fmt_bytes(total)} per link profile); "
        f"results in {outdir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
