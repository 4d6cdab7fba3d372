"""kill -9 of the sender, then of the receiver, at 5 random points each of one 1 GiB
transfer: it always resumes from its checkpoint, re-sends at most one flow-control window
per kill (64 MiB, 6.25 %: the credit for a large file's bytes waits for the checkpoint that
makes them durable; the requirement is 10 %), and the file arrives identical (root: real
server processes, real PAM users).

What each attempt found at the receiver is read from the sender's log ("the receiver holds
N of its M bytes", one line per attempt of a large file): sampled progress cannot tell
one attempt's figures from the next one's."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import time
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path

from jetstream.datachannel.config import DataChannelConfig
from jetstream.v1 import common_pb2
from tests.faults.helpers import FAST_CHECKPOINTS, run_until, server
from tests.system.users import ALICE, require_root
from tests.transfers.helpers import (
    destination_to,
    file_sha256,
    login,
    manifest_of,
    owned_dir,
    push,
    remove,
    wait_terminal,
    write_random_file,
)

SIZE = 1 << 30
KILLS = 5
RESEND_LIMIT = DataChannelConfig().flow_control_window + SIZE // 100
"""One window, and 1 % for the control records sent meanwhile and for rounding."""
HELD = re.compile(r"^(\S+ \S+) INFO \S+: sending big\.bin: the receiver holds (\d+) of")


def holdings(log: Path) -> list[tuple[float, int]]:
    """(time, bytes the receiver held) at the start of each attempt, from the sender's log."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        match = HELD.match(line)
        if match:
            stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((stamp, int(match[2])))
    return found


async def next_attempt(log: Path, after: float) -> int:
    """What the first attempt that starts after `after` found at the receiver."""
    async with asyncio.timeout(120):
        while True:
            later = [held for stamp, held in holdings(log) if stamp > after]
            if later:
                return later[0]
            await asyncio.sleep(0.05)


def test_kill_9_at_random_points_of_one_transfer(tmp_path):
    require_root(users=True)
    src, dst = owned_dir(ALICE, "js-src-"), owned_dir(ALICE, "js-dst-")
    write_random_file(src / "big.bin", SIZE, ALICE)
    a, b = server(tmp_path, "a", "--data-idle-timeout", "3").start(), \
        server(tmp_path, "b", "--data-idle-timeout", "3").start()
    seed = int(os.environ.get("JETSTREAM_KILL_SEED") or random.randrange(1 << 32))
    print(f"kill points from seed {seed} (JETSTREAM_KILL_SEED repeats them)")
    rng = random.Random(seed)
    points = sorted(rng.uniform(0.05, 0.95) for _ in range(2 * KILLS))
    victims = [a] * KILLS + [b] * KILLS  # the sender's five kills, then the receiver's
    kills: list[tuple[str, float, int, int]] = []

    async def main() -> None:
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
            killed_at = time.time()
            victim.signal(signal.SIGKILL)
            victim.wait(timeout=10)
            victim.start()
            held = await next_attempt(a.log_path, killed_at)
            kills.append(("sender" if victim is a else "receiver", point,
                          at.progress.bytes_done, held))
        async with AsyncExitStack() as stack:
            api = await login(stack, a.api_port, ALICE)
            done = await wait_terminal(api, transfer.name, timeout=300)
        assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error

    try:
        asyncio.run(main())
        # Progress is sampled, so the receiver may hold more than the last sample said.
        resent = [max(0, before - held) for _side, _point, before, held in kills]
        for (side, point, _before, _held), again in zip(kills, resent, strict=True):
            print(f"kill -9 of the {side} at {point:.0%}: re-sent {again / SIZE:.1%}")
        assert file_sha256(dst / "big.bin") == file_sha256(src / "big.bin"), f"seed {seed}"
        assert not list(dst.rglob("*.part"))
        assert max(resent) <= RESEND_LIMIT, (seed, kills)
    finally:
        a.stop()
        b.stop()
        remove(src, dst)
