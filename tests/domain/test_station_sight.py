"""A station handed over or taken off the map leaves and joins live maps
(``StationSightChanged``): in the right order, with its connection as it is, whatever
else happens to the station meanwhile; and a plug removed leaves them without outranking
what its charger reports next (review s25)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.clock import utcnow
from domain.entities import Company, Connector, Role, Session, Station
from domain.errors import NotFound, StoreUnavailable
from domain.events import (
    ConnectorStatusChanged,
    DomainEvent,
    EventsDropped,
    FaultReported,
    StationConnectionChanged,
    StationRemoved,
    StationSightChanged,
)
from domain.policy import SYSTEM, Policy, Viewer
from domain.ports import Update
from domain.query import Eq
from domain.services import ConnectorSpec, ServiceContext, Services
from domain.services.base import owned_by, patch
from domain.services.live import LiveService, SightOrder
from pubsub import codec
from pubsub.memory import MemoryEventBus
from store.mongo import MongoStore
from store.sqlite import SqliteStore
from tests.helpers import FastHasher
from tests.support.mongomock_async import async_mongomock_database

CP = "CP-SIGHT"
TOPICS = [StationConnectionChanged.topic, StationSightChanged.topic]


@dataclass
class World:
    services: Services
    companies: list[Company]
    station_id: str


@pytest.fixture(params=["sqlite", "mongo"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """Companies Alpha, Beta and Gamma; Alpha's station, its charger online."""
    store = SqliteStore(str(tmp_path / "s.db")) if request.param == "sqlite" \
        else MongoStore(async_mongomock_database(), sweep_every=None)
    await store.start()
    bus = MemoryEventBus()
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                       bus=bus))
    try:
        companies = [await services.accounts.create_company(SYSTEM, name=name)
                     for name in ("Alpha", "Beta", "Gamma")]
        station, _ = await services.stations.create_station(
            SYSTEM, cp_id=CP, name="Potsdam", company_id=companies[0].id,
            connectors=[ConnectorSpec(1, max_kw=50)])
        await services.charging.set_online(CP, True)
        yield World(services, companies, station.id)
    finally:
        await bus.close()
        await store.close()


def operator_of(company: Company) -> Viewer:
    return Viewer(user_id=f"op-{company.name}", role=Role.OPERATOR, company_id=company.id)


async def told(events: AsyncIterator[Any]) -> list[Any]:
    """What a subscription got until it went quiet."""
    got: list[Any] = []
    while True:
        try:
            got.append(await asyncio.wait_for(events.__anext__(), 0.3))
        except (TimeoutError, StopAsyncIteration):
            return got


def after_the_edits_write(world: World, then: Callable[[], Any]) -> None:
    """Runs ``then`` once, right after the next station edit's write, before the edit
    announces who sees the station now."""
    stations = world.services.stations
    changed = stations._changed
    ran = False

    async def hooked(*args: Any, **kw: Any) -> None:
        nonlocal ran
        await changed(*args, **kw)
        if not ran:
            ran = True
            await then()

    stations._changed = hooked  # type: ignore[method-assign]


async def test_a_disconnect_during_a_handover_leaves_the_new_company_map_offline(
        world: World) -> None:
    """The handed-over station's charger disconnects right after the edit's write: the
    new company is told it offline, and not, last, that it joined online (the edit's
    own read said online)."""
    _, beta, _ = world.companies
    events = world.services.live.events(operator_of(beta), TOPICS)
    after_the_edits_write(world, lambda: world.services.charging.set_online(CP, False))
    await world.services.stations.update_station(SYSTEM, world.station_id,
                                                 company_id=beta.id)
    got = [event.online for event in await told(events)]
    assert got and got[-1] is False, f"Beta's map was told {got}"


async def test_two_handovers_in_a_row_leave_the_middle_company_without_the_station(
        world: World) -> None:
    """One admin hands the station Alpha->Beta; another, a moment later, Beta->Gamma,
    announced first. Beta is not left holding Gamma's station, online (told after it
    left), nor Alpha; Gamma holds it."""
    _, beta, gamma = world.companies
    streams = {c.name: world.services.live.events(operator_of(c), TOPICS)
               for c in world.companies}
    after_the_edits_write(world, lambda: world.services.stations.update_station(
        SYSTEM, world.station_id, company_id=gamma.id))
    await world.services.stations.update_station(SYSTEM, world.station_id,
                                                 company_id=beta.id)
    got = {name: [(e.joined, e.online) for e in await told(stream)]
           for name, stream in streams.items()}
    assert got["Beta"] and got["Beta"][-1] == (False, False), got
    assert got["Alpha"] and got["Alpha"][-1] == (False, False), got
    assert got["Gamma"] and got["Gamma"][-1] == (True, True), got


def handed_to_while_read(world: World, company: Company) -> None:
    """The charger's next connect or disconnect reads its station, and right then (before
    its write) an admin hands the station to ``company``."""
    charging = world.services.charging
    read = charging.station
    done = False

    async def hooked(cp_id: str) -> Any:
        nonlocal done
        got = await read(cp_id)
        if not done:
            done = True
            await world.services.stations.update_station(SYSTEM, world.station_id,
                                                         company_id=company.id)
        return got

    charging.station = hooked  # type: ignore[method-assign]


async def test_a_disconnect_read_before_a_handover_reaches_the_new_company(
        world: World) -> None:
    """The charger's socket closes; its disconnect reads the station (Alpha's), and while
    it writes an admin hands the station to Beta. The disconnect, published after the
    handover's "joined, online" with Alpha's ownership, is Beta's: Beta's map does not
    keep the station online for good, and Alpha, told it left, is told nothing after."""
    alpha, beta, _ = world.companies
    [station] = await world.services.ctx.store.find_all(Station, Eq("cp_id", CP))
    streams = {c.name: world.services.live.events(operator_of(c), TOPICS)
               for c in (alpha, beta)}
    handed_to_while_read(world, beta)
    assert await world.services.charging.disconnect(CP, number=station.connection)
    [after] = await world.services.ctx.store.find_all(Station, Eq("cp_id", CP))
    assert (after.company_id, after.online) == (beta.id, False)
    got = {name: [(type(e).__name__, e.online) for e in await told(stream)]
           for name, stream in streams.items()}
    assert got["Beta"] and got["Beta"][-1] == ("StationConnectionChanged", False), got
    assert got["Alpha"] == [("StationSightChanged", False)], got


async def test_a_reconnect_read_before_a_handover_reaches_the_new_company(
        world: World) -> None:
    """The same with the charger connecting again: Beta's map, told the station joined
    offline, is told it came online; Alpha, told it left, is told nothing after."""
    alpha, beta, _ = world.companies
    await world.services.charging.set_online(CP, False)
    streams = {c.name: world.services.live.events(operator_of(c), TOPICS)
               for c in (alpha, beta)}
    handed_to_while_read(world, beta)
    assert await world.services.charging.set_online(CP, True)
    [after] = await world.services.ctx.store.find_all(Station, Eq("cp_id", CP))
    assert (after.company_id, after.online) == (beta.id, True)
    got = {name: [(type(e).__name__, e.online) for e in await told(stream)]
           for name, stream in streams.items()}
    assert got["Beta"] == [("StationSightChanged", False),
                           ("StationConnectionChanged", True)], got
    assert got["Alpha"] == [("StationSightChanged", False)], got


async def test_a_handover_is_done_when_its_announcement_cannot_read_the_station(
        world: World) -> None:
    """The store stumbles right after the handover's write (a failover): the edit has
    committed, so the admin is not told it failed, what follows it still runs (the site
    it left shares its power again), and maps are told the handover all the same."""
    alpha, beta, _ = world.companies
    services = world.services
    site = await services.sites.create_site(SYSTEM, name="Depot", max_power_kw=100,
                                            company_id=alpha.id)
    await services.sites.assign_station(SYSTEM, world.station_id, site.id)
    stations, store = services.stations, services.ctx.store
    left: list[str] = []
    stations.on_site_left = left.append
    events = services.live.events(operator_of(beta), TOPICS)
    get_many = store.get_many
    armed = False

    async def failing_get_many(kind: Any, ids: Any, *a: Any, **kw: Any) -> Any:
        if armed and kind is Station:  # every read of it until the edit returns
            raise StoreUnavailable("the store did not answer", reason="failover")
        return await get_many(kind, ids, *a, **kw)

    def arm() -> Any:
        nonlocal armed
        armed = True
        return asyncio.sleep(0)

    store.get_many = failing_get_many  # type: ignore[method-assign]
    after_the_edits_write(world, arm)
    try:
        updated = await stations.update_station(SYSTEM, world.station_id,
                                                company_id=beta.id)
    finally:
        armed = False
    [stored] = await store.find_all(Station, Eq("id", world.station_id))
    assert updated.company_id == stored.company_id == beta.id
    assert left == [site.id]
    assert [(e.joined, e.online) for e in await told(events)] == [(True, True)]


# What another instance may publish in between: Redis carries it in its own order.

def sight(joined: bool, *, version: int, company: str, was: str, online: bool = True,
          connection: int | None = 7) -> StationSightChanged:
    return StationSightChanged(station_id="s", cp_id=CP, company_id=company,
                               was_company_id=was, joined=joined, online=online and joined,
                               version=version, connection=connection)


def connection(online: bool, number: int | None, company: str, *, version: int = 0
               ) -> StationConnectionChanged:
    """A connection event whose read of station ``s`` found ``company``'s, at
    ``version`` (0: before any handover)."""
    return StationConnectionChanged(station_id="s", cp_id=CP, company_id=company,
                                    online=online, connection=number, version=version)


def recorder(told: list[tuple[str, bool]]) -> Callable[[Any], None]:
    """A watcher's ``deliver``: what kind of event it was told, and ``online``."""
    return lambda event: told.append((type(event).__name__, event.online))


async def maps_told(published: list[DomainEvent], companies: list[str]
                    ) -> dict[str, list[tuple[str, bool]]]:
    """What each company's operator is told of ``published``, both ways to listen
    (``watch`` and ``events``), which must agree."""
    bus = MemoryEventBus()
    live = LiveService(ServiceContext(store=None, policy=Policy(),  # type: ignore[arg-type]
                                      hasher=FastHasher(), bus=bus))
    watched: dict[str, list[tuple[str, bool]]] = {c: [] for c in companies}
    for company in companies:
        viewer = Viewer(user_id=f"op-{company}", role=Role.OPERATOR, company_id=company)
        live.watch(viewer, TOPICS, recorder(watched[company]), lambda: None)
    streams = {c: live.events(Viewer(user_id=f"op-{c}", role=Role.OPERATOR, company_id=c),
                              TOPICS) for c in companies}
    for event in published:
        await bus.publish(event)
    streamed = {c: [(type(e).__name__, e.online) for e in await told(stream)]
                for c, stream in streams.items()}
    await bus.close()
    assert streamed == watched
    return watched


async def test_a_disconnect_published_first_wins_over_the_joining_read_before_it() -> None:
    """Another instance records the charger's disconnect after the handover's read of
    the connection, and its event reaches Redis first: the new company is told the
    station joined offline, not online for ever."""
    got = await maps_told([sight(False, version=1, company="B", was="A"),
                           connection(False, 7, "B"),
                           sight(True, version=1, company="B", was="A")], ["A", "B"])
    assert got["B"][-1] == ("StationSightChanged", False), got
    assert got["A"] == [("StationSightChanged", False)]


async def test_a_joining_read_on_a_newer_connection_wins_over_an_older_one() -> None:
    """The charger connected again (connection 8) before the handover read it: its old
    connection's disconnect, arriving first, does not make it offline."""
    got = await maps_told([connection(False, 7, "B"),
                           sight(True, version=1, company="B", was="A", connection=8)], ["B"])
    assert got["B"][-1] == ("StationSightChanged", True), got


async def test_an_earlier_handover_arriving_last_is_judged_by_the_later_one() -> None:
    """A->B, then B->C, published on two instances and carried in the other order."""
    got = await maps_told([sight(False, version=2, company="C", was="B"),
                           sight(True, version=2, company="C", was="B"),
                           sight(False, version=1, company="B", was="A"),
                           sight(True, version=1, company="B", was="A")], ["A", "B", "C"])
    assert got["A"] == [("StationSightChanged", False)], got
    assert got["B"] == [("StationSightChanged", False)], got
    assert got["C"] and got["C"][-1] == ("StationSightChanged", True), got


async def test_a_plug_removed_then_reported_again_is_not_stale_on_the_map(
        world: World) -> None:
    """A plug removed while its charger still has it: the charger's next report makes it
    again, dated by the charger's clock. The removal is dated so that this report is not
    older than it: a map skipping events older than the `statusAt` it holds (README)
    kept the plug UNAVAILABLE, though it reads AVAILABLE, until it queried again."""
    began = utcnow() - timedelta(minutes=30)
    charging = world.services.charging
    await charging.status_notification(CP, 1, "Available", "NoError", timestamp=began)
    [plug] = await world.services.ctx.store.find_all(Connector, Eq("station_id",
                                                                   world.station_id))
    events = world.services.live.events(SYSTEM, [ConnectorStatusChanged.topic])
    await world.services.stations.remove_connector(SYSTEM, plug.id)
    await charging.status_notification(CP, 1, "Available", "NoError",
                                       timestamp=began + timedelta(minutes=1))
    removal, report = await told(events)
    assert (removal.status, removal.free, report.status) == ("Unavailable", False,
                                                             "Available")
    assert removal.at <= report.at, "the map skips the report as older than the removal"
    [again] = await world.services.ctx.store.find_all(Connector, Eq("station_id",
                                                                    world.station_id))
    assert again.status_at == report.at


async def test_a_connection_event_read_before_a_handover_is_judged_by_it() -> None:
    """A->B told, then a disconnect published with A's ownership (read before it): B's
    map is told it, not A's."""
    got = await maps_told([sight(False, version=1, company="B", was="A"),
                           sight(True, version=1, company="B", was="A"),
                           connection(False, 7, "A")], ["A", "B"])
    assert got["A"] == [("StationSightChanged", False)], got
    assert got["B"] == [("StationSightChanged", True),
                        ("StationConnectionChanged", False)], got


async def test_a_connection_event_read_after_a_handover_not_yet_told_comes_out_right(
        ) -> None:
    """A->B told, then B->C's disconnect (read after B->C, version 2) arrives before
    B->C's sight events: C's by its read (B is not told it), and then B->C tells B it
    left and C that it joined, offline as that disconnect had it."""
    got = await maps_told([sight(False, version=1, company="B", was="A"),
                           sight(True, version=1, company="B", was="A"),
                           connection(False, 7, "C", version=2),
                           sight(False, version=2, company="C", was="B"),
                           sight(True, version=2, company="C", was="B")], ["A", "B", "C"])
    assert got["B"] == [("StationSightChanged", True), ("StationSightChanged", False)], got
    assert got["C"] == [("StationConnectionChanged", False),
                        ("StationSightChanged", False)], got


def fault(company: str, *, read: int) -> FaultReported:
    """A fault whose read of station ``s`` found ``company``'s, at version ``read``."""
    return FaultReported(station_id="s", cp_id=CP, company_id=company, version=read,
                         connector_id=1, error_code="GroundFailure", status="Faulted")


def test_an_event_goes_by_the_newer_of_its_read_and_what_was_heard() -> None:
    """Versions decide, not what was heard last: a read older than the newest handover
    heard (a cache's copy from before it) is judged by the handover; a read newer than
    anything heard (a handover this stream never got) goes by its read; on a tie, the
    read's own (review s26)."""
    order = SightOrder()

    def whose(event: DomainEvent) -> str | None:
        told = order.read(event)
        assert told is not None
        return told.company_id

    whose(sight(True, version=2, company="B", was="A"))
    assert whose(fault("A", read=1)) == "B"  # a stale read
    assert whose(fault("B", read=2)) == "B"
    assert whose(fault("C", read=3)) == "C"  # B -> C, never heard
    # Heard now (from the fault's read): a read of before it, or a late sight event of an
    # earlier edit, are judged by C.
    assert whose(fault("B", read=2)) == "C"
    late = order.read(sight(True, version=2, company="B", was="A"))
    assert isinstance(late, StationSightChanged)
    assert (late.company_id, late.was_company_id) == ("C", "A")


async def test_a_handover_read_after_a_loss_never_outranks_fresh_reads() -> None:
    """A slow reader's queue overflows while it still reads what was queued before an
    interruption (a stale handover among it): the faults read afresh after the loss are
    told by their own read, whatever markers came (review s26: ``EventsDropped.before``
    was reset by the overflow's marker, the forgetting after the pre-loss events never
    ran, and the stale handover judged every later event of the station)."""
    bus = MemoryEventBus(queue_size=4)
    stream = bus.subscribe([StationSightChanged.topic, FaultReported.topic])
    order = SightOrder()
    # Queued before the loss: a fault, then A -> B of the station (version 1).
    bus.deliver(fault("A", read=0))
    bus.deliver(sight(True, version=1, company="B", was="A"))
    bus.interrupt()  # the Redis connection breaks; B -> A (version 2) is lost
    marker = await stream.__anext__()
    assert isinstance(marker, EventsDropped) and marker.interrupted
    assert order.read(marker) is None
    # After the loss, the charger's faults, each read afresh: A's station, version 2.
    for _ in range(3):
        bus.deliver(fault("A", read=2))  # the third overflows the queue of 4: one dropped
    told = []
    for _ in range(5):
        shaped = order.read(await stream.__anext__())
        if isinstance(shaped, FaultReported):
            told.append(shaped.company_id)
    assert told[-3:] == ["A", "A", "A"], told
    await bus.close()


async def test_a_removed_station_is_forgotten_by_the_live_path() -> None:
    """What the pump keeps of a station (its newest handover, its last connection) goes
    with the station: kept, it grew with every station ever handed over or connected for
    as long as the pump lived. ``StationRemoved`` is told to nobody."""
    bus = MemoryEventBus()
    live = LiveService(ServiceContext(store=None, policy=Policy(),  # type: ignore[arg-type]
                                      hasher=FastHasher(), bus=bus))
    watched: list[tuple[str, bool]] = []
    live.watch(SYSTEM, TOPICS, recorder(watched), lambda: None)
    stream = live.events(SYSTEM, TOPICS)
    [pump] = live._pumps.values()
    for event in (sight(False, version=1, company="B", was="A"),
                  sight(True, version=1, company="B", was="A"), connection(False, 7, "B"),
                  StationRemoved(station_id="s", cp_id=CP, company_id="B")):
        await bus.publish(event)
    # An admin sees the station either side of the handover: told its connection only.
    assert [type(e).__name__ for e in await told(stream)] == ["StationConnectionChanged"]
    assert watched == [("StationConnectionChanged", False)]
    assert (pump.order.sights, pump.order.connections) == ({}, {})
    await bus.close()


async def test_a_station_removed_during_its_handover_does_not_join_the_new_map(
        world: World) -> None:
    """Review s25 (cross-cut): a station removed between a handover's write and its
    announcement was forgotten by the stream at its removal, and the announcement then
    told the new company it joined: its map kept a station that no longer exists.
    Whatever of a removed station arrives after its removal is told to nobody."""
    _, beta, _ = world.companies
    events = world.services.live.events(operator_of(beta), TOPICS)

    async def remove() -> None:
        await world.services.stations.remove_station(SYSTEM, world.station_id)

    after_the_edits_write(world, remove)
    await world.services.stations.update_station(SYSTEM, world.station_id,
                                                 company_id=beta.id)
    [station] = await world.services.ctx.store.get_many(Station, [world.station_id])
    assert station is None
    got = [(type(event).__name__, getattr(event, "joined", None))
           for event in await told(events)]
    assert (StationSightChanged.__name__, True) not in got, got


# A rolling upgrade, and removals racing handovers (review r26-handover3).

async def test_a_handover_by_an_instance_of_the_build_before_never_holds_the_station(
        world: World) -> None:
    """An instance of the build before the stations' versions hands the station Alpha ->
    Beta: it moves no ``Station.sight`` and announces the handover with its number of
    the whole store in ``sight`` (57, as it goes over Redis). A new instance then hands
    the station to Gamma (version 0 -> 1), and its charger's fault, read afresh, is
    Gamma's, not Beta's: the old number, read as a version, outranked every handover
    after it until the station's own version passed it."""
    alpha, beta, gamma = world.companies
    s = world.services
    feeds = {c.name: s.live.events(operator_of(c), [FaultReported.topic])
             for c in (alpha, beta, gamma)}
    # The older instance's edit: the fields given, no version.
    [station] = await s.ctx.store.get_many(Station, [world.station_id])
    assert station is not None
    await s.ctx.store.write([patch(station, SYSTEM, company_id=beta.id)], [])
    s.charging.cache._stations.clear()
    # ... and its announcement, as its codec wrote it.
    bus = s.ctx.bus
    assert bus is not None
    for joined in (False, True):
        body = json.loads(codec.encode(StationSightChanged(
            **{**owned_by(station), "company_id": beta.id}, joined=joined, online=joined,
            was_company_id=alpha.id, connection=station.connection)))
        body.pop("version", None)
        body["sight"] = 57
        await bus.publish(codec.decode(json.dumps(body)))
    await asyncio.sleep(0.1)
    # The upgrade goes on: a new instance hands the station to Gamma.
    await s.stations.update_station(SYSTEM, world.station_id, company_id=gamma.id)
    [now] = await s.ctx.store.get_many(Station, [world.station_id])
    assert now is not None and (now.company_id, now.sight) == (gamma.id, 1)
    await s.charging.status_notification(CP, 1, "Faulted", "GroundFailure")
    got = {name: [type(e).__name__ for e in await told(feed)]
           for name, feed in feeds.items()}
    assert got == {"Alpha": [], "Beta": [], "Gamma": ["FaultReported"]}, got


def handed_to_during_the_removal(world: World, company: Company,
                                 then: Callable[[Station], None] | None = None) -> None:
    """The next removal's first run, after its checks and the cancels' round trips and
    before its write: an admin hands the station to ``company``; ``then`` gets the
    station as the handover wrote it."""
    stations = world.services.stations
    refuse = stations._refuse_if_charging
    ran: list[bool] = []

    async def hooked(*args: Any, **kw: Any) -> list[Session]:
        refused = await refuse(*args, **kw)
        if not ran:
            ran.append(True)
            await stations.update_station(SYSTEM, world.station_id, company_id=company.id)
            [read] = await world.services.ctx.store.get_many(Station, [world.station_id])
            assert read is not None and read.company_id == company.id
            if then is not None:
                then(read)
        return refused

    stations._refuse_if_charging = hooked  # type: ignore[method-assign]


async def test_a_removal_racing_a_handover_does_not_give_later_events_to_the_old_company(
        world: World) -> None:
    """An admin hands Alpha's station to Beta while another removes it. The removal,
    guarded on ``online`` only, deleted the station it read as Alpha's (version 0) and
    announced it removed as Alpha's, version 1: a fault the charger reported before the
    delete (read: Beta's, version 1) and published after it went to Alpha. Now the
    removal's write fails, it runs again on Beta's station, and says so."""
    alpha, beta, _ = world.companies
    s = world.services
    feeds = {c.name: s.live.events(operator_of(c), [FaultReported.topic])
             for c in (alpha, beta)}
    late: list[FaultReported] = []
    handed_to_during_the_removal(world, beta, lambda read: late.append(FaultReported(
        **owned_by(read), connector_id=1, error_code="GroundFailure", status="Faulted")))
    removed = await s.stations.remove_station(SYSTEM, world.station_id)
    assert (removed.company_id, removed.sight) == (beta.id, 1)
    assert s.ctx.bus is not None
    await s.ctx.bus.publish(late[0])  # the charger's fault, read before the delete
    got = {name: [type(e).__name__ for e in await told(feed)]
           for name, feed in feeds.items()}
    assert got == {"Alpha": [], "Beta": ["FaultReported"]}, got


async def test_an_operator_cannot_remove_a_station_handed_to_another_company_meanwhile(
        world: World) -> None:
    """Alpha's operator removes Alpha's station; while the removal cancels at the
    charger, an admin hands it to Beta. The removal's write, guarded on ``online``
    only, deleted Beta's station with rights checked on Alpha's. Now it runs again on
    a fresh read, and Alpha's operator no longer sees the station."""
    alpha, beta, _ = world.companies
    handed_to_during_the_removal(world, beta)
    with pytest.raises(NotFound):
        await world.services.stations.remove_station(operator_of(alpha), world.station_id)
    [left] = await world.services.ctx.store.get_many(Station, [world.station_id])
    assert left is not None and left.company_id == beta.id


async def test_two_handovers_never_write_one_version(world: World) -> None:
    """Suspected in review r26-handover3: an edit is written on the ``updated_at`` it
    read, which MongoDB keeps to the millisecond. Another handover landing between the
    read and the write with that same stamp (here written without moving it) made the
    two edits each write version 1, one ownership taken for the other's. The handover's
    write holds on the version read too: it runs again on a fresh read, and writes 2."""
    _, beta, gamma = world.companies
    stations = world.services.stations
    managed = stations.managed_station
    ran: list[bool] = []

    async def handed_over_meanwhile(*args: Any, **kw: Any) -> Station:
        read = await managed(*args, **kw)
        if not ran:
            ran.append(True)
            other = Update(dataclasses.replace(read, company_id=gamma.id,
                                               sight=read.sight + 1),
                           frozenset({"company_id", "sight"}))
            await world.services.ctx.store.write([other], [])
        return read

    stations.managed_station = handed_over_meanwhile  # type: ignore[method-assign]
    updated = await stations.update_station(SYSTEM, world.station_id, company_id=beta.id)
    [stored] = await world.services.ctx.store.get_many(Station, [world.station_id])
    assert stored is not None
    assert (updated.company_id, updated.sight) == (stored.company_id, stored.sight) \
        == (beta.id, 2)


async def test_a_handover_tells_instances_of_the_build_before_their_order_too(
        world: World) -> None:
    """During a rolling upgrade the older instances order handovers by the build
    before's number of the whole store (``StationSightChanged.sight``): each handover
    still draws one, after the one before, beside the station's own version."""
    _, beta, gamma = world.companies
    bus = world.services.ctx.bus
    assert bus is not None
    events = bus.subscribe([StationSightChanged.topic])
    for company in (beta, gamma):
        await world.services.stations.update_station(SYSTEM, world.station_id,
                                                     company_id=company.id)
    got = [(e.version, e.sight) for e in await told(events)
           if isinstance(e, StationSightChanged) and e.joined]
    assert [version for version, _ in got] == [1, 2], got
    first, second = (number for _, number in got)
    assert first is not None and second is not None and second > first, got
