"""`python -m jetstream` is the `jetstream` command."""

from jetstream.cli.server import main

main()
