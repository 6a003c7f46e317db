"""A station handed to another company is priced as the company that has it now prices
it: a price its former company set on the station itself is that company's, and does
not go on pricing the new company's sessions there (QA s26)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.errors import DomainError, NotFound
from domain.policy import SYSTEM
from domain.ports import Insert, Update
from domain.query import Eq, all_of
from domain.services.base import stamp_new
from pubsub.memory import MemoryEventBus
from store.mongo import MongoStore
from store.sqlite import SqliteStore
from tests.support.gateways import Accepting
from tests.support.mongomock_async import async_mongomock_database
from tests.webhooks.conftest import World, new_services, seed


@pytest.fixture(params=["sqlite", "mongo"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """The webhooks tests' world (Volt GmbH's CP-1 and its 0.40 EUR tariff, Other AG,
    a driver's TAG-OK), on either store."""
    store: Any = SqliteStore(str(tmp_path / "pricing.db")) if request.param == "sqlite" \
        else MongoStore(async_mongomock_database(), sweep_every=None)
    await store.start()
    bus = MemoryEventBus()
    await bus.start()
    w = World(new_services(store, bus), store, bus)
    try:
        await seed(w.services, w)
        yield w
    finally:
        await bus.close()
        await store.close()


@pytest.fixture(params=["sqlite", "mongo"])
async def racing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """``world``, with MongoDB's operations (mongomock) interleaving as on a server."""
    store: Any = SqliteStore(str(tmp_path / "race.db")) if request.param == "sqlite" \
        else MongoStore(async_mongomock_database(interleave=True), sweep_every=None)
    await store.start()
    bus = MemoryEventBus()
    await bus.start()
    w = World(new_services(store, bus), store, bus)
    try:
        await seed(w.services, w)
        yield w
    finally:
        await bus.close()
        await store.close()


async def charge(w: World, wh: int) -> d.Session:
    charging = w.services.charging
    tx, _ = await charging.start_transaction("CP-1", 1, "TAG-OK", 1000, timestamp=utcnow())
    await charging.stop_transaction("CP-1", tx, 1000 + wh, timestamp=utcnow())
    [session] = await w.store.find_all(d.Session, Eq("transaction_id", tx))
    return session


async def test_the_former_companys_station_price_does_not_price_the_new_companys_sessions(
        world: World) -> None:
    """Volt prices CP-1 at 0.90 EUR/kWh on the station itself (its company tariff is
    0.40); an admin hands CP-1 to Other AG, whose company tariff is 0.25. A session
    there afterwards is in Other AG's books and priced by Other AG's 0.25, not by the
    0.90 Volt set, which Other AG never agreed to, and its drivers are not shown it."""
    w = world
    services = w.services
    [cp1] = await w.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    await services.tariffs.set_tariff(w.viewer("op"), station_id=cp1.id,
                                      price_per_kwh=Decimal("0.90"), currency="EUR")
    await services.tariffs.set_tariff(SYSTEM, company_id=w.companies["other"].id,
                                      price_per_kwh=Decimal("0.25"), currency="EUR",
                                      valid_from=utcnow() - timedelta(days=1))
    before = await charge(w, 10_000)
    assert (before.company_id, before.cost_minor) == (w.companies["volt"].id, 900)

    await services.stations.update_station(SYSTEM, cp1.id,
                                           company_id=w.companies["other"].id)
    after = await charge(w, 10_000)
    assert after.company_id == w.companies["other"].id
    assert after.cost_minor == 250, "priced by the station tariff its former company set"
    # Volt's receipt stays as billed; the admin who moved the station ended the price,
    # as the audit log says.
    [again] = await w.store.get_many(d.Session, [before.id])
    assert again is not None and again.cost_minor == 900
    [ended] = await w.store.find_all(d.Tariff, Eq("station_id", cp1.id))
    assert ended.valid_until is not None
    entries = await w.store.find_all(d.AuditEntry, Eq("entity_id", ended.id))
    assert [(e.action, e.actor) for e in entries][-1] == (d.AuditAction.UPDATE, "system")


async def test_a_start_that_read_the_station_before_a_handover_is_the_new_companys(
        world: World) -> None:
    """The charger's StartTransaction reads its station (Volt's); an admin (on another
    instance) hands it to Other AG before the session is written. The session started
    on Other AG's station: it is in Other AG's books and priced by its tariff, not
    booked to the company that had just left the station (whose operators could not
    even see the station it charged on)."""
    w = world
    services = w.services
    [cp1] = await w.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    await services.tariffs.set_tariff(SYSTEM, company_id=w.companies["other"].id,
                                      price_per_kwh=Decimal("0.25"), currency="EUR",
                                      valid_from=utcnow() - timedelta(days=1))
    charging = services.charging
    read, done = charging._require_station, False

    async def hooked(cp_id: str, **kw: Any) -> Any:
        nonlocal done
        got = await read(cp_id, **kw)
        if not done:
            done = True
            await services.stations.update_station(SYSTEM, cp1.id,
                                                   company_id=w.companies["other"].id)
        return got

    charging._require_station = hooked  # type: ignore[method-assign]
    session = await charge(w, 10_000)
    assert session.company_id == w.companies["other"].id, "booked to the company it left"
    assert session.cost_minor == 250


async def test_a_price_set_racing_a_handover_does_not_price_the_new_companys_sessions(
        world: World) -> None:
    """Volt's operator's ``setTariff`` on CP-1 has checked it (still Volt's, so they may
    price it) when an admin on another instance hands CP-1 to Other AG, before the
    price is written. The price is refused (the station is no longer Volt's: NOT_FOUND,
    as for any station its operator does not see), not
    written after the handover ended the station's prices, where it priced Other AG's
    sessions at Volt's 0.90 (review s26)."""
    w = world
    services = w.services
    [cp1] = await w.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    await services.tariffs.set_tariff(SYSTEM, company_id=w.companies["other"].id,
                                      price_per_kwh=Decimal("0.25"), currency="EUR",
                                      valid_from=utcnow() - timedelta(days=1))
    tariffs = services.tariffs
    may_price, done = tariffs._may_price, False

    async def hooked(*a: Any, **kw: Any) -> Any:
        nonlocal done
        got = await may_price(*a, **kw)
        if not done:
            done = True
            await services.stations.update_station(SYSTEM, cp1.id,
                                                   company_id=w.companies["other"].id)
        return got

    tariffs._may_price = hooked  # type: ignore[method-assign]
    with pytest.raises(NotFound):
        await tariffs.set_tariff(w.viewer("op"), station_id=cp1.id,
                                 price_per_kwh=Decimal("0.90"), currency="EUR")
    assert await w.store.find_all(d.Tariff, Eq("station_id", cp1.id)) == []
    after = await charge(w, 10_000)
    assert after.company_id == w.companies["other"].id
    assert after.cost_minor == 250, f"priced {after.cost_minor} by Volt's station price"


async def test_an_admins_price_racing_a_handover_is_set_on_the_station_as_it_is(
        world: World) -> None:
    """An admin's price checked before the handover and written after it is written
    (the admin may price the station whoever has it): it is a price of the station as
    handed over, and prices Other AG's sessions there."""
    w = world
    services = w.services
    [cp1] = await w.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    tariffs = services.tariffs
    may_price, done = tariffs._may_price, False

    async def hooked(*a: Any, **kw: Any) -> Any:
        nonlocal done
        got = await may_price(*a, **kw)
        if not done:
            done = True
            await services.stations.update_station(SYSTEM, cp1.id,
                                                   company_id=w.companies["other"].id)
        return got

    tariffs._may_price = hooked  # type: ignore[method-assign]
    await tariffs.set_tariff(SYSTEM, station_id=cp1.id, price_per_kwh=Decimal("0.30"),
                             currency="EUR")
    after = await charge(w, 10_000)
    assert (after.company_id, after.cost_minor) == (w.companies["other"].id, 300)


async def test_a_station_price_not_in_force_yet_is_called_off_by_a_handover(
        world: World) -> None:
    """Volt set CP-1's price for tomorrow; an admin hands CP-1 to Other AG today. The
    version priced nothing: it is deleted, as ``removeTariff`` deletes one, not ended
    before it begins (``validUntil`` before ``validFrom``, review s26)."""
    w = world
    services = w.services
    [cp1] = await w.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    await services.tariffs.set_tariff(w.viewer("op"), station_id=cp1.id,
                                      price_per_kwh=Decimal("0.90"), currency="EUR",
                                      valid_from=utcnow() + timedelta(days=1))
    await services.stations.update_station(SYSTEM, cp1.id,
                                           company_id=w.companies["other"].id)
    assert await w.store.find_all(d.Tariff, Eq("station_id", cp1.id)) == []


async def test_a_handover_ends_a_price_in_force_until_one_set_for_later(
        world: World) -> None:
    """Volt priced CP-1 from now, and again from tomorrow: today's version ends where
    tomorrow's begins (s31), not ended by now all the same. The handover ends it now and
    calls tomorrow's off, which gives it no end back: Other AG's own price applies."""
    w = world
    services = w.services
    [cp1] = await w.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    today = await services.tariffs.set_tariff(
        w.viewer("op"), station_id=cp1.id, price_per_kwh=Decimal("0.90"), currency="EUR")
    await services.tariffs.set_tariff(w.viewer("op"), station_id=cp1.id,
                                      price_per_kwh=Decimal("0.95"), currency="EUR",
                                      valid_from=utcnow() + timedelta(days=1))
    await services.stations.update_station(SYSTEM, cp1.id,
                                           company_id=w.companies["other"].id)
    [ended] = await w.store.find_all(d.Tariff, Eq("station_id", cp1.id))
    assert ended.id == today.id and ended.valid_until is not None
    assert ended.valid_until <= utcnow()
    other = await services.tariffs.set_tariff(
        SYSTEM, company_id=w.companies["other"].id, price_per_kwh=Decimal("0.25"),
        currency="EUR")
    [moved] = await w.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    priced = await services.tariffs.tariff_at(moved, utcnow())
    assert priced is not None and priced.id == other.id


async def test_a_price_set_before_a_later_one_between_a_handovers_read_and_write_is_ended(
        world: World) -> None:
    """Volt priced CP-1 from tomorrow only. The handover has read that price (to call it
    off) when Volt's operator prices CP-1 from now: that version ends where tomorrow's
    begins, not open. The handover's write fails on it and runs again, which ends it:
    Other AG's 0.25 prices its session, not Volt's 0.90 (review s31: the guard looked
    for open prices only, and the new version priced Other AG's sessions until
    tomorrow)."""
    w = world
    services = w.services
    [cp1] = await w.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    await services.tariffs.set_tariff(w.viewer("op"), station_id=cp1.id,
                                      price_per_kwh=Decimal("0.95"), currency="EUR",
                                      valid_from=utcnow() + timedelta(days=1))
    await services.tariffs.set_tariff(SYSTEM, company_id=w.companies["other"].id,
                                      price_per_kwh=Decimal("0.25"), currency="EUR",
                                      valid_from=utcnow() - timedelta(days=1))
    stations = services.stations
    read, done = stations._end_station_prices, False

    async def hooked(*a: Any, **kw: Any) -> Any:
        nonlocal done
        got = await read(*a, **kw)
        if not done:
            done = True
            set_now = await services.tariffs.set_tariff(
                w.viewer("op"), station_id=cp1.id, price_per_kwh=Decimal("0.90"),
                currency="EUR")
            assert set_now.valid_until is not None  # ends where tomorrow's begins
        return got

    stations._end_station_prices = hooked  # type: ignore[method-assign]
    await stations.update_station(SYSTEM, cp1.id, company_id=w.companies["other"].id)
    assert done
    after = await charge(w, 10_000)
    assert after.company_id == w.companies["other"].id
    assert after.cost_minor == 250, f"priced {after.cost_minor} by Volt's station price"


async def test_a_handover_ends_every_price_on_the_station_however_many(
        world: World) -> None:
    """More unended prices on the station than one read returns (``find_all``'s 1,000):
    the handover ends them all, and goes through (review s26: it ended the first 1,000,
    its guard on none being left failed, and every retry failed alike)."""
    w = world
    services = w.services
    [cp1] = await w.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    now = utcnow()
    prices = [stamp_new(d.Tariff(station_id=cp1.id, price_per_kwh=Decimal("0.90"),
                                 currency="EUR", valid_from=now - timedelta(seconds=i)),
                        SYSTEM) for i in range(1001)]
    await w.store.write([Insert(p) for p in prices], [])
    await services.stations.update_station(SYSTEM, cp1.id,
                                           company_id=w.companies["other"].id)
    left = await w.store.count(d.Tariff, all_of(Eq("station_id", cp1.id),
                                                 Eq("valid_until", None)))
    assert left == 0


async def test_a_handover_ends_a_price_after_the_last_session_it_priced(
        world: World) -> None:
    """A session on CP-1 was received, by another instance whose clock is ahead of
    ours, after our "now": the handover ends Volt's station price just after that
    session, as ``removeTariff`` would (review s26), so the session keeps its price."""
    w = world
    services = w.services
    [cp1] = await w.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    price = await services.tariffs.set_tariff(w.viewer("op"), station_id=cp1.id,
                                              price_per_kwh=Decimal("0.90"), currency="EUR")
    session = await charge(w, 10_000)
    ahead = session.created_at + timedelta(seconds=30)
    await w.store.write([Update(replace(session, created_at=ahead), frozenset({"created_at"}))], [])
    await services.stations.update_station(SYSTEM, cp1.id,
                                           company_id=w.companies["other"].id)
    [ended] = await w.store.get_many(d.Tariff, [price.id])
    assert ended is not None and ended.valid_until is not None
    assert ended.valid_until > ahead, (ended.valid_until, ahead)


async def test_a_price_set_concurrently_with_handovers_never_survives_one(
        racing: World) -> None:
    """Review s26 (kept as a regression test): the station's operator sets its price
    while an admin hands the station over, interleaved at every offset, not hooked, on
    both stores: the price is refused or ended by the handover, never left in force on
    the new company's station (and each handover lands, its version moved on)."""
    w = racing
    s = w.services
    [cp1] = await w.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    holders = [("volt", "op"), ("other", "op_other")]
    outcomes = []
    for i in range(36):
        (_, setter), (to, _) = holders[i % 2], holders[(i + 1) % 2]

        async def later(n: int, work: Any) -> Any:
            for _ in range(n):
                await asyncio.sleep(0)
            return await work

        results = await asyncio.gather(
            later(i % 6, s.tariffs.set_tariff(
                w.viewer(setter), station_id=cp1.id,
                price_per_kwh=Decimal(f"0.{10 + i}"), currency="EUR")),
            s.stations.update_station(SYSTEM, cp1.id, company_id=w.companies[to].id),
            return_exceptions=True)
        outcomes.append(tuple(type(r).__name__ for r in results))
        assert not isinstance(results[1], BaseException), results
        if isinstance(results[0], BaseException):
            assert isinstance(results[0], DomainError), results
        [station] = await w.store.get_many(d.Station, [cp1.id])
        assert station is not None and station.company_id == w.companies[to].id
        assert station.sight == i + 1
        left = await w.store.find_all(d.Tariff, all_of(Eq("station_id", cp1.id),
                                                       Eq("valid_until", None)))
        assert left == [], (i, outcomes, [(t.price_per_kwh, t.created_by) for t in left])


async def test_a_reservation_racing_a_handover_is_booked_to_the_new_company(
        racing: World) -> None:
    """A driver's ReserveNow on CP-1 has read the station (Volt's) when an admin on
    another instance hands it to Other AG, before the reservation is stored: it is in
    Other AG's books, as a session started there then is, on either store (QA s27).
    Its charger accepts it: one never delivered is not kept (QA s31), and would leave
    nothing to look at."""
    w = racing
    services = w.services
    services.attach_gateway(Accepting())
    [cp1] = await w.store.find_all(d.Station, Eq("cp_id", "CP-1"))
    commands = services.commands
    check, done = commands._refuse_charging_plug, False

    async def hooked(*a: Any, **kw: Any) -> None:
        nonlocal done
        await check(*a, **kw)
        if not done:
            done = True
            await services.stations.update_station(SYSTEM, cp1.id,
                                                   company_id=w.companies["other"].id)

    commands._refuse_charging_plug = hooked  # type: ignore[method-assign]
    await commands.send(w.viewer("driver"), "CP-1", "ReserveNow", {
        "connectorId": 1, "expiryDate": utcnow() + timedelta(hours=1)})
    [reservation] = await w.store.find_all(d.Reservation, Eq("station_id", cp1.id))
    assert reservation.state is d.ReservationState.ACTIVE
    assert (reservation.company_id, reservation.station_owner_id) == (
        w.companies["other"].id, None), "booked to the company that had left the station"
