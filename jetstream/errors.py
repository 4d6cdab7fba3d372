"""The jetstream error tree.

Every layer raises these; the gRPC adapter maps them to status codes in one table
(`jetstream.api.errors`). Third-party exceptions are translated at the boundary where
they occur, so callers never have to know about `OSError` errno values or PAM codes.
"""

from __future__ import annotations


class JetstreamError(Exception):
    """Root of every error jetstream raises on purpose; the message is shown to a person."""


class ConfigError(JetstreamError):
    """A setting is invalid; the message names the setting and why."""


class InvalidArgument(JetstreamError):
    """The caller sent something malformed (a bad path, an out-of-range value)."""


class NotFound(JetstreamError):
    """The named object does not exist, or the caller may not know it exists."""


class AlreadyExists(JetstreamError):
    """An object with that name exists already."""


class PermissionDenied(JetstreamError):
    """The caller is authenticated but may not do this."""


class Unauthenticated(JetstreamError):
    """No valid credentials came with the call."""


class ResourceExhausted(JetstreamError):
    """A limit was hit: no space left, too many attempts, a quota."""


class FailedPrecondition(JetstreamError):
    """The object is not in a state that allows this (e.g. resuming a finished transfer)."""


class Unavailable(JetstreamError):
    """A peer or a resource is unreachable now; trying again later may work."""


class PathEscape(InvalidArgument):
    """A path would resolve outside its sandbox."""


class ProtocolError(JetstreamError):
    """The data channel saw a violation of docs/protocol.md."""

    def __init__(self, message: str, *, close_code: int = 1) -> None:
        super().__init__(message)
        self.close_code = close_code


class LocalProtocolError(ProtocolError):
    """Our own side tried to do something the protocol forbids (a bug or misuse)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""
