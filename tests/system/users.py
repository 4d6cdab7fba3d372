"""The system accounts the root tests log in as: made for one test run, removed after it.

Why this shape: a user may run the suite on a real server, so nothing it leaves may open a
door. Passwords are random and live only in this process's memory; the tests' superuser is a
member of a group made for the run (`SUPERGROUP`, which test servers get as --supergroup),
never of sudo, wheel or admin; names carry a per-run tag, so two runs on one machine do not
reset each other's accounts. `ensure()` makes the accounts when the first test needs them,
the session's end removes them (tests/conftest.py), and `python -m tests.system.users sweep`
(tests/run.sh's exit trap) removes what a killed run left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import grp
import os
import pwd
import re
import secrets
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

RUN = os.environ.setdefault("JETSTREAM_TEST_RUN", secrets.token_hex(2))
"""Tag of this run's accounts (inherited by the processes the tests start)."""
TAG = "jetstream test account"
"""First GECOS field of every test account, then `run <RUN> pid <pid>`."""


def _name(role: str) -> str:
    return f"jst{RUN}{role}"


ALICE = _name("alice")
BOB = _name("bob")
"""Sandboxed to a directory in the storage tests."""
NOPASS = _name("nopass")
"""No password at all (`passwd -d`): must never log in."""
LOCKED = _name("locked")
"""Right password, but locked (`usermod -L`)."""
EXPIRED = _name("expired")
"""Right password, but the account expired (`chage -E 0`)."""
PWEXPIRED = _name("pwexpired")
"""Right password, but it must be changed first (`chage -d 0`)."""
ADMIN = _name("admin")
"""Member of SUPERGROUP: a superuser of the test servers, nothing more on the machine."""
SUPERGROUP = _name("su")
ALL_USERS = (ALICE, BOB, NOPASS, LOCKED, EXPIRED, PWEXPIRED, ADMIN)

PASSWORDS = {name: secrets.token_urlsafe(24) for name in ALL_USERS if name != NOPASS}
"""Made at import, kept in memory only: no file, no repository, no log holds them."""

SYSTEM_ADMIN_GROUPS = ("root", "sudo", "wheel", "admin", "adm", "shadow", "disk")
LEAKED_PASSWORDS = (
    "alice-Test-pw-1", "bob-Test-pw-2", "locked-Test-pw-3", "expired-Test-pw-4",
    "pwexpired-Test-pw-5", "admin-Test-pw-6",
)
"""Passwords that earlier versions of this file published for fixed account names: no
account on a machine the suite ran on may accept them afterwards."""
_LEGACY_NAMES = ("jsalice", "jsbob", "jsnopass", "jslocked", "jsexpired", "jspwexpired",
                 "jsadmin")
_RUN_OF = re.compile(rf"^{TAG}, run (?P<run>[0-9a-f]+) pid (?P<pid>\d+)$")

_made = False


def ensure() -> None:
    """Create this run's accounts (once per process; root only) and the PAM service."""
    global _made
    if _made:
        return
    sweep()
    subprocess.run([str(REPO / "deploy/install-pam.sh")], check=True)
    atexit.register(remove)  # a crash between here and the session's end still cleans up
    _made = True
    _run("groupadd", SUPERGROUP)
    comment = f"{TAG}, run {RUN} pid {os.getpid()}"
    for name in ALL_USERS:
        _run("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
             "--comment", comment, name)
    lines = "".join(f"{name}:{password}\n" for name, password in PASSWORDS.items())
    subprocess.run(["chpasswd"], input=lines.encode(), check=True)
    _run("passwd", "--quiet", "--delete", NOPASS)
    _run("usermod", "--lock", LOCKED)
    _run("chage", "--expiredate", "0", EXPIRED)
    _run("chage", "--lastday", "0", PWEXPIRED)
    _run("usermod", "--append", "--groups", SUPERGROUP, ADMIN)


def made() -> bool:
    return _made


def remove() -> None:
    """Delete this run's accounts and group (idempotent)."""
    for name in ALL_USERS:
        if _exists(pwd.getpwnam, name):
            _run("userdel", name)
    if _exists(grp.getgrnam, SUPERGROUP):
        _run("groupdel", SUPERGROUP)


def sweep() -> list[str]:
    """Delete test accounts whose run has ended, and the fixed-name accounts of earlier
    versions (their passwords are public); return the names deleted."""
    gone = []
    for entry in pwd.getpwall():
        if entry.pw_name in _LEGACY_NAMES and entry.pw_gecos.startswith("jetstream test"):
            gone.append(entry.pw_name)
        match = _RUN_OF.match(entry.pw_gecos)
        if match and not _alive(int(match["pid"])):
            gone.append(entry.pw_name)
    for name in gone:
        _run("userdel", name)
    live_runs = {m["run"] for e in pwd.getpwall() if (m := _RUN_OF.match(e.pw_gecos))}
    for group in grp.getgrall():
        run = re.fullmatch(r"jst([0-9a-f]+)su", group.gr_name)
        if run and run[1] not in live_runs:
            _run("groupdel", group.gr_name)
    return gone


def accounts_left() -> list[str]:
    """This run's accounts and group that still exist."""
    return [name for name in ALL_USERS if _exists(pwd.getpwnam, name)] + (
        [SUPERGROUP] if _exists(grp.getgrnam, SUPERGROUP) else [])


def accounts_accepting(passwords: tuple[str, ...]) -> list[str]:
    """Accounts on this machine whose password is one of `passwords` (reads /etc/shadow)."""
    libcrypt = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    libcrypt.crypt.restype = ctypes.c_char_p
    libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    found = []
    for line in Path("/etc/shadow").read_text().splitlines():
        name, hashed = line.split(":")[:2]
        if not hashed.startswith("$"):
            continue  # locked (!), disabled (*) or empty: no password to match
        for password in passwords:
            if libcrypt.crypt(password.encode(), hashed.encode()) == hashed.encode():
                found.append(name)
                break
    return found


def _alive(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return b"pytest" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def _exists(lookup, name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def _run(*command: str) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def require_root(*, users: bool = False) -> None:
    """Skip the calling test when not root, but fail on CI; `users`: make the accounts.

    Under CI=true a skipped root test would hide that the suite never ran it.
    """
    import pytest

    if os.geteuid() != 0:
        reason = "needs root (run the suite as root, e.g. tests/run.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    if users:
        ensure()


if __name__ == "__main__":
    if sys.argv[1:] != ["sweep"]:
        sys.exit("usage: python -m tests.system.users sweep")
    for deleted in sweep():
        print(f"removed test account {deleted}")
