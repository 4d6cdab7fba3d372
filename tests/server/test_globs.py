from __future__ import annotations

import pytest

from jetstream.errors import InvalidArgument
from jetstream.services.globs import PathFilter, compile_glob


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.tmp", "a.tmp", True),
        ("*.tmp", "deep/dir/a.tmp", True),
        ("*.tmp", "a.tmpx", False),
        ("docs/*.md", "docs/a.md", True),
        ("docs/*.md", "docs/sub/a.md", False),
        ("docs/**/*.md", "docs/sub/x/a.md", True),
        ("docs/**/*.md", "docs/a.md", True),
        ("**/.git", "a/b/.git", True),
        ("**/.git", ".git", True),
        ("file?.bin", "file1.bin", True),
        ("file?.bin", "file10.bin", False),
        ("[ab]*", "beta", True),
        ("[!ab]*", "beta", False),
        ("a.b", "axb", False),
    ],
)
def test_glob(pattern, path, matches):
    assert bool(compile_glob(pattern).match(path)) is matches


def test_exclusion_wins_and_includes_only_filter_files():
    f = PathFilter(include=["*.mov"], exclude=["**/scratch/**"])
    assert f.wanted_file("reel/a.mov")
    assert not f.wanted_file("reel/a.txt")
    assert not f.wanted_file("reel/scratch/a.mov")
    assert f.excluded("x/scratch/y")


@pytest.mark.parametrize("bad", ["", "a[b", "x\0"])
def test_malformed_patterns(bad):
    with pytest.raises(InvalidArgument):
        compile_glob(bad)
