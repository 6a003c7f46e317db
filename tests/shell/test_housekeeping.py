"""The timer the service runs its chores on."""

from __future__ import annotations

import asyncio

from chargegraph.housekeeping import every


async def test_a_chore_runs_at_once_again_after_a_failure_and_stops_with_the_block(
        ) -> None:
    rounds: list[int] = []
    third = asyncio.Event()

    async def chore() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("the database is out of reach")
        if len(rounds) == 3:
            third.set()

    async with every(0.001, chore, "test-chore"):
        await asyncio.wait_for(third.wait(), 5)
    done = len(rounds)
    await asyncio.sleep(0.01)
    assert done >= 3 and len(rounds) == done  # nothing ran after the block
