"""The timer the service runs its chores on."""

from __future__ import annotations

import asyncio
import inspect

from chargegraph.housekeeping import every, following


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


async def test_work_left_before_its_task_ran_is_closed_not_left_unawaited() -> None:
    """A start failing at once leaves the block before the work's task first runs
    (review s31): the work is closed, not left to the collector's "never awaited"."""
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    coroutine = work()
    async with following(coroutine, "test-work"):
        pass
    assert not ran and inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
