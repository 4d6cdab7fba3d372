"""jetstream.v1.DestinationService."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from grpc import aio

from jetstream.api import convert, paging
from jetstream.api.interceptors import current_caller
from jetstream.services.destinations import DestinationService
from jetstream.v1 import common_pb2, destinations_pb2, destinations_pb2_grpc

Context = aio.ServicerContext


class DestinationServicer(destinations_pb2_grpc.DestinationServiceServicer):
    def __init__(self, destinations: DestinationService) -> None:
        self._destinations = destinations

    async def CreateDestination(
        self, request: destinations_pb2.CreateDestinationRequest, context: Context
    ) -> destinations_pb2.CreateDestinationResponse:
        created = await self._destinations.create(
            current_caller(),
            convert.destination_from_proto(request.destination),
            convert.credentials_from_proto(request.destination),
            request.destination_id,
        )
        return destinations_pb2.CreateDestinationResponse(destination=convert.destination(created))

    async def GetDestination(
        self, request: destinations_pb2.GetDestinationRequest, context: Context
    ) -> destinations_pb2.GetDestinationResponse:
        found = self._destinations.get(current_caller(), _id(request.name))
        return destinations_pb2.GetDestinationResponse(destination=convert.destination(found))

    async def ListDestinations(
        self, request: destinations_pb2.ListDestinationsRequest, context: Context
    ) -> destinations_pb2.ListDestinationsResponse:
        query = {"owner": request.owner, "host": request.host}
        limit = paging.page_size(request.page_size)
        found = self._destinations.list(
            current_caller(), owner=request.owner,
            after=paging.decode_token(request.page_token, query), limit=limit + 1,
        )
        if request.host:
            found = [d for d in found if d.host == request.host]
        page, token = paging.cut(found, limit, lambda d: d.id, query)
        return destinations_pb2.ListDestinationsResponse(
            destinations=[convert.destination(d) for d in page],
            next_page_token=token,
        )

    async def UpdateDestination(
        self, request: destinations_pb2.UpdateDestinationRequest, context: Context
    ) -> destinations_pb2.UpdateDestinationResponse:
        changes = convert.destination_changes(request.destination, request.update_mask)
        updated = self._destinations.update(current_caller(), _id(request.destination.name),
                                            changes)
        return destinations_pb2.UpdateDestinationResponse(destination=convert.destination(updated))

    async def DeleteDestination(
        self, request: destinations_pb2.DeleteDestinationRequest, context: Context
    ) -> destinations_pb2.DeleteDestinationResponse:
        self._destinations.delete(current_caller(), _id(request.name))
        return destinations_pb2.DeleteDestinationResponse()

    async def TestDestination(
        self, request: destinations_pb2.TestDestinationRequest, context: Context
    ) -> destinations_pb2.TestDestinationResponse:
        result = await self._destinations.test(current_caller(), _id(request.name))
        reply = destinations_pb2.TestDestinationResponse(
            reachable=result.reachable,
            rtt=Duration(nanos=int(result.rtt * 1e9) % 10**9, seconds=int(result.rtt)),
            observed_tls_certificate_sha256=result.fingerprint,
            identity_verified=result.identity_verified,
            authenticated=result.remote_principal is not None,
        )
        if result.server_info is not None:
            reply.remote_server_info.CopyFrom(result.server_info)
        if result.remote_principal is not None:
            reply.remote_principal.CopyFrom(result.remote_principal)
        if result.error:
            reply.error.CopyFrom(common_pb2.ErrorDetail(
                reason="PEER_UNREACHABLE" if not result.reachable else "PEER_REFUSED",
                message=result.error,
            ))
        return reply


def _id(name: str) -> str:
    return convert.resource_id(name, convert.DESTINATION_PREFIX)
