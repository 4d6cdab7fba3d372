"""Watch folders between the API's messages and the service layer's data."""

from __future__ import annotations

from jetstream.api.convert import (
    DESTINATION_PREFIX,
    duration,
    duration_seconds,
    resource_id,
    timestamp,
)
from jetstream.errors import InvalidArgument
from jetstream.v1 import common_pb2, watches_pb2
from jetstream.watches.model import AfterDelivery, Watch, WatchState, WatchStatus

W = watches_pb2
WATCH_PREFIX = "watches/"
DEFAULT_SETTLE = 5.0
_AFTER = {W.AFTER_DELIVERY_UNSPECIFIED: AfterDelivery.KEEP,
          W.AFTER_DELIVERY_KEEP: AfterDelivery.KEEP,
          W.AFTER_DELIVERY_DELETE: AfterDelivery.DELETE,
          W.AFTER_DELIVERY_MOVE: AfterDelivery.MOVE}
_AFTER_WIRE = {AfterDelivery.KEEP: W.AFTER_DELIVERY_KEEP,
               AfterDelivery.DELETE: W.AFTER_DELIVERY_DELETE,
               AfterDelivery.MOVE: W.AFTER_DELIVERY_MOVE}
_STATES = {WatchState.ACTIVE: W.WATCH_STATE_ACTIVE, WatchState.ERROR: W.WATCH_STATE_ERROR}


def watch_id(name: str) -> str:
    return resource_id(name, WATCH_PREFIX)


def watch_from_proto(message: watches_pb2.Watch) -> Watch:
    if message.after_delivery not in _AFTER:
        raise InvalidArgument("after_delivery is not a known AfterDelivery")
    destination = (resource_id(message.destination, DESTINATION_PREFIX)
                   if message.destination else "")
    return Watch(
        id="", owner="", folder=message.folder, destination_id=destination,
        destination_path=message.destination_path,
        settle=(duration_seconds(message.settle_time) if message.HasField("settle_time")
                else DEFAULT_SETTLE),
        include=tuple(message.include), exclude=tuple(message.exclude),
        after_delivery=_AFTER[message.after_delivery], move_to=message.move_to,
        priority=message.priority if message.HasField("priority") else 100,
        labels=dict(message.labels))


def watch(status: WatchStatus) -> watches_pb2.Watch:
    w, stats = status.watch, status.stats
    message = W.Watch(
        name=WATCH_PREFIX + w.id, folder=w.folder,
        destination=DESTINATION_PREFIX + w.destination_id,
        destination_path=w.destination_path, include=list(w.include), exclude=list(w.exclude),
        settle_time=duration(w.settle), after_delivery=_AFTER_WIRE[w.after_delivery],
        move_to=w.move_to, priority=w.priority, labels=w.labels, owner=w.owner,
        create_time=timestamp(w.created_at), state=_STATES[status.state],
        local_path=status.local_path,
        stats=W.WatchStats(files_waiting=stats.waiting, files_sending=stats.sending,
                           files_delivered=stats.delivered,
                           bytes_delivered=stats.bytes_delivered, files_failed=stats.failed,
                           transfer_count=stats.transfer_count,
                           last_transfer=stats.last_transfer))
    if status.error:
        message.error.CopyFrom(common_pb2.ErrorDetail(reason="WATCH_FAILED",
                                                      message=status.error))
    return message
