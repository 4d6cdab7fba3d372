"""jetstream.v1.PeerService: what another server asks of this one, to push here (receive
sessions) or to pull from here (send sessions)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from jetstream.api import convert
from jetstream.api.interceptors import current_caller
from jetstream.errors import InvalidArgument
from jetstream.transfers import peerwire
from jetstream.transfers.model import Failure
from jetstream.transfers.peer import OpenRequest, ReceiveService
from jetstream.transfers.sendsessions import SendRequest, SendService
from jetstream.v1 import peer_pb2, peer_pb2_grpc

Context = aio.ServicerContext
P = peer_pb2
MAX_FAILED_FILES = 1000


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):
    def __init__(self, receive: ReceiveService, send: SendService) -> None:
        self._receive = receive
        self._send = send

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
            flows=request.flows,
        ))
        return P.OpenReceiveSessionResponse(
            session_id=opened.session_id,
            ticket=opened.ticket_id + opened.ticket_secret,
            ticket_expire_time=convert.timestamp(opened.expires_at),
            receiver_host=opened.udp_host,
            receiver_udp_port=opened.udp_port,
            incoming_transfer=convert.INCOMING_PREFIX + opened.incoming_id,
            resumed=opened.resumed,
            params=P.DataChannelParams(max_rate_bps=opened.max_rate_bps),
            extra_tickets=[t.ticket_id + t.secret for t in opened.extra_tickets],
        )

    async def QueryReceivedState(self, request: P.QueryReceivedStateRequest, context: Context
                                 ) -> AsyncIterator[P.QueryReceivedStateResponse]:
        for held in self._receive.received(current_caller(), request.session_id):
            yield P.QueryReceivedStateResponse(file=peerwire.to_wire(held))

    async def CompleteReceiveSession(self, request: P.CompleteReceiveSessionRequest,
                                     context: Context) -> P.CompleteReceiveSessionResponse:
        incoming, failures = await self._receive.complete(
            current_caller(), request.session_id, convert.session_outcome(request.outcome),
            _error(request))
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

    async def OpenSendSession(self, request: P.OpenSendSessionRequest, context: Context
                              ) -> P.OpenSendSessionResponse:
        if not request.receiver_transfer or not request.receiver_server_uid:
            raise InvalidArgument("receiver_transfer and receiver_server_uid are required")
        opened = await self._send.open(current_caller(), SendRequest(
            receiver_uid=request.receiver_server_uid,
            receiver_name=request.receiver_display_name,
            receiver_transfer=request.receiver_transfer,
            manifest_id=convert.resource_id(request.manifest, convert.MANIFEST_PREFIX),
            hash_algorithm=convert.hash_algorithm(request.hash_algorithm),
            held=peerwire.held(request.received_files),
            rate=convert.rate_limits(request.rate_limit),
            max_rate_bps=request.params.max_rate_bps,
        ))
        manifest = opened.manifest
        return P.OpenSendSessionResponse(
            session_id=opened.session_id,
            ticket=opened.ticket_id + opened.ticket_secret,
            ticket_expire_time=convert.timestamp(opened.expires_at),
            sender_host=opened.udp_host,
            sender_udp_port=opened.udp_port,
            params=P.DataChannelParams(max_rate_bps=opened.max_rate_bps),
            manifest_summary=P.ManifestSummary(file_count=manifest.file_count,
                                               dir_count=manifest.dir_count,
                                               total_bytes=manifest.total_bytes),
        )

    async def CompleteSendSession(self, request: P.CompleteSendSessionRequest,
                                  context: Context) -> P.CompleteSendSessionResponse:
        await self._send.complete(current_caller(), request.session_id,
                                  convert.session_outcome(request.outcome), _error(request),
                                  request.files_verified, len(request.failed_files))
        return P.CompleteSendSessionResponse()


def _error(request: P.CompleteReceiveSessionRequest | P.CompleteSendSessionRequest
           ) -> Failure | None:
    if not request.HasField("error"):
        return None
    return Failure(request.error.reason, request.error.message, request.error.path)
