"""The timer the service runs its chores on."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

from chargegraph.housekeeping import every, following, subscribed
from domain.events import DomainEvent, EventsDropped, SignInsCounted
from pubsub.memory import MemoryEventBus


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


async def test_a_subscription_followed_hears_from_its_entry_and_ends_with_the_block() -> None:
    """``subscribed`` (the instances' changes and sign-in counts): an event published
    before the consumer's task first ran is heard, one after a lost connection's marker
    too (the stream goes on), and the block's exit unsubscribes."""
    bus = MemoryEventBus()
    heard: list[object] = []
    second = asyncio.Event()

    async def consume(events: AsyncIterator[DomainEvent | EventsDropped]) -> None:
        async for event in events:
            heard.append(event)
            if len(heard) == 3:
                second.set()

    counted = [SignInsCounted(station_id=None, cp_id="", origin=str(i), counted=[])
               for i in range(2)]
    async with subscribed(bus, [SignInsCounted.topic], consume, "test-subscription"):
        await bus.publish(counted[0])  # its task has not run yet
        bus.interrupt()  # as the Redis bus does as its connection breaks
        await bus.publish(counted[1])
        await asyncio.wait_for(second.wait(), 5)
        assert bus.subscriber_count == 1
    assert bus.subscriber_count == 0
    marker, *events = heard  # the marker jumps the queue: read afresh from there
    assert isinstance(marker, EventsDropped) and marker.interrupted
    assert events == counted
