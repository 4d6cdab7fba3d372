"""Connecting to a jetstream server's API: used by the CLI, servers dialling peers, tests."""
