"""Fuzz target: what a peer server sends besides datagrams (jetstream/transfers/records.py,
peerwire.py, the stream records of stream_records.proto and the peer messages of peer.proto).

The first input byte picks a decoder:

* the records streams: bytes cut into fuzz-sized pieces and fed to a `RecordReader` of
  SenderRecord (what a receiver reads) or ReceiverRecord (what a sender reads), as the
  sender and receiver do; only `RemoteProtocolError` may come out, and the records must be
  the same however the bytes were cut. A ReceiverRecord's rate limit must become data-channel
  settings the sender can apply (under any ceiling), or be refused with InvalidArgument.
* `StreamAssembler`: a stream cut into pieces that arrive in any order comes out whole.
* peer requests (OpenSendSession, OpenReceiveSession, a pull's ManifestSpec), parsed as gRPC
  would or built field by field, then decoded by the servicers' converters: only
  InvalidArgument may come out, and the rate limits must suit a data channel.
"""

from __future__ import annotations

import atheris
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from jetstream.api import convert
from jetstream.datachannel import DataChannelConfig
from jetstream.errors import InvalidArgument, RemoteProtocolError
from jetstream.transfers import peerwire, records
from jetstream.transfers.filesender import data_channel_config
from jetstream.v1 import common_pb2, manifests_pb2, peer_pb2, stream_records_pb2

BASE = DataChannelConfig()
_STREAMS: tuple[type[Message], ...] = (stream_records_pb2.SenderRecord,
                                       stream_records_pb2.ReceiverRecord)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    check = fdp.ConsumeIntInRange(0, 4)
    if check <= 1:
        _records(fdp, _STREAMS[check])
    elif check == 2:
        _assembler(fdp)
    else:
        _peer_request(fdp, structured=check == 4)


def _records(fdp: atheris.FuzzedDataProvider, kind: type[Message]) -> None:
    cuts = [fdp.ConsumeIntInRange(0, 64) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    whole = _read(kind, [stream])
    pieces, rest = [], stream
    for cut in cuts:
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    assert _read(kind, pieces) == whole, "the records depend on how the bytes were cut"
    for record in whole[0]:
        if isinstance(record, stream_records_pb2.ReceiverRecord) and \
                record.WhichOneof("record") == "rate_limit":
            _rate(record.rate_limit, cuts[0] if cuts else 0)


def _read(kind: type[Message], pieces: list[bytes]) -> tuple[list[Message], str | None]:
    reader = records.RecordReader(kind)
    out: list[Message] = []
    try:
        for piece in pieces:
            out.extend(reader.feed(piece))
    except RemoteProtocolError as exc:
        return out, str(exc)
    return out, None


def _rate(message: common_pb2.RateLimit, ceiling_mbps: int) -> None:
    """What a sender does with a rate-limit record: its data channel must take it."""
    try:
        rate = peerwire.rate_from_wire(message)
    except InvalidArgument:
        return
    config = data_channel_config(BASE, rate, ceiling_mbps * 1_000_000)
    limits = config.rate_limits()
    assert limits.max_rate is None or limits.min_rate <= limits.max_rate


def _assembler(fdp: atheris.FuzzedDataProvider) -> None:
    count = fdp.ConsumeIntInRange(1, 12)
    sizes = [fdp.ConsumeIntInRange(1, 40) for _ in range(count)]  # the core never reports 0
    order = [fdp.ConsumeIntInRange(0, 1 << 16) for _ in range(count)]
    stream = fdp.ConsumeBytes(sum(sizes))
    pieces, offset = [], 0
    for size in sizes:
        pieces.append((offset, stream[offset:offset + size]))
        offset = min(offset + size, len(stream))
    assembler = records.StreamAssembler()
    out = b"".join(assembler.add(offset, piece) for _key, (offset, piece) in
                   sorted(zip(order, pieces, strict=True), key=lambda pair: pair[0]))
    assert out == stream, (pieces, order)


def _peer_request(fdp: atheris.FuzzedDataProvider, structured: bool) -> None:
    """One request as bytes gRPC parses, or built field by field (a varint that only a
    mutation of every enclosing length would reach as bytes)."""
    send = fdp.ConsumeBool()
    if structured:
        request: Message = _send_request(fdp) if send else _receive_request(fdp)
        spec = manifests_pb2.ManifestSpec(
            mappings=[manifests_pb2.FileMapping(source_path=fdp.ConsumeUnicodeNoSurrogates(8),
                                                destination_path=fdp.ConsumeUnicodeNoSurrogates(8))],
            symlink_policy=fdp.ConsumeInt(4))  # type: ignore[arg-type]
    else:
        kind = peer_pb2.OpenSendSessionRequest if send else peer_pb2.OpenReceiveSessionRequest
        body = fdp.ConsumeBytes(fdp.remaining_bytes())
        try:
            request = kind.FromString(body)
            spec = manifests_pb2.ManifestSpec.FromString(body[:len(body) // 2])
        except DecodeError:
            return  # gRPC answers INVALID_ARGUMENT before any servicer runs
    try:
        if isinstance(request, peer_pb2.OpenSendSessionRequest):
            peerwire.held(request.received_files)
            rate = convert.rate_limits(request.rate_limit)
            data_channel_config(BASE, rate, 0)
            convert.hash_algorithm(request.hash_algorithm)
        else:
            assert isinstance(request, peer_pb2.OpenReceiveSessionRequest)
            convert.transfer_options_from_peer(request)
        convert.manifest_spec_from_proto(spec)
    except InvalidArgument:
        pass


def _send_request(fdp: atheris.FuzzedDataProvider) -> peer_pb2.OpenSendSessionRequest:
    files = [peer_pb2.ReceivedFileState(
        path=fdp.ConsumeUnicodeNoSurrogates(8), size_bytes=fdp.ConsumeIntInRange(0, (1 << 64) - 1),
        modify_time=Timestamp(seconds=fdp.ConsumeInt(8), nanos=fdp.ConsumeInt(4)),
        received_ranges=[common_pb2.ByteRange(offset=fdp.ConsumeIntInRange(0, (1 << 64) - 1),
                                              length=fdp.ConsumeIntInRange(0, (1 << 64) - 1))
                         for _ in range(fdp.ConsumeIntInRange(0, 3))])
        for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return peer_pb2.OpenSendSessionRequest(
        received_files=files, hash_algorithm=fdp.ConsumeInt(4),  # type: ignore[arg-type]
        rate_limit=common_pb2.RateLimit(
            min_bps=fdp.ConsumeIntInRange(0, (1 << 64) - 1),
            target_bps=fdp.ConsumeIntInRange(0, (1 << 64) - 1),
            max_bps=fdp.ConsumeIntInRange(0, (1 << 64) - 1),
            policy=fdp.ConsumeIntInRange(0, 4)))  # type: ignore[arg-type]


def _receive_request(fdp: atheris.FuzzedDataProvider) -> peer_pb2.OpenReceiveSessionRequest:
    return peer_pb2.OpenReceiveSessionRequest(
        overwrite_policy=fdp.ConsumeInt(4),  # type: ignore[arg-type]
        hash_algorithm=fdp.ConsumeInt(4),  # type: ignore[arg-type]
        checkpoint_interval=Duration(seconds=fdp.ConsumeInt(8), nanos=fdp.ConsumeInt(4)))


def seeds() -> list[bytes]:
    """A valid stream of each record kind (the first input byte picks the check)."""
    sender = b"".join(records.frame(r) for r in (
        stream_records_pb2.SenderRecord(header=stream_records_pb2.FileHeader(
            file_id=1, path="dir/a.txt", kind=common_pb2.FILE_KIND_FILE, size_bytes=5,
            mode=0o644, modify_time_ns=1)),
        stream_records_pb2.SenderRecord(trailer=stream_records_pb2.FileTrailer(
            file_id=1, digest=bytes(32))),
        stream_records_pb2.SenderRecord(end=stream_records_pb2.EndOfFiles(file_count=1))))
    receiver = b"".join(records.frame(r) for r in (
        stream_records_pb2.ReceiverRecord(outcome=stream_records_pb2.FileOutcome(
            file_id=1, ok=True)),
        stream_records_pb2.ReceiverRecord(rate_limit=common_pb2.RateLimit(
            min_bps=1000, target_bps=5000, max_bps=10000,
            policy=common_pb2.RATE_POLICY_FIXED))))
    send = peer_pb2.OpenSendSessionRequest(
        receiver_transfer="transfers/1", manifest="manifests/m",
        received_files=[peer_pb2.ReceivedFileState(
            path="a", size_bytes=10, modify_time=Timestamp(seconds=1, nanos=5),
            received_ranges=[common_pb2.ByteRange(offset=0, length=5)])],
        rate_limit=common_pb2.RateLimit(max_bps=1000)).SerializeToString()
    return [sender + b"\x00", receiver + b"\x01", send + b"\x03"]
