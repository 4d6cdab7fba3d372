"""The benchmark's arithmetic and report, without root: profiles, units, table, charts."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.profiles import PROFILES, Workload, parse_profile, parse_size  # noqa: E402
from bench.results import Result  # noqa: E402


def test_capacity_is_payload_rate_times_one_minus_loss() -> None:
    b = PROFILES["b"]
    assert b.capacity_bps == pytest.approx(200e6 * 0.99 * 1472 / 1500)
    assert PROFILES["lo"].capacity_bps is None
    assert b.describe() == "200 Mbit/s, RTT 100 ms, loss 1 %"
    assert PROFILES["d"].label() == "(d) 1G/20ms/0.1%"


def test_custom_profiles_and_sizes() -> None:
    p = parse_profile("x=100mbit,50ms,0.5%")
    assert (p.rate_bps, p.rtt_s, p.loss_p) == (100e6, 0.05, 0.005)
    with pytest.raises(ValueError):
        parse_profile("x=100mbps,50ms,0.5%")  # byte units are refused
    with pytest.raises(ValueError):
        parse_profile("nope")
    assert parse_size("1G") == 1 << 30 and parse_size("16K") == 16384
    assert Workload("small", 10000, 16384).describe() == "10,000 files of 16 KiB (156.2 MiB)"


def _data() -> dict[str, object]:
    gib = 1 << 30
    rows = [
        Result(
            "b",
            "big",
            "jetstream",
            "unavailable",
            label="jetstream",
            error="CreateTransfer: UNIMPLEMENTED: Method not found!",
        ),
        Result(
            "b",
            "big",
            "scp",
            "ok",
            label="scp (chacha20-poly1305, TCP bbr)",
            payload_bytes=gib,
            expected_bytes=gib,
            wall_s=80.0,
            goodput_bps=gib * 8 / 80,
            cpu_sender_s=5.0,
            cpu_receiver_s=6.0,
            rss_sender_kib=8000,
            rss_receiver_kib=9000,
            integrity="ok 1/1",
            integrity_ok=True,
            wire_ab_bytes=int(gib * 1.05),
        ),
        Result(
            "b",
            "big",
            "rsync",
            "partial",
            label="rsync",
            payload_bytes=gib // 4,
            wall_s=120.0,
            goodput_bps=gib / 4 * 8 / 120,
            notes=["stopped at the time-out"],
        ),
        Result(
            "b",
            "memory",
            "iperf3-cubic",
            "ok",
            payload_bytes=3_000_000,
            wall_s=20.0,
            goodput_bps=1.2e6,
        ),
    ]
    return {
        "meta": {
            "command": "python -m bench.run --profiles b",
            "profiles": [asdict(PROFILES["b"])],
            "workloads": [{"key": "big", "count": 1, "size": gib}],
            "links": {"b": "A->B: 200mbit ..."},
            "machine": {"cpu": "test cpu", "cores": 2},
        },
        "results": [r.to_dict() for r in rows],
    }


def test_table_shows_errors_partials_and_ratios(tmp_path: Path) -> None:
    table = report.render_table(_data())  # type: ignore[arg-type]
    assert "| jetstream | not available (CreateTransfer: UNIMPLEMENTED: Method not found!) |" in (
        table
    )
    scp = next(line for line in table.splitlines() if line.startswith("| scp ("))
    cells = [c.strip() for c in scp.split("|")[1:-1]]
    assert cells[1] == "107"  # 1 GiB in 80 s = 107.4 Mbit/s
    assert cells[2] == "55%"  # of 194.3 Mbit/s
    assert cells[5] == "5.0" and cells[6] == "6.0"  # CPU s per GiB
    assert cells[9] == "ok 1/1"
    assert "(partial: time-out)" in table
    assert "| iperf3 TCP CUBIC | n/a" not in table


def test_report_files(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    (tmp_path / "results.json").write_text(json.dumps(_data()))
    report.write_all(tmp_path)
    for name in ("table.md", "goodput.png", "jetstream_timeline.png"):
        assert (tmp_path / name).stat().st_size > 0
