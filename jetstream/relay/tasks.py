"""Running the two directions of a link side by side until one of them ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any

from jetstream.errors import JetstreamError

log = logging.getLogger(__name__)


async def first_of(*work: Awaitable[Any]) -> None:
    """Run until the first of `work` finishes, then cancel the rest. A `JetstreamError` it
    raised is raised again (it carries a message for a person); any other failure means the
    far end went away, which simply ends the link."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    for task in done:
        exc = task.exception()
        if isinstance(exc, JetstreamError):
            raise exc
        if exc is not None:
            log.debug("link ended: %r", exc)
