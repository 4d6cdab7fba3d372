"""Hostile input at real servers over real sockets (see test_datagrams.py)."""
