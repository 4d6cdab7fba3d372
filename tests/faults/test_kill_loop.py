"""kill -9 of the sender, then of the receiver, at 5 random points each of one 1 GiB
transfer: it always resumes from its checkpoint, re-sends at most 10 % per kill, and the
file arrives identical (root: real server processes, real PAM users)."""

from __future__ import annotations

import asyncio
import random
import signal
from contextlib import AsyncExitStack

from jetstream.v1 import common_pb2
from tests.faults.helpers import (
    FAST_CHECKPOINTS,
    T,
    run_until,
    server,
    sha256,
    write_random_file,
)
from tests.system.users import ALICE, require_root
from tests.transfers.helpers import (
    destination_to,
    login,
    manifest_of,
    owned_dir,
    push,
    remove,
    wait_terminal,
)

SIZE = 1 << 30
KILLS = 5


def resumed_after(now: T.Transfer, before: T.Transfer) -> bool:
    """The attempt after `before` has said what the receiver kept (bytes_resumed, set
    when the file starts), or has clearly moved on without anything kept."""
    if now.attempt_count <= before.attempt_count:
        return False
    p = now.progress
    return p.bytes_resumed > 0 or p.bytes_done > before.progress.bytes_done + SIZE // 20


def test_kill_9_at_random_points_of_one_transfer(tmp_path):
    require_root(users=True)
    src, dst = owned_dir(ALICE, "js-src-"), owned_dir(ALICE, "js-dst-")
    write_random_file(src / "big.bin", SIZE, ALICE)
    a, b = server(tmp_path, "a", "--data-idle-timeout", "3").start(), \
        server(tmp_path, "b", "--data-idle-timeout", "3").start()
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    points = sorted(rng.uniform(0.05, 0.95) for _ in range(2 * KILLS))
    victims = [a] * KILLS + [b] * KILLS  # the sender's five kills, then the receiver's
    kills: list[dict[str, object]] = []

    async def main() -> common_pb2.TransferState:
        async with AsyncExitStack() as stack:
            api = await login(stack, a.api_port, ALICE)
            transfer = await push(api, await destination_to(api, b.api_port, ALICE),
                                  await manifest_of(api, src / "big.bin"), str(dst),
                                  checkpoint_interval=FAST_CHECKPOINTS)
        for point, victim in zip(points, victims, strict=True):
            async with AsyncExitStack() as stack:
                api = await login(stack, a.api_port, ALICE)
                at = await run_until(api, transfer.name,
                                     lambda t, p=point: t.progress.bytes_done >= p * SIZE)
            victim.signal(signal.SIGKILL)
            victim.wait(timeout=10)
            victim.start()
            async with AsyncExitStack() as stack:
                api = await login(stack, a.api_port, ALICE)
                again = await run_until(api, transfer.name,
                                        lambda t, before=at: resumed_after(t, before))
            kills.append({"side": "sender" if victim is a else "receiver", "at": point,
                          "done_before": at.progress.bytes_done,
                          "resumed": again.progress.bytes_resumed})
        async with AsyncExitStack() as stack:
            api = await login(stack, a.api_port, ALICE)
            done = await wait_terminal(api, transfer.name, timeout=300)
        assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error
        return done.state

    try:
        asyncio.run(main())
        for kill in kills:
            # Progress is sampled, so what the receiver kept may exceed the last sample.
            kill["resent"] = max(0, int(kill["done_before"]) - int(kill["resumed"]))  # type: ignore[call-overload]
            print(f"kill -9 of the {kill['side']} at {kill['at']:.0%}: "
                  f"re-sent {int(kill['resent']) / SIZE:.1%}")  # type: ignore[call-overload]
        assert sha256(dst / "big.bin") == sha256(src / "big.bin"), f"seed {seed}"
        assert not list(dst.rglob("*.part"))
        for kill in kills:
            assert int(kill["resent"]) <= SIZE // 10, (seed, kill)  # type: ignore[call-overload]
    finally:
        a.stop()
        b.stop()
        remove(src, dst)
