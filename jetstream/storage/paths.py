"""Validation of every path that arrives from the network, and escaping for logs.

A path from a client, a manifest or a peer becomes a `RelPath`: a tuple of components that
each name one directory entry. Policy, applied the same way everywhere:

- Paths are relative to a sandbox root. A leading `/` is allowed and means that root (the
  product's examples send `/repository1` and `/mnt/data/file.txt`); there is no way to name
  anything above it.
- Refused: the empty path, empty components (`a//b`, a trailing `/`), `.` and `..` in any
  position, NUL and every other C0/C1 control character, backslashes (a Windows client or a
  later tool would read them as separators), components over 255 bytes and paths over 4095
  bytes (UTF-8), text that is not valid UTF-8, and bidirectional-override characters
  (they make `txt.exe` display as `exe.txt`).
- Unicode look-alikes: the kernel splits only on `/`, so `a∕..∕b` cannot escape by itself.
  They are still refused when some later layer could make them act as separators or dots:
  a component whose NFKC form contains `/` or `\\` or is `.` or `..` (fullwidth solidus
  U+FF0F, one-dot leader U+2024, fullwidth full stop U+FF0E...), and the slash operators
  without a decomposition (U+2215 division slash, U+2044 fraction slash...), which Windows
  "best fit" code-page conversion can turn into real separators (the WorstFit attacks).
  Other characters that merely contain a dot-like glyph (`…`) stay allowed, so real file
  names keep working.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from jetstream.errors import InvalidArgument

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4095

_SLASH_LOOKALIKES = frozenset("\u2044\u2215\u2216\u29f5\u29f8\u29f9")
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_REFUSED_CHARS = _SLASH_LOOKALIKES | _BIDI_CONTROLS | {"\\"}


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


@dataclass(frozen=True)
class RelPath:
    """A validated path below a sandbox root; `RelPath(())` is the root itself.

    Constructing one validates it, so a RelPath can never hold an unsafe component.
    """

    parts: tuple[str, ...]

    def __post_init__(self) -> None:
        problem = _problem(self.parts)
        if problem is not None:
            raise InvalidArgument(f"path {printable(str(self))}: {problem}")

    @classmethod
    def _checked(cls, parts: tuple[str, ...]) -> RelPath:
        """A RelPath of components validated already (one per file of a large tree: the
        checks are not repeated for every join or parent)."""
        path = object.__new__(cls)
        object.__setattr__(path, "parts", parts)
        return path

    def __str__(self) -> str:
        return "/" + "/".join(self.parts)

    def __truediv__(self, other: RelPath) -> RelPath:
        parts = self.parts + other.parts
        if _too_long(parts):
            raise InvalidArgument(f"path {printable('/' + '/'.join(parts))}: longer than "
                                  f"{MAX_PATH_BYTES} bytes")
        return RelPath._checked(parts)

    @property
    def name(self) -> str:
        """The last component; '' for the root."""
        return self.parts[-1] if self.parts else ""

    @property
    def parent(self) -> RelPath:
        return RelPath._checked(self.parts[:-1])

    def child(self, name: str) -> RelPath | str:
        """This path with `name` appended, or why that would not be a safe path: for walkers
        that leave such an entry out instead of failing the whole walk."""
        problem = _component_problem(name)
        if problem is None and _too_long((*self.parts, name)):
            problem = f"longer than {MAX_PATH_BYTES} bytes"
        return problem if problem is not None else RelPath._checked((*self.parts, name))


def parse_path(raw: str, *, what: str = "path", empty_is_root: bool = False) -> RelPath:
    """Validate `raw` as the policy above says; InvalidArgument names `what` and the path.

    `empty_is_root` lets an absent optional path (a destination path, proto3's "") mean the
    sandbox root; otherwise the empty path is refused.
    """
    if len(raw) > MAX_PATH_BYTES:  # cheap bound before any per-character work
        raise InvalidArgument(f"{what} is longer than {MAX_PATH_BYTES} bytes")
    if not raw:
        if empty_is_root:
            return ROOT
        raise InvalidArgument(f"{what} is empty")
    body = raw[1:] if raw.startswith("/") else raw
    parts = tuple(body.split("/")) if body else ()
    problem = _problem(parts)
    if problem is not None:
        raise InvalidArgument(f"{what} {printable(raw)}: {problem}")
    return RelPath._checked(parts)


def _problem(parts: tuple[str, ...]) -> str | None:
    """Why `parts` is not a safe path, or None."""
    for part in parts:
        problem = _component_problem(part)
        if problem is not None:
            return problem
    if _too_long(parts):
        return f"longer than {MAX_PATH_BYTES} bytes"
    return None


def _too_long(parts: tuple[str, ...]) -> bool:
    if 4 * sum(map(len, parts)) + len(parts) <= MAX_PATH_BYTES:
        return False  # the common case: short enough even at 4 UTF-8 bytes per character
    return sum(len(part.encode()) for part in parts) + len(parts) > MAX_PATH_BYTES


def _component_problem(part: str) -> str | None:
    if not isinstance(part, str):
        return "path components must be text"
    if part.isascii() and part.isprintable() and 0 < len(part) <= MAX_NAME_BYTES and \
            "\\" not in part and "/" not in part and part not in (".", ".."):
        return None  # the common case, in C: every check below passes for such a name
    if part == "":
        return "empty path component (// or a trailing /)"
    if part in (".", ".."):
        return f"'{part}' components are not allowed"
    try:
        size = len(part.encode())
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if size > MAX_NAME_BYTES:
        return f"a component is longer than {MAX_NAME_BYTES} bytes"
    for char in part:
        if _is_control(char):
            return "NUL and other control characters are not allowed"
        if char in _REFUSED_CHARS:
            return f"character U+{ord(char):04X} is not allowed"
    folded = unicodedata.normalize("NFKC", part)
    if "/" in folded or "\\" in folded or folded in (".", ".."):
        return f"{printable(part)} looks like a path separator or a dot name"
    return None


ROOT = RelPath(())
"""The sandbox root itself."""


def printable(text: str | bytes) -> str:
    """`text` with everything that could forge or hide log content escaped.

    Control, format (bidi), separator and unassigned characters, backslashes and slash
    look-alikes become `\\xNN` (ASCII) or `\\uNNNN`; bytes that are not UTF-8 become `\\xNN`
    (only they can, so U+0080 and the byte 0x80 stay apart). One path always stays one line,
    and two different names never print the same.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char == "\\":
            out.append("\\\\")
        elif char.isprintable() and char not in _SLASH_LOOKALIKES:
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)
