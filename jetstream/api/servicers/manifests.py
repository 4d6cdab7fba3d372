"""jetstream.v1.ManifestService."""

from __future__ import annotations

from grpc import aio

from jetstream.api import convert, paging
from jetstream.api.interceptors import current_caller
from jetstream.services.manifests import ManifestService
from jetstream.v1 import manifests_pb2, manifests_pb2_grpc

Context = aio.ServicerContext
M = manifests_pb2


class ManifestServicer(manifests_pb2_grpc.ManifestServiceServicer):
    def __init__(self, manifests: ManifestService) -> None:
        self._manifests = manifests

    async def CreateManifest(
        self, request: M.CreateManifestRequest, context: Context
    ) -> M.CreateManifestResponse:
        created = self._manifests.create(
            current_caller(),
            convert.manifest_spec_from_proto(request.manifest.spec),
            dict(request.manifest.labels),
            request.manifest_id,
        )
        return M.CreateManifestResponse(manifest=convert.manifest(created))

    async def GetManifest(
        self, request: M.GetManifestRequest, context: Context
    ) -> M.GetManifestResponse:
        found = self._manifests.get(current_caller(), _id(request.name))
        return M.GetManifestResponse(manifest=convert.manifest(found))

    async def WaitManifest(
        self, request: M.WaitManifestRequest, context: Context
    ) -> M.WaitManifestResponse:
        found = await self._manifests.wait(current_caller(), _id(request.name))
        return M.WaitManifestResponse(manifest=convert.manifest(found))

    async def ListManifests(
        self, request: M.ListManifestsRequest, context: Context
    ) -> M.ListManifestsResponse:
        query = {"owner": request.owner, "state": request.state}
        limit = paging.page_size(request.page_size)
        found = self._manifests.list(
            current_caller(), owner=request.owner,
            state=convert.manifest_state_filter(request.state),
            after=paging.decode_token(request.page_token, query), limit=limit + 1,
        )
        page, token = paging.cut(found, limit, lambda m: m.id, query)
        return M.ListManifestsResponse(
            manifests=[convert.manifest(m) for m in page],
            next_page_token=token,
        )

    async def ListManifestFiles(
        self, request: M.ListManifestFilesRequest, context: Context
    ) -> M.ListManifestFilesResponse:
        query = {"parent": request.parent}
        limit = paging.page_size(request.page_size)
        entries = self._manifests.entries(
            current_caller(), _id(request.parent),
            after=paging.decode_token(request.page_token, query), limit=limit + 1,
        )
        page, token = paging.cut(entries, limit, lambda e: e.dest_path, query)
        return M.ListManifestFilesResponse(
            files=[convert.manifest_file(e, f"/{e.source_root}" if e.source_root else "")
                   for e in page],
            next_page_token=token,
        )

    async def DeleteManifest(
        self, request: M.DeleteManifestRequest, context: Context
    ) -> M.DeleteManifestResponse:
        self._manifests.delete(current_caller(), _id(request.name))
        return M.DeleteManifestResponse()


def _id(name: str) -> str:
    return convert.resource_id(name, convert.MANIFEST_PREFIX)
