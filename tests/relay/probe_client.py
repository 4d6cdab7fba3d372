"""A stand-in sender that test_relay_zones runs inside the outside namespace.

It does what a sending server does through a relay (log in over the tunnelled API, open a
receive session, run the data channel through the relay's public port, send file bytes),
and writes down every secret it saw: the password, the session token, the ticket secret,
both 1-RTT traffic secrets and the AES keys made from them, and the plaintext it sent. The
test then looks for each of them in the relay's memory while this keeps the link open.

    python -m tests.relay.probe_client HOST PORT PIN USER DEST OUT HOLD  (password: $JSRL_PASSWORD)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

from jetstream.client.channel import Endpoint, open_aio_channel
from jetstream.datachannel.config import DataChannelConfig
from jetstream.datachannel.crypto import AEAD_KEY_LENGTHS, expand_label
from jetstream.datachannel.handshake import SessionTicket
from jetstream.transport.endpoint import DataEndpoint
from jetstream.transport.sockets import bind_udp
from jetstream.v1 import auth_pb2, auth_pb2_grpc, peer_pb2, peer_pb2_grpc

PLAINTEXT_BYTES = 256 << 10


async def probe(host: str, port: int, pin: str, user: str, dest: str, out: Path,
                hold: Path) -> None:
    password = os.environ["JSRL_PASSWORD"]
    channel, _ = await open_aio_channel(Endpoint(host, port), pinned=bytes.fromhex(pin))
    async with channel:
        login = await auth_pb2_grpc.AuthServiceStub(channel).Login(
            auth_pb2.LoginRequest(username=user, password=password))
        auth = (("authorization", f"Bearer {login.session_token}"),)
        peer = peer_pb2_grpc.PeerServiceStub(channel)
        opened = await peer.OpenReceiveSession(peer_pb2.OpenReceiveSessionRequest(
            sender_transfer="transfers/probe", sender_server_uid=str(uuid.uuid4()),
            destination_path=dest,
            manifest_summary=peer_pb2.ManifestSummary(file_count=1,
                                                      total_bytes=PLAINTEXT_BYTES),
            params=peer_pb2.DataChannelParams()), metadata=auth)
        config = DataChannelConfig()
        endpoint = DataEndpoint(bind_udp("0.0.0.0", 0), config)
        ticket = SessionTicket(opened.ticket[:16], opened.ticket[16:])
        link = endpoint.connect((opened.receiver_host or host, opened.receiver_udp_port),
                                ticket)
        await asyncio.wait_for(asyncio.shield(link.established), 15)
        plaintext = os.urandom(64) * (PLAINTEXT_BYTES // 64)
        link.send(2, plaintext)  # file bytes on a file stream: they go out, encrypted
        await asyncio.sleep(1.0)
        connection = link.connection
        traffic = [connection._send_keys._secret,  # type: ignore[union-attr]
                   connection._receive_keys._secret]  # type: ignore[union-attr]
        secrets = {
            "password": password.encode(),
            "session token": login.session_token.encode(),
            "ticket secret": ticket.secret,
            **{f"traffic secret {i}": s for i, s in enumerate(traffic)},
            **{f"AES key {i}": expand_label(s, b"key", AEAD_KEY_LENGTHS[config.aead])
               for i, s in enumerate(traffic)},
            "plaintext": plaintext[:64],
        }
        await asyncio.to_thread(out.write_text,
                                json.dumps({name: value.hex() for name, value in secrets.items()}))
        for _ in range(600):  # the test scans the relay meanwhile
            if await asyncio.to_thread(hold.exists):
                break
            await asyncio.sleep(0.1)
        link.close()
        await peer.CompleteReceiveSession(peer_pb2.CompleteReceiveSessionRequest(
            session_id=opened.session_id, outcome=peer_pb2.SESSION_OUTCOME_CANCELLED),
            metadata=auth)
        endpoint.close()


if __name__ == "__main__":
    host, port, pin, user, dest, out, hold = sys.argv[1:8]
    asyncio.run(probe(host, int(port), pin, user, dest, Path(out), Path(hold)))
