"""jetstream.v1.PeerService: what a sending server asks of this (receiving) server."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from jetstream.api import convert
from jetstream.api.interceptors import current_caller
from jetstream.transfers.model import Failure
from jetstream.transfers.peer import OpenRequest, ReceiveService
from jetstream.v1 import common_pb2, peer_pb2, peer_pb2_grpc

Context = aio.ServicerContext
P = peer_pb2
MAX_FAILED_FILES = 1000


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):
    def __init__(self, receive: ReceiveService) -> None:
        self._receive = receive

    async def OpenReceiveSession(self, request: P.OpenReceiveSessionRequest, context: Context
                                 ) -> P.OpenReceiveSessionResponse:
        summary = request.manifest_summary
        opened = await self._receive.open(current_caller(), OpenRequest(
            sender_uid=request.sender_server_uid,
            sender_name=request.sender_display_name,
            sender_transfer=request.sender_transfer,
            destination_path=request.destination_path,
            options=convert.transfer_options_from_peer(request),
            files_total=summary.file_count + summary.dir_count,
            bytes_total=summary.total_bytes,
        ))
        return P.OpenReceiveSessionResponse(
            session_id=opened.session_id,
            ticket=opened.ticket_id + opened.ticket_secret,
            ticket_expire_time=convert.timestamp(opened.expires_at),
            receiver_udp_port=opened.udp_port,
            incoming_transfer=convert.INCOMING_PREFIX + opened.incoming_id,
            resumed=opened.resumed,
            params=P.DataChannelParams(max_rate_bps=opened.max_rate_bps),
        )

    async def QueryReceivedState(self, request: P.QueryReceivedStateRequest, context: Context
                                 ) -> AsyncIterator[P.QueryReceivedStateResponse]:
        for held in self._receive.received(current_caller(), request.session_id):
            yield P.QueryReceivedStateResponse(file=P.ReceivedFileState(
                path=held.path, exists=True, complete=False, size_bytes=held.size,
                modify_time=convert.timestamp_ns(held.mtime_ns),
                received_ranges=[common_pb2.ByteRange(offset=a, length=b - a)
                                 for a, b in held.ranges]))

    async def CompleteReceiveSession(self, request: P.CompleteReceiveSessionRequest,
                                     context: Context) -> P.CompleteReceiveSessionResponse:
        error = None
        if request.HasField("error"):
            error = Failure(request.error.reason, request.error.message, request.error.path)
        incoming, failures = await self._receive.complete(
            current_caller(), request.session_id, convert.session_outcome(request.outcome),
            error)
        progress = incoming.progress
        return P.CompleteReceiveSessionResponse(
            state=convert.transfer_state(incoming.state),
            files_verified=progress.files_done,
            files_failed=progress.files_failed,
            failed_files=[P.FileVerification(path=path, verified=False,
                                             error=convert.error_detail(failure))
                          for path, failure in failures[:MAX_FAILED_FILES]],
            failed_files_truncated=len(failures) > MAX_FAILED_FILES,
        )
