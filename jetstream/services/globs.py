"""Include/exclude patterns for manifests: shell globs where `**` spans directories."""

from __future__ import annotations

import re
from collections.abc import Sequence

from jetstream.errors import InvalidArgument


def compile_glob(pattern: str) -> re.Pattern[str]:
    """`*` and `?` stay within one path component, `**/` matches any number of them.

    A pattern without `/` matches the last component anywhere (like .gitignore), so `*.tmp`
    excludes temporary files at every depth.
    """
    if not pattern or "\0" in pattern or len(pattern) > 1024:
        raise InvalidArgument(f"pattern {pattern!r} is empty or malformed")
    anchored = "/" in pattern.rstrip("/")
    out, i = [], 0
    text = pattern.strip("/")
    while i < len(text):
        if text.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif text.startswith("**", i):
            out.append(".*")
            i += 2
        elif text[i] == "*":
            out.append("[^/]*")
            i += 1
        elif text[i] == "?":
            out.append("[^/]")
            i += 1
        elif text[i] == "[":
            end = text.find("]", i + 2)
            if end < 0:
                raise InvalidArgument(f"pattern {pattern!r} has an unclosed '['")
            body = text[i + 1:end].replace("\\", "\\\\")
            out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
            i = end + 1
        else:
            out.append(re.escape(text[i]))
            i += 1
    prefix = "" if anchored else "(?:.*/)?"
    try:
        return re.compile(prefix + "".join(out) + r"\Z")
    except re.error as exc:
        raise InvalidArgument(f"pattern {pattern!r}: {exc}") from None


class PathFilter:
    """Decides, for a path relative to a mapping's source directory, whether it is sent."""

    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        self._include = [compile_glob(p) for p in include]
        self._exclude = [compile_glob(p) for p in exclude]

    def excluded(self, relative: str) -> bool:
        return any(p.match(relative) for p in self._exclude)

    def wanted_file(self, relative: str) -> bool:
        if self.excluded(relative):
            return False
        return not self._include or any(p.match(relative) for p in self._include)
