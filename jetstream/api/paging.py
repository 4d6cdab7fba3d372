"""AIP-158 pagination: page sizes, and page tokens bound to the query that made them."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from jetstream.errors import InvalidArgument

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _query_digest(query: object) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()[:16]


def encode_token(after: str, query: object) -> str:
    """A token for the page that starts after the item keyed `after`, for this `query`."""
    raw = json.dumps({"a": after, "q": _query_digest(query)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, query: object) -> str:
    """The key to continue after ("" for the first page), or InvalidArgument."""
    if not token:
        return ""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after, digest = data["a"], data["q"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("page_token is not one this server issued") from None
    if digest != _query_digest(query) or not isinstance(after, str):
        raise InvalidArgument("page_token was issued for a different query")
    return after


def cut(found: Sequence[T], limit: int, key: Callable[[T], str], query: object
        ) -> tuple[Sequence[T], str]:
    """Split `limit + 1` fetched items into the page to return and the next page's token
    ("" when this page is the last): the extra item only says that more exist."""
    page = found[:limit]
    return page, encode_token(key(page[-1]), query) if len(found) > limit else ""
