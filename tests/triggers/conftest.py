"""Trigger tests use the transfer tests' source and destination directories."""

from tests.transfers.conftest import dirs  # noqa: F401 - a fixture, found by name
