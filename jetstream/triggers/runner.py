"""Running trigger scripts when events happen, without ever holding the server up.

The runner listens to the event log. For an event whose type has scripts, it puts one run
per script on a bounded queue and returns at once; a few workers (`concurrency`) take runs
off the queue. A run is the script executed directly (never through a shell) with the
event's arguments, a clean environment and the event as JSON on standard input, in a new
session so that at its timeout the whole process group is killed (SIGTERM, then SIGKILL).
Its output (standard output and error, interleaved) goes to the trigger log; how it ended,
with the end of its output, goes to the event log as a `trigger.*` event. A full queue
drops the run and says so (`trigger.dropped`) rather than block or grow without bound: a
hanging script costs one worker until its timeout, never the server or later events.

The trigger directory is read again whenever it changes (inotify), so scripts can be
added, fixed or removed while the server runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jetstream.services.events import Event, EventLog, Severity
from jetstream.storage.dirwatch import Change, DirWatcher, Handler
from jetstream.storage.paths import printable
from jetstream.triggers import catalog
from jetstream.triggers.scripts import Script, check, find_scripts

log = logging.getLogger("jetstream.triggers")

OUTPUT_KEPT = 64 << 10
"""Bytes of a run's output kept for the trigger log (more is read and discarded)."""
EVENT_OUTPUT = 2000
"""Characters of the end of a run's output kept in its event."""
KILL_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL to a timed-out script's process group."""
OUTPUT_GRACE = 1.0
"""How long output is still read after a script exited (its background children may hold
the pipe open; they are left alone)."""
LOG_ROTATE_BYTES = 10 << 20
RESCAN_DELAY = 0.1
BASE_ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
"""What a script's environment starts from: nothing of the server's own environment."""


@dataclass(frozen=True)
class TriggerSettings:
    directory: Path
    log_file: Path
    timeout: float = 60.0
    concurrency: int = 4
    queue_size: int = 10_000


@dataclass(frozen=True)
class _Run:
    script: Script
    event: Event


class TriggerLog:
    """The trigger log: each run's start, output and end, one line each, timestamped.
    Rotated once (to `.1`) past LOG_ROTATE_BYTES."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def write(self, lines: list[str]) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        text = "".join(f"{stamp} {line}\n" for line in lines)
        try:
            if self._path.exists() and self._path.stat().st_size > LOG_ROTATE_BYTES:
                self._path.replace(self._path.with_name(self._path.name + ".1"))
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
            with os.fdopen(fd, "a", encoding="utf-8", errors="replace") as handle:
                handle.write(text)
        except OSError as exc:
            log.warning("cannot write the trigger log %s: %s", self._path, exc.strerror)


class TriggerRunner:
    def __init__(self, settings: TriggerSettings, events: EventLog, watcher: DirWatcher, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._events = events
        self._watcher = watcher
        self._clock = clock
        self._log = TriggerLog(settings.log_file)
        self._scripts: dict[str, list[Script]] = {}
        self._queue: asyncio.Queue[_Run] = asyncio.Queue(maxsize=settings.queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self._watched: dict[str, int] = {}
        self._handlers: dict[str, Handler] = {}
        self._rescan_due: asyncio.TimerHandle | None = None
        self._dropped = 0
        self._loop = asyncio.get_running_loop()

    @property
    def directory(self) -> Path:
        return self._settings.directory

    @property
    def log_file(self) -> Path:
        return self._settings.log_file

    def start(self) -> None:
        self.rescan()
        self._workers = [asyncio.create_task(self._work(), name=f"trigger-worker-{n}")
                         for n in range(self._settings.concurrency)]
        self._events.subscribe(self)

    async def close(self) -> None:
        """Let queued runs finish (each within its timeout), then stop the workers."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(),
                                   self._settings.timeout + KILL_GRACE + OUTPUT_GRACE)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for path, wd in list(self._watched.items()):
            self._watcher.remove(wd, self._handlers.get(path, _ignore))
        if self._rescan_due is not None:
            self._rescan_due.cancel()

    def scripts(self) -> list[Script]:
        """Every script as the directory is now (runnable or not)."""
        return find_scripts(self._settings.directory)

    # --- the event log's side ----------------------------------------------------------------

    def wants(self, kind: str) -> bool:
        return catalog.fires_scripts(kind) and kind in self._scripts

    def heard(self, event: Event) -> None:
        try:
            here = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # recorded on a worker thread
            here = False
        for script in self._scripts.get(event.kind, ()):
            run = _Run(script, event)
            if here:
                self._enqueue(run)
            else:
                self._loop.call_soon_threadsafe(self._enqueue, run)

    def _enqueue(self, run: _Run) -> None:
        try:
            self._queue.put_nowait(run)
        except asyncio.QueueFull:
            self._dropped += 1
            if self._dropped == 1:
                self._loop.call_later(1.0, self._report_dropped)

    def _report_dropped(self) -> None:
        count, self._dropped = self._dropped, 0
        self._events.record(
            "trigger.dropped", f"{count} trigger run(s) dropped: {self._settings.queue_size} "
            "runs were already waiting (scripts too slow for the rate of events)",
            now=self._clock(), severity=Severity.WARNING, attributes={"count": str(count)})

    # --- the directory -----------------------------------------------------------------------

    def rescan(self) -> None:
        """Read the trigger directory again and watch what it now holds."""
        self._rescan_due = None
        found = find_scripts(self._settings.directory)
        scripts: dict[str, list[Script]] = {}
        for script in found:
            scripts.setdefault(script.event, []).append(script)
            if script.problem:
                log.warning("trigger %s refused: %s", printable(str(script.path)),
                            script.problem)
        self._scripts = scripts
        runnable = sum(1 for s in found if not s.problem)
        log.info("trigger directory %s: %d script(s) for %d event(s), %d refused",
                 printable(str(self._settings.directory)), runnable, len(scripts),
                 len(found) - runnable)
        self._watch(found)

    def _watch(self, found: list[Script]) -> None:
        directory = self._settings.directory
        wanted = {str(directory)} | {str(s.path.parent) for s in found}
        only = ""
        if not directory.is_dir():
            # To notice it being created; nothing else there matters (the server's own log
            # beside it would otherwise make every log line a rescan, and every rescan a line).
            wanted, only = {str(directory.parent)}, directory.name
        for path in set(self._watched) - wanted:
            self._watcher.remove(self._watched.pop(path), self._handlers.pop(path, _ignore))
        for path in wanted - set(self._watched):
            handler = self._handler(path, only)
            try:
                self._watched[path] = self._watcher.add(path, handler)
                self._handlers[path] = handler
            except OSError as exc:
                log.warning("cannot watch %s for new trigger scripts: %s; they are read at "
                            "the next change only", printable(path), exc.strerror)

    def _handler(self, path: str, only: str = "") -> Handler:
        """Rescan on a change in ``path`` (of its entry ``only``, if given)."""
        def changed(change: Change) -> None:
            if change.gone:
                self._watched.pop(path, None)
                self._handlers.pop(path, None)
            elif only and change.name != only:
                return
            if self._rescan_due is None:
                self._rescan_due = self._loop.call_later(RESCAN_DELAY, self.rescan)

        return changed

    # --- runs ------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            run = await self._queue.get()
            try:
                await self._run(run)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad run must not stop the worker
                log.exception("trigger %s failed to run", run.script.path)
            finally:
                self._queue.task_done()

    async def _run(self, run: _Run) -> None:
        script, event = run.script, run.event
        shown = printable(str(script.path))
        problem = check(script, self._settings.directory)
        if problem:
            self._record(run, "trigger.refused", Severity.WARNING,
                         f"{event.kind}: {shown} refused: {problem}", {})
            return
        argv = [str(script.path), *catalog.arguments(event)]
        stdin = json.dumps(catalog.document(event)).encode()
        env = catalog.environment(event, {**BASE_ENVIRONMENT, "HOME": _home()})
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, cwd="/", start_new_session=True)
        except OSError as exc:
            hint = " (does it start with #!?)" if exc.errno == 8 else ""
            self._record(run, "trigger.failed", Severity.ERROR,
                         f"{event.kind}: {shown} could not start: {exc.strerror}{hint}",
                         {"seconds": "0"})
            return
        tag = f"[{event.kind} {script.path.name} pid {proc.pid}]"
        self._log.write([f"{tag} started for event {event.id} ({event.subject or '-'}): "
                         f"{' '.join(printable(a) for a in argv)}"])
        output = bytearray()
        feeding = asyncio.create_task(_feed(proc, stdin))
        reading = asyncio.create_task(_collect(proc, output))
        timed_out = False
        try:
            try:
                await asyncio.wait_for(proc.wait(), self._settings.timeout)
            except TimeoutError:
                timed_out = True
                await _kill_group(proc)
        except asyncio.CancelledError:  # the server is stopping: leave nothing behind
            _signal_group(proc.pid, signal.SIGKILL)
            await asyncio.shield(proc.wait())
            feeding.cancel()
            reading.cancel()
            raise
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reading), OUTPUT_GRACE)
        feeding.cancel()
        reading.cancel()
        seconds = time.monotonic() - started
        text = output.decode("utf-8", errors="replace")
        code = proc.returncode
        if timed_out:
            kind, severity = "trigger.timedOut", Severity.ERROR
            how = f"killed after its timeout of {self._settings.timeout:g} s"
        elif code == 0:
            kind, severity, how = "trigger.complete", Severity.INFO, "exited 0"
        else:
            kind, severity = "trigger.failed", Severity.ERROR
            how = f"exited {code}" if code is not None and code > 0 else \
                f"was killed by signal {-(code or 0)}"
        self._log.write([f"{tag} {line}" for line in text.splitlines()]
                        + [f"{tag} {how} after {seconds:.2f} s"])
        self._record(run, kind, severity, f"{event.kind}: {shown} {how} after {seconds:.2f} s",
                     {"exitCode": "" if timed_out or code is None else str(code),
                      "seconds": f"{seconds:.3f}", "output": text[-EVENT_OUTPUT:]})

    def _record(self, run: _Run, kind: str, severity: Severity, message: str,
                extra: dict[str, str]) -> None:
        self._events.record(kind, message, now=self._clock(), severity=severity,
                            subject=run.event.subject, attributes={
            "script": str(run.script.path), "event": run.event.kind,
            "eventId": str(run.event.id), **extra})


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the script does not read its input: its choice
    finally:
        proc.stdin.close()


async def _collect(proc: asyncio.subprocess.Process, into: bytearray) -> None:
    assert proc.stdout is not None
    while chunk := await proc.stdout.read(65536):
        if len(into) < OUTPUT_KEPT:
            into += chunk[:OUTPUT_KEPT - len(into)]


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), KILL_GRACE)
    except TimeoutError:
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()
    _signal_group(proc.pid, signal.SIGKILL)  # what the script left running in its group


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _home() -> str:
    return os.path.expanduser("~") if os.geteuid() else "/root"


def _ignore(_change: Change) -> None:
    """Stands in for a handler that is already gone."""
