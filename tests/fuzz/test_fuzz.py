"""The fuzz harnesses inside the suite: a short run of every target (two at a time, about
half a minute in all) and a replay of every input that once crashed one. The long run is
`python -m tests.fuzz.run --seconds 600` (README.md)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fuzz import run

SHORT_SECONDS = 8
MIN_EXECUTIONS = 1000
"""Even the slowest target runs this many inputs in the short run: it really fuzzed."""
SEED = 1


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory) -> dict[str, run.Result]:
    workdir = tmp_path_factory.mktemp("fuzz")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda target: run.run_target(target, seconds=SHORT_SECONDS,
                                                         workdir=workdir, seed=SEED),
                           run.TARGETS)
        return {result.target: result for result in results}


@pytest.mark.slow
@pytest.mark.parametrize("target", run.TARGETS)
def test_short_fuzz_run_finds_no_crash(short_runs, target):
    result = short_runs[target]
    assert not result.crashes, run.crash_report(result.log)
    assert result.executions >= MIN_EXECUTIONS, result.log[-2000:]


REGRESSIONS = sorted(run.REGRESSIONS.glob("*/*"))


def test_regressions_belong_to_known_targets():
    assert {path.parent.name for path in REGRESSIONS} <= set(run.TARGETS)


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_inputs_that_once_crashed_pass(path: Path):
    harness = run.load(path.parent.name)
    harness.TestOneInput(path.read_bytes())  # type: ignore[attr-defined]
