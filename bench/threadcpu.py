"""CPU time per thread of the processes a command starts, to see which thread is the limit.

    sudo .venv/bin/python -m bench.threadcpu --match jetstream-b-state -- \\
        .venv/bin/python -m bench.run --profiles d --workloads big --tools jetstream

Runs the command and, while it runs, reads /proc/<pid>/task/<tid>/stat of every process
whose command line contains a ``--match`` string (4 times a second); at the end prints each
thread's last user and system CPU seconds, the process's main thread first. A thread that
ended between two readings loses at most its last quarter second.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def matching(needles: list[str]) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        for needle in needles:
            if needle in cmdline and "bench.threadcpu" not in cmdline:
                found[int(entry.name)] = needle
    return found


def thread_times(pid: int) -> dict[int, tuple[float, float]]:
    times = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return times
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        times[int(tid)] = (int(fields[11]) / TICKS, int(fields[12]) / TICKS)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--match", action="append", required=True,
                        help="a string of the command lines to watch (repeatable)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    last: dict[tuple[str, int], dict[int, tuple[float, float]]] = {}
    child = subprocess.Popen(command)
    while child.poll() is None:
        for pid, needle in matching(args.match).items():
            last.setdefault((needle, pid), {}).update(thread_times(pid))
        time.sleep(0.25)
    print("\n| process | thread | user s | system s |")
    print("|---|---|---|---|")
    for (needle, pid), threads in sorted(last.items()):
        for tid, (user, system) in sorted(threads.items(), key=lambda t: (t[0] != pid, t[0])):
            if user + system >= 0.01:
                name = "main" if tid == pid else str(tid)
                print(f"| {needle} ({pid}) | {name} | {user:.2f} | {system:.2f} |")
    return child.returncode


if __name__ == "__main__":
    raise SystemExit(main())
