"""File access with the authenticated user's rights, strictly beneath a sandbox root.

Acting as the user: the server runs as root, so every operation here runs on a worker
thread that has switched *its own* kernel credentials to the user's for the duration of the
call (`user_credentials`): supplementary groups through the raw setgroups syscall (glibc's
setgroups() would change every thread of the process), then setfsgid, setfsuid, and an empty
effective capability set (capset is per thread too). setfsuid alone would leave capabilities
like CAP_SYS_RESOURCE in effect, which lets a write ignore disk quotas and the root reserve.
setfsuid never reports failure, so the switch is read back and verified before `fn` runs, and
restored and verified after; a thread that cannot be restored refuses all further work.
This was chosen over a privilege-dropped helper process per user (file descriptors passed
back over SCM_RIGHTS): the kernel then checks every access against the user's identity
exactly as if the user made the call, with no IPC protocol to design and no process per
user, and fds opened this way stay valid on any thread. The price is discipline, enforced
in code: credentials switch only on threads that are neither the main thread nor an event
loop's, and the operations below refuse to run unless the current thread acts as a user.
umask is per process unless a thread unshares its fs_struct; worker threads do
(unshare(CLONE_FS)) and run with umask 0 so the explicit modes passed here are exact.

Resolution: a `Location` is a sandbox root plus a validated `RelPath` (no `..`, no `.`,
see paths.py). The root is opened by its configured path, then every component is opened
relative to the previous directory fd with O_NOFOLLOW|O_DIRECTORY, and each operation acts
on the final name relative to its parent's fd with *at() calls that do not follow links. A
symlink anywhere in the path is refused (PathEscape), and there is no window between check
and use in which swapping a directory for a link changes where the operation lands: the fds
pin what was checked. openat2(RESOLVE_BENEATH) would do the same walk in one syscall; with
`..` refused by the parser it adds nothing but speed. The unconfined root `/` (no sandbox)
follows links in directory components, since nothing lies outside it; the user's rights are
then the only limit, as they are for everything here.

Errors are translated into jetstream.errors with the escaped, sandbox-relative path.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import io
import logging
import os
import platform
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from stat import S_IMODE, S_ISDIR, S_ISLNK, S_ISREG
from typing import ParamSpec, Protocol, TypeVar, runtime_checkable

from jetstream.auth.principal import Principal
from jetstream.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    JetstreamError,
    NotFound,
    PathEscape,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from jetstream.storage.directio import DirectWriter, pwrite_all
from jetstream.storage.paths import MAX_NAME_BYTES, RelPath, printable
from jetstream.storage.sandbox import Location, SandboxRoot

DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
"""What umask 022 would give; pass other modes to the operations to configure it. Only the
permission bits 0o777 are ever applied: setuid/setgid/sticky never come from the network."""

log = logging.getLogger("jetstream.storage")

_P = ParamSpec("_P")
_T = TypeVar("_T")

_libc = ctypes.CDLL(None, use_errno=True)
for _setfsid in (_libc.setfsuid, _libc.setfsgid):
    _setfsid.argtypes, _setfsid.restype = [ctypes.c_uint32], ctypes.c_uint32
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159}.get(platform.machine())
_CLONE_FS = 0x200
_RENAME_NOREPLACE = 1
_CAP_VERSION_3 = 0x20080522
_NO_ID = 0xFFFFFFFF  # an invalid id: setfsuid/setfsgid then only report the current one
_WALK = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_IOV_MAX = 1024
"""Buffers one pwritev takes (Linux's UIO_MAXIOV)."""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_CapSet = _CapData * 2


@dataclass(frozen=True)
class _Creds:
    fsuid: int
    fsgid: int
    groups: frozenset[int]
    caps: tuple[int, ...]
    """(effective, permitted, inheritable) of both 32-bit capability words."""


class _ThreadState(threading.local):
    unshared = False
    broken = False
    principal: Principal | None = None


_state = _ThreadState()


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise Unavailable(f"cannot switch file credentials: {what}: {os.strerror(code)}")


def _read_creds() -> _Creds:
    caps = _CapSet()
    _check(_libc.capget(ctypes.byref(_CapHeader(_CAP_VERSION_3, 0)), caps), "capget")
    return _Creds(
        fsuid=_libc.setfsuid(_NO_ID),
        fsgid=_libc.setfsgid(_NO_ID),
        groups=frozenset(os.getgroups()),
        caps=tuple(v for c in caps for v in (c.effective, c.permitted, c.inheritable)),
    )


def _write_creds(creds: _Creds) -> None:
    """Make this thread's credentials `creds`; groups and ids before dropping capabilities,
    capabilities back before ids and groups, as each step needs CAP_SETUID/CAP_SETGID."""
    caps = _CapSet()
    for word, index in zip(caps, (0, 3), strict=True):
        word.effective, word.permitted, word.inheritable = creds.caps[index : index + 3]
    header = _CapHeader(_CAP_VERSION_3, 0)
    dropping = creds.caps[0] == creds.caps[3] == 0
    if not dropping:
        _check(_libc.capset(ctypes.byref(header), caps), "capset")
    groups = (ctypes.c_uint32 * len(creds.groups))(*sorted(creds.groups))
    _check(_libc.syscall(_SYS_SETGROUPS, len(creds.groups), groups), "setgroups")
    _libc.setfsgid(creds.fsgid)
    _libc.setfsuid(creds.fsuid)
    if dropping:
        _check(_libc.capset(ctypes.byref(header), caps), "capset")
    if _read_creds() != creds:
        raise Unavailable("cannot switch file credentials: the kernel did not apply them")


@contextmanager
def user_credentials(principal: Principal) -> Iterator[None]:
    """Run the block with `principal`'s file-system identity, on this thread only.

    Only on a dedicated worker thread: never the main thread or an event loop's thread.
    """
    if _state.broken:
        raise Unavailable("this worker thread could not restore its credentials earlier")
    if _state.principal is not None:
        raise RuntimeError("this thread is already acting as a user")
    if threading.current_thread() is threading.main_thread() or _in_event_loop():
        raise RuntimeError("switch credentials on a worker thread, not the main or loop thread")
    if _SYS_SETGROUPS is None:
        raise Unavailable(f"acting as a user is not supported on {platform.machine()}")
    if not _state.unshared:
        _check(_libc.unshare(_CLONE_FS), "unshare(CLONE_FS)")
        _state.unshared = True
    saved = _read_creds()
    no_effective = tuple(0 if i in (0, 3) else v for i, v in enumerate(saved.caps))
    wanted = _Creds(principal.uid, principal.gid, frozenset(principal.groups), no_effective)
    umask = os.umask(0)
    try:
        _write_creds(wanted)
        _state.principal = principal
        yield
    finally:
        _state.principal = None
        try:
            _write_creds(saved)
        except BaseException:
            _state.broken = True
            raise
        os.umask(umask)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _require_user() -> None:
    if _state.principal is None:
        raise RuntimeError("file operations must run inside user_credentials() (UserFS.run)")


def _as_user(principal: Principal, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    with user_credentials(principal):
        return fn(*args, **kwargs)


@runtime_checkable
class _Closeable(Protocol):
    def close(self) -> None: ...


class UserFS:
    """A small pool of credential-switching threads; `run` is the way in from asyncio.

    Usage: `await userfs.run(principal, userfs_module.mkdir, location, parents=True)`.
    """

    def __init__(self, *, workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="jetstream-userfs")

    async def run(
        self, principal: Principal, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """`fn(*args, **kwargs)` on a worker thread acting as `principal`.

        If the caller is cancelled while `fn` runs, a file or PartFile it returns is closed
        (as the user) instead of leaking.
        """
        call = functools.partial(_as_user, principal, fn, *args, **kwargs)
        future = asyncio.get_running_loop().run_in_executor(self._pool, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(functools.partial(self._close_orphan, principal))
            raise

    def _close_orphan(self, principal: Principal, future: asyncio.Future[_T]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        result = future.result()
        if isinstance(result, PartFile) and result.resumed:
            result.detach()  # a resumable partial file stays for the next attempt
        elif isinstance(result, _Closeable):
            self._pool.submit(_as_user, principal, result.close).add_done_callback(_log_failure)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _log_failure(future: Future[None]) -> None:
    if future.exception() is not None:
        log.warning("cleaning up after a cancelled call failed: %s", future.exception())


# Error translation ----------------------------------------------------------------------

_ERRORS: dict[int, tuple[type[JetstreamError], str]] = {
    errno.ENOENT: (NotFound, "{p}: no such file or directory"),
    errno.EACCES: (PermissionDenied, "{p}: permission denied"),
    errno.EPERM: (PermissionDenied, "{p}: operation not permitted"),
    errno.ELOOP: (PathEscape, "{p}: is a symbolic link, and links are not followed here"),
    errno.ENOSPC: (ResourceExhausted, "no space left on device writing {p}"),
    errno.EDQUOT: (ResourceExhausted, "disk quota exceeded writing {p}"),
    errno.EFBIG: (ResourceExhausted, "{p}: file too large for this file system"),
    errno.EMFILE: (ResourceExhausted, "{p}: too many open files on the server"),
    errno.ENFILE: (ResourceExhausted, "{p}: too many open files on the server"),
    errno.EEXIST: (AlreadyExists, "{p} already exists"),
    errno.ENOTEMPTY: (FailedPrecondition, "{p}: directory not empty"),
    errno.ENOTDIR: (FailedPrecondition, "{p}: not a directory"),
    errno.EISDIR: (FailedPrecondition, "{p} is a directory"),
    errno.EXDEV: (FailedPrecondition, "{p}: cannot move across file systems"),
    errno.EROFS: (FailedPrecondition, "{p}: read-only file system"),
    errno.EBUSY: (FailedPrecondition, "{p}: busy (a mount point?)"),
    errno.EINVAL: (InvalidArgument, "{p}: invalid operation (a directory into itself?)"),
    errno.ENAMETOOLONG: (InvalidArgument, "{p}: name too long"),
    errno.EIO: (Unavailable, "{p}: input/output error"),
}


def translate(err: OSError, path: object) -> JetstreamError:
    """`err` as the jetstream error a client sees, naming `path` (sandbox-relative)."""
    shown = printable(str(path))
    cls, template = _ERRORS.get(err.errno or 0, (JetstreamError, "{p}: {e}"))
    return cls(template.format(p=shown, e=err.strerror))


@contextmanager
def _errors_for(path: object) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise translate(err, path) from err


# Resolution -----------------------------------------------------------------------------


def _open_dir(root: SandboxRoot, parts: tuple[str, ...], *, create: int | None = None) -> int:
    """An O_PATH fd of directory `root/parts`, refusing symlinks where the root is confined.

    `create`: make missing directories with this mode (mkdir -p).
    """
    with _errors_for(f"sandbox root {root.path}"):
        fd = os.open(root.path, _WALK)
    flags = _WALK | (os.O_NOFOLLOW if root.confined else 0)
    try:
        for depth, name in enumerate(parts, 1):
            prefix = "/" + "/".join(parts[:depth])
            with _errors_for(prefix):
                try:
                    child = os.open(name, flags, dir_fd=fd)
                except FileNotFoundError:
                    if create is None:
                        raise
                    try:
                        os.mkdir(name, create, dir_fd=fd)
                    except FileExistsError:
                        pass  # made concurrently: open it like any other
                    child = os.open(name, flags, dir_fd=fd)
                except NotADirectoryError:
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if root.confined and S_ISLNK(info.st_mode):
                        raise OSError(errno.ELOOP, "symbolic link") from None
                    raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


class DirCache:
    """Directory fds walked to once for many operations in one call on a worker thread: a
    batch of small files shares a few directories, and each walk costs a system call per
    path component. The fds pin what was checked, as a single operation's walk does. Bound
    to the user the thread acts as when it is made: use and close it within that call."""

    def __init__(self) -> None:
        _require_user()
        self._principal = _state.principal
        self._fds: dict[tuple[SandboxRoot, tuple[str, ...]], int] = {}

    def open(self, root: SandboxRoot, parts: tuple[str, ...], *, create: int | None) -> int:
        """The fd of directory `root/parts` (`create`: as in `_open_dir`); owned by the
        cache."""
        if _state.principal is not self._principal:
            raise RuntimeError("a DirCache is used only by the user that made it")
        fd = self._fds.get((root, parts))
        if fd is None:
            fd = self._fds[root, parts] = _open_dir(root, parts, create=create)
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> DirCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def _parent(loc: Location, *, create: int | None = None,
            dirs: DirCache | None = None) -> Iterator[int]:
    """The parent directory's fd of a location that names an entry (not the root);
    `dirs`: reuse (and keep) the fds of directories walked to before."""
    if not loc.path.parts:
        raise InvalidArgument("this operation needs a name below the sandbox root, not '/'")
    if dirs is not None:
        yield dirs.open(loc.root, loc.path.parts[:-1], create=create)
        return
    fd = _open_dir(loc.root, loc.path.parts[:-1], create=create)
    try:
        yield fd
    finally:
        os.close(fd)


# Operations (each runs inside user_credentials) -----------------------------------------


@dataclass(frozen=True)
class Entry:
    name: str
    """On-disk name; may hold surrogate escapes if it is not valid UTF-8."""
    kind: str
    """"file", "directory", "symlink" or "other"."""
    size: int
    mode: int
    """Permission and special bits (mode & 0o7777)."""
    mtime_ns: int
    uid: int = -1
    gid: int = -1
    target: str = ""
    """What a symlink points to (as stored, not resolved); "" for everything else."""
    identity: tuple[int, int] = (0, 0)
    """(device, inode): the same directory reached along two paths has the same identity."""


@dataclass(frozen=True)
class DirPage:
    entries: tuple[Entry, ...]
    next_after: str | None
    """Pass as `after` to get the next page; None when this page is the last."""


def _entry(name: str, info: os.stat_result, dir_fd: int | None = None) -> Entry:
    """`dir_fd`: the directory holding `name`, to read a symlink's target from."""
    mode = info.st_mode
    target = ""
    if S_ISREG(mode):
        kind = "file"
    elif S_ISDIR(mode):
        kind = "directory"
    elif S_ISLNK(mode):
        kind = "symlink"
        if dir_fd is not None:
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError:
                target = ""  # replaced meanwhile
    else:
        kind = "other"
    return Entry(name, kind, info.st_size, S_IMODE(mode), info.st_mtime_ns,
                 info.st_uid, info.st_gid, target, (info.st_dev, info.st_ino))


def stat(loc: Location) -> Entry:
    """The entry at `loc`, not following a final symlink (a link's target is in `target`)."""
    _require_user()
    if not loc.path.parts:
        fd = _open_dir(loc.root, ())
        try:
            return _entry("", os.fstat(fd))
        finally:
            os.close(fd)
    found = lookup(loc)
    if found is None:
        raise translate(OSError(errno.ENOENT, os.strerror(errno.ENOENT)), loc)
    return found


def lookup(loc: Location, *, dirs: DirCache | None = None) -> Entry | None:
    """`stat` of a name below the root, or None if nothing has that name: cheaper than
    NotFound for each new file of a batch. NotFound still if a directory on the way is
    missing."""
    _require_user()
    with _parent(loc, dirs=dirs) as parent, _errors_for(loc):
        name = loc.path.name
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return _entry(name, info, parent)


def list_dir(loc: Location, *, after: str | None = None, limit: int = 1000) -> DirPage:
    """One page of the directory's entries, sorted by name, starting after `after`.

    Stateless paging: each page rereads the names, so a client can resume at any time.
    """
    _require_user()
    if limit < 1:
        raise InvalidArgument("a page must hold at least one entry")
    walked = _open_dir(loc.root, loc.path.parts)
    try:
        with _errors_for(loc):
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=walked)
    finally:
        os.close(walked)
    try:
        with _errors_for(loc):
            names = sorted(n for n in os.listdir(fd) if after is None or n > after)
            entries = []
            for name in names[:limit]:
                try:
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    entries.append(_entry(name, info, fd))
                except FileNotFoundError:
                    continue  # removed since it was listed
    finally:
        os.close(fd)
    more = len(names) > limit
    return DirPage(tuple(entries), names[limit - 1] if more else None)


def mkdir(loc: Location, *, parents: bool = False, mode: int = DEFAULT_DIR_MODE) -> None:
    """Create a directory owned by the user; `parents`: also missing parents, and no error
    if it exists (mkdir -p)."""
    _require_user()
    if parents:
        os.close(_open_dir(loc.root, loc.path.parts, create=mode & 0o777))
        return
    with _parent(loc) as parent, _errors_for(loc):
        os.mkdir(loc.path.name, mode & 0o777, dir_fd=parent)


def remove(loc: Location, *, recursive: bool = False) -> None:
    """Remove a file, link or empty directory; `recursive`: a whole tree, never following
    a symlink (a link is removed, not what it points to)."""
    _require_user()
    with _parent(loc) as parent, _errors_for(loc):
        name = loc.path.name
        if not S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            os.unlink(name, dir_fd=parent)
        elif recursive:
            _remove_tree(parent, name)
        else:
            os.rmdir(name, dir_fd=parent)


def _remove_tree(parent: int, name: str) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        for child in os.listdir(fd):
            if S_ISDIR(os.stat(child, dir_fd=fd, follow_symlinks=False).st_mode):
                _remove_tree(fd, child)
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def rename(source: Location, target: Location, *, replace: bool = False) -> None:
    """Move `source` to `target` (both beneath their sandbox roots); an existing target is
    an error unless `replace`."""
    _require_user()
    with _parent(source) as src, _parent(target) as dst:
        try:
            _renameat2(src, source.path.name, dst, target.path.name, replace=replace)
        except OSError as err:
            at_target = err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR)
            raise translate(err, target if at_target else source) from err


def _renameat2(src: int, old: str, dst: int, new: str, *, replace: bool) -> None:
    flags = 0 if replace else _RENAME_NOREPLACE
    if _libc.renameat2(src, os.fsencode(old), dst, os.fsencode(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def symlink(loc: Location, target: str, *, replace: bool = False, parents: bool = False,
            mtime_ns: int | None = None, dir_mode: int = DEFAULT_DIR_MODE) -> None:
    """Create a symbolic link at `loc` holding `target` as given (whether it may point
    there is the caller's decision). Made under a temporary name and renamed into place, so
    an existing entry is replaced atomically if `replace` and never otherwise
    (AlreadyExists). `parents`: create missing directories."""
    _require_user()
    if "\0" in target:
        raise InvalidArgument(f"{printable(str(loc))}: a link target cannot contain NUL")
    with _parent(loc, create=dir_mode & 0o777 if parents else None) as parent, \
            _errors_for(loc):
        temp = _part_name(loc.path.name)
        os.symlink(target, temp, dir_fd=parent)
        try:
            if mtime_ns is not None:
                os.utime(temp, ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False)
            _renameat2(parent, temp, parent, loc.path.name, replace=replace)
        except BaseException:
            os.unlink(temp, dir_fd=parent)
            raise
        _fsync_dir(parent)


def open_read(loc: Location, *, dirs: DirCache | None = None) -> io.FileIO:
    """The regular file at `loc`, opened for reading as the user (a FIFO or device is
    refused without blocking)."""
    _require_user()
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_NOFOLLOW if loc.root.confined else 0)
    with _parent(loc, dirs=dirs) as parent, _errors_for(loc):
        fd = os.open(loc.path.name, flags, dir_fd=parent)
    if not S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FailedPrecondition(f"{printable(str(loc))} is not a regular file")
    os.set_blocking(fd, True)
    return io.FileIO(fd, "rb", closefd=True)


def create_part(
    loc: Location,
    *,
    overwrite: bool = False,
    parents: bool = False,
    mode: int = DEFAULT_FILE_MODE,
    dir_mode: int = DEFAULT_DIR_MODE,
    dirs: DirCache | None = None,
) -> PartFile:
    """Start receiving the file `loc`: a hidden temporary file in its directory, mode 0600
    until `commit` gives it `mode` and its name. Fails early if `loc` exists and not
    `overwrite` (commit checks again, atomically). `parents`: create missing directories."""
    _require_user()
    with _parent(loc, create=dir_mode & 0o777 if parents else None, dirs=dirs) as parent:
        with _errors_for(loc):
            if not overwrite:
                try:
                    os.stat(loc.path.name, dir_fd=parent, follow_symlinks=False)
                except FileNotFoundError:
                    pass
                else:
                    raise FileExistsError(errno.EEXIST, "exists")
            temp = _part_name(loc.path.name)
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temp, flags, 0o600, dir_fd=parent)
        return PartFile(loc, os.dup(parent), fd, temp, mode & 0o777, overwrite)


def open_part(
    loc: Location, temp_name: str, *, overwrite: bool = False, mode: int = DEFAULT_FILE_MODE
) -> PartFile:
    """Reopen the temporary file `temp_name` of an interrupted `create_part(loc)`, to resume.

    Only a file this module made for `loc` is accepted: the name must have the shape
    `create_part` gives (`.<name>.jetstream-<16 hex>.part` for `loc`'s name), and it must be
    a regular file (not a link, FIFO or device), owned by the user, with one link (a hard
    link could be another file of the user's, e.g. their ~/.ssh/authorized_keys).
    NotFound if it is gone (start over with `create_part`); FailedPrecondition otherwise.
    `PartFile.size()` says how much it holds; data beyond the last `sync` may be lost.
    """
    _require_user()
    principal = _state.principal
    assert principal is not None
    match = _PART_SUFFIX.search(temp_name)
    if match is None or temp_name != _part_name(loc.path.name, match.group(1)):
        raise InvalidArgument(
            f"{printable(temp_name)} is not a partial file name for {printable(str(loc))}"
        )
    with _parent(loc) as parent:
        partial = Location(loc.root, loc.path.parent / RelPath((temp_name,)))
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
        with _errors_for(partial):
            fd = os.open(temp_name, flags, dir_fd=parent)
        try:
            info = os.fstat(fd)
            if not S_ISREG(info.st_mode) or info.st_uid != principal.uid or info.st_nlink != 1:
                raise FailedPrecondition(
                    f"{printable(str(partial))} is not a partial file jetstream made for you "
                    "(not a regular file, another owner, or more than one link)"
                )
            os.set_blocking(fd, True)
            return PartFile(loc, os.dup(parent), fd, temp_name, mode & 0o777, overwrite,
                            resumed=True)
        except BaseException:
            os.close(fd)
            raise


_PART_SUFFIX = re.compile(r"\.jetstream-([0-9a-f]{16})\.part\Z")


def _part_name(name: str, token: str | None = None) -> str:
    suffix = f".jetstream-{token or secrets.token_hex(8)}.part"
    stem = name.encode()[: MAX_NAME_BYTES - 1 - len(suffix)].decode(errors="ignore")
    return f".{stem}{suffix}"


class PartFile:
    """A file being received under a temporary name in its final directory.

    The directory fd is held from `create_part` to `commit`, so the file lands where it was
    checked even if a directory on the path is renamed or replaced by a link meanwhile.
    Every method runs as the user (UserFS.run or user_credentials): writes as root would
    bypass the user's disk quota. `fd` (read-write) is public for zero-copy writers on such
    a thread. Holds two fds until `commit`, `close` (alias `abort`) or `detach`: always call
    one of them. `detach` keeps the temporary file for `open_part` to resume later.
    """

    def __init__(
        self,
        loc: Location,
        dir_fd: int,
        fd: int,
        temp_name: str,
        mode: int,
        overwrite: bool,
        *,
        resumed: bool = False,
    ) -> None:
        self.location = loc
        self.fd = fd
        self.temp_name = temp_name
        self.resumed = resumed
        """Reopened by `open_part`: a cancelled `UserFS.run` detaches it instead of aborting."""
        self._dir_fd = dir_fd
        self._mode = mode
        self._overwrite = overwrite
        self._open = True
        self._uncached = DirectWriter(fd)

    @property
    def is_open(self) -> bool:
        return self._open

    def size(self) -> int:
        """Current size of the temporary file in bytes."""
        self._check_open()
        return os.fstat(self.fd).st_size

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset` (fewer at the end), e.g. to verify a resume."""
        self._check_open()
        chunks: list[bytes] = []
        with _errors_for(self.location):
            while length > 0:
                chunk = os.pread(self.fd, length, offset)
                if not chunk:
                    break
                chunks.append(chunk)
                offset, length = offset + len(chunk), length - len(chunk)
        return b"".join(chunks)

    def sync(self) -> None:
        """fdatasync: everything written so far survives a crash (for resume checkpoints)."""
        self._check_open()
        with _errors_for(self.location):
            os.fdatasync(self.fd)

    def detach(self) -> None:
        """Close the fds but keep the temporary file (pause, shutdown); `open_part(location,
        temp_name)` resumes it. Does nothing once committed, aborted or detached."""
        if self._open:
            self._release()

    def write_at(self, data: bytes | memoryview, offset: int) -> None:
        """Write all of `data` at `offset` (ENOSPC -> ResourceExhausted naming the file)."""
        self._check_open()
        with _errors_for(self.location):
            pwrite_all(self.fd, memoryview(data), offset)

    def write_uncached_at(self, buffers: Sequence[bytes | memoryview], offset: int,
                          seen: Callable[[memoryview], object]) -> None:
        """`writev_at` for bytes nobody will read soon: past the page cache where the file
        system allows it, which costs the CPU far less (`directio.DirectWriter.write`,
        which also says what ``seen`` gets)."""
        self._check_open()
        with _errors_for(self.location):
            self._uncached.write(buffers, offset, seen)

    def writev_at(self, buffers: list[bytes | memoryview], offset: int) -> None:
        """Write `buffers` back to back from `offset` in one system call where the kernel
        takes them all: no joined copy of received pieces."""
        self._check_open()
        views = [memoryview(b) for b in buffers]
        with _errors_for(self.location):
            while views:
                written = os.pwritev(self.fd, views[:_IOV_MAX], offset)
                offset += written
                while views and written >= len(views[0]):
                    written -= len(views[0])
                    views.pop(0)
                if written:
                    views[0] = views[0][written:]

    def commit(self, *, mtime_ns: int | None = None) -> None:
        """fsync, set mode (and mtime), then rename into place atomically; without
        `overwrite`, an existing file at the final name is never replaced (AlreadyExists)."""
        self._check_open()
        with _errors_for(self.location):
            os.fchmod(self.fd, self._mode)
            if mtime_ns is not None:
                os.utime(self.fd, ns=(mtime_ns, mtime_ns))
            os.fsync(self.fd)
            _renameat2(
                self._dir_fd,
                self.temp_name,
                self._dir_fd,
                self.location.path.name,
                replace=self._overwrite,
            )
            _fsync_dir(self._dir_fd)
        self._release()

    def close(self) -> None:
        """Abort: remove the temporary file. Does nothing after commit; safe to repeat."""
        if not self._open:
            return
        _require_user()
        try:
            with _errors_for(self.location):
                os.unlink(self.temp_name, dir_fd=self._dir_fd)
        except NotFound:
            pass
        finally:
            self._release()

    abort = close

    def _check_open(self) -> None:
        _require_user()
        if not self._open:
            raise FailedPrecondition(
                f"{printable(str(self.location))} was already committed or aborted"
            )

    def _release(self) -> None:
        self._open = False
        self._uncached.close()
        os.close(self.fd)
        os.close(self._dir_fd)


_libc = ctypes.CDLL(None, use_errno=True)


def commit_many(parts: list[tuple[PartFile, int | None]]) -> list[JetstreamError | None]:
    """Commit many small files with one flush of the file system instead of two fsyncs
    each: modes and mtimes, one syncfs (their data is on disk), every rename, then one
    fsync per directory (the renames are on disk). Same guarantee as `PartFile.commit`: a
    file never appears under its final name before its data is durable. Returns, per part,
    None or the error that left it uncommitted (still open: abort it)."""
    _require_user()
    results: list[JetstreamError | None] = []
    ready: list[PartFile] = []
    for part, mtime_ns in parts:
        try:
            part._check_open()
            with _errors_for(part.location):
                os.fchmod(part.fd, part._mode)
                if mtime_ns is not None:
                    os.utime(part.fd, ns=(mtime_ns, mtime_ns))
            ready.append(part)
            results.append(None)
        except JetstreamError as exc:
            results.append(exc)
    by_device: dict[int, list[PartFile]] = {}
    for part in ready:
        by_device.setdefault(os.fstat(part.fd).st_dev, []).append(part)
    for group in by_device.values():
        if _libc.syncfs(group[0].fd) != 0:  # rare (EIO): fall back to one fsync each
            for part in group:
                with _errors_for(part.location):
                    os.fsync(part.fd)
    directories: dict[tuple[int, int], int] = {}
    for index, (part, _mtime) in enumerate(parts):
        if results[index] is not None:
            continue
        try:
            with _errors_for(part.location):
                _renameat2(part._dir_fd, part.temp_name, part._dir_fd,
                           part.location.path.name, replace=part._overwrite)
        except JetstreamError as exc:
            results[index] = exc
            continue
        info = os.fstat(part._dir_fd)
        if (info.st_dev, info.st_ino) not in directories:
            directories[info.st_dev, info.st_ino] = os.dup(part._dir_fd)
        part._release()
    for dir_fd in directories.values():
        try:
            _fsync_dir(dir_fd)
        finally:
            os.close(dir_fd)
    return results


def _fsync_dir(dir_fd: int) -> None:
    """Make a rename durable; skipped where the user may not read the directory."""
    try:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    except PermissionError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
