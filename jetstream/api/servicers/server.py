"""jetstream.v1.ServerService."""

from __future__ import annotations

import time
from typing import Any

from grpc import aio

from jetstream.api import convert, convert_admin, paging
from jetstream.api.interceptors import current_caller
from jetstream.errors import InvalidArgument, Unavailable
from jetstream.services.bandwidth import BandwidthLimits, BandwidthService
from jetstream.services.event_queries import EventQueries
from jetstream.services.sandboxes import Sandboxes
from jetstream.services.server_info import ServerInfoService
from jetstream.v1 import server_pb2, server_pb2_grpc

S = server_pb2
Context = aio.ServicerContext[Any, Any]


class ServerServicer(server_pb2_grpc.ServerServiceServicer):
    def __init__(
        self,
        info: ServerInfoService,
        *,
        sandboxes: Sandboxes | None = None,
        events: EventQueries | None = None,
        bandwidth: BandwidthService | None = None,
    ) -> None:
        self._info = info
        self._bandwidth = bandwidth
        self._sandboxes = sandboxes
        self._events = events

    async def GetServerInfo(
        self, request: server_pb2.GetServerInfoRequest, context: Context
    ) -> server_pb2.GetServerInfoResponse:
        return server_pb2.GetServerInfoResponse(
            server_info=convert.server_info(self._info, now=time.time())
        )

    async def GetBandwidthLimits(
        self, request: S.GetBandwidthLimitsRequest, context: Context
    ) -> S.GetBandwidthLimitsResponse:
        current_caller()
        return S.GetBandwidthLimitsResponse(
            bandwidth_limits=convert.bandwidth_limits(self._require_bandwidth().limits))

    async def UpdateBandwidthLimits(
        self, request: S.UpdateBandwidthLimitsRequest, context: Context
    ) -> S.UpdateBandwidthLimitsResponse:
        wanted = request.bandwidth_limits
        fields = set(request.update_mask.paths) or {
            f.name for f, _ in wanted.ListFields()
            if f.name in ("incoming_bps", "outgoing_bps", "allow_borrowing")}
        updated = self._require_bandwidth().update(
            current_caller(),
            BandwidthLimits(wanted.incoming_bps, wanted.outgoing_bps, wanted.allow_borrowing),
            fields)
        return S.UpdateBandwidthLimitsResponse(bandwidth_limits=convert.bandwidth_limits(updated))

    def _require_bandwidth(self) -> BandwidthService:
        if self._bandwidth is None:
            raise Unavailable("bandwidth limits are not available on this server")
        return self._bandwidth

    async def ListEvents(
        self, request: S.ListEventsRequest, context: Context
    ) -> S.ListEventsResponse:
        if self._events is None:
            raise Unavailable("the event log is not available")
        query = convert_admin.event_filter(request)
        token_query = {"filter": repr(query)}
        after = paging.decode_token(request.page_token, token_query)
        try:
            after_id = int(after or "0")
        except ValueError:
            raise InvalidArgument("page_token is not one this server issued") from None
        limit = paging.page_size(request.page_size)
        found = self._events.list(current_caller(), query, after_id=after_id, limit=limit + 1)
        page, token = paging.cut(found, limit, lambda e: str(e.id), token_query)
        return S.ListEventsResponse(
            events=[convert_admin.event(e) for e in page],
            next_page_token=token,
        )

    async def ListSandboxMappings(
        self, request: S.ListSandboxMappingsRequest, context: Context
    ) -> S.ListSandboxMappingsResponse:
        sandboxes = self._require_sandboxes()
        limit = paging.page_size(request.page_size)
        found = sandboxes.list_mappings(
            current_caller(), after=paging.decode_token(request.page_token, {}), limit=limit + 1
        )
        page, token = paging.cut(found, limit, lambda m: m.key, {})
        return S.ListSandboxMappingsResponse(
            sandbox_mappings=[convert_admin.sandbox_mapping(m) for m in page],
            next_page_token=token,
        )

    async def SetSandboxMapping(
        self, request: S.SetSandboxMappingRequest, context: Context
    ) -> S.SetSandboxMappingResponse:
        sandboxes = self._require_sandboxes()
        caller = current_caller()
        caller.require_superuser()
        wanted = request.sandbox_mapping
        user = convert_admin.sandbox_subject(
            wanted.WhichOneof("subject"), wanted.all_users, wanted.user
        )
        stored = sandboxes.set_mapping(caller, user, convert_admin.sandbox_resources(wanted))
        return S.SetSandboxMappingResponse(sandbox_mapping=convert_admin.sandbox_mapping(stored))

    async def DeleteSandboxMapping(
        self, request: S.DeleteSandboxMappingRequest, context: Context
    ) -> S.DeleteSandboxMappingResponse:
        sandboxes = self._require_sandboxes()
        caller = current_caller()
        caller.require_superuser()
        user = convert_admin.sandbox_subject(
            request.WhichOneof("subject"), request.all_users, request.user
        )
        sandboxes.delete_mapping(caller, user)
        return S.DeleteSandboxMappingResponse()

    def _require_sandboxes(self) -> Sandboxes:
        if self._sandboxes is None:
            raise Unavailable("sandbox mappings are not available")
        return self._sandboxes
