"""Validation of paths from the network, and escaping for logs (no root needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetstream.errors import InvalidArgument
from jetstream.storage.paths import MAX_NAME_BYTES, ROOT, RelPath, parse_path, printable

# Refused by the parser alone. Symlink attacks, which parse fine, are in test_userfs.py.
HOSTILE_STRINGS = [
    "",
    "..",
    "../etc/passwd",
    "../../../../../../etc/shadow",
    "a/..",
    "a/../b",
    "a/b/../../..",
    "/..",
    "/../x",
    "./x",
    ".",
    "a/./b",
    "a/.",
    "//etc/passwd",
    "a//b",
    "a/",
    "/a/b/",
    "a\0b",
    "\0",
    "a/b\0/../c",
    "a\\b",
    "..\\..\\windows",
    "\\etc\\passwd",
    "a\nb",
    "a\rb",
    "a\tb",
    "\x1b[31mred",
    "a\x7fb",
    "a\x85b",
    "a\u009bb",
    "x" * 256,
    "é" * 128,
    "/".join(["abcdefgh"] * 456),
    "a" * 5000,
    "a\u2215..\u2215etc",
    "\uff0e\uff0e/etc",
    "\u2024\u2024",
    "\u2025",
    "\ufe52\ufe52",
    "a\uff0fb",
    "a\uff3cb",
    "a\u2044b",
    "a\u29f8b",
    "a\u2216b",
    "evil\u202etxt.exe",
    "a\u2066b",
    "a\ud800b",
]


@pytest.mark.parametrize("raw", HOSTILE_STRINGS, ids=lambda raw: printable(raw)[:40])
def test_hostile_strings_are_refused(raw):
    with pytest.raises(InvalidArgument) as refused:
        parse_path(raw)
    message = str(refused.value)
    assert "\0" not in message and "\n" not in message and "\x1b" not in message


def test_there_are_at_least_forty_hostile_strings():
    assert len(HOSTILE_STRINGS) >= 40


@pytest.mark.parametrize(
    ("raw", "parts"),
    [
        ("/", ()),
        ("a", ("a",)),
        ("/repository1", ("repository1",)),
        ("/mnt/data/file.txt", ("mnt", "data", "file.txt")),
        ("...", ("...",)),
        ("..a/.b/c..", ("..a", ".b", "c..")),
        (".hidden", (".hidden",)),
        ("Draft\u2026 final", ("Draft\u2026 final",)),
        (
            "r\u00e9sum\u00e9/\u65e5\u672c \U0001f600",
            ("r\u00e9sum\u00e9", "\u65e5\u672c \U0001f600"),
        ),
        ("a.\u2024b", ("a.\u2024b",)),
        ("x" * 255, ("x" * 255,)),
    ],
)
def test_ordinary_paths_are_accepted(raw, parts):
    assert parse_path(raw).parts == parts


def test_leading_slash_means_the_sandbox_root():
    assert parse_path("/a/b") == parse_path("a/b")
    assert parse_path("/") == ROOT
    assert str(parse_path("a/b")) == "/a/b"


def test_empty_can_mean_the_root_where_asked():
    assert parse_path("", empty_is_root=True) == ROOT


def test_error_names_the_field_and_the_escaped_path():
    with pytest.raises(InvalidArgument, match=r"^destination_path a/\\x0a/\.\.: "):
        parse_path("a/\n/..", what="destination_path")


def test_relpath_cannot_be_built_unsafe():
    with pytest.raises(InvalidArgument):
        RelPath(("a", ".."))
    with pytest.raises(InvalidArgument):
        RelPath(("a/b",))
    with pytest.raises(InvalidArgument):
        parse_path("/".join(["d" * 200] * 20)) / parse_path("/".join(["d" * 200] * 1))


def test_joining_keeps_components():
    joined = parse_path("/dest") / parse_path("/mnt/data/file.txt")
    assert str(joined) == "/dest/mnt/data/file.txt"
    assert joined.name == "file.txt" and str(joined.parent) == "/dest/mnt/data"


@given(st.text(max_size=300))
def test_any_text_is_refused_or_safe(raw):
    try:
        path = parse_path(raw)
    except InvalidArgument:
        return
    for part in path.parts:
        assert part not in ("", ".", "..")
        assert "/" not in part and "\\" not in part and "\0" not in part
        assert len(part.encode()) <= MAX_NAME_BYTES
    assert parse_path(str(path)) == path


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain name.txt", "plain name.txt"),
        ("a\nb", "a\\x0ab"),
        ("a\\b", "a\\\\b"),
        ("\x1b[31m", "\\x1b[31m"),
        ("evil\u202etxt", "evil\\u202etxt"),
        ("a\u2215b", "a\\u2215b"),
        (b"caf\xe9", "caf\\xe9"),
        ("caf\u00e9", "caf\u00e9"),
        ("a\x85b", "a\\u0085b"),  # a C1 control: never \x85, which is the byte 0x85
        (b"a\x85b", "a\\x85b"),
    ],
)
def test_printable(text, shown):
    assert printable(text) == shown


def test_a_character_and_a_byte_never_print_the_same():
    """Found with the fuzz harness's oracle (tests/fuzz/regressions/paths): U+0080 (bytes
    C2 80 on disk) and the undecodable byte 0x80 both printed as \\x80."""
    assert printable("\x80") != printable(b"\x80")
    assert printable("\x80") != printable("\udc80")  # the byte, as os.listdir gives it
    assert printable(b"\x80") == printable("\udc80")


@given(st.text())
def test_printable_is_one_line_and_injective(text):
    shown = printable(text)
    assert shown.isprintable()
    assert printable(text + "x") != printable(text + "\\x78")
