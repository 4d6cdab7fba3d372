"""Trigger directories for tests: scripts that record how they were called."""

from __future__ import annotations

import json
import sys
from pathlib import Path

RECORDER = """#!{python}
import json, os, sys, time
record = {{"argv": sys.argv[1:], "stdin": json.load(sys.stdin), "uid": os.getuid(),
          "env": {{k: v for k, v in os.environ.items()}}, "script": sys.argv[0],
          "pgid": os.getpgid(0), "pid": os.getpid(), "time": time.time()}}
name = "{out}/%s.%s.%d.json" % (record["stdin"]["event"], os.path.basename(sys.argv[0]),
                                 os.getpid())
with open(name + ".tmp", "w") as f:
    json.dump(record, f)
os.rename(name + ".tmp", name)
print("recorded", record["stdin"]["event"])
"""


def make_trigger_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def install(path: Path, text: str, mode: int = 0o755) -> Path:
    """A script at `path` (its folder made too), written whole and then given its mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    temp = path.with_name("." + path.name + ".new")
    temp.write_text(text)
    temp.chmod(mode)
    temp.rename(path)
    return path


def recorder(path: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return install(path, RECORDER.format(python=sys.executable, out=out))


def records(out: Path, event: str | None = None) -> list[dict]:
    found = []
    for item in sorted(out.glob("*.json")):
        record = json.loads(item.read_text())
        if event is None or record["stdin"]["event"] == event:
            found.append(record)
    return found
