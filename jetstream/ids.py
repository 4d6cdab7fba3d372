"""Ids that callers choose for the objects they create (`destinations/{id}` and the like).

One rule for every kind, so that names are safe in URLs, file names and log lines alike.
"""

from __future__ import annotations

import re

from jetstream.errors import InvalidArgument

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def check_id(value: str, field: str) -> str:
    """`value` if it is a valid id, else InvalidArgument naming the request `field`."""
    if not ID_PATTERN.fullmatch(value):
        raise InvalidArgument(f"{field} must match {ID_PATTERN.pattern}")
    return value
