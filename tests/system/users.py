"""The system accounts the root tests log in as, and the guard for tests that need root.

`create_test_users.sh` creates the accounts (it reads the passwords from here:
`python3 tests/system/users.py` prints `name:password` lines for chpasswd).
"""

from __future__ import annotations

import os
import pwd

ALICE = "jsalice"
BOB = "jsbob"
"""Sandboxed to a directory in the storage tests."""
NOPASS = "jsnopass"
"""No password at all (`passwd -d`): must never log in."""
LOCKED = "jslocked"
"""Right password, but locked (`usermod -L`)."""
EXPIRED = "jsexpired"
"""Right password, but the account expired (`chage -E 0`)."""
PWEXPIRED = "jspwexpired"
"""Right password, but it must be changed first (`chage -d 0`)."""
ADMIN = "jsadmin"
"""Member of group sudo (a default supergroup)."""

PASSWORDS = {
    ALICE: "alice-Test-pw-1",
    BOB: "bob-Test-pw-2",
    LOCKED: "locked-Test-pw-3",
    EXPIRED: "expired-Test-pw-4",
    PWEXPIRED: "pwexpired-Test-pw-5",
    ADMIN: "admin-Test-pw-6",
}
ALL_USERS = (ALICE, BOB, NOPASS, LOCKED, EXPIRED, PWEXPIRED, ADMIN)
CREATE_SCRIPT = "tests/system/create_test_users.sh"


def require_root(*, users: bool = False) -> None:
    """Skip the calling test when not root (or the test users are missing), but fail on CI.

    Under CI=true a skipped root test would hide that the suite never ran it.
    """
    import pytest

    reason = None
    if os.geteuid() != 0:
        reason = "needs root (run the suite as root, e.g. tests/run.sh)"
    elif users and not _users_exist():
        reason = f"needs the test users: run {CREATE_SCRIPT} as root"
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


def _users_exist() -> bool:
    try:
        for name in ALL_USERS:
            pwd.getpwnam(name)
    except KeyError:
        return False
    return True


if __name__ == "__main__":
    for name, password in PASSWORDS.items():
        print(f"{name}:{password}")
