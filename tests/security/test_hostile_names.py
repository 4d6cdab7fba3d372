"""A tree full of hostile names, special files and a file swapped for a link, pushed between
two real sandboxed servers: what is legal arrives byte for byte, what is not is left out with
a reason a person can read, and nothing is read or written outside the sandboxes (root)."""

from __future__ import annotations

import asyncio
import os
import pwd
import stat
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

from jetstream.storage.paths import printable
from jetstream.v1 import common_pb2, manifests_pb2
from tests.system.users import ALICE, require_root
from tests.transfers.helpers import (
    destination_to,
    login,
    owned_dir,
    push,
    remove,
    start,
    wait_terminal,
)

SECRET = b"outside the sandbox: must never travel\n"
NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")
LEGAL = [NFC, NFD, "....", "trailing.", "trailing...", "trailing ", " leading", "...//"[:3],
         "a" * 255, "ü" * 127, "-rf", "*?[]", "$(reboot)", "'\"", "\u2026"]
ILLEGAL = ["line\nbreak", "\x1b[31mred", "tab\there", "bell\x07", "evil\u202etxt.exe",
           "fullwidth\uff0fslash"]


def make_hostile_tree(root: Path) -> dict[str, bytes]:
    """Write the tree; return relative path -> content of what must arrive."""
    wanted: dict[str, bytes] = {}
    for i, name in enumerate(LEGAL):
        (root / name).write_bytes(f"legal {i}\n".encode())
        wanted[name] = f"legal {i}\n".encode()
    dots = root / "....." / "....."
    dots.mkdir(parents=True)
    (dots / "inner").write_bytes(b"dots")
    wanted["...../...../inner"] = b"dots"
    for name in ILLEGAL:
        (root / name).write_bytes(b"illegal name")
    os.mkfifo(root / "a-fifo")
    os.mknod(root / "a-device", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    deep = _deep(root, depth=15)  # 15 x 256 bytes: within the 4095-byte path limit
    wanted[deep] = b"deep"
    _deep(root, depth=40, name="y")  # 40 x 256 bytes: beyond it
    return wanted


def _deep(root: Path, *, depth: int, name: str = "x") -> str:
    """A chain of 255-byte directory names, made with openat (the path exceeds PATH_MAX)."""
    parts = []
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            part = f"{level:02d}{name}".ljust(255, name)
            os.mkdir(part, dir_fd=fd)
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
            parts.append(part)
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"deep")
        os.close(leaf)
    finally:
        os.close(fd)
    return "/".join([*parts, "leaf"])


def walk(root: Path) -> Iterator[tuple[int, str, os.stat_result, str]]:
    """(directory fd, name, lstat, relative path) of everything below `root`, through
    descriptors: these trees hold paths longer than PATH_MAX."""

    def below(fd: int, prefix: str) -> Iterator[tuple[int, str, os.stat_result, str]]:
        for name in sorted(os.listdir(fd)):
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            yield fd, name, info, prefix + name
            if stat.S_ISDIR(info.st_mode):
                inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                try:
                    yield from below(inner, f"{prefix}{name}/")
                finally:
                    os.close(inner)

    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield from below(top, "")
    finally:
        os.close(top)


def read_tree(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every regular file (a marker for anything else)."""
    found = {}
    for fd, name, info, rel in walk(root):
        if stat.S_ISREG(info.st_mode):
            with os.fdopen(os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd), "rb") as f:
                found[rel] = f.read()
        elif not stat.S_ISDIR(info.st_mode):
            found[rel] = b"<not a regular file>"
    return found


def give_to(root: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(root, entry.pw_uid, entry.pw_gid)
    for fd, name, _info, _rel in walk(root):
        os.chown(name, entry.pw_uid, entry.pw_gid, dir_fd=fd, follow_symlinks=False)


def test_hostile_names_arrive_or_are_refused_and_nothing_escapes(tmp_path):
    require_root(users=True)
    base = owned_dir(ALICE, "js-hostile-")
    outside = owned_dir(ALICE, "js-outside-")
    stage = owned_dir(ALICE, "js-stage-")  # where the swapper makes what it renames in
    try:
        src, dst = base / "src", base / "dst"
        src.mkdir()
        dst.mkdir()
        wanted = make_hostile_tree(src)
        (outside / "secret").write_bytes(SECRET)
        swapped = src / "swapped"
        swapped.write_bytes(b"the real file")
        give_to(base, ALICE)
        give_to(outside, ALICE)
        before_outside = read_tree(outside)
        stop = threading.Event()

        def swap_forever() -> None:
            """Replace `swapped` by a link out of the sandbox and back, as fast as possible."""
            link, regular = stage / "link", stage / "file"
            while not stop.is_set():
                os.symlink(outside / "secret", link)
                os.lchown(link, *_ids(ALICE))
                os.replace(link, swapped)
                regular.write_bytes(b"the real file")
                os.chown(regular, *_ids(ALICE))
                os.replace(regular, swapped)

        async def main() -> tuple[object, object]:
            async with AsyncExitStack() as stack:
                a = await start(stack, tmp_path / "a", ("sandbox_dir", [str(src)]))
                b = await start(stack, tmp_path / "b", ("sandbox_dir", [str(dst)]))
                api = await login(stack, a, ALICE)
                destination = await destination_to(api, b, ALICE)
                swapper = threading.Thread(target=swap_forever, daemon=True)
                swapper.start()
                try:
                    M = manifests_pb2
                    made = await api.manifests.CreateManifest(M.CreateManifestRequest(
                        manifest=M.Manifest(spec=M.ManifestSpec(
                            mappings=[M.FileMapping(source_path="/", destination_path="tree")],
                            symlink_policy=M.SYMLINK_POLICY_FOLLOW_WITHIN_SANDBOX))),
                        metadata=api.auth)
                    manifest = (await api.manifests.WaitManifest(
                        M.WaitManifestRequest(name=made.manifest.name), metadata=api.auth,
                        timeout=60)).manifest
                    transfer = None
                    if manifest.state == M.MANIFEST_STATE_COMPLETE:
                        started = await push(api, destination, manifest.name, "/")
                        transfer = await wait_terminal(api, started.name)
                finally:
                    stop.set()
                    swapper.join()
                return manifest, transfer

        manifest, transfer = asyncio.run(main())
        assert manifest.state == manifests_pb2.MANIFEST_STATE_COMPLETE, manifest.error
        skipped = {entry.source_path: entry.reason for entry in manifest.skipped_entries}
        assert manifest.skipped_count == len(skipped)
        for name in ILLEGAL:
            shown = "/" + printable(name)
            assert "its name cannot be sent" in skipped.get(shown, ""), (shown, skipped)
        for name in ("/a-fifo", "/a-device"):
            assert "not a regular file" in skipped[name]
        too_long = [r for p, r in skipped.items() if p.startswith("/00y")]
        assert len(too_long) == 1 and "longer than 4095 bytes" in too_long[0]
        arrived = read_tree(dst)
        swapped_copy = arrived.pop("tree/swapped", None)
        assert swapped_copy in (None, b"the real file")  # the link was never followed out
        assert arrived == {f"tree/{path}": data for path, data in wanted.items()}
        if transfer.state != common_pb2.TRANSFER_STATE_COMPLETED:  # the swap hit the send
            assert transfer.state == common_pb2.TRANSFER_STATE_FAILED, transfer
            assert "swapped" in transfer.error.message, transfer.error
        assert SECRET not in arrived.values()
        assert read_tree(outside) == before_outside
        assert sorted(os.listdir(base)) == ["dst", "src"]
    finally:
        remove(base, outside, stage)


def _ids(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid
