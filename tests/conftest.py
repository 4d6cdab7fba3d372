"""Suite-wide: the test accounts are removed at the end, and the run fails if any remain."""

from __future__ import annotations

import pytest

from tests.system import users


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
