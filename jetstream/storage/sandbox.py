"""Where a user's files go: the sandbox roots a user may reach, and the user's view of them.

The product's rule: a file lands at `sandbox root / transfer destination path / file path`;
without a sandbox the root is `/`. Configuration (`SandboxRules`), as plain data:

- `sandbox_dirs`: the system-wide `--sandbox-dir` list, which *is* the all-users mapping
  while it is given (the product documents `--sandbox-dir /data` as
  `setSandboxMapping("", {"": "/data"})`). The first is the root of the view (mount `""`);
  the others appear at their own path: `--sandbox-dir /srv/shared` shows as `/srv/shared`.
- `all_users`: the all-users mapping set through the API (ignored while `sandbox_dirs` is
  given: the command line wins).
- `users`: user name -> that user's mapping, which *replaces* the all-users mapping for them
  (server.proto, SandboxMapping).

A mapping is a list of `Resource`s: a mount name and a path template. Templates take `%u`
(user name without domain), `%d` (domain, empty for local users), `%f` (the full login name,
e.g. `alice@corp`) and `%%`. A substituted value that is not a plain file name (`/`, `..`)
refuses the user any file access instead of widening it.

The view (`Sandbox.resolve`): the mount `""` is the root of the user's view; every other
mount appears as a directory at `/<mount>` and hides an entry of the same name in the
`""` root. A mount whose name has several components (`srv/shared`) makes its leading
components (`/srv`) directories that exist in the view even where no root holds them.
Without any root at all (no sandbox) the view is the whole file system.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from jetstream.auth.principal import Principal
from jetstream.errors import ConfigError, InvalidArgument, NotFound, PermissionDenied
from jetstream.storage.paths import RelPath, parse_path, printable

_PLACEHOLDER = re.compile(r"%(.?)", re.DOTALL)


@dataclass(frozen=True)
class SandboxRoot:
    name: str
    """The mount: where the root appears in the user's view ("" for the view's root,
    "shared" for `/shared`, "srv/shared" for `/srv/shared`); unique within a Sandbox."""
    path: str
    """Absolute, normalised host path, trusted configuration (symlinks in it are followed)."""
    read_only: bool = False
    """The user may read but not write below this root."""
    create: bool = False
    """Create the directory, owned by the user, when first needed."""

    @property
    def confined(self) -> bool:
        """False only for `/`: beneath the whole file system nothing can escape."""
        return self.path != "/"

    @property
    def mount(self) -> tuple[str, ...]:
        """`name` as view path components; () for the view's root."""
        return tuple(self.name.split("/")) if self.name else ()


@dataclass(frozen=True)
class Location:
    """A validated path beneath one sandbox root: what the file layer operates on."""

    root: SandboxRoot
    path: RelPath

    def __str__(self) -> str:
        """The sandbox-relative path, as the client named it (not yet escaped)."""
        return str(self.path)

    @property
    def host_path(self) -> str:
        """Where it is on this machine's file system (for people and trigger scripts; file
        access goes through userfs, never through this string)."""
        return os.path.join(self.root.path, *self.path.parts)


@dataclass(frozen=True)
class ViewPath:
    """Where a path of the user's view lands (`Sandbox.resolve`)."""

    path: RelPath
    """The path as the user named it."""
    location: Location | None
    """The real place; None for a directory that exists only to hold mounts."""
    mounts_below: tuple[str, ...] = ()
    """Names that mounts add directly inside this path (sorted); they hide real entries."""

    @property
    def is_mount_point(self) -> bool:
        """A sandbox root itself, or a directory holding mounts: never removed or renamed."""
        return self.location is None or not self.location.path.parts or bool(self.mounts_below)


@dataclass(frozen=True)
class Sandbox:
    roots: tuple[SandboxRoot, ...]

    def __post_init__(self) -> None:
        if not self.roots:
            raise ValueError("a sandbox needs at least one root")

    def root(self, name: str | None = None) -> SandboxRoot:
        """The root called `name`; None: the default (mount `""`, else the first)."""
        wanted = "" if name is None else name
        for root in self.roots:
            if root.name == wanted:
                return root
        if name is None:
            return self.roots[0]
        raise NotFound(f"no sandbox root named '{printable(name)}'")

    def locate(self, *paths: RelPath, root: str | None = None) -> Location:
        """`root / paths[0] / paths[1] ...`, e.g. `locate(destination_path, file_path)`."""
        joined = RelPath(())
        for path in paths:
            joined = joined / path
        return Location(self.root(root), joined)

    def resolve(self, path: RelPath) -> ViewPath:
        """Place a path of the user's view: the root with the longest matching mount.

        NotFound if no root holds it (possible only without a `""` root).
        """
        parts = path.parts
        best: SandboxRoot | None = None
        for root in self.roots:
            mount = root.mount
            if parts[: len(mount)] == mount and (best is None or len(mount) > len(best.mount)):
                best = root
        below = sorted({
            root.mount[len(parts)]
            for root in self.roots
            if len(root.mount) > len(parts) and root.mount[: len(parts)] == parts
        })
        if best is None and not below:
            raise NotFound(f"{printable(str(path))}: no such file or directory")
        location = None if best is None else Location(best, RelPath(parts[len(best.mount):]))
        return ViewPath(path, location, tuple(below))

    def view_path(self, location: Location) -> RelPath:
        """The inverse of `resolve`: where `location` appears in the user's view."""
        return RelPath(location.root.mount + location.path.parts)

    def link_target(self, link: Location, target: str) -> RelPath:
        """Where the symbolic link at `link`, pointing to `target`, leads in this view,
        resolved lexically (an absolute target is a host path, a relative one starts at the
        link's directory); PermissionDenied if it leads outside every root."""
        outside = PermissionDenied(
            f"{printable(str(self.view_path(link)))}: the symbolic link leads outside the "
            "sandbox"
        )
        if target.startswith("/"):
            host = _lexical(target.split("/"), ())
            if host is None:
                raise outside
            best = None
            for root in self.roots:
                prefix = tuple(p for p in root.path.split("/") if p)
                if host[: len(prefix)] == prefix and (best is None or len(prefix) > len(best[1])):
                    best = (root, prefix)
            if best is None:
                raise outside
            root, prefix = best
            parts = host[len(prefix):]
        else:
            root = link.root
            normalised = _lexical(target.split("/"), link.path.parent.parts)
            if normalised is None:
                raise outside
            parts = normalised
        try:
            return self.view_path(Location(root, RelPath(parts)))
        except InvalidArgument:
            raise outside from None


def _lexical(components: list[str], base: tuple[str, ...]) -> tuple[str, ...] | None:
    """`base` + `components` with `.`, `..` and empty parts resolved; None above the top."""
    parts = list(base)
    for part in components:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return tuple(parts)


UNCONFINED = Sandbox((SandboxRoot("", "/"),))


@dataclass(frozen=True)
class Resource:
    """One entry of a sandbox mapping, before placeholders are expanded."""

    mount: str
    """"" (the view's root; only as a mapping's sole resource) or one path component."""
    path: str
    """Absolute path template, e.g. "/storage/%u"."""
    read_only: bool = False
    create: bool = False


@dataclass(frozen=True)
class SandboxRules:
    """The sandbox configuration as plain data (see the module docstring)."""

    sandbox_dirs: tuple[str, ...] = ()
    all_users: tuple[Resource, ...] = ()
    users: Mapping[str, tuple[Resource, ...]] = field(default_factory=dict)

    def check(self) -> None:
        """ConfigError naming the first invalid template or mapping."""
        for index, template in enumerate(self.sandbox_dirs):
            check_template(template)
            if index and _normalised(template) == "/":
                raise ConfigError("only the first --sandbox-dir may be '/'")
        if self.all_users:
            check_resources(self.all_users)
        for resources in self.users.values():
            check_resources(resources)

    def fixed_resources(self) -> tuple[Resource, ...]:
        """`sandbox_dirs` as a mapping (mount names before expansion), for display."""
        return tuple(
            Resource("" if index == 0 else _normalised(template).strip("/"), template)
            for index, template in enumerate(self.sandbox_dirs)
        )

    def sandbox_for(self, principal: Principal) -> Sandbox:
        """The roots `principal` may reach; UNCONFINED when nothing applies to them."""
        roots: dict[str, SandboxRoot] = {}
        own = self.users.get(principal.username)
        if own is None and self.sandbox_dirs:
            for index, template in enumerate(self.sandbox_dirs):
                path = expand_template(template, principal)
                name = "" if index == 0 else path.strip("/")
                roots.setdefault(name, SandboxRoot(name, path))
        else:
            for resource in own if own is not None else self.all_users:
                path = expand_template(resource.path, principal)
                roots.setdefault(resource.mount, SandboxRoot(
                    resource.mount, path, resource.read_only, resource.create))
        if not roots:
            return UNCONFINED
        return Sandbox(tuple(roots.values()))


def expand_mapping(mapping: Mapping[str, str], principal: Principal) -> dict[str, str]:
    """Mount name -> absolute host path for `principal` (pure; order kept)."""
    return {name: expand_template(template, principal) for name, template in mapping.items()}


def check_resources(resources: Sequence[Resource]) -> None:
    """ConfigError unless `resources` is a valid mapping: at least one resource, valid
    templates, mount names that are single path components, unique, and "" only alone."""
    if not resources:
        raise ConfigError("a sandbox mapping needs at least one resource")
    seen: set[str] = set()
    for resource in resources:
        check_template(resource.path)
        mount = resource.mount
        if mount == "":
            if len(resources) > 1:
                raise ConfigError(
                    "the mount name '' (the root of the view) is only allowed for a mapping's "
                    "only resource; give every resource a name"
                )
        elif "/" in mount:
            raise ConfigError(f"mount name '{printable(mount)}' must not contain '/'")
        else:
            try:
                parse_path(mount, what="mount name")
            except InvalidArgument as exc:
                raise ConfigError(str(exc)) from None
        if mount in seen:
            raise ConfigError(f"two resources share the mount name '{printable(mount)}'")
        seen.add(mount)


def _normalised(template: str) -> str:
    return "/" + "/".join(part for part in template.split("/") if part not in ("", "."))


def check_template(template: str) -> None:
    """ConfigError unless `template` is an absolute path with only known placeholders."""
    if not template.startswith("/"):
        raise ConfigError(f"sandbox path '{printable(template)}' must be absolute")
    if "\0" in template:
        raise ConfigError(f"sandbox path '{printable(template)}' contains NUL")
    if ".." in template.split("/"):
        raise ConfigError(f"sandbox path '{printable(template)}' contains '..'")
    for match in _PLACEHOLDER.finditer(template):
        if match.group(1) not in ("u", "d", "f", "%"):
            raise ConfigError(
                f"sandbox path '{printable(template)}': unknown placeholder "
                f"'%{match.group(1)}' (known: %u %d %f %%)"
            )


def expand_template(template: str, principal: Principal) -> str:
    """`template` with placeholders replaced for `principal`, normalised (no `//`, `.`)."""
    check_template(template)
    values = {"u": principal.short_name, "d": principal.domain, "f": principal.username}

    def substitute(match: re.Match[str]) -> str:
        return "%" if match.group(1) == "%" else values[match.group(1)]

    parts = _PLACEHOLDER.sub(substitute, template).split("/")
    if ".." in parts or any(
        (not value and key != "d") or "/" in value or "\0" in value or value in (".", "..")
        for key, value in values.items()
    ):  # "/storage/%u" for user "." would be everyone's /storage
        raise PermissionDenied(
            f"the account name '{printable(principal.username)}' cannot be used in a "
            "sandbox path; ask the administrator"
        )
    return "/" + "/".join(part for part in parts if part not in ("", "."))
