"""Manifests: a snapshot of what to send, scanned as the user, stored as rows.

Scanning runs in the background (CreateManifest returns at once) and streams entries into
SQLite in batches, so a tree of a million files never sits in memory. Entries keep the
sandbox root they came from, so a transfer re-opens each file as its owner, beneath the
same root, without resolving the user's view again.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from jetstream.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    JetstreamError,
    NotFound,
    PermissionDenied,
)
from jetstream.ids import check_id
from jetstream.services.auth import Caller, acting_as
from jetstream.services.files import FileService
from jetstream.services.globs import PathFilter
from jetstream.services.sandboxes import CallerView, Sandboxes
from jetstream.state.database import Database
from jetstream.storage import userfs
from jetstream.storage.paths import parse_path, printable
from jetstream.storage.sandbox import Location

MAX_MAPPINGS = 10_000
BATCH = 1000


class ManifestState(StrEnum):
    PENDING = "pending"
    COMPLETE = "complete"
    ERROR = "error"


class SymlinkPolicy(StrEnum):
    SKIP = "skip"
    FOLLOW_WITHIN_SANDBOX = "follow_within_sandbox"
    """A link is entered as what it leads to, if that is in the caller's view."""
    PRESERVE = "preserve"
    """A link is an entry of its own, recreated at the destination."""


@dataclass(frozen=True)
class Mapping:
    source_path: str
    destination_path: str = ""


@dataclass(frozen=True)
class ManifestSpec:
    mappings: tuple[Mapping, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    symlinks: SymlinkPolicy = SymlinkPolicy.SKIP

    def to_json(self) -> str:
        return json.dumps({
            "mappings": [[m.source_path, m.destination_path] for m in self.mappings],
            "include": list(self.include),
            "exclude": list(self.exclude),
            "symlinks": self.symlinks.value,
        })

    @classmethod
    def from_json(cls, text: str) -> ManifestSpec:
        data = json.loads(text)
        return cls(
            mappings=tuple(Mapping(s, d) for s, d in data["mappings"]),
            include=tuple(data["include"]),
            exclude=tuple(data["exclude"]),
            symlinks=SymlinkPolicy(data["symlinks"]),
        )


@dataclass(frozen=True)
class Manifest:
    id: str
    owner: str
    spec: ManifestSpec
    state: ManifestState = ManifestState.PENDING
    error: str = ""
    file_count: int = 0
    dir_count: int = 0
    total_bytes: int = 0
    skipped_count: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    completed_at: float = 0.0
    skipped_examples: tuple[tuple[str, str], ...] = ()
    """(printable source path, why) of the first MAX_SKIPPED_SHOWN entries left out."""


@dataclass(frozen=True)
class ManifestEntry:
    seq: int
    source_root: str
    source_path: str
    """Sandbox-relative below `source_root`, as `RelPath` renders it ("/a/b")."""
    dest_path: str
    """Relative to the transfer's destination path, without a leading "/"."""
    kind: str
    size: int
    mode: int
    mtime_ns: int
    symlink_target: str = ""


MAX_SKIPPED_SHOWN = 100


@dataclass
class _Counts:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    skipped: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, where: str, why: str) -> None:
        """Leave an entry out, and say why for the first few (the manifest shows them)."""
        self.skipped += 1
        if len(self.examples) < MAX_SKIPPED_SHOWN:
            shown = printable(where)
            self.examples.append((shown if len(shown) <= 300 else shown[:299] + "…", why))

    def add(self, item: userfs.Entry) -> None:
        if item.kind == "directory":
            self.dirs += 1
            return
        self.files += 1  # a file, or a preserved link
        if item.kind == "file":
            self.bytes += item.size


class ManifestService:
    def __init__(
        self,
        db: Database,
        files: userfs.UserFS,
        sandboxes: Sandboxes,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._files = files
        self._sandboxes = sandboxes
        self._links = FileService(files, sandboxes)
        self._clock = clock
        self._builds: dict[str, asyncio.Task[None]] = {}
        self._done: dict[str, asyncio.Event] = {}

    def create(
        self, caller: Caller, spec: ManifestSpec, labels: dict[str, str], requested_id: str
    ) -> Manifest:
        manifest_id = requested_id or uuid.uuid4().hex[:12]
        check_id(manifest_id, "manifest_id")
        _check_spec(spec)
        view = self._sandboxes.view_for(caller)
        for mapping in spec.mappings:  # the token's limits, before anything is created
            view.check(parse_path(mapping.source_path, what="source_path"), write=False)
        if self._find(manifest_id) is not None:
            raise AlreadyExists(f"manifests/{manifest_id} exists already")
        manifest = Manifest(manifest_id, caller.username, spec, labels=labels,
                            created_at=self._clock())
        scope = {"allowed_paths": list(caller.token.allowed_paths),
                 "read_only": caller.token.read_only}
        self._db.execute(
            "INSERT INTO manifests (id, owner, spec, state, labels, created_at, scope)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (manifest.id, manifest.owner, spec.to_json(), manifest.state.value,
             json.dumps(labels), manifest.created_at, json.dumps(scope)),
        )
        self._start_build(caller, manifest)
        return manifest

    def _start_build(self, caller: Caller, manifest: Manifest) -> None:
        self._done[manifest.id] = asyncio.Event()
        self._builds[manifest.id] = asyncio.create_task(self._build(caller, manifest))

    async def recover(self) -> None:
        """Scan again what a stop or a crash interrupted, as its owner and within the limits
        of the credentials that asked for it: transfers waiting for it go on."""
        rows = self._db.query("SELECT * FROM manifests WHERE state = 'pending'")
        for row in rows:
            manifest, scope = _manifest(row), json.loads(row["scope"])
            with self._db.transaction() as conn:
                conn.execute("DELETE FROM manifest_entries WHERE manifest_id = ?",
                             (manifest.id,))
                conn.execute("UPDATE manifests SET file_count = 0, dir_count = 0,"
                             " total_bytes = 0, skipped_count = 0, skipped_examples = '[]'"
                             " WHERE id = ?", (manifest.id,))
            try:
                caller = await acting_as(manifest.owner, "scan resumed after a restart",
                                         tuple(scope.get("allowed_paths", ())),
                                         bool(scope.get("read_only", False)))
            except NotFound:
                self._db.execute(
                    "UPDATE manifests SET state = 'error', error = ?, completed_at = ?"
                    " WHERE id = ?", (f"its owner {printable(manifest.owner)} no longer exists",
                                      self._clock(), manifest.id))
                continue
            self._start_build(caller, manifest)

    def peek(self, manifest_id: str) -> Manifest | None:
        """The manifest whoever owns it (for the transfer scheduler, not for callers)."""
        return self._find(manifest_id)

    def get(self, caller: Caller, manifest_id: str) -> Manifest:
        manifest = self._find(manifest_id)
        if manifest is None or not caller.can_see(manifest.owner):
            raise NotFound(f"manifests/{manifest_id} not found")
        return manifest

    async def wait(self, caller: Caller, manifest_id: str) -> Manifest:
        manifest = self.get(caller, manifest_id)
        done = self._done.get(manifest_id)
        if manifest.state is ManifestState.PENDING and done is not None:
            await done.wait()
        return self.get(caller, manifest_id)

    def list(self, caller: Caller, *, owner: str, state: ManifestState | None, after: str,
             limit: int) -> list[Manifest]:
        """Newest first; `after` is the id of the last manifest of the previous page."""
        where: list[tuple[str, Sequence[object]]] = []
        scope = caller.owner_scope(owner)
        if scope is not None:
            where.append(("owner = ?", [scope]))
        if state is not None:
            where.append(("state = ?", [state.value]))
        rows = self._db.newest_first("manifests", where, after=after, limit=limit)
        return [_manifest(row) for row in rows]

    def entries(self, caller: Caller, manifest_id: str, *, after: str, limit: int
                ) -> list[ManifestEntry]:
        """A page of a COMPLETE manifest's entries, by destination path."""
        manifest = self.get(caller, manifest_id)
        if manifest.state is not ManifestState.COMPLETE:
            raise FailedPrecondition(f"manifests/{manifest_id} is {manifest.state.value}")
        rows = self._db.query(
            "SELECT * FROM manifest_entries WHERE manifest_id = ? AND dest_path > ?"
            " ORDER BY dest_path LIMIT ?", (manifest_id, after, limit))
        return [_entry(row) for row in rows]

    def iter_entries(self, manifest_id: str, *, after_seq: int = -1) -> Iterator[ManifestEntry]:
        """Every entry in scan order (parents before children), a batch at a time."""
        while True:
            rows = self._db.query(
                "SELECT * FROM manifest_entries WHERE manifest_id = ? AND seq > ?"
                " ORDER BY seq LIMIT ?", (manifest_id, after_seq, BATCH))
            if not rows:
                return
            for row in rows:
                yield _entry(row)
            after_seq = rows[-1]["seq"]

    def delete(self, caller: Caller, manifest_id: str) -> None:
        self.get(caller, manifest_id)
        build = self._builds.pop(manifest_id, None)
        if build is not None:
            build.cancel()
        self._db.execute("DELETE FROM manifests WHERE id = ?", (manifest_id,))

    async def close(self) -> None:
        for task in self._builds.values():
            task.cancel()
        await asyncio.gather(*self._builds.values(), return_exceptions=True)

    async def _build(self, caller: Caller, manifest: Manifest) -> None:
        """Scan and store the entries. Cancelled (the server stops), the manifest stays
        PENDING and `recover` scans it again at the next start."""
        counts = _Counts()
        batch: list[ManifestEntry] = []
        try:
            try:
                async for entry in self._scan(caller, manifest.spec, counts):
                    batch.append(entry)
                    if len(batch) >= BATCH:
                        self._flush(manifest.id, batch, counts)
                self._flush(manifest.id, batch, counts)
                state, error = ManifestState.COMPLETE, ""
            except JetstreamError as exc:
                state, error = ManifestState.ERROR, str(exc)
            self._db.execute(
                "UPDATE manifests SET state = ?, error = ?, completed_at = ? WHERE id = ?",
                (state.value, error, self._clock(), manifest.id),
            )
        finally:
            self._builds.pop(manifest.id, None)
            self._done.pop(manifest.id, asyncio.Event()).set()

    def _flush(self, manifest_id: str, batch: list[ManifestEntry], counts: _Counts) -> None:
        try:
            with self._db.transaction() as conn:
                conn.executemany(
                    "INSERT INTO manifest_entries (manifest_id, seq, source_root, source_path,"
                    " dest_path, kind, size, mode, mtime_ns, symlink_target)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(manifest_id, e.seq, e.source_root, e.source_path, e.dest_path, e.kind,
                      e.size, e.mode, e.mtime_ns, e.symlink_target) for e in batch],
                )
                conn.execute(
                    "UPDATE manifests SET file_count = ?, dir_count = ?, total_bytes = ?,"
                    " skipped_count = ?, skipped_examples = ? WHERE id = ?",
                    (counts.files, counts.dirs, counts.bytes, counts.skipped,
                     json.dumps(counts.examples), manifest_id),
                )
        except sqlite3.IntegrityError:
            raise InvalidArgument(
                "two entries map to the same destination path; check the mappings"
            ) from None
        batch.clear()

    async def _scan(
        self, caller: Caller, spec: ManifestSpec, counts: _Counts
    ) -> AsyncIterator[ManifestEntry]:
        """Yield entries of every mapping, walking directories top-down as the user.

        A directory is never entered below itself (its identity is among its ancestors'),
        so links that loop are skipped instead of walked forever."""
        path_filter = PathFilter(spec.include, spec.exclude)
        principal = caller.principal
        view = self._sandboxes.view_for(caller)
        seq = 0
        for mapping in spec.mappings:
            source = await self._sandboxes.locate_for(
                caller, mapping.source_path, write=False, what="source_path"
            )
            top = await self._files.run(principal, userfs.stat, source)
            found = await self._apply_policy(caller, view, spec.symlinks, source, top)
            dest = _destination(mapping, source)
            if isinstance(found, str):
                counts.skip(str(source.path), found)
                continue
            source, top = found
            if top.kind != "directory" or dest:
                counts.add(top)
                yield _make_entry(seq, source, dest, top)
                seq += 1
            if top.kind != "directory":
                continue
            stack = [(source, dest, "", frozenset({top.identity}))]
            while stack:
                here, here_dest, relative, ancestors = stack.pop()
                after: str | None = None
                while True:
                    page = await self._files.run(principal, userfs.list_dir, here, after=after)
                    for listed in page.entries:
                        rel = f"{relative}{listed.name}"
                        child_dest = f"{here_dest}/{listed.name}" if here_dest else listed.name
                        child_path = here.path.child(listed.name)
                        if isinstance(child_path, str):  # no receiver may create it
                            shown = f"{str(here.path).rstrip('/')}/{listed.name}"
                            counts.skip(shown, f"its name cannot be sent: {child_path}")
                            continue
                        at = Location(here.root, child_path)
                        found = await self._apply_policy(caller, view, spec.symlinks, at,
                                                         listed)
                        if isinstance(found, str):
                            counts.skip(str(at.path), found)
                            continue
                        child, item = found
                        if item.kind == "directory":
                            if path_filter.excluded(rel):
                                continue
                            if item.identity in ancestors:
                                counts.skip(str(at.path), "a link back up the tree (a loop)")
                                continue
                            stack.append((child, child_dest, rel + "/",
                                          ancestors | {item.identity}))
                        elif not path_filter.wanted_file(rel):
                            continue
                        counts.add(item)
                        yield _make_entry(seq, child, child_dest, item)
                        seq += 1
                    if page.next_after is None:
                        break
                    after = page.next_after

    async def _apply_policy(
        self, caller: Caller, view: CallerView, policy: SymlinkPolicy, location: Location,
        item: userfs.Entry,
    ) -> tuple[Location, userfs.Entry] | str:
        """What to record for `item` at `location`: itself, or for a followed link what it
        leads to; or why it is left out (not a file, directory or link, or a link the policy
        leaves out or that cannot be followed within the caller's view)."""
        if item.kind in ("file", "directory") or (
            item.kind == "symlink" and policy is SymlinkPolicy.PRESERVE
        ):
            return location, item
        if item.kind != "symlink":
            return "not a regular file, directory or link (a device, FIFO or socket)"
        if policy is not SymlinkPolicy.FOLLOW_WITHIN_SANDBOX:
            return "a symbolic link (symlink policy SKIP)"
        try:
            followed = await self._links.follow(caller, view, location, item.target)
        except (PermissionDenied, NotFound, FailedPrecondition, InvalidArgument) as exc:
            return f"a link that cannot be followed within the sandbox: {exc}"
        if followed is None or followed[1].entry.kind not in ("file", "directory"):
            return "a link to nothing, or to something not a regular file or directory"
        return followed[0], followed[1].entry

    def _find(self, manifest_id: str) -> Manifest | None:
        rows = self._db.query("SELECT * FROM manifests WHERE id = ?", (manifest_id,))
        return _manifest(rows[0]) if rows else None


def _check_spec(spec: ManifestSpec) -> None:
    if not spec.mappings:
        raise InvalidArgument("a manifest needs at least one mapping")
    if len(spec.mappings) > MAX_MAPPINGS:
        raise InvalidArgument(f"a manifest takes at most {MAX_MAPPINGS} mappings")
    PathFilter(spec.include, spec.exclude)  # raises on a malformed pattern
    seen: set[str] = set()
    for mapping in spec.mappings:
        parse_path(mapping.source_path, what="source_path")
        if mapping.destination_path:
            dest = str(parse_path(mapping.destination_path, what="destination_path"))
            if dest in seen:
                raise InvalidArgument(f"two mappings go to {printable(dest)}")
            seen.add(dest)


def _destination(mapping: Mapping, source: Location) -> str:
    if mapping.destination_path:
        return str(parse_path(mapping.destination_path, what="destination_path")).lstrip("/")
    return source.path.name


def _make_entry(seq: int, loc: Location, dest: str, item: userfs.Entry) -> ManifestEntry:
    return ManifestEntry(
        seq=seq,
        source_root=loc.root.name,
        source_path=str(loc.path),
        dest_path=dest,
        kind=item.kind,
        size=item.size if item.kind == "file" else 0,
        mode=item.mode,
        mtime_ns=item.mtime_ns,
        symlink_target=item.target if item.kind == "symlink" else "",
    )


def _manifest(row: sqlite3.Row) -> Manifest:
    return Manifest(
        id=row["id"],
        owner=row["owner"],
        spec=ManifestSpec.from_json(row["spec"]),
        state=ManifestState(row["state"]),
        error=row["error"],
        file_count=row["file_count"],
        dir_count=row["dir_count"],
        total_bytes=row["total_bytes"],
        skipped_count=row["skipped_count"],
        labels=json.loads(row["labels"]),
        created_at=row["created_at"],
        completed_at=row["completed_at"],
        skipped_examples=tuple((path, why) for path, why in
                               json.loads(row["skipped_examples"])),
    )


def _entry(row: sqlite3.Row) -> ManifestEntry:
    return ManifestEntry(
        seq=row["seq"],
        source_root=row["source_root"],
        source_path=row["source_path"],
        dest_path=row["dest_path"],
        kind=row["kind"],
        size=row["size"],
        mode=row["mode"],
        mtime_ns=row["mtime_ns"],
        symlink_target=row["symlink_target"],
    )
