"""Logging and Prometheus metrics; nothing here sends data anywhere."""
