"""Test helpers shared across test directories."""
