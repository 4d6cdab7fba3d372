"""Measuring processes: wall time, CPU seconds and peak RSS, on both ends of a transfer.

Two cases:

* a command that runs for the transfer and exits (scp, rsync, uftp, iperf3 client):
  `run_measured` reaps it with `wait4`, whose rusage covers the process and every
  descendant it waited for (scp's ssh, rsync's ssh), exactly like `/usr/bin/time`;
* a daemon that serves the transfer (sshd, uftpd, iperf3 -s, a jetstream server):
  `TreeMonitor` reads /proc for the daemon and its living descendants. CPU is
  utime+stime+cutime+cstime summed over the living tree (a child reaped inside the
  tree has moved its time into its parent's cutime, so nothing is lost or counted
  twice), as a difference between start and stop. Peak RSS is VmHWM, reset at start
  through /proc/PID/clear_refs ("5") and sampled every 0.1 s, so a short-lived child
  (sshd's per-connection process, sftp-server) is seen before it exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
GNU_TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Measured:
    """What a finished (or killed) command cost."""

    returncode: int | None  # None: killed at the time-out
    wall_s: float
    cpu_s: float
    max_rss_kib: int
    timed_out: bool


def run_measured(
    argv: Sequence[str],
    timeout: float,
    *,
    stdout: IO[Any] | int | None = subprocess.DEVNULL,
    stderr: IO[Any] | int | None = subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Measured:
    """Run argv to completion (at most `timeout` seconds; then its process group is killed).

    Wall time runs from just before the fork to the moment wait4 returns; CPU is wait4's
    rusage. Peak RSS comes from GNU time (`/usr/bin/time -f %M`) when it is installed: a
    child forked from this (large) Python process inherits its high-water mark through
    exec, so wait4's ru_maxrss would report the runner, not the tool.
    """
    timefile: Path | None = None
    if Path(GNU_TIME).exists():
        fd, name = tempfile.mkstemp(prefix="bench-time-")
        os.close(fd)
        timefile = Path(name)
        argv = [GNU_TIME, "-o", name, "-f", "%M", *argv]
    start = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=None if env is None else dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    out: list[tuple[int, int, Any, float]] = []

    def reap() -> None:
        pid, status, rusage = os.wait4(proc.pid, 0)
        out.append((pid, status, rusage, time.monotonic()))

    t = threading.Thread(target=reap, name=f"wait4-{proc.pid}", daemon=True)
    t.start()
    t.join(timeout)
    timed_out = t.is_alive()
    if timed_out:
        # Stop the tool but let GNU time (the group leader) reap it and report, so the CPU
        # and RSS of a copy stopped at its time-out are still counted: SIGTERM to the
        # other members first (scp and rsync then reap their ssh), SIGKILL to all later.
        leader_spared = timefile is not None
        for pid in group_members(proc.pid):
            if pid != proc.pid or not leader_spared:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        t.join(5)
        if t.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            t.join(10)
    if not out:  # cannot happen unless the kernel refuses SIGKILL; keep the loop bounded
        raise RuntimeError(f"{argv[0]} (pid {proc.pid}) did not exit after SIGKILL")
    _pid, status, rusage, end = out[0]
    proc.returncode = os.waitstatus_to_exitcode(status)
    max_rss = 0
    if timefile is not None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            max_rss = int(timefile.read_text().split()[-1])
        timefile.unlink(missing_ok=True)
    return Measured(
        None if timed_out else proc.returncode,
        end - start,
        rusage.ru_utime + rusage.ru_stime,
        max_rss,
        timed_out,
    )


# ---------------------------------------------------------------- /proc trees


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return raw[raw.rindex(b")") + 2 :].decode().split()


def group_members(pgid: int) -> list[int]:
    """Pids in process group pgid (field 5 of /proc/PID/stat)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat_fields(int(entry))
            if f is not None and int(f[2]) == pgid:
                out.append(int(entry))
    return out


def children_map() -> dict[int, list[int]]:
    """ppid -> child pids, from one pass over /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        f = _stat_fields(int(entry))
        if f is None:
            continue
        kids.setdefault(int(f[1]), []).append(int(entry))
    return kids


def tree(roots: Sequence[int]) -> list[int]:
    """The roots (if alive) and all their living descendants."""
    kids = children_map()
    seen: list[int] = []
    stack = [r for r in roots if Path(f"/proc/{r}").exists()]
    while stack and len(seen) < 10000:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.append(pid)
        stack.extend(kids.get(pid, []))
    return seen


def cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of one process, in clock ticks (0 if gone)."""
    f = _stat_fields(pid)
    if f is None:
        return 0
    # after "pid (comm) ": state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
    return int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size (VmHWM) of a process, KiB; 0 if gone or a kernel thread."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def reset_hwm(pid: int) -> None:
    """Reset the peak RSS of a process to its current RSS (Linux >= 4.0)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


class TreeMonitor:
    """CPU seconds and peak RSS of daemon process trees between start() and stop()."""

    def __init__(self, roots: Sequence[int], interval: float = 0.1) -> None:
        self.roots = list(roots)
        self.interval = interval
        self._base = 0
        self._last: dict[int, int] = {}
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _cpu(self) -> int:
        return sum(cpu_ticks(p) for p in tree(self.roots))

    def _sample(self) -> None:
        for pid in tree(self.roots):
            self._peak = max(self._peak, vm_hwm_kib(pid))

    def start(self) -> TreeMonitor:
        for pid in tree(self.roots):
            reset_hwm(pid)
        self._base = self._cpu()
        self._peak = 0
        self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tree-monitor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> tuple[float, int]:
        """(CPU seconds, peak RSS KiB) since start()."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sample()
        return max(0, self._cpu() - self._base) / CLK_TCK, self._peak


class Daemon:
    """A long-running helper process (sshd, uftpd, a server) started by the runner.

    Its own session, so stop() can end it and whatever it forked; output to a log file.
    """

    def __init__(
        self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ):
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not started"
        return self.proc.pid

    def start(self) -> Daemon:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as f:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=f,
                env=None if self.env is None else dict(self.env),
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-n:].strip()
        return ""

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL after `grace` seconds; always reaps."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
