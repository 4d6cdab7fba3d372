"""Everything a run needs on a fresh Debian machine, installed only when missing.

* Debian packages: openssh-server and -client (sshd, scp), rsync, iperf3, uftp, gcc and
  libc6-dev (linkemu's forwarder), iproute2. Installed with a temporary policy-rc.d that
  forbids starting services, so neither sshd nor uftpd starts in the root namespace
  (the runner starts its own, inside the benchmark namespaces).
* Python: matplotlib into the running interpreter's environment (the venv); the jetstream
  package itself (`pip install -e .`) if it is not importable.
* The bench user (`jsbench`): a system account with a fresh random password each run,
  which both jetstream servers authenticate through PAM; and jetstream's PAM service file.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.tools.common import ROOT, BenchUser

COMMANDS = {
    "sshd": ("/usr/sbin/sshd", "openssh-server"),
    "ssh": ("ssh", "openssh-client"),
    "scp": ("scp", "openssh-client"),
    "ssh-keygen": ("ssh-keygen", "openssh-client"),
    "rsync": ("rsync", "rsync"),
    "iperf3": ("iperf3", "iperf3"),
    "uftp": ("uftp", "uftp"),
    "uftpd": ("uftpd", "uftp"),
    "ip": ("ip", "iproute2"),
    "ss": ("ss", "iproute2"),
    "cc": ("cc", "gcc"),
    "time": ("/usr/bin/time", "time"),
}
BENCH_USER = "jsbench"
POLICY_RC = Path("/usr/sbin/policy-rc.d")
SECRET_DIR = Path("/var/lib/jetstream-bench")
SECRET = SECRET_DIR / "jsbench.password"


class PrereqError(RuntimeError):
    pass


def _have(cmd: str) -> bool:
    return Path(cmd).exists() if cmd.startswith("/") else shutil.which(cmd) is not None


def missing_commands() -> dict[str, str]:
    """command -> Debian package, for every command that is not installed."""
    return {name: pkg for name, (cmd, pkg) in COMMANDS.items() if not _have(cmd)}


def check_root() -> None:
    if os.geteuid() != 0:
        raise PrereqError("run as root: the benchmark creates namespaces, TUN devices and a user")
    if not Path("/dev/net/tun").exists():
        raise PrereqError("/dev/net/tun is missing (load the tun module)")


def apt_install(packages: list[str], log: list[str]) -> None:
    """apt-get install with service starts forbidden (a temporary policy-rc.d)."""
    if not packages:
        return
    if shutil.which("apt-get") is None:
        raise PrereqError(f"missing packages {packages} and no apt-get to install them")
    ours = not POLICY_RC.exists()
    if ours:
        POLICY_RC.write_text(
            "#!/bin/sh\n# jetstream bench: no service starts during install\nexit 101\n"
        )
        POLICY_RC.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(
            ["apt-get", "update", "-qq"], check=True, env=env, timeout=600, capture_output=True
        )
        p = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
            env=env,
            timeout=1200,
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            raise PrereqError(f"apt-get install {' '.join(packages)} failed: {p.stderr[-800:]}")
    finally:
        if ours:
            POLICY_RC.unlink(missing_ok=True)
    log.append(f"installed Debian packages: {' '.join(packages)}")


def pip_install(args: list[str], log: list[str]) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", *args],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if p.returncode != 0:
        raise PrereqError(f"pip install {' '.join(args)} failed: {p.stderr[-800:]}")
    log.append(f"pip installed {' '.join(args)}")
    importlib.invalidate_caches()


def ensure(install: bool = True) -> list[str]:
    """Install what is missing (or, with install=False, only report it). Returns notes."""
    check_root()
    notes: list[str] = []
    missing = missing_commands()
    if missing and install:
        apt_install(sorted(set(missing.values())), notes)
        missing = missing_commands()
    if missing:
        notes.append(f"missing (those tools are reported unavailable): {', '.join(missing)}")
    for module, spec in (("matplotlib", ["matplotlib"]), ("jetstream.v1", ["-e", str(ROOT)])):
        try:
            importlib.import_module(module)
        except ImportError:
            if not install:
                notes.append(f"python module {module} missing")
                continue
            pip_install(spec, notes)
    return notes


def _pam_ok(user: str, password: str) -> bool:
    """Does PAM (jetstream's service) accept this password now?"""
    try:
        import pam
    except ImportError:
        return False
    return bool(pam.pam().authenticate(user, password, service="jetstream"))


def bench_user() -> BenchUser:
    """Create (or reuse) the bench account, its password and jetstream's PAM service.

    The password is random, kept root-only in /var/lib/jetstream-bench and reused while PAM
    still accepts it: runs at the same time (a full run and the CI smoke test) must not
    change it under each other. A file lock serialises the check-and-set.
    """
    SECRET_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(SECRET_DIR, 0o700)
    pam_script = ROOT / "deploy" / "install-pam.sh"
    with open(SECRET_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if pam_script.exists():
            subprocess.run(["sh", str(pam_script)], check=True, capture_output=True, timeout=60)
        try:
            pwd.getpwnam(BENCH_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 "--comment", "jetstream benchmark", BENCH_USER],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        # Keep the account usable: unlocked, no expiry, password not due for a change.
        subprocess.run(["usermod", "--unlock", BENCH_USER], capture_output=True, timeout=60)
        today = str(int(time.time() // 86400))
        subprocess.run(
            ["chage", "--expiredate", "-1", "--lastday", today, BENCH_USER],
            capture_output=True, timeout=60,
        )  # fmt: skip
        password = SECRET.read_text().strip() if SECRET.exists() else ""
        if not password or not _pam_ok(BENCH_USER, password):
            password = "Bench-" + secrets.token_urlsafe(18)
            subprocess.run(
                ["chpasswd"], input=f"{BENCH_USER}:{password}\n", text=True, check=True,
                capture_output=True, timeout=60,
            )  # fmt: skip
            tmp = SECRET.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            os.replace(tmp, SECRET)
    pw = pwd.getpwnam(BENCH_USER)
    return BenchUser(BENCH_USER, password, pw.pw_uid, pw.pw_gid)


def tool_versions() -> dict[str, str]:
    """A short version per tool, for the report."""
    probes = {
        "ssh": (["ssh", "-V"], r"(OpenSSH_\S+)"),
        "rsync": (["rsync", "--version"], r"version\s+(\S+)"),
        "iperf3": (["iperf3", "--version"], r"iperf\s+(\S+)"),
        "uftp": (["dpkg-query", "-W", "-f", "${Version}", "uftp"], r"(\S+)"),
    }
    out: dict[str, str] = {}
    for name, (argv, pattern) in probes.items():
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except OSError:
            continue
        m = re.search(pattern, p.stdout + p.stderr)
        if m:
            out[name] = m.group(1).rstrip(",")
    try:
        from jetstream import __version__
        from jetstream.datachannel.native import DATAPATH

        out["jetstream"] = f"{__version__} ({DATAPATH} data path)"
    except ImportError:
        pass
    return out
