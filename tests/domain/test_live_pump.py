"""The live pump hands an event to many watchers without holding the loop for all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from domain.events import ConnectorStatusChanged
from domain.policy import SYSTEM, Policy
from domain.services import ServiceContext
from domain.services.live import HAND_OUT_SLICE, LiveService
from pubsub.memory import MemoryEventBus
from tests.helpers import FastHasher


async def test_a_hand_out_to_many_watchers_lets_the_loop_run_in_between() -> None:
    """Each watcher gets the event, in the order they watch; but after every
    ``HAND_OUT_SLICE`` deliveries the pump lets whatever else is ready run (a charger's
    frame, a query's next step), rather than the whole hand-out in one loop turn."""
    bus = MemoryEventBus()
    live = LiveService(ServiceContext(store=None, policy=Policy(),  # type: ignore[arg-type]
                                      hasher=FastHasher(), bus=bus))
    turns = 0
    got: list[tuple[int, int]] = []  # (watcher, loop turn it got the event in)
    watchers = 3 * HAND_OUT_SLICE + 1
    def watcher(number: int) -> Callable[[object], None]:
        return lambda event: got.append((number, turns))

    for number in range(watchers):
        live.watch(SYSTEM, [ConnectorStatusChanged.topic], watcher(number), lambda: None)

    async def ticking() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(ticking())
    await bus.publish(ConnectorStatusChanged(station_id="s", cp_id="CP", company_id=None,
                                             owner_id=None, connector_record_id=None,
                                             connector_id=1,
                                             status="Available"))
    for _ in range(100):
        if len(got) == watchers:
            break
        await asyncio.sleep(0)
    ticker.cancel()
    assert [number for number, _ in got] == list(range(watchers))
    spans = [turn for _, turn in got]
    assert len(set(spans)) == 4  # four slices, other work ran between them
    assert all(spans.count(turn) <= HAND_OUT_SLICE for turn in set(spans))
    await bus.close()
