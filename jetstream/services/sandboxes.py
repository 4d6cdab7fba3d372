"""Which directories each user reaches, and how a path in a user's view finds its root.

The rules come from `--sandbox-dir` (fixed at start) and, later, the mappings superusers
set through the API. A user with several roots sees each named root as a top-level
directory; the unnamed root (if any) is what the rest of the view shows.
"""

from __future__ import annotations

from jetstream.auth.principal import Principal
from jetstream.storage.paths import RelPath, parse_path
from jetstream.storage.sandbox import Location, Sandbox, SandboxRules


class Sandboxes:
    def __init__(self, rules: SandboxRules) -> None:
        rules.check()
        self._rules = rules

    def for_principal(self, principal: Principal) -> Sandbox:
        return self._rules.sandbox_for(principal)

    def locate(self, principal: Principal, raw: str, *, what: str = "path") -> Location:
        """Validate `raw` (a path as the user sees it) and place it beneath its root."""
        return view_location(self.for_principal(principal), parse_path(raw, what=what,
                                                                       empty_is_root=True))


def view_location(sandbox: Sandbox, path: RelPath) -> Location:
    if path.parts:
        for root in sandbox.roots:
            if root.name and root.name == path.parts[0]:
                return Location(root, RelPath(path.parts[1:]))
    return Location(sandbox.root(None), path)
