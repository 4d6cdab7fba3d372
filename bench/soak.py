"""Soak: transfers back to back between two real servers for a given time, sampling each
server's resident memory and open descriptors, to show that neither grows.

    .venv/bin/python -m bench.soak --minutes 60            # as root; prints a table
    .venv/bin/python -m bench.soak --minutes 3 --sample-seconds 20 --warmup-minutes 0

Both servers run on loopback with their own state directories and are driven through their
local Unix sockets (the kernel vouches for root: no password involved). Each round pushes a
tree (many small files and one large one) to a fresh directory, checks that the transfer
COMPLETED, and removes the previous round's copy. After a warm-up (the receiver's heap
grows for its first ~10 minutes, then stays), the last five samples are compared with the
first five (flat: within 10 %) and the least-squares slopes are printed per hour. The
samples are written to --out as JSON; `--report FILE` prints the table of a saved run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.duration_pb2 import Duration

from jetstream.client.channel import open_unix_channel
from jetstream.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    destinations_pb2,
    destinations_pb2_grpc,
    manifests_pb2,
    transfers_pb2,
    transfers_pb2_grpc,
)

READY = re.compile(r"ready: api \S+:(\d+),")
TERMINAL = {common_pb2.TRANSFER_STATE_COMPLETED, common_pb2.TRANSFER_STATE_FAILED,
            common_pb2.TRANSFER_STATE_CANCELLED}


@dataclass
class Server:
    name: str
    base: Path
    proc: subprocess.Popen[bytes] | None = None
    api_port: int = 0

    @property
    def socket(self) -> Path:
        return self.base / "api.sock"

    def start(self) -> Server:
        log = (self.base / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jetstream", "server", "--persistent-state-dir",
             str(self.base / "state"), "--api-port", "0", "--recv-port", "0",
             "--disable-telemetry", "--api-socket", str(self.socket),
             "--trigger-dir", str(self.base / "triggers")],
            stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = READY.search((self.base / "server.log").read_text(errors="replace"))
            if match:
                self.api_port = int(match[1])
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"soak: {self.name} did not start; see {self.base / 'server.log'}")

    def sample(self) -> tuple[float, int]:
        """(resident MiB, open descriptors)."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status)[1])  # type: ignore[index]
        return rss_kib / 1024, len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@dataclass
class Samples:
    minutes: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    rss: dict[str, list[float]] = field(default_factory=lambda: {"sender": [], "receiver": []})
    fds: dict[str, list[int]] = field(default_factory=lambda: {"sender": [], "receiver": []})


def make_tree(root: Path, small: int, large_mib: int) -> None:
    (root / "small").mkdir(parents=True)
    for i in range(small):
        (root / "small" / f"f{i:05d}.bin").write_bytes(os.urandom(512 + i % 4096))
    with (root / "large.bin").open("wb") as out:
        for _ in range(large_mib):
            out.write(os.urandom(1 << 20))


def link(sender: Server, receiver: Server) -> str:
    """Make the receiver a destination of the sender (an API token from the receiver)."""
    with open_unix_channel(str(receiver.socket)) as channel:
        token = auth_pb2_grpc.AuthServiceStub(channel).CreateApiToken(
            auth_pb2.CreateApiTokenRequest(api_token=auth_pb2.ApiToken(
                description="soak", ttl=Duration(seconds=86400))), timeout=30).secret
    with open_unix_channel(str(sender.socket)) as channel:
        made = destinations_pb2_grpc.DestinationServiceStub(channel).CreateDestination(
            destinations_pb2.CreateDestinationRequest(destination=destinations_pb2.Destination(
                host="127.0.0.1", api_port=receiver.api_port, api_token_secret=token)),
            timeout=60)
    return made.destination.name


def one_round(sender: Server, destination: str, source: Path, target: Path) -> None:
    T, M = transfers_pb2, manifests_pb2
    with open_unix_channel(str(sender.socket)) as channel:
        stub = transfers_pb2_grpc.TransferServiceStub(channel)
        made = stub.CreateTransfer(T.CreateTransferRequest(transfer=T.Transfer(
            destination=destination, destination_path=str(target),
            manifest_spec=M.ManifestSpec(mappings=[M.FileMapping(source_path=str(source))]))),
            timeout=60)
        last = None
        for update in stub.WatchTransfer(T.WatchTransferRequest(name=made.transfer.name),
                                         timeout=600):
            last = update.transfer
            if last.state in TERMINAL:
                break
    if last is None or last.state != common_pb2.TRANSFER_STATE_COMPLETED:
        raise SystemExit(f"soak: a transfer did not complete: {last}")


def slope_per_hour(minutes: list[float], values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    return float(statistics.linear_regression(minutes, values).slope) * 60


def change(values: list[float]) -> float:
    """The median of the last five samples against that of the first five, as a fraction
    (medians: one sample caught mid-transfer does not decide)."""
    if len(values) < 6:
        return 0.0
    early, late = statistics.median(values[:5]), statistics.median(values[-5:])
    return (late - early) / early if early else 0.0


def report(samples: Samples, warmup: float) -> str:
    lines = ["| minute | rounds | sender RSS MiB | receiver RSS MiB | sender fds | receiver fds |",
             "|---|---|---|---|---|---|"]
    for i, minute in enumerate(samples.minutes):
        lines.append(f"| {minute:.1f} | {samples.rounds[i]} | {samples.rss['sender'][i]:.1f} | "
                     f"{samples.rss['receiver'][i]:.1f} | {samples.fds['sender'][i]} | "
                     f"{samples.fds['receiver'][i]} |")
    steady = [i for i, minute in enumerate(samples.minutes) if minute >= warmup]
    minutes = [samples.minutes[i] for i in steady]
    lines += ["", f"After the first {warmup:g} minutes (warm-up):", "",
              "| server | RSS slope MiB/h | RSS change | fd slope /h | fd change |",
              "|---|---|---|---|---|"]
    for side in ("sender", "receiver"):
        rss = [samples.rss[side][i] for i in steady]
        fds = [float(samples.fds[side][i]) for i in steady]
        lines.append(f"| {side} | {slope_per_hour(minutes, rss):+.2f} | {change(rss):+.1%} | "
                     f"{slope_per_hour(minutes, fds):+.2f} | {change(fds):+.1%} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--report", type=Path, metavar="JSON",
                        help="print the table of a saved run and exit")
    parser.add_argument("--warmup-minutes", type=float, default=10.0,
                        help="samples before this are shown but left out of the verdict")
    parser.add_argument("--small-files", type=int, default=500)
    parser.add_argument("--large-mib", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.json"))
    args = parser.parse_args()
    if args.report is not None:
        print(report(Samples(**json.loads(args.report.read_text())), args.warmup_minutes))
        return 0
    if os.geteuid() != 0:
        parser.error("run as root (the servers run as root)")
    work = Path(tempfile.mkdtemp(prefix="js-soak-", dir="/var/tmp"))
    servers = {side: Server(side, work / side) for side in ("sender", "receiver")}
    samples = Samples()
    try:
        for server in servers.values():
            server.base.mkdir()
            server.start()
        source, target = work / "source", work / "target"
        make_tree(source, args.small_files, args.large_mib)
        destination = link(servers["sender"], servers["receiver"])
        started = time.monotonic()
        next_sample, rounds = started, 0
        while True:
            now = time.monotonic()
            if now >= next_sample:
                samples.minutes.append((now - started) / 60)
                samples.rounds.append(rounds)
                for side, server in servers.items():
                    rss, fds = server.sample()
                    samples.rss[side].append(rss)
                    samples.fds[side].append(fds)
                print(f"soak: {samples.minutes[-1]:5.1f} min, {rounds} rounds, RSS "
                      f"{samples.rss['sender'][-1]:.1f}/{samples.rss['receiver'][-1]:.1f} MiB, "
                      f"fds {samples.fds['sender'][-1]}/{samples.fds['receiver'][-1]}",
                      flush=True)
                next_sample += args.sample_seconds
            if now - started >= args.minutes * 60:
                break
            one_round(servers["sender"], destination, source, target / f"round-{rounds}")
            shutil.rmtree(target / f"round-{rounds - 1}", ignore_errors=True)
            rounds += 1
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(samples.__dict__, indent=1))
    print(report(samples, args.warmup_minutes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
