"""Browsing and simple file management in the caller's sandbox view, as the caller.

Every path is checked by the one access check (`CallerView`, services/sandboxes.py: the
token's read-only flag and allowed paths, the sandbox, read-only resources) before any
file is touched, then the operation runs through `UserFS` with the caller's own kernel
credentials, so file permissions apply exactly as for the user.

The view: a user with several sandbox resources sees each as a directory named after its
mount. Such a directory (and `/` when no resource is the root of the view) is listed from
the mounts, merged with the real directory when there is one; mounts hide real entries of
the same name. Sandbox roots and mount points are never removed or renamed.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import ParamSpec, TypeVar

from jetstream.errors import (
    AlreadyExists,
    FailedPrecondition,
    JetstreamError,
    NotFound,
)
from jetstream.services.auth import Caller
from jetstream.services.sandboxes import CallerView, Sandboxes
from jetstream.storage import userfs
from jetstream.storage.paths import RelPath, printable
from jetstream.storage.sandbox import Location, ViewPath

_P = ParamSpec("_P")
_T = TypeVar("_T")

MAX_SYMLINK_HOPS = 40
VIRTUAL_DIR_MODE = 0o555


@dataclass(frozen=True)
class FileItem:
    """One entry as the API shows it."""

    path: str
    """In the caller's view, starting with "/"."""
    name: str
    """Last component; "/" for the view's root."""
    kind: str
    """"file", "directory", "symlink" or "other"."""
    size: int
    mode: int
    mtime_ns: int
    owner: str
    group: str
    symlink_target: str = ""


class FileService:
    def __init__(self, files: userfs.UserFS, sandboxes: Sandboxes) -> None:
        self._files = files
        self._sandboxes = sandboxes

    async def list_directory(
        self, caller: Caller, raw: str, *, after: str, limit: int, show_hidden: bool
    ) -> tuple[list[FileItem], str | None]:
        """A page of entries sorted by name, starting after the name `after`; the second
        value is the name to continue after, or None on the last page."""
        view = self._sandboxes.view_for(caller)
        here = view.resolve(raw, write=False)

        def visible(name: str) -> bool:
            return (show_hidden or not name.startswith(".")) and (not after or name > after)

        hidden_by_mounts = set(here.mounts_below)
        real: list[tuple[str, FileItem]] = []
        if here.location is not None:
            await self._sandboxes.prepare(caller.principal, here.location.root)
            cursor: str | None = after or None
            while len(real) <= limit:
                try:
                    page, next_after = await self._run(
                        caller, _list_named, here.location, cursor, limit + 1
                    )
                except NotFound:
                    if here.mounts_below:
                        break  # a directory that exists in the view only for its mounts
                    raise
                real.extend(
                    (e.entry.name, _item(_child(here.path, e.entry.name), e))
                    for e in page if visible(e.entry.name)
                    and e.entry.name not in hidden_by_mounts
                )
                if next_after is None:
                    break
                cursor = next_after
        mounts = [
            (name, await self._mount_item(caller, view, here.path / RelPath((name,))))
            for name in here.mounts_below if visible(name)
        ]
        merged = sorted(real + mounts, key=lambda pair: pair[0])
        more = len(merged) > limit
        return [item for _, item in merged[:limit]], (merged[limit - 1][0] if more else None)

    async def stat(self, caller: Caller, raw: str, *, follow_symlinks: bool) -> FileItem:
        view = self._sandboxes.view_for(caller)
        here = view.resolve(raw, write=False)
        entry = await self._entry(caller, here)
        if follow_symlinks and entry is not None and entry.entry.kind == "symlink":
            assert here.location is not None  # only a real entry can be a link
            followed = await self.follow(caller, view, here.location, entry.entry.target)
            entry = followed[1] if followed is not None else None
        return _item(here.path, entry)

    async def make_directory(self, caller: Caller, raw: str, *, parents: bool) -> FileItem:
        view = self._sandboxes.view_for(caller)
        here = view.resolve(raw, write=True)
        if here.is_mount_point:
            if parents:
                return _item(here.path, await self._entry(caller, here))
            raise AlreadyExists(f"{printable(str(here.path))} already exists")
        location = await self._real(caller, here)
        entry = await self._run(caller, _make_directory, location, parents)
        return _item(here.path, entry)

    async def remove(self, caller: Caller, raw: str, *, recursive: bool) -> None:
        here = self._sandboxes.view_for(caller).resolve(raw, write=True)
        _refuse_mount_point(here)
        location = await self._real(caller, here)
        await self._run(caller, userfs.remove, location, recursive=recursive)

    async def rename(
        self, caller: Caller, source: str, target: str, *, overwrite: bool
    ) -> FileItem:
        view = self._sandboxes.view_for(caller)
        old = view.resolve(source, write=True, what="source_path")
        _refuse_mount_point(old)
        new = view.resolve(target, write=True, what="target_path")
        _refuse_mount_point(new)
        old_location = await self._real(caller, old)
        new_location = await self._real(caller, new)
        await self._run(caller, userfs.rename, old_location, new_location, replace=overwrite)
        return _item(new.path, await self._run(caller, _named_stat, new_location))

    # Helpers ----------------------------------------------------------------------------

    async def _run(
        self, caller: Caller, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """`fn` as the caller (a link out of the sandbox surfaces as PathEscape, which the
        API reports as PERMISSION_DENIED)."""
        return await self._files.run(caller.principal, fn, *args, **kwargs)

    async def _real(self, caller: Caller, here: ViewPath) -> Location:
        assert here.location is not None  # callers refused mount points already
        await self._sandboxes.prepare(caller.principal, here.location.root)
        return here.location

    async def _entry(self, caller: Caller, here: ViewPath) -> NamedEntry | None:
        """The entry at `here`; None for a directory that exists only to hold mounts."""
        if here.location is None:
            return None
        await self._sandboxes.prepare(caller.principal, here.location.root)
        try:
            return await self._run(caller, _named_stat, here.location)
        except NotFound:
            if here.mounts_below:
                return None
            raise

    async def _mount_item(self, caller: Caller, view: CallerView, path: RelPath) -> FileItem:
        """An entry the mounts add to a listing: the resource's directory if it can be
        seen, else a stand-in directory."""
        try:
            entry = await self._entry(caller, view.sandbox.resolve(path))
        except JetstreamError:
            entry = None  # missing or unreadable: still listed, so the user sees the mount
        return _item(path, entry)

    async def follow(
        self, caller: Caller, view: CallerView, link: Location, target: str
    ) -> tuple[Location, NamedEntry] | None:
        """Where the symbolic link at `link`, pointing to `target`, finally leads, and what
        is there: links are followed (up to MAX_SYMLINK_HOPS) only while each target stays
        in the caller's view and credentials. None for a directory that exists only to hold
        mounts. PermissionDenied if a link leads out, NotFound if one dangles,
        FailedPrecondition on a loop."""
        location = link
        for _ in range(MAX_SYMLINK_HOPS):
            path = view.sandbox.link_target(location, target)
            view.check(path, write=False)
            there = view.sandbox.resolve(path)
            found = await self._entry(caller, there)
            if found is None or there.location is None:
                return None
            if found.entry.kind != "symlink":
                return there.location, found
            location, target = there.location, found.entry.target
        raise FailedPrecondition(
            f"{printable(str(view.sandbox.view_path(link)))}: too many levels of symbolic links"
        )


@dataclass(frozen=True)
class NamedEntry:
    """An entry with its owner and group names (looked up on the worker thread)."""

    entry: userfs.Entry
    owner: str
    group: str


def _named(entry: userfs.Entry) -> NamedEntry:
    return NamedEntry(entry, _user_name(entry.uid), _group_name(entry.gid))


def _named_stat(location: Location) -> NamedEntry:
    return _named(userfs.stat(location))


def _list_named(
    location: Location, after: str | None, limit: int
) -> tuple[list[NamedEntry], str | None]:
    page = userfs.list_dir(location, after=after, limit=limit)
    return [_named(entry) for entry in page.entries], page.next_after


def _make_directory(location: Location, parents: bool) -> NamedEntry:
    if parents and len(location.path.parts) > 1:
        userfs.mkdir(Location(location.root, location.path.parent), parents=True)
    try:
        userfs.mkdir(location)
    except AlreadyExists:
        if not parents or userfs.stat(location).kind != "directory":
            raise
    return _named_stat(location)


@lru_cache(maxsize=4096)
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@lru_cache(maxsize=4096)
def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _item(path: RelPath | str, found: NamedEntry | userfs.Entry | None) -> FileItem:
    """The API's view of an entry at `path`; None: a stand-in directory for mounts."""
    text = str(path)
    name = text.rsplit("/", 1)[-1] or "/"
    if found is None:
        return FileItem(text, name, "directory", 0, VIRTUAL_DIR_MODE, 0, "root", "root")
    named = found if isinstance(found, NamedEntry) else None
    entry = named.entry if named is not None else found
    assert isinstance(entry, userfs.Entry)
    return FileItem(
        path=_text(text),
        name=_text(name),
        kind=entry.kind,
        size=0 if entry.kind == "directory" else entry.size,
        mode=entry.mode,
        mtime_ns=entry.mtime_ns,
        owner=named.owner if named is not None else _user_name(entry.uid),
        group=named.group if named is not None else _group_name(entry.gid),
        symlink_target=_text(entry.target),
    )


def _text(value: str) -> str:
    """`value` as valid UTF-8 for the API: names that are not are shown escaped."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return printable(value)
    return value


def _child(parent: RelPath, name: str) -> str:
    """The view path of a listed name (which need not be one a client could send)."""
    return f"{parent}/{name}" if parent.parts else f"/{name}"


def _refuse_mount_point(here: ViewPath) -> None:
    if here.is_mount_point:
        raise FailedPrecondition(
            f"{printable(str(here.path))} is a sandbox root or mount point and cannot be "
            "removed or renamed"
        )
