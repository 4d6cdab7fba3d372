"""uftp (Debian package `uftp`): a UDP file-transfer tool with NAK-based repair passes.

Receiver `uftpd` in namespace B (foreground, unicast, fixed client id), sender `uftp` in A
addressing B directly (`-M` with a unicast address, closed group `-H`, so it starts as soon
as the one client has registered). Fixed rate (`-C none`, uftp's default) at 95 % of the
link rate, no encryption (`-Y none`: it is not what is compared), 1400-byte blocks. Not run
on loopback (no link rate to aim at).
"""

from __future__ import annotations

from bench.datasets import Dataset
from bench.procs import Daemon
from bench.results import Result, Status
from bench.tools.common import Ctx, measure_copy, wait_listen

PORT = 1044
CLIENT_ID = "0x00000b0b"
BUF = str(8 << 20)
RATE_SHARE = 0.95


class Uftpd:
    """The receiving daemon for one profile; writes into ctx.data/dst/uftp."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.daemon: Daemon | None = None
        self.dst = ctx.dst("uftp")

    def __enter__(self) -> Uftpd:
        argv = [
            "uftpd",
            "-d",
            "-D",
            str(self.dst),
            "-p",
            str(PORT),
            "-B",
            BUF,
            "-x",
            "1",
            "-q",
            "-U",
            CLIENT_ID,
        ]
        self.daemon = Daemon(
            "uftpd", self.ctx.net.cmd("b", argv), self.ctx.logs / "uftpd.log"
        ).start()
        try:
            wait_listen(self.ctx.net, "b", PORT, "udp", self.daemon)
        except BaseException:
            self.daemon.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.daemon is not None:
            self.daemon.stop()

    def send(self, ds: Dataset, workload: str) -> Result:
        rate = self.ctx.profile.rate_bps
        assert rate is not None and self.daemon is not None
        kbps = int(rate * RATE_SHARE / 1000)
        dst = self.ctx.dst("uftp")  # same path uftpd was given: emptied, not moved
        argv = [
            "uftp",
            "-M",
            self.ctx.net.addr_b,
            "-p",
            str(PORT),
            "-R",
            str(kbps),
            "-Y",
            "none",
            "-b",
            "1400",
            "-B",
            BUF,
            "-x",
            "1",
            "-H",
            CLIENT_ID,
            str(ds.item),
        ]
        label = f"uftp (fixed {RATE_SHARE:.0%} of link rate)"
        r = measure_copy(self.ctx, "uftp", label, ds, dst, argv, [self.daemon.pid], workload)
        r.extra["rate_kbps"] = kbps
        return r


def unavailable(ctx: Ctx, workload: str, why: str) -> Result:
    status: Status = "skipped" if ctx.profile.loopback else "unavailable"
    return Result(ctx.profile.key, workload, "uftp", status, label="uftp", error=why, run=ctx.run)
