"""Trigger scripts run by real servers: each event with its documented arguments, environment
and standard input; timeouts; refusals; a directory read again when it changes."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
from grpc import aio

from jetstream.services.events import EventLog
from jetstream.state.database import Database
from jetstream.storage.dirwatch import DirWatcher
from jetstream.triggers.runner import TriggerRunner, TriggerSettings
from jetstream.v1 import (
    common_pb2,
    destinations_pb2,
    server_pb2,
    server_pb2_grpc,
    transfers_pb2,
    triggers_pb2,
    triggers_pb2_grpc,
)
from tests.support.servers import serve
from tests.system.users import ADMIN, ALICE, require_root
from tests.transfers.helpers import (
    chown_tree,
    destination_to,
    login,
    manifest_of,
    push,
    wait_terminal,
)
from tests.triggers.helpers import install, make_trigger_dir, recorder, records

SENDER_EVENTS = ("launch", "shutdown", "send.destinationCreated", "send.destinationDeleted",
                 "send.transferCreated", "send.transferStarted", "send.transferComplete",
                 "send.transferError", "send.transferCancelled")
RECEIVER_EVENTS = ("launch", "recv.transferStarted", "recv.transferComplete",
                   "recv.transferError")


async def wait_for(predicate, timeout: float = 30.0, what: str = "records"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def events_of(records_, event):
    return [r for r in records_ if r["stdin"]["event"] == event]


def test_each_event_fires_its_script_with_the_documented_arguments(tmp_path, dirs):
    require_root(users=True)
    src, dst = dirs
    (src / "a.txt").write_bytes(b"alpha\n" * 100)
    (src / "sub").mkdir()
    (src / "sub" / "b.bin").write_bytes(os.urandom(3000))
    bad = src.parent / (src.name + "-bad")
    bad.mkdir()
    (bad / "blocked").write_bytes(b"cannot land: a directory has its name")
    (dst / "blocked").mkdir()
    (dst / "blocked" / "keep").write_bytes(b"x")
    chown_tree(src, ALICE)
    chown_tree(bad, ALICE)
    chown_tree(dst, ALICE)
    out_a, out_b = tmp_path / "out-a", tmp_path / "out-b"
    trig_a, trig_b = make_trigger_dir(tmp_path / "trig-a"), make_trigger_dir(tmp_path / "trig-b")
    for event in SENDER_EVENTS:
        recorder(trig_a / event, out_a)
    for event in RECEIVER_EVENTS:
        recorder(trig_b / event, out_b)
    recorder(trig_b / "recv.fileComplete" / "one", out_b)
    recorder(trig_b / "recv.fileComplete" / "two", out_b)
    os.environ["JETSTREAM_TEST_SECRET"] = "must-not-reach-scripts"
    ports = {}

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a = await serve(stack, tmp_path / "state-a", trigger_dir=str(trig_a))
            b = await serve(stack, tmp_path / "state-b", trigger_dir=str(trig_b))
            ports.update(a=a.api_port, b=b.api_port)
            api = await login(stack, a, ALICE)
            destination = await destination_to(api, b, ALICE)
            good = await push(api, destination, await manifest_of(api, src, "tree"), str(dst))
            done = await wait_terminal(api, good.name)
            assert done.state == common_pb2.TRANSFER_STATE_COMPLETED
            failing = await push(api, destination,
                                 await manifest_of(api, bad / "blocked", "blocked"), str(dst))
            failed = await wait_terminal(api, failing.name)
            manifest = await manifest_of(api, src)
            cancelled = await push(api, destination, manifest, str(dst / "never"),
                                   priority=100)
            await api.transfers.CancelTransfer(
                transfers_pb2.CancelTransferRequest(name=cancelled.name), metadata=api.auth)
            await api.destinations.DeleteDestination(
                destinations_pb2.DeleteDestinationRequest(name=destination, force=True),
                metadata=api.auth)
            await wait_for(lambda: events_of(records(out_a), "send.destinationDeleted"))
            await wait_for(lambda: len(events_of(records(out_b), "recv.fileComplete")) >= 4)
            await wait_for(lambda: events_of(records(out_b), "recv.transferError"))

            admin = await login(stack, a, ADMIN)
            listed = await triggers_pb2_grpc.TriggerServiceStub(admin.channel).ListTriggers(
                triggers_pb2.ListTriggersRequest(), metadata=admin.auth)
            by_event = {t.event: t for t in listed.triggers}
            assert listed.directory == str(trig_a)
            assert by_event["send.transferComplete"].runnable
            run = by_event["send.transferComplete"].last_run
            assert run.outcome == triggers_pb2.TRIGGER_OUTCOME_COMPLETED and run.exit_code == 0
            assert "recorded send.transferComplete" in run.output
            assert not by_event["shutdown"].HasField("last_run")
            with pytest.raises(aio.AioRpcError) as denied:
                await triggers_pb2_grpc.TriggerServiceStub(api.channel).ListTriggers(
                    triggers_pb2.ListTriggersRequest(), metadata=api.auth)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

            runs = await server_pb2_grpc.ServerServiceStub(admin.channel).ListEvents(
                server_pb2.ListEventsRequest(owner="-", type="trigger.complete",
                                             page_size=1000), metadata=admin.auth)
            ran = {(e.attributes["event"], Path(e.attributes["script"]).name) for e in runs.events}
            assert ("send.transferComplete", "send.transferComplete") in ran
            assert all(e.username == "" for e in runs.events)  # superusers only
            ports.update(good=good.name, failed=failed.name, cancelled=cancelled.name,
                         failed_state=failed.state)

    try:
        asyncio.run(main())
    finally:
        del os.environ["JETSTREAM_TEST_SECRET"]

    a, b = records(out_a), records(out_b)
    for record in a + b:
        assert record["uid"] == 0
        env = record["env"]
        assert "JETSTREAM_TEST_SECRET" not in env and "PYTEST_CURRENT_TEST" not in env
        assert set(env) - {"PATH", "LANG", "HOME", "PWD", "LC_CTYPE"} == \
            {k for k in env if k.startswith("JETSTREAM_")}
        assert env["JETSTREAM_EVENT"] == record["stdin"]["event"]
        assert record["pgid"] == record["pid"]  # its own process group
        for key, value in record["stdin"]["attributes"].items():
            name = "JETSTREAM_" + "".join("_" + c if c.isupper() else c.upper() for c in key)
            assert env[name] == value

    [launch_a] = events_of(a, "launch")
    assert launch_a["argv"] == [str(ports["a"])]
    assert events_of(b, "launch")[0]["argv"] == [str(ports["b"])]
    [shutdown] = events_of(a, "shutdown")
    assert shutdown["argv"] == []
    [created] = events_of(a, "send.destinationCreated")
    assert created["argv"] == [f"127.0.0.1:{ports['b']}", "dest"]
    assert created["stdin"]["username"] == ALICE
    assert events_of(a, "send.destinationDeleted")[0]["argv"] == created["argv"]

    good_id = ports["good"].split("/")[1]
    completes = events_of(a, "send.transferComplete")
    [complete] = [r for r in completes if r["argv"][0] == good_id]
    assert complete["argv"] == [good_id, "dest", str(dst), "completed"]
    attrs = complete["stdin"]["attributes"]
    assert attrs["bytesDone"] == attrs["bytesTotal"] == str(600 + 3000)
    assert attrs["direction"] == "push" and attrs["owner"] == ALICE
    assert complete["stdin"]["subject"] == ports["good"]
    assert [r["argv"][3] for r in events_of(a, "send.transferCreated")] == ["queued"] * 3
    assert any(r["argv"][0] == good_id for r in events_of(a, "send.transferStarted"))
    [error] = events_of(a, "send.transferError")
    assert error["argv"][0] == ports["failed"].split("/")[1] and error["argv"][3] == "failed"
    assert error["stdin"]["attributes"]["errorMessage"]
    [cancel] = events_of(a, "send.transferCancelled")
    assert cancel["argv"][0] == ports["cancelled"].split("/")[1]

    received = events_of(b, "recv.transferComplete")
    assert received and received[0]["argv"][1:] == [str(dst), "completed"]
    incoming_id = received[0]["argv"][0]
    started = [r for r in events_of(b, "recv.transferStarted") if r["argv"][0] == incoming_id]
    assert started and started[0]["stdin"]["attributes"]["localPath"] == str(dst)
    [recv_error] = events_of(b, "recv.transferError")
    assert recv_error["argv"][2] == "failed" and recv_error["stdin"]["attributes"]["errorMessage"]
    files = events_of(b, "recv.fileComplete")
    arrived = sorted((Path(r["script"]).name, r["argv"][0], r["argv"][2]) for r in files)
    assert arrived == sorted((script, str(dst / "tree" / name), size)
                             for script in ("one", "two")
                             for name, size in (("a.txt", "600"), ("sub/b.bin", "3000")))
    assert all(r["argv"][1] == incoming_id for r in files)


def test_a_hanging_script_is_killed_at_its_timeout_while_the_server_serves(tmp_path):
    require_root(users=True)
    trig = make_trigger_dir(tmp_path / "trig")
    marker = f"{time.time_ns() % 10**6 + 1000}"
    # Ignores SIGTERM, and leaves a child in its group: only SIGKILL to the group ends both.
    install(trig / "auth.login", f"#!/bin/sh\ntrap '' TERM\nsleep {marker} &\n"
                                 f"echo hanging\nsleep {marker}\n")
    out = tmp_path / "out"
    recorder(trig / "sandbox.mappingSet", out)

    def sleepers() -> list[int]:
        found = []
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and Path(f"/proc/{pid}/cmdline").read_bytes() == \
                        f"sleep\0{marker}\0".encode():
                    found.append(int(pid))
            except OSError:
                continue
        return found

    async def main() -> None:
        async with AsyncExitStack() as stack:
            server = await serve(stack, tmp_path / "state", trigger_dir=str(trig),
                                 trigger_timeout=1.5, trigger_concurrency=1)
            began = time.monotonic()
            await login(stack, server, ALICE)  # fires the hanging script
            await wait_for(lambda: len(sleepers()) == 2, 10, "the script to start")
            admin = await login(stack, server, ADMIN)
            stub = server_pb2_grpc.ServerServiceStub(admin.channel)
            for _ in range(5):  # the server answers while the script hangs
                asked = time.monotonic()
                await stub.GetServerInfo(server_pb2.GetServerInfoRequest(), timeout=5)
                assert time.monotonic() - asked < 0.5
            await stub.SetSandboxMapping(server_pb2.SetSandboxMappingRequest(
                sandbox_mapping=server_pb2.SandboxMapping(
                    user=ALICE, resources=[server_pb2.SandboxResource(path=str(tmp_path))])),
                metadata=admin.auth)
            [later] = await wait_for(lambda: records(out, "sandbox.mappingSet"), 20)
            # Two logins (alice's, the admin's) ran the hanging script one after the other
            # (one worker): the change waited for both, and was not lost.
            waited = later["time"] - time.time() + time.monotonic() - began
            assert 2 * 1.5 <= waited < 2 * (1.5 + 2.0) + 2
            assert sleepers() == []
            timed = await stub.ListEvents(server_pb2.ListEventsRequest(
                owner="-", type="trigger.timedOut"), metadata=admin.auth)
            assert len(timed.events) == 2
            event = timed.events[0]
            assert event.severity == server_pb2.EVENT_SEVERITY_ERROR
            assert "killed after its timeout of 1.5 s" in event.message
            assert 1.5 + 2.0 <= float(event.attributes["seconds"]) < 1.5 + 2.0 + 1.0  # SIGKILL
            assert event.attributes["output"] == "hanging\n"
            assert event.attributes["event"] == "auth.login"
        log_text = (tmp_path / "state" / "triggers.log").read_text()
        assert "hanging" in log_text and "killed after its timeout" in log_text

    asyncio.run(main())


def test_unsafe_scripts_are_refused_with_a_clear_log_line(tmp_path, caplog):
    require_root(users=True)
    trig = make_trigger_dir(tmp_path / "trig")
    out = tmp_path / "out"
    script = recorder(trig / "auth.login", out)
    script.chmod(0o777)
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            server = await serve(stack, tmp_path / "state", trigger_dir=str(trig))
            await login(stack, server, ALICE)
            admin = await login(stack, server, ADMIN)
            stub = server_pb2_grpc.ServerServiceStub(admin.channel)

            async def refusals():
                reply = await stub.ListEvents(server_pb2.ListEventsRequest(
                    owner="-", type="trigger.refused"), metadata=admin.auth)
                return list(reply.events)

            for _ in range(100):
                refused = await refusals()
                if len(refused) >= 2:
                    break
                await asyncio.sleep(0.1)
            assert len(refused) == 2  # both logins
            assert f"run chmod go-w {script}" in refused[0].message
            assert records(out) == []
            lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            assert any(f"trigger {script} refused: {script} is writable by group and others "
                       "(mode 0777); run chmod go-w" in line for line in lines), lines

            # Fixed, and a new script added: the directory is read again by itself.
            script.chmod(0o755)
            recorder(trig / "sandbox.mappingSet", out)
            await asyncio.sleep(0.5)
            listed = await triggers_pb2_grpc.TriggerServiceStub(admin.channel).ListTriggers(
                triggers_pb2.ListTriggersRequest(), metadata=admin.auth)
            assert [t.runnable for t in listed.triggers] == [True, True]
            assert listed.triggers[0].last_run.outcome == triggers_pb2.TRIGGER_OUTCOME_REFUSED
            await login(stack, server, ALICE)
            await stub.SetSandboxMapping(server_pb2.SetSandboxMappingRequest(
                sandbox_mapping=server_pb2.SandboxMapping(
                    user=ALICE, resources=[server_pb2.SandboxResource(path=str(tmp_path))])),
                metadata=admin.auth)
            await wait_for(lambda: records(out, "auth.login") and
                           records(out, "sandbox.mappingSet"), 10)

    asyncio.run(main())


def test_a_full_queue_drops_runs_and_says_so(tmp_path):
    require_root()
    trig = make_trigger_dir(tmp_path / "trig")
    out = tmp_path / "out"
    recorder(trig / "auth.login", out)
    install(trig / "sandbox.mappingSet", "#!/bin/sh\nsleep 0.5\n")

    async def main() -> None:
        db = Database(tmp_path / "state")
        events = EventLog(db)
        watcher = DirWatcher()
        runner = TriggerRunner(TriggerSettings(trig, tmp_path / "t.log", timeout=10,
                                               concurrency=1, queue_size=2), events, watcher)
        runner.start()
        try:
            for n in range(6):  # two fit in the queue (the worker has not taken one yet)
                events.record("sandbox.mappingSet", f"change {n}", now=time.time())
            events.record("auth.login", "late login", now=time.time())
            await asyncio.sleep(1.3)
            dropped = db.query("SELECT * FROM events WHERE kind = 'trigger.dropped'")
            assert len(dropped) == 1 and '"count": "5"' in dropped[0]["attributes"]
            await wait_for(lambda: len(db.query(
                "SELECT * FROM events WHERE kind = 'trigger.complete'")) == 2, 10)
        finally:
            await runner.close()
            watcher.close()
            db.close()
        assert records(out) == []  # the login came after the queue was full: dropped too

    asyncio.run(main())


def test_a_missing_directory_is_awaited_without_reacting_to_its_neighbours(tmp_path, caplog):
    """Until the trigger directory exists its parent is watched for it alone: a log file
    written beside it (the server's own, say) must not make each line a rescan."""
    require_root()
    trig = tmp_path / "trig"
    out = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="jetstream.triggers")

    def rescans() -> int:
        return sum(1 for r in caplog.records if r.getMessage().startswith("trigger directory"))

    async def main() -> None:
        db = Database(tmp_path / "state")
        events = EventLog(db)
        watcher = DirWatcher()
        runner = TriggerRunner(TriggerSettings(trig, tmp_path / "t.log", timeout=10,
                                               concurrency=1, queue_size=10), events, watcher)
        runner.start()
        try:
            first = rescans()
            with open(tmp_path / "neighbour.log", "a") as log_file:
                for n in range(20):
                    log_file.write(f"line {n}\n")
                    log_file.flush()
                    await asyncio.sleep(0.03)
            await asyncio.sleep(0.3)
            assert rescans() == first
            make_trigger_dir(trig)
            recorder(trig / "auth.login", out)
            await wait_for(lambda: rescans() > first, 5)
            events.record("auth.login", "a login", now=time.time())
            await wait_for(lambda: records(out, "auth.login"), 10)
        finally:
            await runner.close()
            watcher.close()
            db.close()

    asyncio.run(main())
