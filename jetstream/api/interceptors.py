"""Cross-cutting call handling: who is calling, what went wrong, how long it took.

One interceptor wraps every RPC handler so servicers contain no try/except and never parse
metadata: it authenticates the bearer token (unless the method is public), applies the
method's access rule (jetstream/api/access.py), puts the caller in a context variable,
maps `JetstreamError`s to status codes through one table, and counts the call for
Prometheus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
from grpc import aio

from jetstream.api import access
from jetstream.api.status import status_for
from jetstream.errors import JetstreamError, Unauthenticated
from jetstream.observability.metrics import Metrics
from jetstream.services.auth import Caller

log = logging.getLogger(__name__)

caller_var: ContextVar[Caller | None] = ContextVar("jetstream_caller", default=None)


def current_caller() -> Caller:
    """The caller of a protected RPC; the interceptor sets it before the servicer runs."""
    caller = caller_var.get()
    if caller is None:
        raise Unauthenticated("this call needs credentials")
    return caller


Authenticate = Callable[[str, str], Awaitable[Caller]]
"""(bearer token, peer address) -> the caller, or raises Unauthenticated."""

LocalCallerHook = Callable[[str], Awaitable[Caller | None]]
"""peer address -> the caller if the call came over the local socket (api/localsocket.py)."""


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class CallInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        authenticate: Authenticate,
        metrics: Metrics | None,
        *,
        local_caller: LocalCallerHook | None = None,
    ) -> None:
        self._authenticate = authenticate
        self._metrics = metrics
        self._local_caller = local_caller

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        service, _, name = method.lstrip("/").rpartition("/")
        public = access.is_public(method) or not service.startswith("jetstream.")

        async def enter(context: aio.ServicerContext) -> None:
            if public:
                return
            token = bearer_token(context.invocation_metadata())
            if token is None and self._local_caller is not None:
                local = await self._local_caller(context.peer())
                if local is not None:  # the local Unix socket: the kernel said who it is
                    access.authorize(method, local)
                    caller_var.set(local)
                    return
            if token is None:
                raise Unauthenticated(
                    "this call needs credentials: log in and send 'authorization: Bearer <token>'"
                )
            caller = await self._authenticate(token, context.peer())
            access.authorize(method, caller)
            caller_var.set(caller)

        async def fail(context: aio.ServicerContext, exc: BaseException) -> None:
            if isinstance(exc, JetstreamError):
                code, message = status_for(exc), str(exc)
            elif isinstance(exc, NotImplementedError):  # the generated base class's default
                code, message = grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented yet"
            else:
                log.exception("internal error in %s", method)
                code, message = grpc.StatusCode.INTERNAL, "internal server error; see the log"
            self._count(service, name, code)
            await context.abort(code, message)

        def done(started: float) -> None:
            self._count(service, name, grpc.StatusCode.OK)
            if self._metrics is not None:
                self._metrics.grpc_seconds.labels(service, name).observe(
                    time.perf_counter() - started
                )

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: aio.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    await enter(context)
                    response = await inner(request, context)
                except aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped to a status, never leaked
                    await fail(context, exc)
                done(started)
                return response

            factory = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                       else grpc.stream_unary_rpc_method_handler)
            return factory(unary, request_deserializer=handler.request_deserializer,
                           response_serializer=handler.response_serializer)

        inner_stream = handler.unary_stream or handler.stream_stream

        async def streaming(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                await enter(context)
                async for response in inner_stream(request, context):
                    yield response
            except aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never leaked
                await fail(context, exc)
            done(started)

        factory = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
                   else grpc.stream_stream_rpc_method_handler)
        return factory(streaming, request_deserializer=handler.request_deserializer,
                       response_serializer=handler.response_serializer)

    def _count(self, service: str, method: str, code: grpc.StatusCode) -> None:
        if self._metrics is not None:
            self._metrics.grpc_handled.labels(service, method, code.name).inc()
