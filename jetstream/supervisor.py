"""Keeps a jetstream process running where systemd does not (`jetstream start`).

Containers and many minimal machines have no systemd as PID 1; there a server started with
`nohup` dies for good at its first crash and nothing says where its log went. The
supervisor is a small process in a session of its own that runs one jetstream command:

    RUN_DIR/NAME.pid     the supervisor's pid (`jetstream stop` signals it)
    RUN_DIR/NAME.notify  the sd_notify socket the child reports READY=1 to, as under systemd
    the log file         the child's stdout and stderr, and the supervisor's own lines

It restarts the child when it dies (after 1 s, doubling to 30 s; back to 1 s after a minute
up), except when it exits 0 (it was asked to stop) or 2 (a configuration error: a restart
would fail the same way). SIGTERM, SIGINT or SIGHUP to the supervisor stops the child (its
own SIGTERM: drain, flush state) and then the supervisor. Its first news (the child is
ready, or exited first) is written to a pipe `jetstream start` waits on.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TextIO

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
STOP_TIMEOUT = 40.0
"""Seconds a stopping child gets before SIGKILL (the server's grace is a few seconds)."""
NO_RESTART = (0, 2)
MODULE = "jetstream.supervisor"


def pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def running_pid(run_dir: Path, name: str) -> int | None:
    """The pid of the live supervisor for `name`, or None (no file, stale file, pid reused)."""
    try:
        pid = int(pid_file(run_dir, name).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_supervisor(pid) else None


def _is_supervisor(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return MODULE.encode() in cmdline and state != "Z"


class Supervisor:
    def __init__(self, run_dir: Path, name: str, command: list[str], news: TextIO) -> None:
        self.run_dir = run_dir
        self.name = name
        self.command = command
        self._news: TextIO | None = news
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._stop)
        pid_path = pid_file(self.run_dir, self.name)
        notify_path = self.run_dir / f"{self.name}.notify"
        with contextlib.suppress(FileNotFoundError):
            notify_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        listener.bind(str(notify_path))
        _write_atomically(pid_path, f"{os.getpid()}\n")
        self._note(f"supervising {' '.join(self.command)} (supervisor pid {os.getpid()})")
        try:
            return self._loop(listener, str(notify_path))
        finally:
            listener.close()
            for path in (notify_path, pid_path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            self._tell("exited")

    def _loop(self, listener: socket.socket, notify_path: str) -> int:
        backoff = BACKOFF_FIRST
        while not self._stopping:
            started = time.monotonic()
            self._child = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL,
                env={**os.environ, "NOTIFY_SOCKET": notify_path})
            self._note(f"started pid {self._child.pid}")
            code = self._watch(self._child, listener)
            if self._stopping:
                self._note(f"stopped (pid {self._child.pid} exited {code})")
                return 0
            if code in NO_RESTART:
                self._note(f"pid {self._child.pid} exited {code}; not restarting")
                self._tell(f"exited {code}")
                return code
            if time.monotonic() - started > STABLE_AFTER:
                backoff = BACKOFF_FIRST
            self._note(f"pid {self._child.pid} exited {code}; restarting in {backoff:.0f} s")
            deadline = time.monotonic() + backoff
            while not self._stopping and time.monotonic() < deadline:
                time.sleep(0.1)
            backoff = min(backoff * 2, BACKOFF_MAX)
        return 0

    def _watch(self, child: subprocess.Popen[bytes], listener: socket.socket) -> int:
        """Relay the child's readiness until it exits; stop it when asked to."""
        stop_deadline: float | None = None
        while (code := child.poll()) is None:
            if self._stopping and stop_deadline is None:
                stop_deadline = time.monotonic() + STOP_TIMEOUT
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                self._note(f"pid {child.pid} did not stop in {STOP_TIMEOUT:.0f} s; killing it")
                child.kill()
            with contextlib.suppress(InterruptedError):
                ready, _, _ = select.select([listener], [], [], 0.2)
                if ready and b"READY=1" in listener.recv(4096).split(b"\n"):
                    self._note(f"pid {child.pid} is ready")
                    self._tell("ready")
        return code

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True
        self._note(f"{signal.Signals(signum).name}: stopping")

    def _tell(self, news: str) -> None:
        """The first news only, to `jetstream start`, which is waiting for it."""
        if self._news is not None:
            with contextlib.suppress(OSError):
                self._news.write(news + "\n")
                self._news.close()
            self._news = None

    def _note(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp} jetstream start [{self.name}]: {text}", flush=True)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    """`python -m jetstream.supervisor RUN_DIR NAME NEWS_FD COMMAND...` (jetstream start)."""
    run_dir, name, news_fd, *command = argv
    news = os.fdopen(int(news_fd), "w")
    return Supervisor(Path(run_dir), name, [sys.executable, "-m", "jetstream", *command],
                      news).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
