"""The PAM admission lanes: clean addresses first, no slot lost to cancellation."""

from __future__ import annotations

import asyncio

from jetstream.auth.pam import _Lanes
from jetstream.auth.throttle import Standing

TRUSTED, UNKNOWN, SUSPECT = Standing


def test_waiters_go_by_standing_and_each_lane_keeps_its_order():
    async def main() -> list[str]:
        lanes, order = _Lanes(1), []
        release = asyncio.Event()

        async def holder() -> None:
            async with lanes.slot(UNKNOWN):
                await release.wait()

        async def waiter(name: str) -> None:
            async with lanes.slot({"s": SUSPECT, "u": UNKNOWN, "t": TRUSTED}[name[0]]):
                order.append(name)

        first = asyncio.create_task(holder())
        await asyncio.sleep(0)
        tasks = [asyncio.create_task(waiter(n)) for n in ("s1", "u1", "s2", "t1", "u2", "t2")]
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, *tasks)
        return order

    assert asyncio.run(main()) == ["t1", "t2", "u1", "u2", "s1", "s2"]


def test_suspect_addresses_hold_at_most_a_quarter_of_the_slots():
    async def main() -> tuple[int, int]:
        lanes = _Lanes(8)
        hold = asyncio.Event()
        running = {"suspect": 0, "peak": 0}

        async def guess() -> None:
            async with lanes.slot(SUSPECT):
                running["suspect"] += 1
                running["peak"] = max(running["peak"], running["suspect"])
                await hold.wait()
                running["suspect"] -= 1

        guesses = [asyncio.create_task(guess()) for _ in range(10)]
        await asyncio.sleep(0)
        admitted = asyncio.Event()

        async def user() -> None:
            async with lanes.slot(UNKNOWN):
                admitted.set()

        await asyncio.wait_for(asyncio.create_task(user()), 1)  # a slot stayed free
        hold.set()
        await asyncio.gather(*guesses)
        return running["peak"], lanes._free

    assert asyncio.run(main()) == (2, 8)


def test_a_cancelled_waiter_gives_back_nothing_it_did_not_take():
    async def main() -> int:
        lanes = _Lanes(4)
        hold = asyncio.Event()

        async def user(standing: Standing) -> None:
            async with lanes.slot(standing):
                await hold.wait()

        running = [asyncio.create_task(user(UNKNOWN)) for _ in range(2)]
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(user(SUSPECT)) for _ in range(3)]
        await asyncio.sleep(0)
        waiting[1].cancel()
        hold.set()
        await asyncio.gather(*running, *waiting, return_exceptions=True)
        return lanes._free, lanes._suspect_free

    assert asyncio.run(main()) == (4, 1)
