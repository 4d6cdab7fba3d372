"""Suite-wide: the source and destination directories transfer tests start from, and the
end of the run, which removes the test accounts and fails if any remain."""

from __future__ import annotations

import pytest

from tests.system import users
from tests.system.users import ALICE, require_root
from tests.transfers.helpers import owned_dir, remove


@pytest.fixture
def dirs():
    """(src, dst): fresh, owned by ALICE, traversable by everyone; removed afterwards."""
    require_root(users=True)
    src, dst = owned_dir(ALICE, "js-src-"), owned_dir(ALICE, "js-dst-")
    yield src, dst
    remove(src, dst)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not users.made():
        return
    users.remove()
    problems = [f"test account left behind: {name}" for name in users.accounts_left()]
    problems += [f"account accepts a password the tests used: {name}"
                 for name in users.accounts_accepting(
                     (*users.PASSWORDS.values(), *users.LEAKED_PASSWORDS))]
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for problem in problems:
            if reporter is not None:
                reporter.write_line(f"ERROR: {problem}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
