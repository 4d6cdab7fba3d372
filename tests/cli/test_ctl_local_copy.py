"""A local user copies into this machine's own server without a password: the Unix socket
vouches for them, whether the target is written `local:` or as the server's TCP address.

jetstreamctl runs as the test user jsalice, with no $USER and no terminal (so no password
could be typed), as a fresh account on a server would; the venv's interpreter lives under
/root, so the process drops to jsalice after importing jetstreamctl.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import REPO, Result, Servers, running_pair
from tests.system.users import ALICE, PASSWORDS, require_root
from tests.transfers.helpers import owned_dir, remove

pytestmark = pytest.mark.root

AS_USER = r"""
import encodings.idna, os, pwd, sys  # idna: imported on first use, and /root is closed
from jetstream.cli.ctl import main
entry = pwd.getpwnam(sys.argv[1])
os.setgroups(os.getgrouplist(entry.pw_name, entry.pw_gid))
os.setgid(entry.pw_gid)
os.setuid(entry.pw_uid)
main(sys.argv[2:])
"""


def as_alice(home: Path, socket: Path, *args: str, **env: str) -> Result:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("JETSTREAM_") and key not in ("USER", "LOGNAME")}
    environment.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
                        "PYTHONPATH": str(REPO), "JETSTREAM_API_SOCKET": str(socket), **env})
    done = subprocess.run([sys.executable, "-c", AS_USER, ALICE, *args], cwd=REPO,
                          env=environment, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=180)
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    """As conftest's, but in a directory every user can traverse, so jsalice can reach
    the local server's socket."""
    require_root(users=True)
    base = Path(tempfile.mkdtemp(prefix="js-ctl-local-", dir="/tmp"))
    try:
        with running_pair(base) as pair:
            yield pair
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def home():
    path = owned_dir(ALICE, "js-ctl-home-")
    yield path
    remove(path)


def test_copy_into_the_local_server_needs_no_password(servers, home, alice_dir) -> None:
    source = alice_dir / "report.bin"
    who = as_alice(home, servers.socket, "whoami")  # nothing needed: the socket vouches
    assert who.code == 0 and ALICE in who.stdout, who
    source.write_bytes(os.urandom(300_000))
    os.chown(source, alice_dir.stat().st_uid, alice_dir.stat().st_gid)

    into_dir = as_alice(home, servers.socket, "cp", str(source), f"local:{alice_dir}/in/")
    assert into_dir.code == 0, into_dir
    assert (alice_dir / "in" / "report.bin").read_bytes() == source.read_bytes()
    assert (alice_dir / "in" / "report.bin").stat().st_uid == alice_dir.stat().st_uid

    # The same server under its TCP address: recognised by its certificate, still no password.
    by_address = as_alice(home, servers.socket, "cp", str(source),
                          f"127.0.0.1:{servers.local.api_port}:{alice_dir}/copy.bin")
    assert by_address.code == 0, by_address
    assert (alice_dir / "copy.bin").read_bytes() == source.read_bytes()


def test_another_server_asks_for_the_password_of_your_own_account(servers, home,
                                                                    alice_dir) -> None:
    source = alice_dir / "a.txt"
    source.write_text("a\n")
    remote = f"{servers.remote_address}:{alice_dir}/b.txt"
    no_terminal = as_alice(home, servers.socket, "cp", str(source), remote)
    assert no_terminal.one_error_line and no_terminal.code == 3, no_terminal
    assert (f"run jetstreamctl login {servers.remote_address}, or set JETSTREAM_API_PASSWORD "
            f"to log in as {ALICE}") in no_terminal.stderr
    # No $USER, no user@, no --user: the account's own name is the one logged in as.
    sent = as_alice(home, servers.socket, "cp", str(source), remote,
                    JETSTREAM_API_PASSWORD=PASSWORDS[ALICE])
    assert sent.code == 0, sent
    assert (alice_dir / "b.txt").read_text() == "a\n"
