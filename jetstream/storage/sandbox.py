"""Where a user's files go: the sandbox roots a user may reach, from plain configuration.

The product's rule: a file lands at `sandbox root / transfer destination path / file path`;
without a sandbox the root is `/`. Configuration, as the lead stores it:

- `sandbox_dirs`: the system-wide `--sandbox-dir` list. The first is the all-users root mount
  `""` (the product documents `--sandbox-dir /data` as `setSandboxMapping("", {"": "/data"})`),
  the others are named by their expanded path.
- `all_users`: mount name -> path template, for every user.
- `users`: user name -> (mount name -> path template), for one user.

For a user, mounts merge in that order and a later level replaces a mount of the same name:
`{"": "/special"}` for bob overrides the system root for bob only, `{"projects": "/projects"}`
gives bob one more root. The mount named `""` is the default root (else the first). Templates
take `%u` (user name without domain), `%d` (domain, empty for local users), `%f` (the full
login name, e.g. `alice@corp`) and `%%`. A substituted value that is not a plain file name
(`/`, `..`) refuses the user any file access instead of widening it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from jetstream.auth.principal import Principal
from jetstream.errors import ConfigError, NotFound, PermissionDenied
from jetstream.storage.paths import RelPath, printable

_PLACEHOLDER = re.compile(r"%(.?)", re.DOTALL)


@dataclass(frozen=True)
class SandboxRoot:
    name: str
    """How clients address this root; unique within a Sandbox."""
    path: str
    """Absolute, normalised host path, trusted configuration (symlinks in it are followed)."""

    @property
    def confined(self) -> bool:
        """False only for `/`: beneath the whole file system nothing can escape."""
        return self.path != "/"


@dataclass(frozen=True)
class Location:
    """A validated path beneath one sandbox root: what the file layer operates on."""

    root: SandboxRoot
    path: RelPath

    def __str__(self) -> str:
        """The sandbox-relative path, as the client named it (not yet escaped)."""
        return str(self.path)


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


UNCONFINED = Sandbox((SandboxRoot("", "/"),))


@dataclass(frozen=True)
class SandboxRules:
    """The sandbox configuration as plain data (the lead loads it from flags and the DB)."""

    sandbox_dirs: tuple[str, ...] = ()
    all_users: Mapping[str, str] = field(default_factory=dict)
    users: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def check(self) -> None:
        """ConfigError naming the first invalid template; call it when configuration loads."""
        per_user = [t for mapping in self.users.values() for t in mapping.values()]
        for template in [*self.sandbox_dirs, *self.all_users.values(), *per_user]:
            check_template(template)

    def sandbox_for(self, principal: Principal) -> Sandbox:
        """The roots `principal` may reach; UNCONFINED when nothing applies to them."""
        mounts: dict[str, str] = {}
        for index, template in enumerate(self.sandbox_dirs):
            path = expand_template(template, principal)
            mounts["" if index == 0 else path] = path
        mounts.update(expand_mapping(self.all_users, principal))
        mounts.update(expand_mapping(self.users.get(principal.username, {}), principal))
        if not mounts:
            return UNCONFINED
        return Sandbox(tuple(SandboxRoot(name, path) for name, path in mounts.items()))


def expand_mapping(mapping: Mapping[str, str], principal: Principal) -> dict[str, str]:
    """Mount name -> absolute host path for `principal` (pure; order kept)."""
    return {name: expand_template(template, principal) for name, template in mapping.items()}


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
