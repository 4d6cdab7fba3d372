"""jetstream.v1.TransferService."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace

from grpc import aio

from jetstream.api import convert, paging
from jetstream.api.interceptors import current_caller
from jetstream.errors import InvalidArgument
from jetstream.transfers.peer import ReceiveService
from jetstream.transfers.service import TransferService, UpdateKind
from jetstream.v1 import transfers_pb2, transfers_pb2_grpc

Context = aio.ServicerContext
T = transfers_pb2
_KINDS = {
    UpdateKind.SNAPSHOT: T.TRANSFER_UPDATE_KIND_SNAPSHOT,
    UpdateKind.PROGRESS: T.TRANSFER_UPDATE_KIND_PROGRESS,
    UpdateKind.STATE_CHANGED: T.TRANSFER_UPDATE_KIND_STATE_CHANGED,
}
#: UpdateTransfer may change these fields (AIP-134 mask paths).
_UPDATABLE = {"priority", "rate_limit", "checkpoint_interval"}


class TransferServicer(transfers_pb2_grpc.TransferServiceServicer):
    def __init__(self, transfers: TransferService, incoming: ReceiveService) -> None:
        self._transfers = transfers
        self._incoming = incoming

    async def CreateTransfer(
        self, request: T.CreateTransferRequest, context: Context
    ) -> T.CreateTransferResponse:
        wanted = request.transfer
        created = self._transfers.create(
            current_caller(),
            destination=convert.resource_id(wanted.destination, convert.DESTINATION_PREFIX),
            manifest=(convert.resource_id(wanted.manifest, convert.MANIFEST_PREFIX)
                      if wanted.manifest else ""),
            spec=(convert.manifest_spec_from_proto(wanted.manifest_spec)
                  if wanted.HasField("manifest_spec") else None),
            destination_path=wanted.destination_path,
            direction=convert.direction(wanted.direction) or convert.Direction.PUSH,
            priority=wanted.priority if wanted.HasField("priority") else None,
            options=convert.transfer_options(wanted),
            labels=dict(wanted.labels),
            requested_id=request.transfer_id,
        )
        return T.CreateTransferResponse(transfer=convert.transfer(created, now=time.time()))

    async def GetTransfer(self, request: T.GetTransferRequest, context: Context
                          ) -> T.GetTransferResponse:
        found = self._transfers.get(current_caller(), _id(request.name))
        return T.GetTransferResponse(transfer=convert.transfer(found, now=time.time()))

    async def ListTransfers(self, request: T.ListTransfersRequest, context: Context
                            ) -> T.ListTransfersResponse:
        query = {"owner": request.owner, "states": list(request.states),
                 "destination": request.destination, "direction": request.direction}
        limit = paging.page_size(request.page_size)
        destination = (convert.resource_id(request.destination, convert.DESTINATION_PREFIX)
                       if request.destination else "")
        found = self._transfers.list(
            current_caller(), owner=request.owner,
            states=convert.transfer_states(request.states), destination_id=destination,
            direction=convert.direction(request.direction),
            after=paging.decode_token(request.page_token, query), limit=limit + 1)
        page, token = paging.cut(found, limit, lambda t: t.id, query)
        now = time.time()
        return T.ListTransfersResponse(
            transfers=[convert.transfer(t, now=now) for t in page],
            next_page_token=token)

    async def WatchTransfer(self, request: T.WatchTransferRequest, context: Context
                            ) -> AsyncIterator[T.WatchTransferResponse]:
        interval = convert.duration_seconds(request.progress_interval) or 1.0
        last_progress = 0.0
        async for kind, transfer in self._transfers.watch(current_caller(), _id(request.name)):
            now = time.time()
            if kind is UpdateKind.PROGRESS and now - last_progress < interval:
                continue
            if kind is UpdateKind.PROGRESS:
                last_progress = now
            yield T.WatchTransferResponse(kind=_KINDS[kind],
                                          transfer=convert.transfer(transfer, now=now))

    async def UpdateTransfer(self, request: T.UpdateTransferRequest, context: Context
                             ) -> T.UpdateTransferResponse:
        wanted = request.transfer
        paths = {path.split(".")[0] for path in request.update_mask.paths} or {
            f.name for f, _ in wanted.ListFields() if f.name in _UPDATABLE}
        if not paths or not paths <= _UPDATABLE:
            raise InvalidArgument("update_mask may name priority, rate_limit and "
                                  "checkpoint_interval")
        rate = convert.rate_limits(wanted.rate_limit) if "rate_limit" in paths else None
        parts = [p.split(".", 1)[1] for p in request.update_mask.paths
                 if p.startswith("rate_limit.")]
        if rate is not None and parts:  # only the named sub-fields change
            current = self._transfers.get(current_caller(), _id(wanted.name)).options.rate
            if not set(parts) <= {"min_bps", "target_bps", "max_bps", "policy"}:
                raise InvalidArgument(f"unknown rate_limit fields: {', '.join(parts)}")
            rate = replace(current, **{part: getattr(rate, part) for part in parts})
        updated = self._transfers.update(
            current_caller(), _id(wanted.name),
            priority=wanted.priority if "priority" in paths else None,
            rate=rate,
            checkpoint_interval=(convert.duration_seconds(wanted.checkpoint_interval)
                                 if "checkpoint_interval" in paths else None))
        return T.UpdateTransferResponse(transfer=convert.transfer(updated, now=time.time()))

    async def PauseTransfer(self, request: T.PauseTransferRequest, context: Context
                            ) -> T.PauseTransferResponse:
        done = self._transfers.pause(current_caller(), _id(request.name))
        return T.PauseTransferResponse(transfer=convert.transfer(done, now=time.time()))

    async def ResumeTransfer(self, request: T.ResumeTransferRequest, context: Context
                             ) -> T.ResumeTransferResponse:
        done = self._transfers.resume(current_caller(), _id(request.name))
        return T.ResumeTransferResponse(transfer=convert.transfer(done, now=time.time()))

    async def CancelTransfer(self, request: T.CancelTransferRequest, context: Context
                             ) -> T.CancelTransferResponse:
        done = self._transfers.cancel(current_caller(), _id(request.name))
        return T.CancelTransferResponse(transfer=convert.transfer(done, now=time.time()))

    async def DeleteTransfer(self, request: T.DeleteTransferRequest, context: Context
                             ) -> T.DeleteTransferResponse:
        self._transfers.delete(current_caller(), _id(request.name), force=request.force)
        return T.DeleteTransferResponse()

    async def ListTransferFiles(self, request: T.ListTransferFilesRequest, context: Context
                                ) -> T.ListTransferFilesResponse:
        query = {"parent": request.parent, "states": list(request.states)}
        limit = paging.page_size(request.page_size)
        after = paging.decode_token(request.page_token, query)
        rows = self._transfers.files(current_caller(), _id(request.parent),
                                     after_seq=int(after) if after else -1, limit=limit + 1,
                                     states=convert.file_state_filter(request.states))
        page, token = paging.cut(rows, limit, lambda row: str(row.seq), query)
        return T.ListTransferFilesResponse(
            files=[convert.transfer_file(row) for row in page],
            next_page_token=token)

    async def GetIncomingTransfer(self, request: T.GetIncomingTransferRequest,
                                  context: Context) -> T.GetIncomingTransferResponse:
        found = self._incoming.get(current_caller(),
                                   convert.resource_id(request.name, convert.INCOMING_PREFIX))
        return T.GetIncomingTransferResponse(
            incoming_transfer=convert.incoming(found, now=time.time()))

    async def ListIncomingTransfers(self, request: T.ListIncomingTransfersRequest,
                                    context: Context) -> T.ListIncomingTransfersResponse:
        query = {"owner": request.owner, "states": list(request.states),
                 "source": request.source}
        limit = paging.page_size(request.page_size)
        found = self._incoming.list(current_caller(), owner=request.owner,
                                    after=paging.decode_token(request.page_token, query),
                                    limit=limit + 1)
        states = set(convert.transfer_states(request.states))
        page, token = paging.cut(found, limit, lambda i: i.id, query)
        now = time.time()
        return T.ListIncomingTransfersResponse(
            incoming_transfers=[convert.incoming(i, now=now) for i in page
                                if (not states or i.state in states)
                                and (not request.source
                                     or request.source == convert.SOURCE_PREFIX + i.source_uid)],
            next_page_token=token)

    async def ListSources(self, request: T.ListSourcesRequest, context: Context
                          ) -> T.ListSourcesResponse:
        query = {"owner": request.owner}
        limit = paging.page_size(request.page_size)
        found = self._incoming.sources(current_caller(), owner=request.owner,
                                       after=paging.decode_token(request.page_token, query),
                                       limit=limit + 1, now=time.time())
        page, token = paging.cut(found, limit, lambda s: s.cursor, query)
        return T.ListSourcesResponse(sources=[convert.source(s) for s in page],
                                     next_page_token=token)


def _id(name: str) -> str:
    return convert.resource_id(name, convert.TRANSFER_PREFIX)
