"""Run the atheris fuzz harnesses: `python -m tests.fuzz.run --seconds 600` (see README.md).

Each target runs in a process of its own (libFuzzer ends the process when it is done), with
jetstream instrumented for coverage as it is imported there. The corpus each run grows is
kept in the work directory, so the next run starts where this one stopped; the seeds a
harness generates and the inputs saved in `regressions/` are read every time. A crash
leaves its input in `<workdir>/crashes/` and makes the run fail.

Nothing here imports jetstream at module level: the child must import it inside
`atheris.instrument_imports()`, or the fuzzer would run blind.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REGRESSIONS = HERE / "regressions"
DEFAULT_WORKDIR = REPO / ".fuzz"
TARGETS = {
    "wire": "tests.fuzz.fuzz_wire",
    "receive": "tests.fuzz.fuzz_receive",
    "handshake": "tests.fuzz.fuzz_handshake",
    "paths": "tests.fuzz.fuzz_paths",
    "records": "tests.fuzz.fuzz_records",
}
INPUT_TIMEOUT = 10
"""Seconds one input may take before libFuzzer reports it as a hang (a crash)."""
RSS_LIMIT_MB = 2048
_EXECUTED = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_FEATURES = re.compile(r"\bcov: (\d+) ft: (\d+)")


@dataclass
class Result:
    target: str
    seconds: float
    executions: int
    coverage: int
    features: int
    crashes: list[Path]
    log: str

    @property
    def rate(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0


def load(target: str) -> object:
    """The harness module of `target`, imported without instrumentation (for replays)."""
    return importlib.import_module(TARGETS[target])


def run_target(target: str, *, seconds: float, workdir: Path, runs: int | None = None,
               seed: int | None = None) -> Result:
    """Fuzz `target` for `seconds` (or `runs` inputs, whichever ends first)."""
    corpus = workdir / "corpus" / target
    seeds = workdir / "seeds" / target
    crashes = workdir / "crashes"
    for directory in (corpus, seeds, crashes):
        directory.mkdir(parents=True, exist_ok=True)
    for data in getattr(load(target), "seeds", list)():
        (seeds / hashlib.sha1(data).hexdigest()).write_bytes(data)
    before = set(crashes.glob(f"{target}-*"))
    args = [f"-max_total_time={max(int(seconds), 1)}", f"-timeout={INPUT_TIMEOUT}",
            f"-rss_limit_mb={RSS_LIMIT_MB}", "-print_final_stats=1",
            f"-artifact_prefix={crashes}/{target}-"]
    if runs is not None:
        args.append(f"-runs={runs}")
    if seed is not None:
        args.append(f"-seed={seed}")
    dirs = [corpus, seeds] + ([REGRESSIONS / target] if (REGRESSIONS / target).is_dir() else [])
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", "--child", target, "--", *args,
         *map(str, dirs)],
        cwd=REPO, capture_output=True, text=True, errors="replace",
        env={**os.environ, "PYTHONHASHSEED": "0"},
        timeout=seconds + 120,
    )
    elapsed = time.monotonic() - started
    log = child.stdout + child.stderr
    executed = _EXECUTED.findall(log)
    features = _FEATURES.findall(log)
    found = sorted(set(crashes.glob(f"{target}-*")) - before)
    if child.returncode != 0 and not found:  # died without an artifact: still a failure
        found = [Path(f"<exit status {child.returncode}>")]
    return Result(target, elapsed, int(executed[-1]) if executed else 0,
                  int(features[-1][0]) if features else 0,
                  int(features[-1][1]) if features else 0, found, log)


def _child(target: str, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["jetstream", "tests.fuzz"]):
        module = load(target)
    atheris.Setup([sys.argv[0], *libfuzzer_args], module.TestOneInput)  # type: ignore[attr-defined]
    atheris.Fuzz()


def _table(results: list[Result]) -> str:
    lines = [f"{'target':<10} {'seconds':>8} {'executions':>12} {'exec/s':>8} "
             f"{'coverage':>9} {'features':>9} {'crashes':>8}"]
    for r in results:
        lines.append(f"{r.target:<10} {r.seconds:>8.0f} {r.executions:>12,} {r.rate:>8.0f} "
                     f"{r.coverage:>9} {r.features:>9} {len(r.crashes):>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1], argv[3:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run",
                                     description="Fuzz jetstream's decoders with atheris.")
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=f"what to fuzz (default: all of {', '.join(TARGETS)})")
    parser.add_argument("--seconds", type=float, default=60.0, help="per target (default 60)")
    parser.add_argument("--runs", type=int, help="stop a target after this many inputs")
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once")
    parser.add_argument("--seed", type=int, help="libFuzzer's random seed (default: random)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help=f"corpus and crashes (default {DEFAULT_WORKDIR})")
    options = parser.parse_args(argv)
    unknown = sorted(set(options.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target {', '.join(unknown)} (known: {', '.join(TARGETS)})")
    targets = options.targets or list(TARGETS)
    with ThreadPoolExecutor(max_workers=max(options.jobs, 1)) as pool:
        results = list(pool.map(
            lambda t: run_target(t, seconds=options.seconds, workdir=options.workdir,
                                 runs=options.runs, seed=options.seed), targets))
    print(_table(results))
    failed = [r for r in results if r.crashes]
    for r in failed:
        print(f"\n{r.target}: crash, input saved as {', '.join(map(str, r.crashes))}\n"
              + crash_report(r.log), file=sys.stderr)
    return 1 if failed else 0


def crash_report(log: str) -> str:
    """What explains a crash in a child's log: the traceback and libFuzzer's summary, without
    the progress lines."""
    noise = ("#", "INFO:", "WARNING: Failed to find function")
    return "\n".join(line for line in log.splitlines() if not line.startswith(noise))

if __name__ == "__main__":
    sys.exit(main())
