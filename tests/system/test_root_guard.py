"""The guard that skips root tests without root, and fails them instead under CI=true."""

from __future__ import annotations

import os

import pytest

from tests.system.users import require_root


def test_skips_without_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        require_root()


def test_fails_without_root_on_ci(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: needs root"):
        require_root()
