"""atheris fuzz harnesses, one module per target, and their runner (see README.md)."""
