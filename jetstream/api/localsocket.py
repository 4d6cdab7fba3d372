"""Local API access over a Unix socket, authenticated by the kernel (SO_PEERCRED).

A local user should not need a password to manage their own transfers: the kernel already
knows who they are. grpc Python does not expose a connection's peer credentials, so the
public socket is not grpc's own but a small byte proxy in front of it:

    client --unix--> --api-socket (default /run/jetstream/api.sock; mode 0666 in a 0755
                     directory: any local user may connect, identity comes from the kernel)
                       | accept(): SO_PEERCRED says the client's uid
                       | one upstream connection per client connection, from a socket
                       | bound to <private>/c-<n>; "unix:<private>/c-<n>" -> uid is recorded
                       v  before the upstream connection exists, and forgotten after it closed
                     <private>/grpc.sock: an insecure port of the same grpc server

`<private>` is a fresh directory of mode 0700 owned by the server's user (root), so no
one else can dial grpc's port or bind a name grpc would take for a recorded peer; names
are never reused within a process. grpc reports the bound name as `context.peer()`, and the
call interceptor asks `LocalPeers.uid_for(peer)`: a known peer that sends no bearer token
calls as that uid's user (`AuthService.local_caller`; superuser rules as for logins). A
call that does send a token is judged by the token, as on TCP. Data never leaves the host,
so the hop needs no TLS.

Start-up problems (no permission to create the directory, another live server on the same
socket) are logged and leave local access off; the TCP API is unaffected. The socket file
is removed on stop if it is still ours (same inode).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import shutil
import socket
import stat
import struct
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from jetstream.services.auth import Caller
from jetstream.storage.paths import printable

log = logging.getLogger(__name__)

SOCKET_MODE = 0o666
DIR_MODE = 0o755
MAX_CONNECTIONS = 256
"""Concurrent local connections; more are closed at once (each holds four fds)."""
_CHUNK = 256 * 1024
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class LocalPeers:
    """Which proxied grpc peer is which local uid."""

    def __init__(self) -> None:
        self._uids: dict[str, int] = {}

    def add(self, peer: str, uid: int) -> None:
        self._uids[peer] = uid

    def remove(self, peer: str) -> None:
        self._uids.pop(peer, None)

    def uid_for(self, peer: str) -> int | None:
        return self._uids.get(peer)

    def __len__(self) -> int:
        return len(self._uids)


LocalCaller = Callable[[int, str], Awaitable[Caller]]
"""(uid, peer) -> the caller; `AuthService.local_caller`."""


class LocalSocket:
    """The public Unix socket, its proxy and the private grpc port behind it.

    Use: `bind_grpc(server)` before the grpc server starts (adds the private port), then
    `await start()`; `caller_for(peer)` is the interceptor's hook; `await stop()`.
    """

    def __init__(self, path: Path, local_caller: LocalCaller) -> None:
        self.path = path
        self._local_caller = local_caller
        self.peers = LocalPeers()
        self._private: Path | None = None
        self.grpc_path: Path | None = None
        self._callers: dict[str, Caller] = {}
        self._names = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self._identity: tuple[int, int] | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> bool:
        return self._server is not None

    def bind_grpc(self, add_insecure_port: Callable[[str], int]) -> None:
        """Give the grpc server its private port (pass `server.add_insecure_port`) in a
        fresh directory of mode 0700; a failure is logged and leaves local access off."""
        self._private = Path(tempfile.mkdtemp(prefix="jetstream-api-"))
        try:
            add_insecure_port(f"unix:{self._private / 'grpc.sock'}")
        except RuntimeError as exc:
            log.warning("local API socket is off: grpc cannot listen in %s: %s",
                        printable(str(self._private)), exc)
            return
        self.grpc_path = self._private / "grpc.sock"

    async def caller_for(self, peer: str) -> Caller | None:
        """The caller of a call that came through the proxy, or None for other peers.

        Resolved once per connection (like a login session) and forgotten when it closes.
        """
        uid = self.peers.uid_for(peer)
        if uid is None:
            return None
        caller = self._callers.get(peer)
        if caller is None:
            caller = await self._local_caller(uid, peer)
            if self.peers.uid_for(peer) == uid:
                self._callers[peer] = caller
        return caller

    async def start(self) -> bool:
        """Listen on `path`; False (logged) if local access cannot be offered."""
        if self.grpc_path is None:
            return False
        try:
            sock = _listen(self.path)
        except OSError as exc:
            log.warning("local API socket %s is off: %s", printable(str(self.path)),
                        exc.strerror or exc)
            return False
        info = os.stat(self.path)
        self._identity = (info.st_dev, info.st_ino)
        self._server = await asyncio.start_unix_server(self._accept, sock=sock)
        log.info("local API socket %s (peer credentials, no password)",
                 printable(str(self.path)))
        return True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(OSError):
                info = os.stat(self.path)
                if (info.st_dev, info.st_ino) == self._identity:
                    os.unlink(self.path)
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._connections) >= MAX_CONNECTIONS:
            log.warning("local API socket: too many connections; one refused")
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = writer.get_extra_info("socket")
        _pid, uid, _gid = _UCRED.unpack(
            client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        assert self._private is not None and self.grpc_path is not None
        name = self._private / f"c-{next(self._names)}"
        peer = f"unix:{name}"
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up_writer: asyncio.StreamWriter | None = None
        try:
            upstream.setblocking(False)
            upstream.bind(str(name))
            self.peers.add(peer, uid)  # before grpc can see a single byte from this peer
            await asyncio.get_running_loop().sock_connect(upstream, str(self.grpc_path))
            up_reader, up_writer = await asyncio.open_unix_connection(sock=upstream)
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        except OSError as exc:
            log.debug("local API connection of uid %d ended: %s", uid, exc)
        finally:
            self.peers.remove(peer)
            self._callers.pop(peer, None)
            for stream in (up_writer, writer):
                if stream is not None:
                    stream.close()
            if up_writer is None:
                upstream.close()
            with contextlib.suppress(OSError):
                os.unlink(name)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until end of file, then half-close the other side."""
    try:
        while data := await source.read(_CHUNK):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.close()


def _listen(path: Path) -> socket.socket:
    """A listening socket at `path` (mode 0666), its directory made with mode 0755 if new.

    A stale socket file (nobody listening) is replaced; a live one is another server's.
    """
    directory = path.parent
    if not directory.is_dir():
        directory.mkdir(parents=True, mode=DIR_MODE)
        os.chmod(directory, DIR_MODE)  # whatever the umask says
    elif not os.stat(directory).st_mode & 0o001:
        log.warning("%s is not searchable by other users: only its owner and group can "
                    "use the local API socket", printable(str(directory)))
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(info.st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        if _listening(path):
            raise OSError(errno.EADDRINUSE, "another server listens on it")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, SOCKET_MODE)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _listening(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True
