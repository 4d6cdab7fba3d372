"""The small measuring tools of bench/ run and say what they measure (not how fast)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.system.users import require_root

ROOT = Path(__file__).resolve().parents[2]


def test_disksink_writes_verifies_and_reports_every_mode(tmp_path: Path) -> None:
    require_root()
    out = subprocess.run(
        [sys.executable, "-m", "bench.disksink", "--size", "6M", "--dir", str(tmp_path),
         "--piece", "1428,32768"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and " B |" in line]
    assert len(rows) == 2 * 2 * 3  # pieces x arrival x mode, each verified by its digest
    assert all(float(row.split("|")[4]) >= 0 for row in rows)
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone


def test_threadcpu_charges_a_busy_thread() -> None:
    marker = f"threadcpu-{os.getpid()}"
    busy = ("import time\nend = time.process_time() + 0.6\n"
            f"while time.process_time() < end: pass  # {marker}")
    out = subprocess.run(
        [sys.executable, "-m", "bench.threadcpu", "--match", marker, "--",
         sys.executable, "-c", busy], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    [main] = [line for line in out.stdout.splitlines() if "| main |" in line]
    user, system = (float(cell) for cell in main.split("|")[3:5])
    assert user + system >= 0.3
