"""Command-line entry points: `jetstream` (the server) and `jetstreamctl` (the client)."""
