"""Runners for each tool the benchmark compares."""
