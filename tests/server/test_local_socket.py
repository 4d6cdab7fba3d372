"""Local API access over the Unix socket: the kernel's peer credentials, no password.

The clients run in subprocesses that switch to the test user (setgroups/setgid/setuid)
after importing grpc, then connect: the server sees that user's uid through SO_PEERCRED.
(The venv's interpreter lives under /root, which the test users cannot read, so the
switch happens after start-up instead of through `subprocess.run(user=...)`.)
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
from grpc import aio

from jetstream.app import Server, start_server
from jetstream.client.channel import Endpoint, open_aio_channel
from jetstream.v1 import auth_pb2, auth_pb2_grpc, files_pb2, files_pb2_grpc
from tests.support.servers import server_config
from tests.system.users import ALICE, BOB, require_root

REPO = Path(__file__).resolve().parents[2]

CLIENT = r"""
import json, os, pwd, sys
import grpc
from jetstream.v1 import auth_pb2, auth_pb2_grpc, files_pb2, files_pb2_grpc

socket_path, user, secret_dir = sys.argv[1:4]
if user != "root":
    entry = pwd.getpwnam(user)
    os.setgroups(os.getgrouplist(user, entry.pw_gid))
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
result = {"uid": os.getuid()}
with grpc.insecure_channel("unix:" + socket_path) as channel:
    who = auth_pb2_grpc.AuthServiceStub(channel).WhoAmI(auth_pb2.WhoAmIRequest(), timeout=10)
    result["username"] = who.principal.username
    result["superuser"] = who.principal.superuser
    try:
        files_pb2_grpc.FileServiceStub(channel).ListDirectory(
            files_pb2.ListDirectoryRequest(path=secret_dir), timeout=10)
        result["secret"] = "listed"
    except grpc.RpcError as exc:
        result["secret"] = exc.code().name
print(json.dumps(result))
"""


def run_client(socket_path: Path, user: str, secret_dir: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, str(socket_path), user, str(secret_dir)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def place():
    """/tmp/js-local-*/ (mode 0755) for the socket's directory, which the server creates."""
    require_root(users=True)
    path = Path(tempfile.mkdtemp(prefix="js-local-", dir="/tmp"))
    path.chmod(0o755)
    (path / "secret").mkdir(mode=0o700)
    yield path
    shutil.rmtree(path)


async def start(state: Path, socket_path: Path) -> Server:
    return await start_server(server_config(state, api_socket=str(socket_path)))


async def serve(stack: AsyncExitStack, state: Path, socket_path: Path) -> Server:
    server = await start(state, socket_path)
    stack.push_async_callback(server.stop)
    return server


def test_local_users_are_who_the_kernel_says_without_a_password(tmp_path, place):
    socket_path = place / "run" / "api.sock"
    secret = place / "secret"

    async def main() -> None:
        async with AsyncExitStack() as stack:
            await serve(stack, tmp_path / "state", socket_path)
            assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o666
            assert stat.S_IMODE(os.stat(socket_path.parent).st_mode) == 0o755

            alice, bob, root = await asyncio.gather(*(
                asyncio.to_thread(run_client, socket_path, user, secret)
                for user in (ALICE, BOB, "root")))
            assert alice == {"uid": pwd.getpwnam(ALICE).pw_uid, "username": ALICE,
                             "superuser": False, "secret": "PERMISSION_DENIED"}
            assert bob["username"] == BOB and bob["secret"] == "PERMISSION_DENIED"
            assert root == {"uid": 0, "username": "root", "superuser": True,
                            "secret": "listed"}

            # Root in this process too; Logout has no session to end.
            channel = aio.insecure_channel(f"unix:{socket_path}")
            stack.push_async_callback(channel.close)
            auth = auth_pb2_grpc.AuthServiceStub(channel)
            who = await auth.WhoAmI(auth_pb2.WhoAmIRequest())
            assert (who.principal.username, who.principal.uid) == ("root", 0)
            with pytest.raises(aio.AioRpcError) as info:
                await auth.Logout(auth_pb2.LogoutRequest())
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            # A token sent over the socket is judged as a token.
            with pytest.raises(aio.AioRpcError) as info:
                await auth.WhoAmI(auth_pb2.WhoAmIRequest(),
                                  metadata=(("authorization", "Bearer jst_forged"),))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

        assert not socket_path.exists()

    asyncio.run(main())


def test_the_tcp_api_still_needs_credentials(tmp_path, place):
    socket_path = place / "api.sock"

    async def main() -> None:
        async with AsyncExitStack() as stack:
            server = await serve(stack, tmp_path / "state", socket_path)
            channel, _ = await open_aio_channel(Endpoint("127.0.0.1", server.api_port))
            stack.push_async_callback(channel.close)
            with pytest.raises(aio.AioRpcError) as info:
                await files_pb2_grpc.FileServiceStub(channel).ListDirectory(
                    files_pb2.ListDirectoryRequest(path="/"))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # Nobody but the server's user may reach grpc's private port behind the proxy.
            local = server.local
            assert local is not None and local.grpc_path is not None
            private = local.grpc_path.parent
            assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
            assert os.stat(private).st_uid == 0

    asyncio.run(main())


def test_a_stale_socket_is_replaced_and_a_live_one_is_left_alone(tmp_path, place):
    socket_path = place / "api.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path))
    stale.close()  # the file stays, nobody listens: what kill -9 leaves behind

    async def main() -> None:
        async with AsyncExitStack() as stack:
            first = await serve(stack, tmp_path / "a", socket_path)
            assert first.local is not None and first.local.active
            second = await start(tmp_path / "b", socket_path)
            try:
                assert second.local is None  # logged; the first keeps the socket
            finally:
                await second.stop()
            assert socket_path.exists()  # not the second server's to remove
            channel = aio.insecure_channel(f"unix:{socket_path}")
            stack.push_async_callback(channel.close)
            who = await auth_pb2_grpc.AuthServiceStub(channel).WhoAmI(auth_pb2.WhoAmIRequest())
            assert who.principal.username == "root"

    asyncio.run(main())
