"""A login flood from many source addresses, and a legitimate user logging in during it.

Runs inside the client namespace of tests/security/test_login_flood.py: one local TCP
forwarder per source address (gRPC cannot choose its source address; the forwarder dials
the server from it), a paced stream of wrong logins through each (mode `flood`), or a
timed series of right logins from an address of its own (mode `legit`). Prints one JSON
document; the password of the legitimate user comes in $FLOOD_PASSWORD, never on the
command line.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import secrets
import sys
import time

import grpc
from grpc import aio

from jetstream.client.channel import Endpoint, open_aio_channel
from jetstream.v1 import auth_pb2, auth_pb2_grpc


async def forwarder(source_ip: str, server: str, port: int) -> int:
    """A local port whose connections reach the server from `source_ip`."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection(server, port,
                                                               local_addr=(source_ip, 0))
        await asyncio.gather(pipe(reader, upstream_w), pipe(upstream_r, writer))

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    return int(listener.sockets[0].getsockname()[1])


async def stub_from(source_ip: str, server: str, port: int) -> auth_pb2_grpc.AuthServiceStub:
    local_port = await forwarder(source_ip, server, port)
    channel, _ = await open_aio_channel(Endpoint("127.0.0.1", local_port))
    return auth_pb2_grpc.AuthServiceStub(channel)


async def attempt(stub: auth_pb2_grpc.AuthServiceStub, user: str, password: str
                  ) -> tuple[str, str]:
    try:
        await stub.Login(auth_pb2.LoginRequest(username=user, password=password), timeout=30)
    except aio.AioRpcError as err:
        return err.code().name, err.details() or ""
    return grpc.StatusCode.OK.name, ""


async def flood_from(stub, victim: str, rate: float, until: float,
                     outcomes: list[tuple[str, str, str]], address: str) -> None:
    """Wrong logins at `rate` per second, alternating the victim and names that do not exist."""
    in_flight: set[asyncio.Task[None]] = set()
    n = 0

    async def one(user: str) -> None:
        code, details = await attempt(stub, user, secrets.token_urlsafe(12))
        outcomes.append((address, code, details))

    while time.monotonic() < until:
        if len(in_flight) < 16:
            user = victim if n % 2 == 0 else f"jsnobody{secrets.token_hex(4)}"
            task = asyncio.create_task(one(user))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            n += 1
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*in_flight)


async def timed_logins(stub, user: str, password: str, count: int, gap: float) -> list[float]:
    times = []
    for _ in range(count):
        started = time.monotonic()
        code, details = await attempt(stub, user, password)
        if code != "OK":
            raise SystemExit(f"the legitimate login failed: {code} {details}")
        times.append(time.monotonic() - started)
        await asyncio.sleep(gap)
    return times


async def legit(plan: dict) -> dict:
    """Right logins from the legitimate address, timed (a process of its own, so the flood's
    work in the client does not count against the server)."""
    stub = await stub_from(plan["legit_address"], plan["server"], plan["port"])
    password = os.environ["FLOOD_PASSWORD"]
    await timed_logins(stub, plan["user"], password, 1, 0)  # TLS and PAM warm
    return {"seconds": await timed_logins(stub, plan["user"], password, plan["samples"],
                                          plan["gap"])}


async def flood(plan: dict) -> dict:
    server, port = plan["server"], plan["port"]
    stubs = [await stub_from(a, server, port) for a in plan["flood_addresses"]]
    outcomes: list[tuple[str, str, str]] = []
    started = time.monotonic()
    until = started + plan["seconds"]
    await asyncio.gather(*(flood_from(s, plan["user"], plan["rate"], until, outcomes, a)
                           for s, a in zip(stubs, plan["flood_addresses"], strict=True)))
    by_address = collections.Counter(a for a, code, _ in outcomes if code == "UNAUTHENTICATED")
    return {
        "attempts": len(outcomes),
        "seconds": round(time.monotonic() - started, 1),
        "addresses": len({a for a, _, _ in outcomes}),
        "outcomes": collections.Counter(f"{c}: {d}" for _, c, d in outcomes).most_common(),
        "reached_pam_max_per_address": max(by_address.values(), default=0),
        "reached_pam": sum(by_address.values()),
    }


if __name__ == "__main__":
    mode, plan = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(asyncio.run({"flood": flood, "legit": legit}[mode](plan))))
