"""The Node.js client example against real servers: "any language" with only the protos.

`clients/node/example.js` (@grpc/grpc-js + @grpc/proto-loader, loading proto/ at run time)
logs in, reads the server info, creates a destination, pushes a file and watches it to
completion; `reflect.js` works with no .proto file at all, from server reflection. The npm
packages are installed here with `npm ci` when clients/node/node_modules is missing (CI
reaches the npm registry). `clients/generate.sh` is run too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import REPO
from tests.system.users import ALICE, PASSWORDS, require_root
from tests.transfers.helpers import chown_tree

NODE_DIR = REPO / "clients" / "node"
pytestmark = pytest.mark.root


def need_node() -> None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if not missing:
        return
    reason = f"{' and '.join(missing)} not installed"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    require_root(users=True)
    need_node()
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    return NODE_DIR / "node_modules"


def node(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JETSTREAM_")}
    return subprocess.run(["node", script, *args], cwd=NODE_DIR, env={**clean, **env},
                          capture_output=True, text=True, timeout=300)


def test_node_example_pushes_a_file_that_arrives_intact(node_modules, servers, alice_dir):
    source = alice_dir / "out"
    source.mkdir()
    payload = os.urandom(3 << 20)
    (source / "data.bin").write_bytes(payload)
    (source / "sub").mkdir()
    (source / "sub" / "note.txt").write_text("from node\n")
    chown_tree(source, ALICE)
    target = alice_dir / "in"

    done = node("example.js", "--api", f"127.0.0.1:{servers.local.api_port}", "--user", ALICE,
                "--dest", servers.remote_address, "--source", str(source),
                "--dest-path", str(target), JETSTREAM_PASSWORD=PASSWORDS[ALICE])
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["state"] == "TRANSFER_STATE_COMPLETED", outcome
    assert outcome["bytes_done"] == str(len(payload) + len("from node\n"))
    arrived = (target / "out" / "data.bin").read_bytes()
    assert hashlib.sha256(arrived).digest() == hashlib.sha256(payload).digest()
    assert (target / "out" / "sub" / "note.txt").read_text() == "from node\n"
    assert "created destinations/" in done.stderr and "TRANSFER_STATE_COMPLETED" in done.stderr


def test_node_example_refuses_another_certificate(node_modules, servers, alice_dir):
    done = node("example.js", "--api", f"127.0.0.1:{servers.local.api_port}", "--user", ALICE,
                "--dest", servers.remote_address, "--source", str(alice_dir),
                "--fingerprint", "SHA256:" + "00" * 32, JETSTREAM_PASSWORD=PASSWORDS[ALICE])
    assert done.returncode == 1
    assert "certificate" in done.stderr and "changed" in done.stderr, done.stderr


def test_node_reflection_client_needs_no_protos(node_modules, servers):
    done = node("reflect.js", "--api", servers.remote_address)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert {"jetstream.v1.TransferService", "jetstream.v1.AuthService"} <= set(found["services"])
    assert found["fingerprint"] == found["reported_fingerprint"]
    assert found["server_uid"]


def test_generate_clients(node_modules, tmp_path):
    done = subprocess.run([str(REPO / "clients" / "generate.sh"), str(tmp_path)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    assert "python typescript" in done.stdout
    if shutil.which("go") is None:
        assert "skipping Go" in done.stderr
    assert (tmp_path / "typescript" / "jetstream" / "v1" / "transfers.ts").is_file()
    check = subprocess.run(
        [sys.executable, "-c", "from jetstream.v1 import transfers_pb2_grpc, transfers_pb2; "
         "print(transfers_pb2.__file__); transfers_pb2_grpc.TransferServiceStub"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "python")},
        capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(str(tmp_path)), check.stdout
