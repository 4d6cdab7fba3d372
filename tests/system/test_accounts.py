"""The test accounts open no door: passwords nowhere on disk, no system privilege, and a
killed run's accounts are swept (root)."""

from __future__ import annotations

import pwd
import subprocess
import sys

from tests.system import users
from tests.system.users import REPO, require_root


def test_no_test_password_is_in_the_repository():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.split(b"\0")
    for name in filter(None, tracked):
        path = REPO / name.decode()
        if not path.is_file():
            continue
        text = path.read_bytes()
        for password in users.PASSWORDS.values():
            assert password.encode() not in text, f"{name.decode()} holds a test password"


def test_passwords_differ_per_run():
    other = subprocess.run(
        [sys.executable, "-c", "from tests.system import users; print(*users.PASSWORDS.values())"],
        cwd=REPO, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(REPO)}).stdout.split()
    assert len(other) == len(users.PASSWORDS)
    assert not set(other) & set(users.PASSWORDS.values())


def test_the_superuser_of_the_tests_has_no_system_group():
    require_root(users=True)
    groups = {g for g in users.SYSTEM_ADMIN_GROUPS if _member(users.ADMIN, g)}
    assert groups == set()
    assert _member(users.ADMIN, users.SUPERGROUP)


def test_sweep_removes_the_accounts_of_a_run_that_died():
    require_root()
    dead_pid = _a_dead_pid()
    name = f"jstdead{dead_pid % 100000}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--comment",
                    f"{users.TAG}, run 0dead pid {dead_pid}", name], check=True)
    subprocess.run(["groupadd", "jst0deadsu"], check=True)
    try:
        assert name in users.sweep()
        assert not _exists(name)
        assert "jst0deadsu" not in {line.split(":")[0] for line in
                                    open("/etc/group").read().splitlines()}
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", "jst0deadsu"], capture_output=True)


def test_sweep_keeps_the_accounts_of_a_live_run():
    require_root(users=True)
    users.sweep()
    assert users.accounts_left() == [*users.ALL_USERS, users.SUPERGROUP]


def _a_dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _member(user: str, group: str) -> bool:
    out = subprocess.run(["id", "-nG", user], capture_output=True, text=True, check=True).stdout
    return group in out.split()
