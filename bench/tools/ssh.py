"""scp and rsync over ssh, with an sshd the runner starts inside namespace B.

The sshd listens only on B's address (the namespace has nothing else), uses a host key and
an authorized client key generated for the run, and is stopped at the end of the profile.
Clients run in namespace A with `-F /dev/null` (no user configuration), no host-key
checking and no known-hosts file. The cipher is whatever OpenSSH negotiates by default and
is reported (a probe `ssh -v ... true` reads it from the kex lines). scp in OpenSSH 9 speaks
the SFTP protocol by default; that is what is measured.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from bench.datasets import Dataset
from bench.procs import Daemon
from bench.results import Result
from bench.tools.common import Ctx, measure_copy, wait_listen

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
PORT = 22


def make_keys(keydir: Path) -> None:
    """An ed25519 host key and client key (once per run)."""
    keydir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("host_key", "client_key"):
        if not (keydir / name).exists():
            subprocess.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"jetstream-bench {name}",
                    "-f",
                    str(keydir / name),
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
    shutil.copyfile(keydir / "client_key.pub", keydir / "authorized_keys")


class Sshd:
    """sshd in namespace B for one profile; `with Sshd(ctx, keydir) as s: s.scp(...)`."""

    def __init__(self, ctx: Ctx, keydir: Path) -> None:
        self.ctx = ctx
        self.keydir = keydir
        self.port = ctx.net.port("b", PORT)
        self.addr = ctx.net.addr_b
        self.daemon: Daemon | None = None
        self.cipher = "unknown"

    def __enter__(self) -> Sshd:
        make_keys(self.keydir)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        sftp = f"{SFTP_SERVER}" if Path(SFTP_SERVER).exists() else "internal-sftp"
        cfg = self.ctx.logs / "sshd_config"
        cfg.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.addr}:{self.port}",
                    f"HostKey {self.keydir / 'host_key'}",
                    f"AuthorizedKeysFile {self.keydir / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PidFile none",
                    "LogLevel ERROR",
                    f"Subsystem sftp {sftp}",
                    "",
                ]
            )
        )
        self.daemon = Daemon(
            "sshd",
            self.ctx.net.cmd("b", [SSHD, "-D", "-e", "-f", str(cfg)]),
            self.ctx.logs / "sshd.log",
        ).start()
        try:
            wait_listen(self.ctx.net, "b", self.port, "tcp", self.daemon)
            self.cipher = self._probe_cipher()
        except BaseException:
            self.daemon.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.daemon is not None:
            self.daemon.stop()

    def ssh_options(self) -> list[str]:
        return [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "-i",
            str(self.keydir / "client_key"),
        ]

    def _probe_cipher(self) -> str:
        argv = [
            "ssh",
            "-v",
            *self.ssh_options(),
            "-o",
            "LogLevel=DEBUG1",
            "-p",
            str(self.port),
            f"root@{self.addr}",
            "true",
        ]
        p = subprocess.run(self.ctx.net.cmd("a", argv), capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"ssh to the bench sshd failed: {p.stderr.strip()[-500:]}")
        m = re.search(r"kex: client->server cipher: (\S+)", p.stderr)
        return m.group(1) if m else "unknown"

    def _label(self, tool: str) -> str:
        cc = self.ctx.tcp_cc.split()[0] if self.ctx.tcp_cc else "?"
        return f"{tool} ({self.cipher.removesuffix('@openssh.com')}, TCP {cc})"

    def scp(self, ds: Dataset, workload: str) -> Result:
        dst = self.ctx.dst("scp")
        argv = ["scp", "-q", *self.ssh_options(), "-P", str(self.port)]
        if ds.item.is_dir():
            argv.append("-r")
        argv += [str(ds.item), f"root@{self.addr}:{dst}/"]
        assert self.daemon is not None
        r = measure_copy(
            self.ctx, "scp", self._label("scp"), ds, dst, argv, [self.daemon.pid], workload
        )
        r.extra.update(cipher=self.cipher, tcp_cc=self.ctx.tcp_cc, protocol="SFTP (scp default)")
        return r

    def rsync(self, ds: Dataset, workload: str) -> Result:
        dst = self.ctx.dst("rsync")
        ssh = " ".join(["ssh", *self.ssh_options(), "-p", str(self.port)])
        argv = ["rsync", "-a", "-e", ssh, str(ds.item), f"root@{self.addr}:{dst}/"]
        assert self.daemon is not None
        r = measure_copy(
            self.ctx, "rsync", self._label("rsync"), ds, dst, argv, [self.daemon.pid], workload
        )
        r.extra.update(cipher=self.cipher, tcp_cc=self.ctx.tcp_cc)
        return r
