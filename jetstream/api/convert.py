"""Domain objects to protobuf messages and back: one function per message."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from jetstream.auth.sessions import TokenKind, TokenRecord
from jetstream.errors import InvalidArgument
from jetstream.services.auth import Caller
from jetstream.services.server_info import ServerInfoService
from jetstream.v1 import auth_pb2, common_pb2, server_pb2


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def server_info(info: ServerInfoService, *, now: float) -> server_pb2.ServerInfo:
    return server_pb2.ServerInfo(
        version=info.version,
        api_version=info.api_version,
        server_uid=info.identity.server_uid,
        server_id=info.identity.server_id,
        hostname=info.hostname,
        display_name=info.friendly_name,
        external_address=info.config.external_address,
        api_port=info.api_port,
        receive_ports=list(info.receive_ports),
        allow_remote_control=info.config.api_allow_remote_control,
        data_channel_public_key=info.identity.datachannel_public_key,
        capabilities=list(info.capabilities),
        telemetry_enabled=not info.config.disable_telemetry,
        tls_certificate_sha256=info.tls.fingerprint if info.tls else b"",
        tls_certificate_days_left=info.tls.days_left if info.tls else 0,
        start_time=timestamp(info.start_time),
        current_time=timestamp(now),
    )


API_TOKEN_PREFIX = "apiTokens/"


def api_token_id(name: str) -> str:
    """The id inside an `apiTokens/{id}` resource name."""
    if not name.startswith(API_TOKEN_PREFIX) or len(name) == len(API_TOKEN_PREFIX):
        raise InvalidArgument(f"expected a name like apiTokens/<id>, got {name!r}")
    return name[len(API_TOKEN_PREFIX):]


def principal(caller: Caller) -> common_pb2.Principal:
    record = caller.token
    is_api = record.kind is TokenKind.API
    return common_pb2.Principal(
        username=record.username,
        uid=caller.principal.uid,
        superuser=caller.is_superuser,
        credential_kind=(common_pb2.CREDENTIAL_KIND_API_TOKEN if is_api
                         else common_pb2.CREDENTIAL_KIND_SESSION),
        api_token=API_TOKEN_PREFIX + record.token_id if is_api else "",
        allowed_paths=list(record.allowed_paths),
        read_only=record.read_only,
    )


def api_token(record: TokenRecord) -> auth_pb2.ApiToken:
    return auth_pb2.ApiToken(
        name=API_TOKEN_PREFIX + record.token_id,
        description=record.description,
        expire_time=timestamp(record.expires_at),
        allowed_paths=list(record.allowed_paths),
        read_only=record.read_only,
        owner=record.username,
        create_time=timestamp(record.created_at),
    )

