"""The one table between jetstream errors and gRPC status codes, used in both directions."""

from __future__ import annotations

import grpc

from jetstream.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    JetstreamError,
    NotFound,
    PathEscape,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

#: Most specific first: the first matching class decides the code.
STATUS_FOR_ERROR: tuple[tuple[type[JetstreamError], grpc.StatusCode], ...] = (
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (PathEscape, grpc.StatusCode.PERMISSION_DENIED),  # a link out of the sandbox (contract)
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
)
_ERROR_FOR_STATUS = {code: kind for kind, code in STATUS_FOR_ERROR}
_ERROR_FOR_STATUS[grpc.StatusCode.DEADLINE_EXCEEDED] = Unavailable


def status_for(error: JetstreamError) -> grpc.StatusCode:
    for kind, code in STATUS_FOR_ERROR:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def error_for(code: grpc.StatusCode, message: str) -> JetstreamError:
    """What a remote server's status means here; unknown codes become a plain JetstreamError."""
    return _ERROR_FOR_STATUS.get(code, JetstreamError)(message)
