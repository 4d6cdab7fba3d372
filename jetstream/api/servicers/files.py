"""jetstream.v1.FileService: a thin adapter over `services.files.FileService`."""

from __future__ import annotations

from typing import Any

from grpc import aio

from jetstream.api import convert_admin, paging
from jetstream.api.interceptors import current_caller
from jetstream.errors import InvalidArgument
from jetstream.services.files import FileService
from jetstream.v1 import files_pb2, files_pb2_grpc

Context = aio.ServicerContext[Any, Any]
F = files_pb2


class FileServicer(files_pb2_grpc.FileServiceServicer):
    def __init__(self, files: FileService) -> None:
        self._files = files

    async def ListDirectory(
        self, request: F.ListDirectoryRequest, context: Context
    ) -> F.ListDirectoryResponse:
        query = {"path": request.path or "/", "hidden": request.show_hidden}
        items, next_after = await self._files.list_directory(
            current_caller(), request.path,
            after=paging.decode_token(request.page_token, query),
            limit=paging.page_size(request.page_size),
            show_hidden=request.show_hidden,
        )
        return F.ListDirectoryResponse(
            entries=[convert_admin.file_info(item) for item in items],
            next_page_token="" if next_after is None else paging.encode_token(next_after, query),
        )

    async def Stat(self, request: F.StatRequest, context: Context) -> F.StatResponse:
        item = await self._files.stat(
            current_caller(), request.path, follow_symlinks=request.follow_symlinks
        )
        return F.StatResponse(file_info=convert_admin.file_info(item))

    async def MakeDirectory(
        self, request: F.MakeDirectoryRequest, context: Context
    ) -> F.MakeDirectoryResponse:
        item = await self._files.make_directory(
            current_caller(), _required(request.path), parents=request.parents
        )
        return F.MakeDirectoryResponse(file_info=convert_admin.file_info(item))

    async def Remove(self, request: F.RemoveRequest, context: Context) -> F.RemoveResponse:
        await self._files.remove(
            current_caller(), _required(request.path), recursive=request.recursive
        )
        return F.RemoveResponse()

    async def Rename(self, request: F.RenameRequest, context: Context) -> F.RenameResponse:
        item = await self._files.rename(
            current_caller(),
            _required(request.source_path, "source_path"),
            _required(request.target_path, "target_path"),
            overwrite=request.overwrite,
        )
        return F.RenameResponse(file_info=convert_admin.file_info(item))


def _required(path: str, what: str = "path") -> str:
    """Changes need a path: "" would mean the sandbox root, which is never changed."""
    if not path:
        raise InvalidArgument(f"{what} is required")
    return path
