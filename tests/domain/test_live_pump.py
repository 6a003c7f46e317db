"""The live pump hands an event to many watchers without holding the loop for all of them,
and a watcher's topics in the order they were published."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from domain.entities import Role
from domain.events import ConnectorStatusChanged, StationConnectionChanged, StationSightChanged
from domain.policy import SYSTEM, Policy, Viewer
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


async def test_a_map_gets_a_station_joining_before_its_charger_disconnects() -> None:
    """Two stations join the map (X, then Y), then Y's charger disconnects: every map
    ends with Y offline. With one pump per topic, a map past the first hand-out slice got
    Y's disconnect (the connection pump idle) before Y's joining online (the sight pump
    still handing out X's), and showed Y online for ever (review s25)."""
    bus = MemoryEventBus()
    live = LiveService(ServiceContext(store=None, policy=Policy(public_map=True),  # type: ignore[arg-type]
                                      hasher=FastHasher(), bus=bus))
    maps: list[dict[str, bool]] = []

    def watcher(state: dict[str, bool]) -> Callable[[object], None]:
        def deliver(event: object) -> None:
            if isinstance(event, StationConnectionChanged | StationSightChanged):
                state[event.station_id or ""] = event.online
        return deliver

    for number in range(2 * HAND_OUT_SLICE + 88):  # a thousand maps is what it is sized for
        state: dict[str, bool] = {}
        maps.append(state)
        driver = Viewer(user_id=f"driver-{number}", role=Role.DRIVER)
        live.watch(driver, [StationConnectionChanged.topic, StationSightChanged.topic],
                   watcher(state), lambda: None)
    await asyncio.sleep(0)

    def joined(station: str) -> StationSightChanged:
        return StationSightChanged(station_id=station, cp_id=f"CP-{station}",
                                   company_id="A", on_map=True, was_company_id="A",
                                   was_on_map=False, joined=True, online=True)

    await bus.publish(joined("X"))
    await bus.publish(joined("Y"))
    await bus.publish(StationConnectionChanged(station_id="Y", cp_id="CP-Y", company_id="A",
                                               on_map=True, online=False))
    for _ in range(200):
        await asyncio.sleep(0)
    assert all("Y" in state for state in maps)
    wrong = [number for number, state in enumerate(maps) if state["Y"]]
    assert wrong == [], f"{len(wrong)} of {len(maps)} maps show Y online"
    await bus.close()
