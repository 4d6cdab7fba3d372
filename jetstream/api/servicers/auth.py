"""jetstream.v1.AuthService."""

from __future__ import annotations

from collections.abc import Callable

from grpc import aio

from jetstream.api import convert
from jetstream.api.interceptors import current_caller
from jetstream.errors import InvalidArgument
from jetstream.services.auth import AuthService
from jetstream.v1 import auth_pb2, auth_pb2_grpc


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, auth: AuthService,
                 client_address: Callable[[str], str] = str) -> None:
        self._auth = auth
        self._client_address = client_address
        """grpc peer -> the client's real address (a relay tunnel's remote end), which
        login throttling counts by."""

    async def Login(
        self, request: auth_pb2.LoginRequest, context: aio.ServicerContext
    ) -> auth_pb2.LoginResponse:
        ttl = request.session_ttl.ToTimedelta().total_seconds() or None
        secret, caller = await self._auth.login(
            request.username, request.password, source=self._client_address(context.peer()),
            ttl=ttl
        )
        return auth_pb2.LoginResponse(
            session_token=secret,
            expire_time=convert.timestamp(caller.token.expires_at),
            principal=convert.principal(caller),
        )

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: aio.ServicerContext
    ) -> auth_pb2.LogoutResponse:
        self._auth.logout(current_caller())
        return auth_pb2.LogoutResponse()

    async def WhoAmI(
        self, request: auth_pb2.WhoAmIRequest, context: aio.ServicerContext
    ) -> auth_pb2.WhoAmIResponse:
        caller = current_caller()
        return auth_pb2.WhoAmIResponse(
            principal=convert.principal(caller),
            expire_time=convert.timestamp(caller.token.expires_at),
        )

    async def CreateApiToken(
        self, request: auth_pb2.CreateApiTokenRequest, context: aio.ServicerContext
    ) -> auth_pb2.CreateApiTokenResponse:
        wanted = request.api_token
        which = wanted.WhichOneof("expiration")
        if which == "ttl":
            ttl = wanted.ttl.ToTimedelta().total_seconds()
        elif which == "expire_time":
            ttl = wanted.expire_time.ToNanoseconds() / 1e9 - self._auth.now()
        else:
            raise InvalidArgument("api_token needs an expiration: ttl or expire_time")
        secret, record = self._auth.create_api_token(
            current_caller(),
            ttl=ttl,
            description=wanted.description,
            allowed_paths=tuple(wanted.allowed_paths),
            read_only=wanted.read_only,
            superuser=wanted.superuser,
            token_id=request.api_token_id,
        )
        return auth_pb2.CreateApiTokenResponse(api_token=convert.api_token(record), secret=secret)

    async def GetApiToken(
        self, request: auth_pb2.GetApiTokenRequest, context: aio.ServicerContext
    ) -> auth_pb2.GetApiTokenResponse:
        record = self._auth.get_api_token(current_caller(), convert.api_token_id(request.name))
        return auth_pb2.GetApiTokenResponse(api_token=convert.api_token(record))

    async def ListApiTokens(
        self, request: auth_pb2.ListApiTokensRequest, context: aio.ServicerContext
    ) -> auth_pb2.ListApiTokensResponse:
        records = self._auth.list_api_tokens(current_caller())
        return auth_pb2.ListApiTokensResponse(
            api_tokens=[convert.api_token(r) for r in records]
        )

    async def RevokeApiToken(
        self, request: auth_pb2.RevokeApiTokenRequest, context: aio.ServicerContext
    ) -> auth_pb2.RevokeApiTokenResponse:
        record = self._auth.revoke_api_token(current_caller(), convert.api_token_id(request.name))
        return auth_pb2.RevokeApiTokenResponse(api_token=convert.api_token(record))
