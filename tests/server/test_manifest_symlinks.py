"""The manifest builder's symlink policies, driven directly (no API): what each policy
records, which links are left out and counted, and that link loops end."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jetstream.auth.principal import lookup_principal
from jetstream.auth.sessions import TokenKind, TokenRecord
from jetstream.services.auth import Caller
from jetstream.services.manifests import (
    Manifest,
    ManifestEntry,
    ManifestService,
    ManifestSpec,
    ManifestState,
    Mapping,
    SymlinkPolicy,
)
from jetstream.services.sandboxes import Sandboxes
from jetstream.state.database import Database
from jetstream.storage.sandbox import SandboxRules
from jetstream.storage.userfs import UserFS
from tests.system.users import ALICE, require_root


@pytest.fixture
def base() -> Iterator[Path]:
    """alice's sandbox: a tree with every kind of link, and a file outside it."""
    require_root(users=True)
    top = Path(tempfile.mkdtemp(prefix="js-links-", dir="/tmp"))
    top.chmod(0o755)
    box, src = top / "box", top / "box" / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (box / "elsewhere").mkdir()
    (src / "a.txt").write_bytes(b"a" * 10)
    (src / "dir" / "b.txt").write_bytes(b"b" * 20)
    (src / "dir" / "sub" / "c.txt").write_bytes(b"c" * 30)
    (box / "elsewhere" / "d.txt").write_bytes(b"d" * 40)
    (top / "outside.txt").write_bytes(b"secret")
    os.symlink("a.txt", src / "to-file")                  # relative, inside
    os.symlink(str(box / "elsewhere"), src / "to-dir")    # absolute, inside the sandbox
    os.symlink("to-file", src / "chain")                  # a link to a link
    os.symlink("../../outside.txt", src / "climbs-out")   # leaves the sandbox
    os.symlink("/etc/passwd", src / "absolute-out")       # leaves the sandbox
    os.symlink("missing", src / "dangling")
    os.symlink("..", src / "dir" / "up")                  # a loop
    os.symlink("self", src / "self")                      # a link to itself
    alice = pwd.getpwnam(ALICE)
    for path in [top, *top.rglob("*")]:
        os.lchown(path, alice.pw_uid, alice.pw_gid)
    yield top
    shutil.rmtree(top)


def build(tmp_path: Path, sandbox: str | None, source: str,
          policy: SymlinkPolicy) -> tuple[Manifest, dict[str, ManifestEntry]]:
    async def main() -> tuple[Manifest, dict[str, ManifestEntry]]:
        db = Database(tmp_path)
        files = UserFS(workers=1)
        rules = SandboxRules(sandbox_dirs=(sandbox,) if sandbox else ())
        service = ManifestService(db, files, Sandboxes(rules))
        token = TokenRecord("t", ALICE, TokenKind.SESSION, "", (), False, 0.0, 1e12)
        caller = Caller(token, "test", await asyncio.to_thread(lookup_principal, ALICE))
        try:
            made = service.create(caller, ManifestSpec((Mapping(source, "out"),),
                                                       symlinks=policy), {}, "")
            done = await asyncio.wait_for(service.wait(caller, made.id), 30)
            return done, {e.dest_path: e for e in service.iter_entries(made.id)}
        finally:
            await service.close()
            files.close()
            db.close()

    return asyncio.run(main())


def test_skip_leaves_every_link_out(tmp_path, base):
    done, entries = build(tmp_path, str(base / "box"), "/src", SymlinkPolicy.SKIP)
    assert done.state is ManifestState.COMPLETE, done.error
    assert done.skipped_count == 8
    assert {e.kind for e in entries.values()} == {"file", "directory"}


def test_follow_sends_what_links_inside_the_sandbox_lead_to(tmp_path, base):
    done, entries = build(tmp_path, str(base / "box"), "/src",
                          SymlinkPolicy.FOLLOW_WITHIN_SANDBOX)
    assert done.state is ManifestState.COMPLETE, done.error
    assert set(entries) == {
        "out", "out/a.txt", "out/dir", "out/dir/b.txt", "out/dir/sub", "out/dir/sub/c.txt",
        "out/to-file", "out/chain", "out/to-dir", "out/to-dir/d.txt",
    }
    for name in ("out/to-file", "out/chain"):  # read from the target, named as the link
        assert (entries[name].kind, entries[name].source_path) == ("file", "/src/a.txt")
    assert entries["out/to-dir"].kind == "directory"
    assert entries["out/to-dir/d.txt"].source_path == "/elsewhere/d.txt"
    # climbs-out, absolute-out, dangling, self, and dir/up (a loop back to src)
    assert done.skipped_count == 5
    assert (done.file_count, done.dir_count) == (6, 4)
    assert done.total_bytes == 10 + 20 + 30 + 10 + 10 + 40


def test_follow_without_a_sandbox_ends_link_loops(tmp_path, base):
    """Unconfined, links in the middle of paths are followed by the kernel too: loops
    must still end, found by the directories' identities rather than their names."""
    src = base / "box" / "src"
    os.symlink("../dir", src / "dir" / "sub" / "back")  # back -> dir, above sub
    done, entries = build(tmp_path, None, str(src), SymlinkPolicy.FOLLOW_WITHIN_SANDBOX)
    assert done.state is ManifestState.COMPLETE, done.error
    assert not any("/up/" in path or "/back/" in path for path in entries)
    assert "out/climbs-out" in entries  # nothing is outside the whole file system


def test_preserve_records_links_with_their_targets(tmp_path, base):
    done, entries = build(tmp_path, str(base / "box"), "/src", SymlinkPolicy.PRESERVE)
    assert done.state is ManifestState.COMPLETE, done.error
    links = {path: e.symlink_target for path, e in entries.items() if e.kind == "symlink"}
    assert links == {
        "out/to-file": "a.txt", "out/to-dir": str(base / "box" / "elsewhere"),
        "out/chain": "to-file", "out/climbs-out": "../../outside.txt",
        "out/absolute-out": "/etc/passwd", "out/dangling": "missing", "out/dir/up": "..",
        "out/self": "self",
    }
    assert all(entries[path].size == 0 for path in links)
    assert done.skipped_count == 0
    assert done.file_count == 3 + len(links)  # links count as files
    assert done.total_bytes == 60
