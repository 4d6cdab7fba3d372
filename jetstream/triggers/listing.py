"""What `ListTriggers` shows: the scripts as the directory holds them now, each with its
most recent run from the event log."""

from __future__ import annotations

from dataclasses import dataclass

from jetstream.services.auth import Caller
from jetstream.services.event_queries import EventQueries
from jetstream.services.events import Event
from jetstream.triggers.catalog import BY_NAME, RUN_PREFIX
from jetstream.triggers.runner import TriggerRunner
from jetstream.triggers.scripts import Script


@dataclass(frozen=True)
class TriggerInfo:
    script: Script
    known_event: bool
    last_run: Event | None


class TriggerListing:
    def __init__(self, runner: TriggerRunner, queries: EventQueries) -> None:
        self._runner = runner
        self._queries = queries

    @property
    def runner(self) -> TriggerRunner:
        return self._runner

    def list(self, caller: Caller) -> list[TriggerInfo]:
        """Superusers only: scripts run with the server's rights, and their output is theirs."""
        caller.require_superuser()
        runs = self._queries.latest_by(RUN_PREFIX, "script")
        return [TriggerInfo(script, script.event in BY_NAME, runs.get(str(script.path)))
                for script in sorted(self._runner.scripts(), key=lambda s: str(s.path))]
