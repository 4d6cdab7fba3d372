"""Persistent server state: one SQLite database in the persistent state directory."""
