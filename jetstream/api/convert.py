"""Domain objects to protobuf messages and back: one function per message."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from jetstream.auth.sessions import TokenKind, TokenRecord
from jetstream.datachannel.grouprate import MAX_FLOWS
from jetstream.errors import InvalidArgument
from jetstream.services.auth import Caller
from jetstream.services.bandwidth import BandwidthLimits
from jetstream.services.destinations import (
    DEFAULT_API_PORT,
    Credentials,
    Destination,
)
from jetstream.services.manifests import (
    Manifest,
    ManifestEntry,
    ManifestSpec,
    ManifestState,
    SymlinkPolicy,
)
from jetstream.services.manifests import Mapping as ManifestMapping
from jetstream.services.server_info import RelayState, ServerInfoService
from jetstream.transfers import peerwire
from jetstream.transfers.hashing import HashAlgorithm
from jetstream.transfers.incoming import Incoming, Source
from jetstream.transfers.model import (
    Direction,
    Failure,
    Overwrite,
    Progress,
    RateLimits,
    Transfer,
    TransferOptions,
    TransferState,
)
from jetstream.transfers.store import FileRow
from jetstream.v1 import (
    auth_pb2,
    common_pb2,
    destinations_pb2,
    manifests_pb2,
    peer_pb2,
    server_pb2,
    transfers_pb2,
)


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def timestamp_ns(nanoseconds: int) -> Timestamp:
    """Exact to the nanosecond (a float of seconds is not: mtimes must compare equal)."""
    ts = Timestamp()
    ts.FromNanoseconds(nanoseconds)
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
        api_tokens_enabled=info.api_tokens_enabled,
        telemetry_enabled=not info.config.disable_telemetry,
        tls_certificate_sha256=info.tls.fingerprint if info.tls else b"",
        tls_certificate_days_left=info.tls.days_left if info.tls else 0,
        data_path=info.data_path,
        start_time=timestamp(info.start_time),
        current_time=timestamp(now),
        relay=relay_status(info.relay()),
    )


def relay_status(state: RelayState | None) -> server_pb2.RelayStatus | None:
    if state is None:
        return None
    return server_pb2.RelayStatus(
        enabled=True, address=state.address, connected=state.connected,
        public_host=state.public_host,
        public_udp_ports=[state.public_port] if state.connected else [])


API_TOKEN_PREFIX = "apiTokens/"


def api_token_id(name: str) -> str:
    return resource_id(name, API_TOKEN_PREFIX)


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
        superuser=record.superuser,
        owner=record.username,
        create_time=timestamp(record.created_at),
    )



DESTINATION_PREFIX = "destinations/"

#: API field name -> Destination attribute, for the fields UpdateDestination may change.
DESTINATION_FIELDS = {
    "display_name": "display_name",
    "host": "host",
    "api_port": "api_port",
    "udp_port": "udp_port",
    "local_udp_port": "local_udp_port",
    "max_rate_bps": "max_rate_bps",
    "labels": "labels",
    "pinned_tls_certificate_sha256": "pinned_fingerprint",
    "pinned_server_uid": "pinned_server_uid",
}


def resource_id(name: str, prefix: str) -> str:
    """The id inside a `collection/{id}` resource name."""
    if not name.startswith(prefix) or len(name) == len(prefix) or "/" in name[len(prefix):]:
        raise InvalidArgument(f"expected a name like {prefix}<id>, got {name!r}")
    return name[len(prefix):]


def destination_from_proto(message: destinations_pb2.Destination) -> Destination:
    return Destination(
        id="",
        owner="",
        host=message.host,
        api_port=message.api_port or DEFAULT_API_PORT,
        udp_port=message.udp_port,
        display_name=message.display_name,
        pinned_fingerprint=message.pinned_tls_certificate_sha256,
        pinned_server_uid=message.pinned_server_uid,
        local_udp_port=message.local_udp_port,
        max_rate_bps=message.max_rate_bps,
        plaintext=message.plaintext,
        labels=dict(message.labels),
    )


def credentials_from_proto(message: destinations_pb2.Destination) -> Credentials:
    which = message.WhichOneof("credentials")
    if which == "password":
        return Credentials(username=message.password.username, password=message.password.password)
    if which == "api_token_secret":
        return Credentials(api_token=message.api_token_secret)
    return Credentials()


def destination_changes(
    message: destinations_pb2.Destination, mask: FieldMask
) -> dict[str, object]:
    """The attribute changes an UpdateDestination asks for (AIP-134 mask rules)."""
    if list(mask.paths) == ["*"]:
        paths = list(DESTINATION_FIELDS)
    elif mask.paths:
        paths = list(mask.paths)
    else:
        paths = [f.name for f, _ in message.ListFields() if f.name in DESTINATION_FIELDS]
    unknown = [p for p in paths if p not in DESTINATION_FIELDS]
    if unknown:
        raise InvalidArgument(f"update_mask names fields that cannot change: {', '.join(unknown)}")
    wanted = destination_from_proto(message)
    if "api_port" in paths and message.api_port == 0:
        raise InvalidArgument("api_port must not be 0")
    return {DESTINATION_FIELDS[p]: getattr(wanted, DESTINATION_FIELDS[p]) for p in paths}


def destination(d: Destination) -> destinations_pb2.Destination:
    message = destinations_pb2.Destination(
        name=DESTINATION_PREFIX + d.id,
        display_name=d.display_name,
        host=d.host,
        api_port=d.api_port,
        udp_port=d.udp_port,
        credential_kind=common_pb2.CREDENTIAL_KIND_API_TOKEN,
        username=d.remote_username,
        pinned_tls_certificate_sha256=d.pinned_fingerprint,
        pinned_server_uid=d.pinned_server_uid,
        local_udp_port=d.local_udp_port,
        max_rate_bps=d.max_rate_bps,
        plaintext=d.plaintext,
        labels=d.labels,
        owner=d.owner,
        create_time=timestamp(d.created_at),
        update_time=timestamp(d.updated_at),
    )
    if d.last_contact_at:
        message.last_contact_time.CopyFrom(timestamp(d.last_contact_at))
    if d.last_error:
        message.last_error.CopyFrom(common_pb2.ErrorDetail(reason="PEER_UNREACHABLE",
                                                           message=d.last_error))
    return message


MANIFEST_PREFIX = "manifests/"
_MANIFEST_STATES = {
    ManifestState.PENDING: manifests_pb2.MANIFEST_STATE_PENDING,
    ManifestState.COMPLETE: manifests_pb2.MANIFEST_STATE_COMPLETE,
    ManifestState.ERROR: manifests_pb2.MANIFEST_STATE_ERROR,
}
_FILE_KINDS = {
    "file": common_pb2.FILE_KIND_FILE,
    "directory": common_pb2.FILE_KIND_DIRECTORY,
    "symlink": common_pb2.FILE_KIND_SYMLINK,
}


def manifest_state_filter(state: int) -> ManifestState | None:
    for domain, wire in _MANIFEST_STATES.items():
        if wire == state:
            return domain
    return None


_SYMLINK_POLICIES = {
    SymlinkPolicy.SKIP: manifests_pb2.SYMLINK_POLICY_SKIP,
    SymlinkPolicy.FOLLOW_WITHIN_SANDBOX: manifests_pb2.SYMLINK_POLICY_FOLLOW_WITHIN_SANDBOX,
    SymlinkPolicy.PRESERVE: manifests_pb2.SYMLINK_POLICY_PRESERVE,
}


def manifest_spec_from_proto(spec: manifests_pb2.ManifestSpec) -> ManifestSpec:
    if spec.symlink_policy == manifests_pb2.SYMLINK_POLICY_UNSPECIFIED:
        symlinks = SymlinkPolicy.SKIP
    else:
        found = [k for k, wire in _SYMLINK_POLICIES.items() if wire == spec.symlink_policy]
        if not found:
            raise InvalidArgument(f"unknown symlink_policy {spec.symlink_policy}")
        symlinks = found[0]
    return ManifestSpec(
        mappings=tuple(ManifestMapping(m.source_path, m.destination_path) for m in spec.mappings),
        include=tuple(spec.include_patterns),
        exclude=tuple(spec.exclude_patterns),
        symlinks=symlinks,
    )


def manifest(m: Manifest) -> manifests_pb2.Manifest:
    message = manifests_pb2.Manifest(
        name=MANIFEST_PREFIX + m.id,
        spec=manifests_pb2.ManifestSpec(
            mappings=[manifests_pb2.FileMapping(source_path=x.source_path,
                                                destination_path=x.destination_path)
                      for x in m.spec.mappings],
            include_patterns=list(m.spec.include),
            exclude_patterns=list(m.spec.exclude),
            symlink_policy=_SYMLINK_POLICIES[m.spec.symlinks],
        ),
        state=_MANIFEST_STATES[m.state],
        file_count=m.file_count,
        dir_count=m.dir_count,
        total_bytes=m.total_bytes,
        skipped_count=m.skipped_count,
        labels=m.labels,
        owner=m.owner,
        create_time=timestamp(m.created_at),
        skipped_entries=[manifests_pb2.SkippedEntry(source_path=path, reason=why)
                         for path, why in m.skipped_examples],
    )
    if m.error:
        message.error.CopyFrom(common_pb2.ErrorDetail(reason="MANIFEST_SCAN_FAILED",
                                                      message=m.error))
    if m.completed_at:
        message.complete_time.CopyFrom(timestamp(m.completed_at))
    return message


def manifest_file(entry: ManifestEntry, root_prefix: str) -> manifests_pb2.ManifestFile:
    return manifests_pb2.ManifestFile(
        source_path=root_prefix + entry.source_path,
        destination_path=entry.dest_path,
        kind=_FILE_KINDS[entry.kind],
        size_bytes=entry.size,
        mode=entry.mode,
        modify_time=timestamp_ns(entry.mtime_ns),
        symlink_target=entry.symlink_target,
    )


TRANSFER_PREFIX = "transfers/"
INCOMING_PREFIX = "incomingTransfers/"
_TRANSFER_STATES = {
    TransferState.QUEUED: common_pb2.TRANSFER_STATE_QUEUED,
    TransferState.RUNNING: common_pb2.TRANSFER_STATE_RUNNING,
    TransferState.PAUSED: common_pb2.TRANSFER_STATE_PAUSED,
    TransferState.COMPLETED: common_pb2.TRANSFER_STATE_COMPLETED,
    TransferState.FAILED: common_pb2.TRANSFER_STATE_FAILED,
    TransferState.CANCELLED: common_pb2.TRANSFER_STATE_CANCELLED,
}
_STATE_FROM_WIRE = {wire: state for state, wire in _TRANSFER_STATES.items()}
_DIRECTIONS = {Direction.PUSH: common_pb2.TRANSFER_DIRECTION_PUSH,
               Direction.PULL: common_pb2.TRANSFER_DIRECTION_PULL}
_OVERWRITES = {Overwrite.NEVER: common_pb2.OVERWRITE_POLICY_NEVER,
               Overwrite.ALWAYS: common_pb2.OVERWRITE_POLICY_ALWAYS,
               Overwrite.IF_DIFFERENT: common_pb2.OVERWRITE_POLICY_IF_DIFFERENT,
               Overwrite.RESUME: common_pb2.OVERWRITE_POLICY_RESUME}
_HASHES = {HashAlgorithm.BLAKE3: common_pb2.HASH_ALGORITHM_BLAKE3,
           HashAlgorithm.SHA256: common_pb2.HASH_ALGORITHM_SHA256}


def _from_wire(table: Mapping[Any, int], value: int, default: Any) -> Any:
    if value == 0:
        return default
    for domain, wire in table.items():
        if wire == value:
            return domain
    raise InvalidArgument(f"unknown enum value {value}")


def transfer_states(values: Iterable[int]) -> list[TransferState]:
    return [_from_wire(_TRANSFER_STATES, v, None) for v in values if v]


def direction(value: int) -> Direction | None:
    return _from_wire(_DIRECTIONS, value, None)  # type: ignore[no-any-return]


def duration_seconds(value: Duration) -> float:
    return value.ToNanoseconds() / 1e9


def duration(seconds: float) -> Duration:
    result = Duration()
    result.FromNanoseconds(int(seconds * 1e9))
    return result


def rate_limits(message: common_pb2.RateLimit) -> RateLimits:
    return peerwire.rate_from_wire(message)


def hash_algorithm(value: int) -> HashAlgorithm:
    return _from_wire(_HASHES, value, HashAlgorithm.BLAKE3)  # type: ignore[no-any-return]


def transfer_options(message: transfers_pb2.Transfer) -> TransferOptions:
    interval = duration_seconds(message.checkpoint_interval) or TransferOptions.checkpoint_interval
    if message.flows > MAX_FLOWS:
        raise InvalidArgument(f"flows: at most {MAX_FLOWS}, got {message.flows}")
    return TransferOptions(
        checkpoint_interval=interval,
        rate=rate_limits(message.rate_limit),
        overwrite=_from_wire(_OVERWRITES, message.overwrite_policy, Overwrite.RESUME),
        hash_algorithm=hash_algorithm(message.hash_algorithm),
        flows=message.flows,
    )


def transfer_options_from_peer(message: peer_pb2.OpenReceiveSessionRequest) -> TransferOptions:
    interval = duration_seconds(message.checkpoint_interval) or TransferOptions.checkpoint_interval
    return TransferOptions(
        checkpoint_interval=interval,
        overwrite=_from_wire(_OVERWRITES, message.overwrite_policy, Overwrite.RESUME),
        hash_algorithm=hash_algorithm(message.hash_algorithm),
    )


def bandwidth_limits(limits: BandwidthLimits) -> server_pb2.BandwidthLimits:
    return server_pb2.BandwidthLimits(
        name="bandwidthLimits", incoming_bps=limits.incoming_bps,
        outgoing_bps=limits.outgoing_bps, allow_borrowing=limits.allow_borrowing,
        fixed=limits.fixed)


def error_detail(failure: Failure) -> common_pb2.ErrorDetail:
    return common_pb2.ErrorDetail(reason=failure.reason, message=failure.message,
                                  path=failure.path)


def progress(p: Progress, *, now: float) -> transfers_pb2.TransferProgress:
    remaining = max(p.bytes_total - p.bytes_done, 0)
    message = transfers_pb2.TransferProgress(
        bytes_total=p.bytes_total,
        bytes_done=p.bytes_done,
        files_total=p.files_total,
        files_done=p.files_done,
        files_failed=p.files_failed,
        files_skipped=p.files_skipped,
        rate_bps=int(p.rate_bps),
        rtt=duration(p.rtt),
        loss_ratio=p.loss_ratio,
        bytes_retransmitted=p.bytes_retransmitted,
        bytes_sent_on_wire=p.bytes_on_wire,
        bytes_resumed=p.bytes_resumed,
        current_path=p.current_path,
        snapshot_time=timestamp(now),
    )
    if p.rate_bps > 0:
        message.eta.CopyFrom(duration(remaining * 8 / p.rate_bps))
    return message


def transfer(t: Transfer, *, now: float) -> transfers_pb2.Transfer:
    message = transfers_pb2.Transfer(
        name=TRANSFER_PREFIX + t.id,
        destination=DESTINATION_PREFIX + t.destination_id,
        direction=_DIRECTIONS[t.direction],
        manifest=MANIFEST_PREFIX + t.manifest_id if t.manifest_id else "",
        destination_path=t.destination_path,
        priority=t.priority,
        checkpoint_interval=duration(t.options.checkpoint_interval),
        rate_limit=peerwire.rate_to_wire(t.options.rate),
        overwrite_policy=_OVERWRITES[t.options.overwrite],
        hash_algorithm=_HASHES[t.options.hash_algorithm],
        flows=t.options.flows,
        state=_TRANSFER_STATES[t.state],
        status_message=t.status_message,
        progress=progress(t.progress, now=now),
        labels=t.labels,
        owner=t.owner,
        create_time=timestamp(t.created_at),
        update_time=timestamp(t.updated_at or t.created_at),
        attempt_count=t.attempt_count,
    )
    if t.error is not None:
        message.error.CopyFrom(error_detail(t.error))
    if t.started_at:
        message.start_time.CopyFrom(timestamp(t.started_at))
    if t.ended_at:
        message.end_time.CopyFrom(timestamp(t.ended_at))
    return message


def incoming(i: Incoming, *, now: float) -> transfers_pb2.IncomingTransfer:
    message = transfers_pb2.IncomingTransfer(
        name=INCOMING_PREFIX + i.id,
        source=SOURCE_PREFIX + i.source_uid,
        sender_transfer=i.sender_transfer,
        source_address=i.source_address,
        destination_path=i.destination_path,
        state=_TRANSFER_STATES[i.state],
        progress=progress(i.progress, now=now),
        overwrite_policy=_OVERWRITES[i.options.overwrite],
        hash_algorithm=_HASHES[i.options.hash_algorithm],
        owner=i.owner,
        create_time=timestamp(i.created_at),
    )
    if i.error is not None:
        message.error.CopyFrom(error_detail(i.error))
    if i.last_receive_at:
        message.last_receive_time.CopyFrom(timestamp(i.last_receive_at))
    if i.ended_at:
        message.end_time.CopyFrom(timestamp(i.ended_at))
    return message


SOURCE_PREFIX = "sources/"


def source(s: Source) -> transfers_pb2.Source:
    message = transfers_pb2.Source(
        name=SOURCE_PREFIX + s.server_uid,
        server_uid=s.server_uid,
        display_name=s.display_name,
        last_address=s.last_address,
        active_transfer_count=s.active,
        completed_transfer_count=s.completed,
        failed_transfer_count=s.failed,
        bytes_received=s.bytes_received,
        average_rate_bps=round(s.average_rate_bps),
        recent_rate_bps=round(s.recent_rate_bps),
    )
    if s.last_receive_at:
        message.last_receive_time.CopyFrom(timestamp(s.last_receive_at))
    return message


_FILE_STATES = {
    "pending": transfers_pb2.TRANSFER_FILE_STATE_PENDING,
    "done": transfers_pb2.TRANSFER_FILE_STATE_DONE,
    "skipped": transfers_pb2.TRANSFER_FILE_STATE_SKIPPED,
    "failed": transfers_pb2.TRANSFER_FILE_STATE_FAILED,
}


def file_state_filter(values: Iterable[int]) -> list[str]:
    names = {wire: name for name, wire in _FILE_STATES.items()}
    unknown = [v for v in values if v not in names]
    if unknown:
        raise InvalidArgument("states: only PENDING, DONE, SKIPPED and FAILED are recorded")
    return [names[v] for v in values]


def transfer_file(row: FileRow) -> transfers_pb2.TransferFile:
    message = transfers_pb2.TransferFile(
        path=row.dest_path,
        source_path=(f"/{row.source_root}" if row.source_root else "") + row.source_path,
        kind=_FILE_KINDS[row.kind],
        size_bytes=row.size,
        bytes_done=row.bytes_done,
        state=_FILE_STATES[row.state],
        digest=row.digest,
    )
    if row.error and row.state == "failed":
        message.error.CopyFrom(common_pb2.ErrorDetail(reason="FILE_FAILED", message=row.error,
                                                      path=row.dest_path))
    if row.ended_at:
        message.end_time.CopyFrom(timestamp(row.ended_at))
    return message


_SESSION_OUTCOMES = {
    peer_pb2.SESSION_OUTCOME_COMPLETED: TransferState.COMPLETED,
    peer_pb2.SESSION_OUTCOME_PAUSED: TransferState.PAUSED,
    peer_pb2.SESSION_OUTCOME_FAILED: TransferState.FAILED,
    peer_pb2.SESSION_OUTCOME_CANCELLED: TransferState.CANCELLED,
}


def session_outcome(value: int) -> TransferState:
    if value not in _SESSION_OUTCOMES:
        raise InvalidArgument("outcome must be COMPLETED, PAUSED, FAILED or CANCELLED")
    return _SESSION_OUTCOMES[value]


def transfer_state(state: TransferState) -> int:
    return _TRANSFER_STATES[state]
