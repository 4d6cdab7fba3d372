"""File access as the user, beneath a sandbox (root, with the test users).

Every test builds a tree under /tmp (traversable by the test users):
    base/sandbox/          jsbob's sandbox root, with hostile symlinks in it
    base/secret/           root's; root-only.txt (0600) and bobs/ (jsbob may write there)
    base/alice/            jsalice's, mode 0777: the OS would let jsbob write here
and checks that nothing outside base/sandbox changes, whatever jsbob asks for.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISLNK, S_ISREG

import pytest

from jetstream.auth.principal import Principal, lookup_principal
from jetstream.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    JetstreamError,
    NotFound,
    PathEscape,
    PermissionDenied,
    ResourceExhausted,
)
from jetstream.storage import userfs
from jetstream.storage.paths import parse_path
from jetstream.storage.sandbox import UNCONFINED, Location, Sandbox, SandboxRoot
from jetstream.storage.userfs import UserFS, user_credentials
from tests.storage.test_paths import HOSTILE_STRINGS
from tests.system import users

pytestmark = pytest.mark.root
REFUSED = (PathEscape, InvalidArgument, PermissionDenied)
MARK = "pwned-" + secrets.token_hex(4)

# Paths that parse fine but lead through a symlink out of the sandbox (see `tree`).
SYMLINK_PATHS = [
    f"out/tmp/{MARK}",
    f"/out/etc/{MARK}",
    "out/etc/passwd",
    f"up/secret/bobs/{MARK}",
    "up/secret/root-only.txt",
    f"up/alice/{MARK}",
    f"up/sandbox/d/{MARK}",
    f"bobs/{MARK}",
    f"bobs/deeper/{MARK}",
    f"alice/{MARK}",
    f"d/inner/{MARK}",
    f"loop/{MARK}",
    f"passwd/{MARK}",
]


@dataclass
class Tree:
    base: Path
    sandbox: Path
    secret: Path
    alice_dir: Path
    box: Sandbox

    def at(self, raw: str) -> Location:
        return self.box.locate(parse_path(raw))


def chown(path: Path, owner: Principal) -> None:
    os.chown(path, owner.uid, owner.gid, follow_symlinks=False)


@pytest.fixture
def bob() -> Principal:
    return lookup_principal(users.BOB)


@pytest.fixture
def alice() -> Principal:
    return lookup_principal(users.ALICE)


@pytest.fixture
def fs():
    files = UserFS(workers=2)
    yield files
    files.close()


@pytest.fixture
def tree(bob, alice):
    base = Path(tempfile.mkdtemp(prefix="jetstream-userfs-", dir="/tmp"))
    base.chmod(0o755)
    sandbox, secret, alice_dir = base / "sandbox", base / "secret", base / "alice"
    for directory in (sandbox, secret, alice_dir, secret / "bobs", sandbox / "d"):
        directory.mkdir()
    secret.chmod(0o755)
    (secret / "root-only.txt").write_text("root's secret\n")
    (secret / "root-only.txt").chmod(0o600)
    chown(secret / "bobs", bob)
    (secret / "bobs").chmod(0o777)
    chown(alice_dir, alice)
    alice_dir.chmod(0o777)
    for name, target in {
        "out": "/",
        "up": "..",
        "bobs": str(secret / "bobs"),
        "alice": "../alice",
        "loop": "loop",
        "passwd": "/etc/passwd",
        "d/inner": "/tmp",
    }.items():
        (sandbox / name).symlink_to(target)
        chown(sandbox / name, bob)
    chown(sandbox, bob)
    chown(sandbox / "d", bob)
    yield Tree(base, sandbox, secret, alice_dir, Sandbox((SandboxRoot("", str(sandbox)),)))
    shutil.rmtree(base)


def snapshot(base: Path, skip: Path) -> str:
    """A hash of everything below `base` except `skip`: names, types, owners, modes,
    sizes, times, link targets and contents."""
    digest = hashlib.sha256()
    for directory, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if Path(directory, d) != skip)
        for name in sorted([*dirs, *files]):
            path = os.path.join(directory, name)
            info = os.lstat(path)
            digest.update(
                f"{os.path.relpath(path, base)}|{info.st_mode}|{info.st_uid}|{info.st_gid}|"
                f"{info.st_size}|{info.st_mtime_ns}|{info.st_nlink}\n".encode()
            )
            if S_ISLNK(info.st_mode):
                digest.update(os.readlink(path).encode())
            elif S_ISREG(info.st_mode):
                digest.update(Path(path).read_bytes())
        digest.update(f"{directory}|{os.lstat(directory).st_mtime_ns}\n".encode())
    return digest.hexdigest()


def run(coroutine: Awaitable[object]) -> object:
    async def main() -> object:
        return await coroutine

    return asyncio.run(main())


async def write(fs: UserFS, who: Principal, loc: Location, data: bytes, **options) -> None:
    part = await fs.run(who, userfs.create_part, loc, **options)
    try:
        await fs.run(who, part.write_at, data, 0)
        await fs.run(who, part.commit)
    finally:
        await fs.run(who, part.close)


def batched(loc: Location) -> None:
    """What a batch of small files does, with its directories walked once (DirCache)."""
    with userfs.DirCache() as dirs:
        userfs.lookup(loc, dirs=dirs)
        part = userfs.create_part(loc, overwrite=True, parents=True, dirs=dirs)
        try:
            part.write_at(b"x", 0)
            userfs.commit_many([(part, None)])
        finally:
            part.close()
        userfs.open_read(loc, dirs=dirs).close()


Operation = Callable[[Location], Awaitable[object]]


def operations(fs: UserFS, who: Principal, tree: Tree) -> dict[str, Operation]:
    decoy = tree.at("/decoy")
    return {
        "write": lambda loc: write(fs, who, loc, b"x", overwrite=True, parents=True),
        "batched": lambda loc: fs.run(who, batched, loc),
        "mkdir": lambda loc: fs.run(who, userfs.mkdir, loc, parents=True),
        "open_read": lambda loc: fs.run(who, userfs.open_read, loc),
        "stat": lambda loc: fs.run(who, userfs.stat, loc),
        "lookup": lambda loc: fs.run(who, userfs.lookup, loc),
        "list_dir": lambda loc: fs.run(who, userfs.list_dir, loc),
        "remove": lambda loc: fs.run(who, userfs.remove, loc, recursive=True),
        "rename away": lambda loc: fs.run(who, userfs.rename, loc, tree.at(f"/moved-{MARK}")),
        "rename onto": lambda loc: fs.run(who, userfs.rename, decoy, loc, replace=True),
    }


def test_hostile_paths_are_refused_and_nothing_outside_changes(fs, bob, tree):
    (tree.sandbox / "decoy").write_text("decoy")
    chown(tree.sandbox / "decoy", bob)
    before = snapshot(tree.base, tree.sandbox)
    passwd = Path("/etc/passwd").read_bytes()
    ops = operations(fs, bob, tree)
    hostile = HOSTILE_STRINGS + SYMLINK_PATHS
    assert len(hostile) >= 40
    accepted: list[str] = []

    async def attack() -> int:
        refused = 0
        for raw in hostile:
            try:
                loc = tree.at(raw)
            except InvalidArgument:
                refused += len(ops)
                continue
            for name, op in ops.items():
                try:
                    await op(loc)
                except REFUSED:
                    refused += 1
                except JetstreamError as err:
                    accepted.append(f"{name} {raw!r}: {type(err).__name__}: {err}")
                else:
                    accepted.append(f"{name} {raw!r}: succeeded")
        return refused

    refused = run(attack())
    assert accepted == []
    assert refused == len(hostile) * len(ops)
    assert snapshot(tree.base, tree.sandbox) == before
    assert Path("/etc/passwd").read_bytes() == passwd
    assert not list(Path("/tmp").glob(f"{MARK}*")) and not list(Path("/etc").glob(f"{MARK}*"))
    assert (tree.sandbox / "decoy").read_text() == "decoy"


def test_swapping_a_directory_for_a_symlink_during_writes_never_escapes(fs, bob, tree):
    race, link = tree.sandbox / "race", tree.sandbox / "race-link"
    race.mkdir()
    chown(race, bob)
    link.symlink_to(tree.secret / "bobs")  # jsbob may write there: only the sandbox stops it
    before = snapshot(tree.base, tree.sandbox)
    libc = ctypes.CDLL(None, use_errno=True)
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:  # renameat2(RENAME_EXCHANGE): "race" is a dir, then a link, ...
        nonlocal swaps
        while not stop.is_set():
            assert libc.renameat2(-100, bytes(race), -100, bytes(link), 2) == 0
            swaps += 1

    outcomes: Counter[str] = Counter()

    async def writes() -> None:
        deadline = time.monotonic() + 3.0
        for i in range(400):
            if time.monotonic() > deadline:
                break
            try:
                await write(fs, bob, tree.at(f"race/f{i}"), b"data")
                outcomes["written"] += 1
            except (PathEscape, FailedPrecondition, NotFound) as err:
                outcomes[type(err).__name__] += 1

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        run(writes())
    finally:
        stop.set()
        thread.join()
    assert swaps > 100 and outcomes["written"] > 0 and outcomes["PathEscape"] > 0, outcomes
    assert snapshot(tree.base, tree.sandbox) == before
    real = race if race.is_dir() and not race.is_symlink() else link
    assert len(list(real.iterdir())) == outcomes["written"]


def test_a_root_only_file_cannot_be_read(fs, bob, tree):
    secret = tree.sandbox / "root-only.txt"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    with pytest.raises(PermissionDenied, match="^/root-only.txt: permission denied$"):
        run(fs.run(bob, userfs.open_read, tree.at("root-only.txt")))


def test_a_directory_the_user_cannot_write_refuses(fs, bob, tree):
    locked = tree.sandbox / "locked"
    locked.mkdir(mode=0o755)
    (locked / "file").write_text("root's")
    with pytest.raises(PermissionDenied):
        run(write(fs, bob, tree.at("locked/new"), b"x"))
    with pytest.raises(PermissionDenied):
        run(fs.run(bob, userfs.mkdir, tree.at("locked/sub")))
    with pytest.raises(PermissionDenied):
        run(fs.run(bob, userfs.remove, tree.at("locked/file")))
    with pytest.raises(PermissionDenied):
        run(fs.run(bob, userfs.rename, tree.at("locked/file"), tree.at("stolen")))
    assert sorted(os.listdir(locked)) == ["file"]


def test_another_users_private_directory_is_closed(fs, bob, alice, tree):
    private = tree.sandbox / "alices"
    private.mkdir(mode=0o700)
    chown(private, alice)
    with pytest.raises(PermissionDenied):
        run(fs.run(bob, userfs.list_dir, tree.at("alices")))
    with pytest.raises(PermissionDenied):
        run(fs.run(bob, userfs.stat, tree.at("alices/anything")))


def test_what_the_user_creates_is_theirs_with_explicit_modes(fs, bob, tree):
    previous = os.umask(0o077)  # modes must not depend on the process umask
    try:
        run(fs.run(bob, userfs.mkdir, tree.at("a/b"), parents=True))
        run(write(fs, bob, tree.at("a/b/data.txt"), b"hello"))
        mtime = 1_600_000_000_123_456_789

        async def script() -> None:
            part = await fs.run(bob, userfs.create_part, tree.at("a/run.sh"), mode=0o4755)
            await fs.run(bob, part.write_at, b"#!/bin/sh\n", 0)
            await fs.run(bob, part.commit, mtime_ns=mtime)

        run(script())
        assert os.umask(previous) == 0o077
    finally:
        os.umask(previous)
    for path, mode in [("a", 0o755), ("a/b", 0o755), ("a/b/data.txt", 0o644), ("a/run.sh", 0o755)]:
        info = os.stat(tree.sandbox / path)
        assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (bob.uid, bob.gid, mode), path
    assert os.stat(tree.sandbox / "a/run.sh").st_mtime_ns == mtime
    assert (tree.sandbox / "a/b/data.txt").read_bytes() == b"hello"


def test_mkdir_list_stat_rename_remove(fs, bob, tree):
    async def scenario() -> None:
        await fs.run(bob, userfs.mkdir, tree.at("docs"))
        with pytest.raises(AlreadyExists, match="^/docs already exists$"):
            await fs.run(bob, userfs.mkdir, tree.at("docs"))
        await fs.run(bob, userfs.mkdir, tree.at("docs"), parents=True)
        for name in ("c", "a", "b"):
            await write(fs, bob, tree.at(f"docs/{name}"), name.encode() * 3)
        first = await fs.run(bob, userfs.list_dir, tree.at("docs"), limit=2)
        assert [e.name for e in first.entries] == ["a", "b"] and first.next_after == "b"
        rest = await fs.run(bob, userfs.list_dir, tree.at("docs"), after=first.next_after)
        assert [e.name for e in rest.entries] == ["c"] and rest.next_after is None
        entry = await fs.run(bob, userfs.stat, tree.at("docs/a"))
        assert (entry.name, entry.kind, entry.size, entry.mode) == ("a", "file", 3, 0o644)
        assert (await fs.run(bob, userfs.stat, tree.at("/"))).kind == "directory"
        assert (await fs.run(bob, userfs.stat, tree.at("out"))).kind == "symlink"
        with pytest.raises(AlreadyExists, match="^/docs/b already exists$"):
            await fs.run(bob, userfs.rename, tree.at("docs/a"), tree.at("docs/b"))
        await fs.run(bob, userfs.rename, tree.at("docs/a"), tree.at("docs/b"), replace=True)
        await fs.run(bob, userfs.rename, tree.at("docs"), tree.at("papers"))
        with pytest.raises(FailedPrecondition, match="not empty"):
            await fs.run(bob, userfs.remove, tree.at("papers"))
        os.symlink(tree.secret / "bobs", tree.sandbox / "papers/escape")
        await fs.run(bob, userfs.remove, tree.at("papers"), recursive=True)
        with pytest.raises(NotFound, match="^/papers: no such file or directory$"):
            await fs.run(bob, userfs.remove, tree.at("papers"))
        with pytest.raises(InvalidArgument):
            await fs.run(bob, userfs.remove, tree.at("/"), recursive=True)
        with await fs.run(bob, userfs.open_read, tree.at("readable")) as reader:
            assert reader.read() == b"readable"

    (tree.sandbox / "readable").write_text("readable")
    outside = snapshot(tree.secret, tree.sandbox)
    run(scenario())
    assert not (tree.sandbox / "papers").exists()
    assert snapshot(tree.secret, tree.sandbox) == outside


def test_commit_never_replaces_unless_asked(fs, bob, tree):
    loc = tree.at("d/file")

    async def scenario() -> None:
        first = await fs.run(bob, userfs.create_part, loc)
        second = await fs.run(bob, userfs.create_part, loc)
        await fs.run(bob, first.write_at, b"first", 0)
        await fs.run(bob, first.commit)
        await fs.run(bob, second.write_at, b"second", 0)
        with pytest.raises(AlreadyExists, match="^/d/file already exists$"):
            await fs.run(bob, second.commit)
        await fs.run(bob, second.close)
        with pytest.raises(AlreadyExists):
            await fs.run(bob, userfs.create_part, loc)
        await write(fs, bob, loc, b"third", overwrite=True)

    run(scenario())
    assert sorted(os.listdir(tree.sandbox / "d")) == ["file", "inner"]
    assert (tree.sandbox / "d/file").read_bytes() == b"third"


def test_an_aborted_part_leaves_nothing(fs, bob, tree):
    async def scenario() -> str:
        part = await fs.run(bob, userfs.create_part, tree.at("d/" + "n" * 255))
        await fs.run(bob, part.write_at, b"partial", 0)
        name: str = part.temp_name
        assert name.startswith(".n") and name.endswith(".part") and len(name.encode()) <= 255
        await fs.run(bob, part.abort)
        await fs.run(bob, part.abort)
        return name

    name = run(scenario())
    assert sorted(os.listdir(tree.sandbox / "d")) == ["inner"], name


def test_final_symlinks_are_never_followed(fs, bob, tree):
    passwd = Path("/etc/passwd").read_bytes()
    with pytest.raises(PathEscape, match="^/passwd: is a symbolic link"):
        run(fs.run(bob, userfs.open_read, tree.at("passwd")))
    run(write(fs, bob, tree.at("passwd"), b"replaces the link, not its target", overwrite=True))
    assert not (tree.sandbox / "passwd").is_symlink()
    run(fs.run(bob, userfs.remove, tree.at("out")))
    assert Path("/etc/passwd").read_bytes() == passwd and Path("/etc").is_dir()


def test_a_full_disk_is_resource_exhausted(fs, bob):
    mount = Path(tempfile.mkdtemp(prefix="jetstream-tmpfs-", dir="/tmp"))
    options = "size=1m,mode=0755"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "jetstream-test", mount], check=True)
    try:
        os.chown(mount, bob.uid, bob.gid)
        box = Sandbox((SandboxRoot("", str(mount)),))

        async def fill() -> None:
            part = await fs.run(bob, userfs.create_part, box.locate(parse_path("big.bin")))
            try:
                await fs.run(bob, part.write_at, b"\0" * (2 << 20), 0)
            finally:
                await fs.run(bob, part.close)

        with pytest.raises(ResourceExhausted, match="^no space left on device writing /big.bin$"):
            run(fill())
        assert os.listdir(mount) == []
    finally:
        subprocess.run(["umount", mount], check=True)
        mount.rmdir()


def thread_status(tid: int | None = None) -> dict[str, list[str]]:
    path = f"/proc/self/task/{tid}/status" if tid else "/proc/thread-self/status"
    fields = (line.partition(":") for line in Path(path).read_text().splitlines())
    return {key: value.split() for key, _, value in fields}


def test_credentials_are_per_thread_and_restored(bob):
    seen: dict[str, dict[str, list[str]]] = {}
    main = threading.main_thread().native_id

    def worker() -> None:
        seen["before"] = thread_status()
        with user_credentials(bob):
            seen["inside"] = thread_status()
            seen["main meanwhile"] = thread_status(main)
        seen["after"] = thread_status()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    inside, before = seen["inside"], seen["before"]
    assert inside["Uid"] == ["0", "0", "0", str(bob.uid)]
    assert inside["Gid"] == ["0", "0", "0", str(bob.gid)]
    assert sorted(map(int, inside["Groups"])) == sorted(bob.groups)
    assert int(inside["CapEff"][0], 16) == 0 and inside["CapPrm"] == before["CapPrm"]
    assert seen["main meanwhile"]["Uid"] == ["0", "0", "0", "0"]
    assert seen["main meanwhile"]["CapEff"] == before["CapEff"]
    assert seen["main meanwhile"]["Groups"] == before["Groups"]
    for key in ("Uid", "Gid", "Groups", "CapEff", "CapPrm"):
        assert seen["after"][key] == before[key], key


def test_a_dir_cache_walks_once_and_serves_only_its_user(fs, bob, alice, tree):
    def as_bob() -> userfs.DirCache:
        dirs = userfs.DirCache()
        with pytest.raises(NotFound):  # a missing directory: not cached, made just below
            userfs.lookup(tree.at("new/a"), dirs=dirs)
        for name in ("a", "b"):
            part = userfs.create_part(tree.at(f"new/{name}"), parents=True, dirs=dirs)
            part.write_at(name.encode(), 0)
            assert userfs.commit_many([(part, None)]) == [None]
        assert userfs.lookup(tree.at("new/a"), dirs=dirs) is not None
        assert userfs.lookup(tree.at("new/missing"), dirs=dirs) is None
        return dirs

    async def scenario() -> None:
        with pytest.raises(NotFound):
            await fs.run(bob, userfs.lookup, tree.at("absent/a"))
        dirs = await fs.run(bob, as_bob)
        try:
            with pytest.raises(RuntimeError, match="only by the user that made it"):
                await fs.run(alice, userfs.lookup, tree.at("new/a"), dirs=dirs)
        finally:
            await fs.run(bob, dirs.close)

    run(scenario())
    assert (tree.sandbox / "new/a").read_bytes() == b"a"
    assert (tree.sandbox / "new").stat().st_uid == bob.uid


def test_no_switch_on_the_main_or_an_event_loop_thread_and_no_ops_as_root(bob, tree):
    with pytest.raises(RuntimeError, match="worker thread"):
        with user_credentials(bob):
            pass
    with pytest.raises(RuntimeError, match="inside user_credentials"):
        userfs.stat(tree.at("d"))
    errors: list[BaseException] = []

    async def on_loop() -> None:
        with user_credentials(bob):
            pass

    def loop_thread() -> None:
        try:
            asyncio.run(on_loop())
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    thread = threading.Thread(target=loop_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "loop thread" in str(errors[0])


def test_a_cancelled_caller_does_not_leak_the_part_it_opened(fs, bob, tree):
    def slow_create(loc: Location) -> userfs.PartFile:
        time.sleep(0.3)
        return userfs.create_part(loc)

    fds_before = len(os.listdir("/proc/self/fd"))

    async def scenario() -> None:
        task = asyncio.create_task(fs.run(bob, slow_create, tree.at("d/cancelled")))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)

    run(scenario())
    deadline = time.monotonic() + 2
    while sorted(os.listdir(tree.sandbox / "d")) != ["inner"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(os.listdir(tree.sandbox / "d")) == ["inner"]
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_without_a_sandbox_directory_links_are_followed(fs, bob, tree):
    real = tree.base / "real"
    real.mkdir()
    chown(real, bob)
    (tree.base / "via-link").symlink_to(real)
    run(write(fs, bob, UNCONFINED.locate(parse_path(f"{tree.base}/via-link/f.txt")), b"ok"))
    assert (real / "f.txt").read_bytes() == b"ok"
    assert not UNCONFINED.root().confined


def test_a_detached_part_resumes_with_open_part_and_commits(fs, bob, tree):
    target = tree.at("d/resumed.bin")

    async def scenario() -> None:
        part = await fs.run(bob, userfs.create_part, target, mode=0o640)
        await fs.run(bob, part.write_at, b"first half|", 0)
        await fs.run(bob, part.sync)
        temp = part.temp_name
        await fs.run(bob, part.detach)
        assert not part.is_open
        await fs.run(bob, part.detach)  # repeatable
        await fs.run(bob, part.close)  # a no-op once detached: the file stays
        assert (tree.sandbox / "d" / temp).read_bytes() == b"first half|"
        assert not (tree.sandbox / "d" / "resumed.bin").exists()

        again = await fs.run(bob, userfs.open_part, target, temp, mode=0o640)
        assert again.resumed and again.temp_name == temp
        assert await fs.run(bob, again.size) == len(b"first half|")
        assert await fs.run(bob, again.read_at, 0, 5) == b"first"
        assert await fs.run(bob, again.read_at, 6, 100) == b"half|"
        await fs.run(bob, again.write_at, b"second half", len(b"first half|"))
        await fs.run(bob, again.commit)

    run(scenario())
    final = tree.sandbox / "d" / "resumed.bin"
    assert final.read_bytes() == b"first half|second half"
    info = final.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (bob.uid, 0o640)
    assert sorted(os.listdir(tree.sandbox / "d")) == ["inner", "resumed.bin"]


def test_open_part_accepts_only_our_partial_files(fs, bob, alice, tree):
    target = tree.at("d/t.bin")
    folder = tree.sandbox / "d"
    token = "0123456789abcdef"
    ours = f".t.bin.jetstream-{token}.part"

    def make(name: str, owner: Principal, data: bytes = b"x") -> Path:
        path = folder / name
        path.write_bytes(data)
        chown(path, owner)
        return path

    async def refused(name: str) -> type[BaseException]:
        with pytest.raises(JetstreamError) as info:
            await fs.run(bob, userfs.open_part, target, name)
        return type(info.value)

    async def scenario() -> None:
        # Names that are not the shape create_part gives for this target.
        for name in ("t.bin", ".t.bin.part", f".other.jetstream-{token}.part",
                     f".t.bin.jetstream-{token[:-1]}.part", f"../.t.bin.jetstream-{token}.part",
                     f".t.bin.jetstream-{token.upper()}.part"):
            assert await refused(name) is InvalidArgument, name
        assert await refused(ours) is NotFound  # right shape, but gone
        # A link, a FIFO, someone else's file, a hard link: never reopened.
        (folder / ours).symlink_to(tree.secret / "root-only.txt")
        assert issubclass(await refused(ours), PathEscape | PermissionDenied)
        (folder / ours).unlink()
        os.mkfifo(folder / ours)
        chown(folder / ours, bob)
        assert await refused(ours) is FailedPrecondition
        (folder / ours).unlink()
        make(ours, alice).chmod(0o666)
        assert await refused(ours) is FailedPrecondition
        (folder / ours).unlink()
        mine = make("precious.txt", bob, b"keep me")
        os.link(mine, folder / ours)
        assert await refused(ours) is FailedPrecondition
        (folder / ours).unlink()
        make(ours, bob, b"resume me")
        part = await fs.run(bob, userfs.open_part, target, ours)
        assert await fs.run(bob, part.size) == 9
        await fs.run(bob, part.close)  # abort removes it
        assert not (folder / ours).exists()

    run(scenario())
    assert (folder / "precious.txt").read_bytes() == b"keep me"
    assert (tree.secret / "root-only.txt").read_text() == "root's secret\n"


def test_a_cancelled_open_part_keeps_the_partial_file(fs, bob, tree):
    folder = tree.sandbox / "d"
    name = ".keep.bin.jetstream-00000000000000aa.part"
    (folder / name).write_bytes(b"partial")
    chown(folder / name, bob)

    def slow_open(loc: Location, temp: str) -> userfs.PartFile:
        time.sleep(0.3)
        return userfs.open_part(loc, temp)

    async def scenario() -> None:
        task = asyncio.create_task(fs.run(bob, slow_open, tree.at("d/keep.bin"), name))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)

    fds_before = len(os.listdir("/proc/self/fd"))
    run(scenario())
    assert (folder / name).read_bytes() == b"partial"
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_entries_carry_owner_and_link_targets(fs, bob, tree):
    async def scenario() -> None:
        link = await fs.run(bob, userfs.stat, tree.at("passwd"))
        assert (link.kind, link.target, link.uid) == ("symlink", "/etc/passwd", bob.uid)
        page = await fs.run(bob, userfs.list_dir, tree.at("/"))
        by_name = {e.name: e for e in page.entries}
        assert by_name["out"].target == "/" and by_name["d"].target == ""
        assert by_name["d"].gid == bob.gid

    run(scenario())


def test_received_pieces_are_written_in_place_without_a_joined_copy(fs, bob, tree):
    """writev_at: more buffers than one pwritev takes, of mixed sizes and kinds."""
    pieces = [os.urandom(1 + (i * 7919) % 3000) for i in range(2500)]
    views = [memoryview(p) if i % 2 else p for i, p in enumerate(pieces)]
    loc = tree.at("d/pieces")

    async def scenario() -> None:
        part = await fs.run(bob, userfs.create_part, loc)
        try:
            await fs.run(bob, part.write_at, b"head", 0)
            await fs.run(bob, part.writev_at, views, 4)
            await fs.run(bob, part.commit)
        finally:
            await fs.run(bob, part.close)

    run(scenario())
    assert (tree.sandbox / "d/pieces").read_bytes() == b"head" + b"".join(pieces)
