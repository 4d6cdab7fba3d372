"""Real PAM logins against the real test users (root; tests/system/users.py makes them).

The authenticator pads failures to `FLOOR` seconds; the failing cases run concurrently so
the whole file takes a few seconds.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import secrets
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from jetstream.auth.pam import FAILURE_MESSAGE, PamAuthenticator, pam_service_problem
from jetstream.auth.principal import lookup_principal
from jetstream.errors import NotFound, Unauthenticated
from tests.system import users
from tests.system.users import PASSWORDS

FLOOR = 0.3
REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.root


@pytest.fixture
def authenticator():
    auth = PamAuthenticator(failure_delay=FLOOR, workers=8)
    yield auth
    auth.close()


@pytest.fixture
def temporary_service():
    """Write a throwaway /etc/pam.d service; yields a function(text) -> service name."""
    made: list[Path] = []

    def make(text: str) -> str:
        path = Path("/etc/pam.d") / f"jetstream-test-{secrets.token_hex(4)}"
        path.write_text(text)
        made.append(path)
        return path.name

    yield make
    for path in made:
        path.unlink(missing_ok=True)


def login(auth: PamAuthenticator, user: str, password: str, source: str = "192.0.2.1"):
    return auth.authenticate(user, password, source=source)


async def outcome(auth: PamAuthenticator, user: str, password: str) -> tuple[str, float]:
    started = time.monotonic()
    try:
        await login(auth, user, password)
    except Exception as err:  # noqa: BLE001 - the exact type is what is compared
        return f"{type(err).__qualname__}: {err}", time.monotonic() - started
    return "success", time.monotonic() - started


def test_right_password_logs_in(authenticator):
    principal = asyncio.run(login(authenticator, users.ALICE, PASSWORDS[users.ALICE]))
    assert principal == lookup_principal(users.ALICE)
    assert principal.username == users.ALICE
    assert principal.full_name == users.TAG
    assert principal.domain == "" and not principal.is_superuser


def test_admin_has_the_test_supergroup_and_no_system_privilege(authenticator):
    principal = asyncio.run(login(authenticator, users.ADMIN, PASSWORDS[users.ADMIN]))
    assert grp.getgrnam(users.SUPERGROUP).gr_gid in principal.groups
    assert principal.gid in principal.groups
    names = {grp.getgrgid(gid).gr_name for gid in principal.groups}
    assert not names & set(users.SYSTEM_ADMIN_GROUPS), names


def test_every_failure_looks_the_same(authenticator):
    cases = {
        "wrong password": (users.ALICE, "not-the-password"),
        "unknown user": (f"jsnobody{secrets.token_hex(3)}", "whatever-pw"),
        "no-password account, some password": (users.NOPASS, "anything"),
        "no-password account, empty password": (users.NOPASS, ""),
        "empty password for a real user": (users.ALICE, ""),
        "locked": (users.LOCKED, PASSWORDS[users.LOCKED]),
        "account expired": (users.EXPIRED, PASSWORDS[users.EXPIRED]),
        "password expired": (users.PWEXPIRED, PASSWORDS[users.PWEXPIRED]),
        "empty user name": ("", "whatever-pw"),
        "NUL in password": (users.ALICE, PASSWORDS[users.ALICE] + "\0x"),
        "control character in name": (users.ALICE + "\n", PASSWORDS[users.ALICE]),
        "overlong password": (users.ALICE, "p" * 10_000),
    }

    async def run_all() -> list[tuple[str, float]]:
        return await asyncio.gather(*(outcome(authenticator, u, p) for u, p in cases.values()))

    results = dict(zip(cases, asyncio.run(run_all()), strict=True))
    expected = f"Unauthenticated: {FAILURE_MESSAGE}"
    assert {name: text for name, (text, _) in results.items()} == dict.fromkeys(cases, expected)
    assert all(elapsed >= FLOOR for _, elapsed in results.values()), results


def test_failure_timing_does_not_tell_whether_the_user_exists(authenticator):
    async def measure() -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {"existing": [], "unknown": []}
        for _ in range(4):
            _, existing = await outcome(authenticator, users.ALICE, "wrong-password")
            _, unknown = await outcome(authenticator, "jsnobody-x", "wrong-password")
            samples["existing"].append(existing)
            samples["unknown"].append(unknown)
        return samples

    samples = asyncio.run(measure())
    difference = abs(statistics.median(samples["existing"]) - statistics.median(samples["unknown"]))
    assert difference < 0.05, samples


def test_password_is_never_logged(authenticator, caplog):
    secret = "leak-check-" + secrets.token_hex(8)
    caplog.set_level(logging.DEBUG)
    for name in (users.ALICE, "jsnobody-y"):
        with pytest.raises(Unauthenticated):
            asyncio.run(login(authenticator, name, secret))
    assert caplog.records
    assert all(secret not in record.getMessage() for record in caplog.records)


def test_the_client_address_reaches_pam(authenticator, temporary_service, tmp_path):
    seen = tmp_path / "rhost"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$PAM_RHOST" > {seen}\n')
    hook.chmod(0o755)
    service = temporary_service(
        f"auth optional pam_exec.so {hook}\nauth required pam_unix.so nodelay\n"
        "account required pam_unix.so\n"
    )
    auth = PamAuthenticator(service, failure_delay=FLOOR)
    try:
        asyncio.run(login(auth, users.ALICE, PASSWORDS[users.ALICE], source="203.0.113.9"))
    finally:
        auth.close()
    assert seen.read_text().strip() == "203.0.113.9"


def test_a_module_failure_delay_is_served_without_holding_threads(temporary_service):
    service = temporary_service(
        "auth optional pam_faildelay.so delay=1000000\nauth required pam_unix.so nodelay\n"
        "account required pam_unix.so\n"
    )
    auth = PamAuthenticator(service, failure_delay=0.01, workers=1)

    async def four_failures() -> list[tuple[str, float]]:
        return await asyncio.gather(*(outcome(auth, users.ALICE, "wrong") for _ in range(4)))

    started = time.monotonic()
    try:
        results = asyncio.run(four_failures())
    finally:
        auth.close()
    total = time.monotonic() - started
    # PAM asks for 0.5-1.5 s per failure; slept on one thread, four would take >= 2 s.
    assert all(elapsed >= 0.45 for _, elapsed in results), results
    assert total < 1.9


def test_lookup_of_an_unknown_user():
    with pytest.raises(NotFound):
        lookup_principal("jsnobody-z")


def test_installed_service_file_is_ours_and_sound():
    installed = Path("/etc/pam.d/jetstream").read_text()
    assert installed == (REPO / "deploy/pam/jetstream").read_text()
    assert pam_service_problem() is None


def test_service_file_problems_are_reported(tmp_path):
    directory = str(tmp_path)
    assert "is missing" in (pam_service_problem(directories=[directory]) or "")
    service = tmp_path / "jetstream"
    service.write_text("auth required pam_unix.so nullok\n")
    assert "nullok" in (pam_service_problem(directories=[directory]) or "")
    service.write_text("auth required pam_unix.so  # not nullok\n")
    assert pam_service_problem(directories=[directory]) is None
    service.chmod(0o666)
    assert "writable only by root" in (pam_service_problem(directories=[directory]) or "")


def test_installer_keeps_local_edits_unless_forced(tmp_path):
    script = REPO / "deploy/install-pam.sh"
    env = {**os.environ, "PAM_DIR": str(tmp_path)}
    installed = tmp_path / "jetstream"
    subprocess.run([script], env=env, check=True)
    assert installed.read_text() == (REPO / "deploy/pam/jetstream").read_text()
    assert installed.stat().st_mode & 0o777 == 0o644
    installed.write_text("auth required pam_unix.so\naccount required pam_unix.so\n")
    edited = installed.read_text()
    result = subprocess.run([script], env=env, check=True, capture_output=True, text=True)
    assert installed.read_text() == edited and "kept locally edited" in result.stderr
    subprocess.run([script, "--force"], env=env, check=True)
    assert installed.read_text() == (REPO / "deploy/pam/jetstream").read_text()
