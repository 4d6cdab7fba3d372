"""jetstream.v1.TriggerService."""

from __future__ import annotations

from grpc import aio

from jetstream.api import convert, paging
from jetstream.api.convert_admin import EVENT_PREFIX
from jetstream.api.interceptors import current_caller
from jetstream.triggers.listing import TriggerInfo, TriggerListing
from jetstream.v1 import triggers_pb2, triggers_pb2_grpc

Context = aio.ServicerContext
T = triggers_pb2

_OUTCOMES = {"trigger.complete": T.TRIGGER_OUTCOME_COMPLETED,
             "trigger.failed": T.TRIGGER_OUTCOME_FAILED,
             "trigger.timedOut": T.TRIGGER_OUTCOME_TIMED_OUT,
             "trigger.refused": T.TRIGGER_OUTCOME_REFUSED}


class TriggerServicer(triggers_pb2_grpc.TriggerServiceServicer):
    def __init__(self, listing: TriggerListing) -> None:
        self._listing = listing

    async def ListTriggers(
        self, request: T.ListTriggersRequest, context: Context
    ) -> T.ListTriggersResponse:
        limit = paging.page_size(request.page_size)
        after = paging.decode_token(request.page_token, {})
        found = [t for t in self._listing.list(current_caller()) if str(t.script.path) > after]
        page, token = paging.cut(found[:limit + 1], limit, lambda t: str(t.script.path), {})
        runner = self._listing.runner
        return T.ListTriggersResponse(triggers=[_trigger(t) for t in page],
                                      directory=str(runner.directory),
                                      log_file=str(runner.log_file), next_page_token=token)


def _trigger(info: TriggerInfo) -> T.Trigger:
    message = T.Trigger(event=info.script.event, path=str(info.script.path),
                        runnable=not info.script.problem, problem=info.script.problem,
                        known_event=info.known_event)
    run = info.last_run
    if run is not None:
        details = run.attributes
        message.last_run.CopyFrom(T.TriggerRun(
            run_event=f"{EVENT_PREFIX}{run.id}",
            fired_by=f"{EVENT_PREFIX}{details.get('eventId', '0')}",
            end_time=convert.timestamp(run.time),
            outcome=_OUTCOMES.get(run.kind, T.TRIGGER_OUTCOME_UNSPECIFIED),
            duration=convert.duration(float(details.get("seconds") or 0)),
            message=run.message, output=details.get("output", "")))
        if details.get("exitCode"):
            message.last_run.exit_code = int(details["exitCode"])
    return message
