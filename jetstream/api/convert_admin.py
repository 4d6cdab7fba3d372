"""Messages of FileService and of ServerService's event log and sandbox mappings.

Same rules as convert.py (one function per message); a separate module only so that work
on transfers and on these services did not edit one file at once. Fold it in at will.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from jetstream.errors import InvalidArgument
from jetstream.services.event_queries import EventFilter
from jetstream.services.events import Event, Severity
from jetstream.services.files import FileItem
from jetstream.services.sandboxes import SandboxMapping
from jetstream.storage.sandbox import Resource
from jetstream.v1 import common_pb2, files_pb2, server_pb2

EVENT_PREFIX = "events/"

_KINDS = {
    "file": common_pb2.FILE_KIND_FILE,
    "directory": common_pb2.FILE_KIND_DIRECTORY,
    "symlink": common_pb2.FILE_KIND_SYMLINK,
    "other": common_pb2.FILE_KIND_OTHER,
}
_SEVERITIES = {
    Severity.INFO: server_pb2.EVENT_SEVERITY_INFO,
    Severity.WARNING: server_pb2.EVENT_SEVERITY_WARNING,
    Severity.ERROR: server_pb2.EVENT_SEVERITY_ERROR,
}
_SEVERITY_FILTERS = {
    server_pb2.EVENT_SEVERITY_UNSPECIFIED: Severity.INFO,
    **{value: key for key, value in _SEVERITIES.items()},
}


def _timestamp_ns(nanoseconds: int) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(nanoseconds)
    return ts


def file_info(item: FileItem) -> files_pb2.FileInfo:
    return files_pb2.FileInfo(
        path=item.path,
        name=item.name,
        kind=_KINDS.get(item.kind, common_pb2.FILE_KIND_OTHER),
        size_bytes=item.size,
        mode=item.mode,
        modify_time=_timestamp_ns(item.mtime_ns),
        owner=item.owner,
        group=item.group,
        symlink_target=item.symlink_target,
    )


def event(e: Event) -> server_pb2.Event:
    message = server_pb2.Event(
        name=f"{EVENT_PREFIX}{e.id}",
        event_time=_timestamp_ns(int(e.time * 1e9)),
        severity=_SEVERITIES[e.severity],
        type=e.kind,
        message=e.message,
        username=e.username,
        attributes=e.attributes,
    )
    if e.subject.startswith(("transfers/", "incomingTransfers/")):
        message.transfer = e.subject
    elif e.subject.startswith("destinations/"):
        message.destination = e.subject
    elif e.subject:
        message.attributes["resource"] = e.subject
    return message


def event_filter(request: server_pb2.ListEventsRequest) -> EventFilter:
    if request.min_severity not in _SEVERITY_FILTERS:
        raise InvalidArgument("min_severity is not a known EventSeverity")
    return EventFilter(
        start_time=(request.start_time.ToNanoseconds() / 1e9
                    if request.HasField("start_time") else None),
        end_time=(request.end_time.ToNanoseconds() / 1e9
                  if request.HasField("end_time") else None),
        min_severity=_SEVERITY_FILTERS[request.min_severity],
        subject=request.transfer,
        kind=request.type,
        owner=request.owner,
        newest_first=request.newest_first,
    )


def sandbox_mapping(mapping: SandboxMapping) -> server_pb2.SandboxMapping:
    message = server_pb2.SandboxMapping(
        name=mapping.name,
        resources=[
            server_pb2.SandboxResource(mount=r.mount, path=r.path, read_only=r.read_only,
                                       create=r.create)
            for r in mapping.resources
        ],
        fixed=mapping.fixed,
    )
    if mapping.user is None:
        message.all_users = True
    else:
        message.user = mapping.user
    if mapping.update_time:
        message.update_time.CopyFrom(_timestamp_ns(int(mapping.update_time * 1e9)))
    return message


def sandbox_subject(which: str | None, all_users: bool, user: str) -> str | None:
    """The `subject` oneof as None (all users) or a user name; INVALID_ARGUMENT if unset."""
    if which == "all_users":
        if not all_users:
            raise InvalidArgument("all_users must be true when it is the subject")
        return None
    if which == "user":
        if not user:
            raise InvalidArgument("user must name a user")
        return user
    raise InvalidArgument("set the mapping's subject: all_users or user")


def sandbox_resources(mapping: server_pb2.SandboxMapping) -> tuple[Resource, ...]:
    return tuple(
        Resource(r.mount, r.path, r.read_only, r.create) for r in mapping.resources
    )
