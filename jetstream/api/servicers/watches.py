"""jetstream.v1.WatchService."""

from __future__ import annotations

from grpc import aio

from jetstream.api import convert_watches, paging
from jetstream.api.interceptors import current_caller
from jetstream.v1 import watches_pb2, watches_pb2_grpc
from jetstream.watches.service import WatchService

Context = aio.ServicerContext
W = watches_pb2


class WatchServicer(watches_pb2_grpc.WatchServiceServicer):
    def __init__(self, watches: WatchService) -> None:
        self._watches = watches

    async def CreateWatch(self, request: W.CreateWatchRequest, context: Context
                          ) -> W.CreateWatchResponse:
        created = await self._watches.create(
            current_caller(), convert_watches.watch_from_proto(request.watch), request.watch_id)
        return W.CreateWatchResponse(watch=convert_watches.watch(created))

    async def GetWatch(self, request: W.GetWatchRequest, context: Context
                       ) -> W.GetWatchResponse:
        found = self._watches.get(current_caller(), convert_watches.watch_id(request.name))
        return W.GetWatchResponse(watch=convert_watches.watch(found))

    async def ListWatches(self, request: W.ListWatchesRequest, context: Context
                          ) -> W.ListWatchesResponse:
        query = {"owner": request.owner}
        limit = paging.page_size(request.page_size)
        found = self._watches.list(current_caller(), owner=request.owner,
                                   after=paging.decode_token(request.page_token, query),
                                   limit=limit + 1)
        page, token = paging.cut(found, limit, lambda s: s.watch.id, query)
        return W.ListWatchesResponse(watches=[convert_watches.watch(s) for s in page],
                                     next_page_token=token)

    async def DeleteWatch(self, request: W.DeleteWatchRequest, context: Context
                          ) -> W.DeleteWatchResponse:
        self._watches.delete(current_caller(), convert_watches.watch_id(request.name))
        return W.DeleteWatchResponse()
