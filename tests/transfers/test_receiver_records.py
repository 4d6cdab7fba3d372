"""A receiver that breaks the records protocol ends its own session, never the sender's
data endpoint (real endpoints on loopback; the sender is a pull's, on the receive port).

Found with tests/fuzz/fuzz_records.py: a rate-limit record a data channel cannot run at
raised ConfigError, and a malformed record RemoteProtocolError, out of the endpoint's read
callback, which then stopped reading the port for every session on it.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest

from jetstream.auth.principal import Principal
from jetstream.datachannel.config import DataChannelConfig
from jetstream.datachannel.events import ConnectionTerminated
from jetstream.datachannel.wire import ErrorCode
from jetstream.observability.transfer_metrics import TransferMetrics
from jetstream.storage.sandbox import UNCONFINED
from jetstream.transfers import records
from jetstream.transfers.filesender import FileSender, SendSpec, data_channel_config
from jetstream.transfers.hashing import HashAlgorithm
from jetstream.transport.endpoint import DataEndpoint, DataLink, random_ticket
from jetstream.v1 import common_pb2, stream_records_pb2

UNUSABLE_RATE = records.frame(stream_records_pb2.ReceiverRecord(
    rate_limit=common_pb2.RateLimit(policy=common_pb2.RATE_POLICY_FIXED)))  # no target
OVERSIZED = (records.MAX_RECORD_BYTES + 1).to_bytes(4, "big") + os.urandom(64)
GARBAGE = (8).to_bytes(4, "big") + b"\xff" * 8
NOBODY = Principal("nobody", 65534, 65534, (65534,), "/", "")  # the files are never read


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def send_to_a_sender(stream: bytes) -> tuple[ConnectionTerminated, list[Any]]:
    """The bytes on the receiver's records stream; what ended the link, and what escaped
    into the event loop (nothing may)."""
    loop = asyncio.get_running_loop()
    escaped: list[Any] = []
    loop.set_exception_handler(lambda _loop, context: escaped.append(context))
    config = DataChannelConfig()
    sending = DataEndpoint(udp(), config)
    receiving = DataEndpoint(udp(), config)
    try:
        def on_link(link: DataLink) -> None:
            spec = SendSpec("m", HashAlgorithm.BLAKE3, NOBODY, UNCONFINED, {})
            FileSender(link, spec, manifests=None, files=None,  # type: ignore[arg-type]
                       metrics=TransferMetrics(),
                       on_rate=lambda rate: link.connection.set_rate_limits(
                           data_channel_config(config, rate, 0).rate_limits()))

        ticket = random_ticket()
        sending.expect(ticket, on_link)
        link = receiving.connect(("127.0.0.1", sending.port), ticket)
        await asyncio.wait_for(link.established, 10)
        link.send(records.RECEIVER_STREAM, stream)
        ended = await asyncio.wait_for(link.wait_closed(), 10)
        again = random_ticket()  # the sender's endpoint still takes new sessions
        sending.expect(again, lambda _link: None)
        await asyncio.wait_for(receiving.connect(("127.0.0.1", sending.port), again)
                               .established, 10)
        return ended, escaped
    finally:
        receiving.close()
        sending.close()


@pytest.mark.parametrize("stream", [UNUSABLE_RATE, OVERSIZED, GARBAGE],
                         ids=["unusable-rate", "oversized", "garbage"])
def test_a_broken_record_closes_that_session_only(stream):
    ended, escaped = asyncio.run(send_to_a_sender(stream))
    assert escaped == []
    assert ended.by_peer and ended.error_code == ErrorCode.PROTOCOL_VIOLATION
    assert "bad receiver record" in ended.reason
