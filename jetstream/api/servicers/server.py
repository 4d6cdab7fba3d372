"""jetstream.v1.ServerService."""

from __future__ import annotations

import time

from grpc import aio

from jetstream.api import convert
from jetstream.services.server_info import ServerInfoService
from jetstream.v1 import server_pb2, server_pb2_grpc


class ServerServicer(server_pb2_grpc.ServerServiceServicer):
    def __init__(self, info: ServerInfoService) -> None:
        self._info = info

    async def GetServerInfo(
        self, request: server_pb2.GetServerInfoRequest, context: aio.ServicerContext
    ) -> server_pb2.GetServerInfoResponse:
        return server_pb2.GetServerInfoResponse(
            server_info=convert.server_info(self._info, now=time.time())
        )
