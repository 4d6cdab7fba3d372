"""deploy/lib/as-root.sh, which lets the README's commands (deploy/install.sh, tests/run.sh)
run verbatim as root with no sudo installed, and as a user who may sudo."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.system.users import ALICE, require_root
from tests.transfers.helpers import owned_dir, remove

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.root


@pytest.fixture
def place():
    require_root(users=True)
    base = owned_dir(ALICE, "js-as-root-")
    script = base / "prog.sh"
    script.write_text(f'#!/usr/bin/env bash\n. {REPO}/deploy/lib/as-root.sh\n'
                      'as_root "$0" "$@"\necho "as root: $*"\n')
    script.chmod(0o755)
    fake = base / "with-sudo"
    fake.mkdir()
    (fake / "sudo").write_text('#!/bin/sh\necho "sudo $*"\n')
    (fake / "sudo").chmod(0o755)
    bare = base / "no-sudo"
    bare.mkdir()
    for tool in ("id", "basename", "env", "bash"):
        (bare / tool).symlink_to(shutil.which(tool))
    yield script, fake, bare
    remove(base)


def run(script: Path, path: str, user: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script), "a", "b c"], env={**os.environ, "PATH": path},
                          user=user, capture_output=True, text=True, timeout=30)


def test_root_runs_on_without_sudo(place):
    script, _fake, bare = place
    done = run(script, str(bare), None)
    assert done.returncode == 0 and done.stdout == "as root: a b c\n", done


def test_a_user_is_sent_through_sudo(place):
    script, fake, bare = place
    done = run(script, f"{fake}:{bare}", ALICE)
    assert done.returncode == 0 and done.stdout == f"sudo -- {script} a b c\n", done


def test_a_user_without_sudo_is_told_how_to_become_root(place):
    script, _fake, bare = place
    done = run(script, str(bare), ALICE)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"prog.sh: error: run as root (sudo is not installed: "
                           f"su -c '{script} a b c')\n")
