"""A flapping charger does not page its operators: ``station.offline`` is delivered only
once the charger has stayed offline for the grace (dated when it went offline), and
``station.online`` only after a delivered one. Decided through the store, so it holds
across instances and restarts; grace 0 delivers both at once, as before."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from chargegraph.webhooks import WebhookDispatcher
from domain import entities as d
from domain.clock import utcnow
from domain.events import StationConnectionChanged
from domain.policy import SYSTEM
from domain.query import ALL, Eq
from domain.services import Services
from domain.wire import rfc3339
from pubsub.memory import MemoryEventBus
from store.sqlite import SqliteStore
from tests.helpers import until
from tests.webhooks.conftest import World, new_services, two_instances
from tests.webhooks.receiver import Receiver

BOTH = ("station.offline", "station.online")


class ManualClock:
    """The services' clock, moved by hand: a grace passes without waiting for it."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def on_test_clock(*services: Services) -> ManualClock:
    clock = ManualClock()
    for each in services:
        each.ctx.clock = clock
    return clock


async def connect(services: Services, instance: str = "i1") -> int:
    connected = await services.charging.connect("CP-1", instance=instance)
    assert connected is not None and connected.newest
    return connected.number


async def disconnect(services: Services, number: int) -> datetime:
    at = await services.charging.disconnect("CP-1", number=number)
    assert at is not None
    return at


async def notices(world: World) -> list[d.OfflineNotice]:
    return await world.store.find_all(d.OfflineNotice, ALL)


def kinds(receiver: Receiver) -> list[str]:
    return [r.json["type"] for r in receiver.requests]


async def test_a_flap_within_the_grace_delivers_nothing(world: World) -> None:
    """Gone and back within the grace: no webhook at all, and the outage is settled
    (nothing left pending to be announced later)."""
    await world.dispatcher(offline_grace=60)
    receiver = await world.receiver()
    await world.webhook("op", receiver, *BOTH)
    number = await connect(world.services)
    await disconnect(world.services, number)
    await world.settled()
    assert [n.state for n in await notices(world)] == [d.NoticeState.PENDING]

    await connect(world.services)
    await world.settled()
    assert receiver.requests == []
    assert await notices(world) == []


async def test_an_outage_past_the_grace_is_announced_dated_at_the_disconnect(
        world: World) -> None:
    """Offline for longer than the grace: ``station.offline`` once the grace has passed,
    carrying when the charger went (not when it was delivered), then ``station.online``
    when it is back."""
    clock = on_test_clock(world.services)
    dispatcher = await world.dispatcher(offline_grace=60)
    receiver = await world.receiver()
    await world.webhook("op", receiver, *BOTH)
    number = await connect(world.services)
    clock.advance(5)
    went = await disconnect(world.services, number)
    await world.settled()
    clock.advance(30)
    await dispatcher.announce_due()  # what every instance does every few seconds
    await world.settled()
    assert receiver.requests == []  # half the grace: not yet

    clock.advance(31)
    await dispatcher.announce_due()
    await world.settled()
    assert kinds(receiver) == ["station.offline"]
    [offline] = receiver.requests
    assert offline.json["at"] == rfc3339(went) != rfc3339(clock.now)
    assert offline.json["data"]["online"] is False and offline.json["data"]["cpId"] == "CP-1"

    back = clock.advance(10)
    await connect(world.services)
    await world.settled()
    assert kinds(receiver) == ["station.offline", "station.online"]
    assert receiver.requests[1].json["at"] == rfc3339(back)
    assert await notices(world) == []


async def test_an_outage_past_the_grace_ending_before_it_was_announced_is_told_whole(
        world: World) -> None:
    """A charger back after the grace, before any instance got to announce its outage
    (they were all stopped): its connection delivers both, the offline first and dated
    at the disconnect, as if it had been announced in time."""
    clock = on_test_clock(world.services)
    await world.dispatcher(offline_grace=60)
    receiver = await world.receiver()
    await world.webhook("op", receiver, *BOTH)
    went = await disconnect(world.services, await connect(world.services))
    await world.settled()
    clock.advance(61)
    await connect(world.services)
    await world.settled()
    assert kinds(receiver) == ["station.offline", "station.online"]
    assert receiver.requests[0].json["at"] == rfc3339(went)


async def test_grace_zero_delivers_both_at_once_as_before(world: World) -> None:
    await world.dispatcher(offline_grace=0)
    receiver = await world.receiver()
    await world.webhook("op", receiver, *BOTH)
    number = await connect(world.services)
    went = await disconnect(world.services, number)
    await connect(world.services)
    await world.settled()
    assert kinds(receiver) == ["station.online", "station.offline", "station.online"]
    assert receiver.requests[1].json["at"] == rfc3339(went)
    assert await notices(world) == []  # nothing stored to decide


async def test_a_station_removed_offline_is_no_second_outage(world: World) -> None:
    """QA s30: a station removed while its charger is offline is told offline to live
    maps, so that they drop it; no charger went anywhere, so no webhook hears of an
    outage (it had its own, when its charger went). Its plug is told gone, as a plug
    removed is."""
    await world.dispatcher(offline_grace=0)
    receiver = await world.receiver()
    await world.webhook("op", receiver, *BOTH, "connector.status_changed")
    await disconnect(world.services, await connect(world.services))
    [station] = await world.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    await world.services.stations.remove_station(SYSTEM, station.id)
    await world.settled()
    assert kinds(receiver) == ["station.online", "station.offline",
                               "connector.status_changed"]
    assert receiver.requests[2].json["data"]["status"] == "Unavailable"


async def test_a_pending_outage_survives_a_restart_within_the_grace(world: World) -> None:
    """The instance that saw the charger go stops within the grace: the outage was
    stored, and the next start announces it once it is due."""
    receiver = await world.receiver()
    await world.webhook("op", receiver, *BOTH)
    # The first process, with a store of its own on the same file, stopped as the app
    # stops it: delivery, then the store, right after the charger went.
    own_store = SqliteStore(world.store.path)
    await own_store.start()
    stopping = new_services(own_store, world.bus)
    clock = on_test_clock(stopping)
    first = WebhookDispatcher(stopping, allow_private=True, offline_grace=60)
    await first.start()
    went = await disconnect(stopping, await connect(stopping))
    await first.close()
    await own_store.close()

    clock.advance(61)
    restarted = new_services(world.store, world.bus)
    restarted.ctx.clock = clock
    await world.dispatcher(restarted, offline_grace=60)  # announces what is due at start
    await world.settled()
    assert kinds(receiver) == ["station.offline"]
    assert receiver.requests[0].json["at"] == rfc3339(went)


async def test_one_outage_is_announced_once_whoever_looks(world: World) -> None:
    """Two instances look for due outages at the same moment: one wins the notice."""
    notices_ = world.services.offline_notices
    number = await connect(world.services)
    went = await disconnect(world.services, number)
    [station] = await world.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    await notices_.hold(StationConnectionChanged(
        station_id=station.id, cp_id="CP-1", online=False, at=went, connection=number))
    [notice] = await notices_.due(timedelta(0))
    assert notice.offline_at == went
    first = await notices_.announce(notice)
    assert first is not None and first.at == went and not first.online
    assert await notices_.announce(notice) is None


async def test_a_charger_back_on_another_instance(tmp_path: Path) -> None:
    """Two instances on one database and one bus (as behind Redis), each delivering
    what it publishes. A flap from the first to the second delivers nothing; an outage
    past the grace is announced once (both instances look for it), by either, and the
    connection on the second instance delivers its ``station.online``."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver()
        await world.webhook("op", receiver, *BOTH)
        # A short grace, looked at often: this test waits for it (well under a second).
        await world.dispatcher(first, offline_grace=0.3, sweep_s=0.02)
        await world.dispatcher(second, offline_grace=0.3, sweep_s=0.02)
        for dispatcher in world.dispatchers:
            await dispatcher.refresh()

        number = await connect(first, "i1")
        await disconnect(first, number)
        await world.settled()
        number = await connect(second, "i2")  # back within the grace, elsewhere
        await world.settled()
        assert await notices(world) == []
        assert receiver.requests == []

        went = await disconnect(second, number)

        async def announced() -> bool:
            return bool(receiver.requests)
        await until(announced)
        await connect(first, "i1")  # back, on the other instance

        async def back() -> bool:
            return len(receiver.requests) >= 2
        await until(back)
        await world.settled()
        assert kinds(receiver) == ["station.offline", "station.online"]
        assert receiver.requests[0].json["at"] == rfc3339(went)
        assert await notices(world) == []


async def test_a_real_charger_flapping_over_ocpp_pages_nobody(tmp_path: Path) -> None:
    """A charger whose websocket drops and comes back (a flaky modem), through the OCPP
    server: the live subscription hears every change, the webhook nothing."""
    from domain.policy import Viewer
    from ocpp_bridge.simulator import connected
    from tests.ocpp.conftest import seed as seed_central
    from tests.ocpp.conftest import start_central, stop_central

    bus = MemoryEventBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    receiver = await Receiver().start()
    dispatcher = WebhookDispatcher(central.services, allow_private=True, offline_grace=60)
    await dispatcher.start()
    try:
        await seed_central(central)
        central.services.webhooks.allow_private = True
        await central.services.webhooks.create_webhook(
            Viewer.of(central.users["op"]), url=receiver.url, events=list(BOTH))
        live = bus.subscribe([StationConnectionChanged.topic])
        for _ in range(3):
            async with connected(central.url, "CP-1", password="station-password-1") as cp:
                await cp.boot()
        heard = [await anext(live) for _ in range(6)]

        async def settled() -> bool:
            stored = await central.store.find_all(d.OfflineNotice, ALL)
            return dispatcher.idle and [n.state for n in stored] == [d.NoticeState.PENDING]
        await until(settled)  # the last outage waits out its grace; the others are closed
    finally:
        await dispatcher.close()
        await receiver.close()
        await stop_central(central)
        await bus.close()
    assert [isinstance(e, StationConnectionChanged) and e.online for e in heard] == \
        [True, False] * 3
    assert receiver.requests == []
