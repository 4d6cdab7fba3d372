"""The container image, built from the project's Dockerfile and run, offline, with rootful
podman (tests/deploy/podman.sh; shared/design/research/containers.md): health checked over
gRPC, a transfer between two containers verified byte for byte, and the README's first
command run verbatim as root in a fresh Debian container without sudo or systemd.

Both containers use the host's network on loopback (no bridge leftovers on the machine),
each with its own ports. The first run on a machine makes the base images (1-3 minutes);
later runs reuse them (/var/tmp/jetstream-podman).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.test_readme import first_commands
from tests.support.servers import unused_tcp_port
from tests.transfers.helpers import tree_digest

REPO = Path(__file__).resolve().parents[2]
PODMAN_SH = REPO / "tests" / "deploy" / "podman.sh"
IMAGE = "localhost/jetstream:ci"
BASE = "docker.io/library/python:3.12-slim"

pytestmark = [pytest.mark.root, pytest.mark.slow]


def podman_env() -> dict[str, str]:
    lines = subprocess.run(["bash", str(PODMAN_SH), "env"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    return {**os.environ, **dict(line.split("=", 1) for line in lines)}


def podman(*args: str, timeout: float = 120, check: bool = True,
           **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True,
                          timeout=timeout, **kwargs)  # type: ignore[call-overload]
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def image() -> str:
    if os.geteuid() != 0:
        pytest.fail("the container tests run as root (rootful podman)")
    built = subprocess.run(["bash", str(PODMAN_SH), "build"], capture_output=True, text=True,
                           timeout=1500)
    assert built.returncode == 0, built.stdout + built.stderr
    return IMAGE


class Containers:
    def __init__(self) -> None:
        self.names: list[str] = []

    def run(self, name: str, *args: str) -> str:
        podman("rm", "-f", "-t", "0", name, check=False)
        self.names.append(name)
        podman("run", "-d", "--name", name, "--network=host", *args)
        return name

    def remove_all(self) -> None:
        for name in self.names:
            podman("rm", "-f", "-t", "5", name, check=False)


@pytest.fixture
def containers() -> Iterator[Containers]:
    made = Containers()
    yield made
    made.remove_all()


def wait_healthy(name: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if podman("healthcheck", "run", name, check=False).returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"{name} never healthy:\n{podman('logs', name).stderr[-3000:]}")


def make_tree(root: Path) -> Path:
    tree = root / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "big.bin").write_bytes(os.urandom(8 << 20))
    for i in range(50):
        (tree / "sub" / f"f{i:02d}.dat").write_bytes(os.urandom(1000 + i * 97))
    (tree / "empty").write_bytes(b"")
    return tree


def test_image_declares_a_grpc_health_check(image):
    [inspected] = json.loads(podman("image", "inspect", image).stdout)
    assert inspected["Healthcheck"]["Test"] == ["CMD", "jetstream", "status", "--quiet"]


def test_transfer_between_two_containers(image, containers, tmp_path):
    ports = {}
    for side in ("a", "b"):
        for sub in ("state", "data"):
            (tmp_path / side / sub).mkdir(parents=True)
        ports[side] = (unused_tcp_port(), unused_tcp_port())
        api, metrics = ports[side]
        containers.run(
            f"jsop-image-{side}",
            "-v", f"{tmp_path / side / 'state'}:/var/lib/jetstream/state",
            "-v", f"{tmp_path / side / 'data'}:/data",
            # Host network: everything on loopback, each container on its own ports.
            "-e", f"JETSTREAM_API_PORT={api}", "-e", f"JETSTREAM_RECV_PORT={api}",
            "-e", "JETSTREAM_RECV_HOST=127.0.0.1", "-e", f"JETSTREAM_METRICS_PORT={metrics}",
            image, "server")
    for side in ("a", "b"):
        wait_healthy(f"jsop-image-{side}")
    tree = make_tree(tmp_path / "a" / "data")

    token = json.loads(podman("exec", "jsop-image-b", "jetstreamctl", "-o", "json", "tokens",
                              "create", "-d", "from container a", "--ttl", "1h").stdout)
    copy = podman("exec", "-e", f"JETSTREAM_API_TOKEN={token['secret']}", "jsop-image-a",
                  "jetstreamctl", "-o", "json", "cp", "/data/tree",
                  f"127.0.0.1:{ports['b'][0]}:/data/in/", timeout=300)
    assert json.loads(copy.stdout)["transfer"]["state"] == "TRANSFER_STATE_COMPLETED"
    assert tree_digest(tmp_path / "b" / "data" / "in" / "tree") == tree_digest(tree)

    # Both servers' metrics count the payload, as the compose dashboard shows it.
    for side, direction in (("a", "outgoing"), ("b", "incoming")):
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{ports[side][1]}/metrics",
                                        timeout=10).read().decode()
        moved = re.search(rf'^jetstream_transfer_bytes_total\{{direction="{direction}"\}} (\S+)$',
                          scrape, re.M)
        assert moved and float(moved[1]) >= 8 << 20, (side, moved)


def repo_archive(path: Path) -> Path:
    """The repository's files (tracked and new, not ignored), as a fresh clone has them."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=REPO, capture_output=True, check=True
                           ).stdout
    existing = b"\0".join(f for f in files.split(b"\0") if f and (REPO / f.decode()).exists())
    subprocess.run(["tar", "--null", "-T", "-", "-cf", str(path)], cwd=REPO, input=existing,
                   check=True)
    return path


def test_readme_first_command_verbatim_in_a_fresh_debian(image, tmp_path):
    """As root in a Debian container (no sudo, no systemd), the README's install-and-demo
    line runs as it is written; then the server stops and uninstalls, keeping its state."""
    archive = repo_archive(tmp_path / "repo.tar")
    cache = Path(podman_env()["CONTAINERS_CONF"]).parent
    (cache / "apt-archives" / "partial").mkdir(parents=True, exist_ok=True)
    (cache / "pip-cache").mkdir(exist_ok=True)
    newcomer = (
        "set -e; mkdir /src && tar -xf /repo.tar -C /src && cd /src; "
        "! command -v sudo; ! test -d /run/systemd/system; "
        f"{first_commands()[0]}; "
        "echo '== status'; jetstream status; "
        "echo '== stop'; jetstream stop; "
        "echo '== uninstall'; deploy/uninstall.sh; "
        "test -s /var/lib/jetstream/state/jetstream.db; ! test -e /usr/local/bin/jetstream"
    )
    done = podman("run", "--rm", "--network=host", "-v", f"{archive}:/repo.tar:ro",
                  "-v", f"{cache / 'apt-archives'}:/var/cache/apt/archives",
                  "-v", f"{cache / 'pip-cache'}:/root/.cache/pip",
                  BASE, "bash", "-c", newcomer, timeout=1200, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "received tree is identical" in done.stdout, output[-4000:]
    for line in ("settings   /etc/jetstream/server.toml", "stop       jetstream stop",
                 "log        /var/log/jetstream/server.log", "jetstream server is ready"):
        assert line in done.stdout, output[-4000:]
    assert "service: jetstream start (supervisor pid" in done.stdout
    assert "kept its state in /var/lib/jetstream" in done.stdout
