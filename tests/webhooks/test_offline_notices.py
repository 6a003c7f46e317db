"""Review and QA findings on the offline-webhook notices (``domain/services/offline_notices``):

* a look that found an outage due while its charger was coming back closed it, and the
  connection's settling found nothing: an outage longer than the grace told neither
  offline nor online. Every interleaving of the look and the settling is run here, store
  call by store call;
* a station handed to another company between the offline and the online: the online
  went to the new company, never to the one that got the offline;
* notices of removed stations, and those a grace switched back to 0 left, stayed for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.events import StationConnectionChanged
from domain.policy import SYSTEM
from domain.ports import Insert
from domain.query import ALL, Eq
from domain.services import Services
from domain.services.base import patch, stamp_new
from domain.wire import rfc3339
from pubsub.memory import MemoryEventBus
from store.sqlite import SqliteStore
from tests.webhooks.conftest import World, new_services, seed
from tests.webhooks.test_offline_grace import (
    BOTH,
    connect,
    disconnect,
    kinds,
    notices,
    on_test_clock,
)

GRACE = timedelta(seconds=60)


# ------------------------------------------------------------------ interleavings
class Gate:
    """Lets tasks take one store call at a time, in the order a schedule says: each call
    of a gated task waits here until the scheduler lets that task go."""

    def __init__(self) -> None:
        self.parked: dict[str, asyncio.Event] = {}
        self.go: dict[str, asyncio.Event] = {}

    def add(self, name: str) -> None:
        self.parked[name] = asyncio.Event()
        self.go[name] = asyncio.Event()

    async def step(self, name: str) -> None:
        self.parked[name].set()
        await self.go[name].wait()
        self.go[name].clear()


class GatedStore:
    """The store, each read and write of one task first waiting for its turn."""

    def __init__(self, store: SqliteStore, gate: Gate, name: str) -> None:
        self._store, self._gate, self._name = store, gate, name

    def __getattr__(self, attribute: str) -> Any:
        found = getattr(self._store, attribute)
        if attribute not in ("get_many", "find_all", "find_one", "write"):
            return found

        async def gated(*args: Any, **kwargs: Any) -> Any:
            await self._gate.step(self._name)
            return await found(*args, **kwargs)
        return gated


@dataclass
class Run:
    """One schedule's outcome: the webhook events in the order they were handed to
    delivery, and the choices made (with the others there were at each)."""

    delivered: list[StationConnectionChanged] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    options: list[tuple[str, ...]] = field(default_factory=list)


async def interleave(gate: Gate, work: dict[str, Callable[[], Coroutine[Any, Any, None]]],
                     prefix: list[str]) -> Run:
    """Runs ``work``'s tasks, letting one store call through at a time: the tasks
    ``prefix`` names first, then the first waiting one each time."""
    run = Run()
    for name in work:
        gate.add(name)
    tasks: dict[str, asyncio.Task[None]] = {name: asyncio.create_task(job())
                                            for name, job in work.items()}

    async def parked_or_done(name: str) -> None:
        parked = asyncio.create_task(gate.parked[name].wait())
        await asyncio.wait({parked, tasks[name]}, return_when=asyncio.FIRST_COMPLETED)
        parked.cancel()

    while True:
        for name in tasks:
            await parked_or_done(name)
        waiting = tuple(n for n in tasks if not tasks[n].done())
        if not waiting:
            break
        chosen = prefix[len(run.choices)] if len(run.choices) < len(prefix) else waiting[0]
        run.choices.append(chosen)
        run.options.append(waiting)
        gate.parked[chosen].clear()
        gate.go[chosen].set()
    for task in tasks.values():
        task.result()  # none failed
    return run


def schedules_after(run: Run, prefix: list[str]) -> list[list[str]]:
    """The schedules that branch off ``run`` after ``prefix`` (depth first)."""
    return [[*run.choices[:i], other]
            for i in range(len(prefix), len(run.choices))
            for other in run.options[i] if other != run.choices[i]]


async def race(tmp_path: Path, number: int, prefix: list[str], *, back_after: float,
               gated_connect: bool) -> tuple[Run, list[d.OfflineNotice]]:
    """A charger goes offline; a look finds its outage due (``back_after`` seconds on,
    at or past the grace); its announcement and the connection's settling (the
    connection itself a step of its own when ``gated_connect``, else made before the
    look) run in the order ``prefix`` starts."""
    store = SqliteStore(str(tmp_path / f"race-{number}.db"))
    await store.start()
    bus = MemoryEventBus()
    await bus.start()
    try:
        services = new_services(store, bus)
        world = World(services, store, bus)
        await seed(services, world)
        clock = on_test_clock(services)
        gate = Gate()
        looking, settling = (new_services(GatedStore(store, gate, name), bus)  # type: ignore[arg-type]
                             for name in ("announce", "settle"))
        looking.ctx.clock = settling.ctx.clock = clock
        heard = listen(services)
        await disconnect(services, await connect(services))
        [went] = [e for e in heard if not e.online]
        await services.offline_notices.hold(went)
        clock.advance(back_after)
        if not gated_connect:
            await connect(services)
            clock.advance(max(0.0, 61 - back_after))  # the look, once the grace is over
        [due] = await services.offline_notices.due(GRACE)
        run = Run()

        async def announce() -> None:
            offline = await looking.offline_notices.announce(due)
            if offline is not None:
                run.delivered.append(offline)

        async def come_back() -> None:
            if gated_connect:
                await gate.step("settle")  # the connection, one step
                await connect(services)
            [back] = [e for e in heard if e.online][-1:]
            run.delivered.extend(await settling.offline_notices.settle(back, GRACE))

        ran = await interleave(gate, {"announce": announce, "settle": come_back}, prefix)
        ran.delivered = run.delivered
        await services.site_load.settled()  # a connection's follow-up, before the close
        return ran, await store.find_all(d.OfflineNotice, ALL)
    finally:
        await bus.close()
        await store.close()


def first_offline(heard: list[StationConnectionChanged]) -> StationConnectionChanged:
    return next(e for e in heard if not e.online)


def listen(services: Services) -> list[StationConnectionChanged]:
    heard: list[StationConnectionChanged] = []
    services.ctx.published.append(
        lambda e: heard.append(e) if isinstance(e, StationConnectionChanged) else None)
    return heard


@pytest.mark.parametrize(("back_after", "gated_connect", "told"), [
    (61, True, [False, True]),    # back while the look goes on: longer than the grace
    (61, False, [False, True]),   # back just before the look, its settling on its way
    (59, False, []),              # back within the grace, settled after the look
])
async def test_every_interleaving_of_a_look_and_a_connection_tells_the_outage_once(
        tmp_path: Path, back_after: float, gated_connect: bool, told: list[bool]) -> None:
    """Store call by store call, every order of the look's announcement and the
    connection's settling: an outage longer than the grace is told as one offline, then
    one online; a flap within it as nothing; no notice is left open."""
    pending: list[list[str]] = [[]]
    schedules: list[list[str]] = []
    while pending:
        prefix = pending.pop()
        run, left = await race(tmp_path, len(schedules), prefix, back_after=back_after,
                               gated_connect=gated_connect)
        schedules.append(run.choices)
        assert [e.online for e in run.delivered] == told, run.choices
        assert left == [], run.choices
        pending.extend(schedules_after(run, prefix))
    # Each side went first, and each side went last: every order was run.
    assert {s[0] for s in schedules} == {s[-1] for s in schedules} == {"announce", "settle"}
    assert len(schedules) == len({tuple(s) for s in schedules}) >= 10


async def test_the_reported_race_tells_the_outage(world: World) -> None:
    """QA's order: the look finds the notice due, the charger comes back, the
    announcement reads the station online, then the connection settles (61 s > 60 s)."""
    clock = on_test_clock(world.services)
    heard = listen(world.services)
    outages = world.services.offline_notices
    went = await disconnect(world.services, await connect(world.services))
    await outages.hold(first_offline(heard))
    clock.advance(61)
    [due] = await outages.due(GRACE)
    back = clock.now
    await connect(world.services)
    assert await outages.announce(due) is None
    told = await outages.settle([e for e in heard if e.online][-1], GRACE)
    assert [(e.online, e.at) for e in told] == [(False, went), (True, back)]
    assert await notices(world) == []


async def test_a_returned_outage_is_not_told_by_a_later_connection(world: World) -> None:
    """A look finds the charger back, but the connection that ended the outage was
    settled before the notice was stored (or lost with its instance): a later connection,
    long after, does not page for that old flap."""
    clock = on_test_clock(world.services)
    heard = listen(world.services)
    outages = world.services.offline_notices
    first = await connect(world.services)
    await disconnect(world.services, first)
    flap = first_offline(heard)
    second = await connect(world.services)  # back at once; its settling ran first
    await outages.hold(flap)
    clock.advance(61)
    [due] = await outages.due(GRACE)
    assert await outages.announce(due) is None
    [returned] = await notices(world)
    assert (returned.state, returned.returned_connection) == (d.NoticeState.RETURNED,
                                                              second)
    assert await outages.due(GRACE) == []  # the looks leave it to its connection
    await disconnect(world.services, second)  # not held: no webhook routed it then
    clock.advance(3600)
    await connect(world.services)
    assert await outages.settle([e for e in heard if e.online][-1], GRACE) == []
    assert await notices(world) == []


# ------------------------------------------------------------------ hand-over
async def webhooks_of_both_companies(world: World) -> dict[str, Any]:
    receivers = {}
    for owner in ("op", "op_other", "admin"):
        receivers[owner] = await world.receiver()
        await world.webhook(owner, receivers[owner], *BOTH)
    return receivers


async def hand_over(world: World) -> None:
    [station] = await world.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    await world.services.stations.update_station(
        SYSTEM, station.id, company_id=world.companies["other"].id)


async def test_the_online_goes_to_whoever_got_the_offline(world: World) -> None:
    """CP-1 of Volt is gone past the grace: Volt's and the admin's webhooks get the
    offline. An admin hands the station to Other AG, and the charger comes back: Volt's
    incident is closed by its online, Other AG hears nothing of an outage it never heard
    of, the admin gets both."""
    clock = on_test_clock(world.services)
    dispatcher = await world.dispatcher(offline_grace=60)
    receivers = await webhooks_of_both_companies(world)
    went = await disconnect(world.services, await connect(world.services))
    await world.settled()
    clock.advance(61)
    await dispatcher.announce_due()
    await world.settled()
    await hand_over(world)
    back = clock.advance(5)
    await connect(world.services)
    await world.settled()
    assert {owner: kinds(r) for owner, r in receivers.items()} == {
        "op": ["station.offline", "station.online"], "op_other": [],
        "admin": ["station.offline", "station.online"]}
    assert [r.json["at"] for r in receivers["op"].requests] == [rfc3339(went), rfc3339(back)]
    assert await notices(world) == []


async def test_an_outage_told_at_its_end_goes_whole_to_the_station_s_company_now(
        world: World) -> None:
    """Nobody announced it in time and the station changed hands meanwhile: offline and
    online are told together, both to the company running the station now."""
    clock = on_test_clock(world.services)
    await world.dispatcher(offline_grace=60)
    receivers = await webhooks_of_both_companies(world)
    await disconnect(world.services, await connect(world.services))
    await world.settled()
    await hand_over(world)
    clock.advance(61)
    await connect(world.services)
    await world.settled()
    assert {owner: kinds(r) for owner, r in receivers.items()} == {
        "op": [], "op_other": ["station.offline", "station.online"],
        "admin": ["station.offline", "station.online"]}


async def test_an_online_of_a_notice_announced_before_ownership_was_kept(
        world: World) -> None:
    """A notice announced by a build before SQLite migration 43 has no ownership: its
    online goes with the station's at the connection, as it did then."""
    clock = on_test_clock(world.services)
    heard = listen(world.services)
    outages = world.services.offline_notices
    await disconnect(world.services, await connect(world.services))
    notice = await outages.hold(first_offline(heard))
    assert notice is not None
    # As such a build announced it: no ownership recorded.
    await world.store.write([patch(notice, SYSTEM, state=d.NoticeState.ANNOUNCED)], [])
    clock.advance(61)
    await connect(world.services)
    [online] = await outages.settle([e for e in heard if e.online][-1], GRACE)
    assert online.online and online.company_id == world.companies["volt"].id


# ------------------------------------------------------------------ leftovers
async def test_removing_a_station_removes_its_notices(world: World) -> None:
    """Removed with the station, whatever their state (an announced one, a pending one):
    nothing would ever end them."""
    clock = on_test_clock(world.services)
    heard = listen(world.services)
    outages = world.services.offline_notices
    for _ in range(2):
        await disconnect(world.services, await connect(world.services))
        await outages.hold([e for e in heard if not e.online][-1])
        clock.advance(61)
    first, _ = await outages.due(GRACE)
    assert await outages.announce(first) is None  # the second connection is newer
    [station] = await world.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    [other] = await world.store.find_all(d.Station, Eq("cp_id", "CP-OTHER"))
    kept = d.OfflineNotice(station_id=other.id, cp_id="CP-OTHER", offline_at=clock.now)
    await outages.store.write([Insert(stamp_new(kept, SYSTEM))], [])
    assert len(await notices(world)) == 3
    await world.services.stations.remove_station(SYSTEM, station.id)
    assert [n.station_id for n in await notices(world)] == [other.id]


async def test_the_look_closes_a_removed_station_s_late_notice(world: World) -> None:
    """A disconnect stored after its station was removed (the charger hung up by the
    removal) is closed by the next look."""
    clock = on_test_clock(world.services)
    heard = listen(world.services)
    await disconnect(world.services, await connect(world.services))
    [station] = await world.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    await world.services.stations.remove_station(SYSTEM, station.id)
    await world.services.offline_notices.hold(first_offline(heard))
    clock.advance(61)
    [due] = await world.services.offline_notices.due(GRACE)
    assert await world.services.offline_notices.announce(due) is None
    assert await notices(world) == []


async def test_grace_switched_back_to_zero_tells_what_waited_at_start(world: World) -> None:
    """Outages a 60 s grace left open when an instance starts with none: a charger still
    gone gets its offline at once (dated at its disconnect), and its reconnection's
    online then follows it; one that is back, or announced already, is closed without
    a word. Nothing stays open: with no grace nobody would close it."""
    clock = on_test_clock(world.services)
    receiver = await world.receiver()
    await world.webhook("op", receiver, *BOTH)
    heard = listen(world.services)
    outages = world.services.offline_notices
    went = await disconnect(world.services, await connect(world.services))
    await outages.hold([e for e in heard if not e.online][-1])
    [station] = await world.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    back = d.OfflineNotice(station_id=station.id, cp_id="CP-1", connection=0,
                           offline_at=went - timedelta(hours=1))  # an older outage, over
    await outages.store.write([Insert(stamp_new(back, SYSTEM))], [])
    clock.advance(10)
    await world.dispatcher(offline_grace=0)
    await world.settled()
    assert kinds(receiver) == ["station.offline"]
    assert receiver.requests[0].json["at"] == rfc3339(went)
    assert await notices(world) == []
    await connect(world.services)
    await world.settled()
    assert kinds(receiver) == ["station.offline", "station.online"]


async def test_grace_zero_closes_an_announced_outage_at_start(world: World) -> None:
    clock = on_test_clock(world.services)
    receiver = await world.receiver()
    await world.webhook("op", receiver, *BOTH)
    heard = listen(world.services)
    outages = world.services.offline_notices
    await disconnect(world.services, await connect(world.services))
    await outages.hold([e for e in heard if not e.online][-1])
    clock.advance(61)
    [due] = await outages.due(GRACE)
    assert await outages.announce(due) is not None  # told by the instance before
    await world.dispatcher(offline_grace=0)
    await world.settled()
    assert receiver.requests == []
    assert await notices(world) == []
