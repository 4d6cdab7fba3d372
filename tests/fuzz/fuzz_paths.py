"""Fuzz target: the path walker (jetstream/storage/paths.py, sandbox.py, userfs.py).

The first input byte picks a check; the rest is the text (or names) it works on:

* parse_path: raises only InvalidArgument; what it accepts is a safe path (no empty, `.`
  or `..` component, no control, separator or bidi character, no component that folds to
  one) that parses back to itself.
* printable: one line, and two different names (text or bytes) never print the same.
* a caller's view (`CallerView.resolve`): a restricted token reaches only its allowed paths,
  a read-only one writes nothing, and every place found is the path asked for.
* symlink targets (`Sandbox.link_target`): whatever a link says, it leads beneath a root or
  is refused with PermissionDenied.
* sandbox templates (`expand_template`): no user name widens a template (`..`, `/`, NUL).
* temporary names (`userfs._part_name`): always a valid name that `open_part` accepts back.
* the real walk (`userfs._open_dir`) through a directory tree with links out of and within
  the root, a file and a FIFO: it ends beneath the root or raises a jetstream error.
"""

from __future__ import annotations

import functools
import os
import tempfile
import unicodedata
from pathlib import Path

import atheris

from jetstream.auth.principal import Principal
from jetstream.errors import ConfigError, InvalidArgument, JetstreamError, PermissionDenied
from jetstream.services.sandboxes import CallerView
from jetstream.storage import userfs
from jetstream.storage.paths import MAX_NAME_BYTES, MAX_PATH_BYTES, RelPath, parse_path, printable
from jetstream.storage.sandbox import (
    Location,
    Sandbox,
    SandboxRoot,
    check_template,
    expand_template,
)

ALICE = Principal("alice", 1000, 1000, (1000,), "/home/alice", "Alice")
SANDBOX = Sandbox((SandboxRoot("", "/data/alice"), SandboxRoot("shared", "/data/shared"),
                   SandboxRoot("srv/ro", "/srv/ro", read_only=True)))
_UNSAFE = frozenset("\\\u2044\u2215\u2216\u29f5\u29f8\u29f9\u202e\u202d\u2066\u2067\u2068\u2069")


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    check = fdp.ConsumeIntInRange(0, 6)
    if check == 0:
        _parse(fdp.ConsumeUnicode(fdp.remaining_bytes()))
    elif check == 6:
        _printable(_name(fdp, fdp.ConsumeIntInRange(0, 16)), _name(fdp, fdp.remaining_bytes()))
    elif check == 1:
        _view(fdp)
    elif check == 2:
        _link(fdp)
    elif check == 3:
        _template(fdp)
    elif check == 4:
        _part_name(fdp.ConsumeUnicode(fdp.remaining_bytes()))
    else:
        _walk(fdp)


def _parse(raw: str) -> None:
    try:
        path = parse_path(raw)
    except InvalidArgument:
        return
    _assert_safe(path)
    assert parse_path(str(path)) == path
    assert RelPath(path.parts) == path


def _name(fdp: atheris.FuzzedDataProvider, size: int) -> str | bytes:
    """A name as a client sends it (text) or as a directory listing may hold it (bytes)."""
    return fdp.ConsumeBytes(size) if fdp.ConsumeBool() else fdp.ConsumeUnicode(size)


def _printable(a: str | bytes, b: str | bytes) -> None:
    """One line each, and two different names never print the same."""
    for name in (a, b):
        shown = printable(name)
        assert shown.isprintable(), (name, shown)
    if _on_disk(a) != _on_disk(b):
        assert printable(a) != printable(b), (a, b, printable(a))


def _on_disk(name: str | bytes) -> bytes | str:
    """The bytes a name stands for (a str holds undecodable bytes as surrogate escapes)."""
    if isinstance(name, bytes):
        return name
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return name  # a lone surrogate outside the escapes: no file can have this name


def _assert_safe(path: RelPath) -> None:
    assert len(str(path).encode()) <= MAX_PATH_BYTES + 1
    for part in path.parts:
        assert part not in ("", ".", "..") and "/" not in part, path
        assert len(part.encode()) <= MAX_NAME_BYTES, path
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in _UNSAFE for c in part)
        folded = unicodedata.normalize("NFKC", part)
        assert folded not in (".", "..") and "/" not in folded and "\\" not in folded, path


def _view(fdp: atheris.FuzzedDataProvider) -> None:
    allowed = []
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        try:
            allowed.append(parse_path(fdp.ConsumeUnicode(24), empty_is_root=True))
        except InvalidArgument:
            pass
    restricted = fdp.ConsumeBool()
    view = CallerView(ALICE, SANDBOX, tuple(allowed), restricted=restricted,
                      read_only=fdp.ConsumeBool())
    write = fdp.ConsumeBool()
    raw = fdp.ConsumeUnicode(fdp.remaining_bytes())
    try:
        found = view.resolve(raw, write=write)
    except JetstreamError:
        return
    path = found.path
    assert path == parse_path(raw, empty_is_root=True)
    assert not write or not view.read_only, "a read-only view wrote"
    assert not restricted or any(path.parts[:len(a.parts)] == a.parts for a in allowed)
    if found.location is not None:
        assert not write or not found.location.root.read_only
        assert SANDBOX.view_path(found.location) == path, "the view placed another path"


def _link(fdp: atheris.FuzzedDataProvider) -> None:
    try:
        link = SANDBOX.locate(parse_path(fdp.ConsumeUnicode(32) or "x"),
                              root=("", "shared")[fdp.ConsumeIntInRange(0, 1)])
    except InvalidArgument:
        return
    if not link.path.parts:
        return
    target = fdp.ConsumeUnicode(fdp.remaining_bytes())
    try:
        leads_to = SANDBOX.link_target(link, target)
    except PermissionDenied:
        return
    SANDBOX.resolve(leads_to)  # somewhere in the view
    host = os.path.normpath(target if target.startswith("/") else
                            os.path.join(link.root.path, *link.path.parent.parts, target))
    host = "/" + host.lstrip("/")  # POSIX keeps a leading "//"; the kernel does not care
    assert any(host == r.path or host.startswith(r.path + "/") for r in SANDBOX.roots), \
        (target, leads_to)


def _template(fdp: atheris.FuzzedDataProvider) -> None:
    template = fdp.ConsumeUnicode(40)
    name = fdp.ConsumeUnicode(fdp.remaining_bytes())
    short, at, domain = name.rpartition("@")
    principal = Principal(name, 1000, 1000, (1000,), "/", "", domain=domain if at else "")
    try:
        check_template(template)
    except ConfigError:
        return
    try:
        host = expand_template(template, principal)
    except PermissionDenied:
        return
    parts = host.split("/")
    assert host.startswith("/") and ".." not in parts and "\0" not in host, (template, name)
    fixed = template.split("%", 1)[0].rsplit("/", 1)[0]
    prefix = "/" + "/".join(p for p in fixed.split("/") if p not in ("", "."))
    assert host == prefix or host.startswith(prefix.rstrip("/") + "/"), (template, name, host)


def _part_name(name: str) -> None:
    try:
        path = parse_path(name)
    except InvalidArgument:
        return
    if len(path.parts) != 1:
        return
    name = path.parts[0]
    temp = userfs._part_name(name)
    assert len(temp.encode()) <= MAX_NAME_BYTES
    parse_path(temp)
    match = userfs._PART_SUFFIX.search(temp)
    assert match is not None and temp == userfs._part_name(name, match.group(1))


@functools.cache
def _tree() -> SandboxRoot:
    """root/{a/{b/, f, p(fifo), in -> ../a, out -> /}, up -> .., abs -> /etc, f}"""
    base = Path(tempfile.mkdtemp(prefix="jetstream-fuzz-walk-"))
    root = base / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "f").write_text("x")
    (root / "f").write_text("x")
    os.mkfifo(root / "a" / "p")
    (root / "a" / "in").symlink_to("../a")
    (root / "a" / "out").symlink_to("/")
    (root / "up").symlink_to("..")
    (root / "abs").symlink_to("/etc")
    return SandboxRoot("", str(root))


_NAMES = ("a", "b", "f", "p", "in", "out", "up", "abs", "missing")


def _walk(fdp: atheris.FuzzedDataProvider) -> None:
    root = _tree()
    parts = []
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        if fdp.ConsumeIntInRange(0, 7):
            parts.append(_NAMES[fdp.ConsumeIntInRange(0, len(_NAMES) - 1)])
        else:
            parts.append(fdp.ConsumeUnicode(8))
    try:
        path = RelPath(tuple(parts))
    except InvalidArgument:
        return
    try:
        fd = userfs._open_dir(root, path.parts)
    except JetstreamError:
        return
    try:
        reached = os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    assert reached == root.path or reached.startswith(root.path + "/"), (path, reached)
    assert Location(root, path).path == path
