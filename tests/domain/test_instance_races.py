"""Two instances on one store (QA s21, multi-instance write integrity): each its own
``Services`` (its own keyed locks and caches) over its own connection to one SQLite
file, or one MongoDB database. The competing write is run by a hook between one
instance's read and its write, so every interleaving here is forced, not hoped for."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.errors import Conflict, Forbidden, UniqueViolation, ValidationError
from domain.policy import SYSTEM, Policy, Viewer
from domain.ports import Store
from domain.query import Eq, Sort
from domain.services import ConnectorSpec, ServiceContext, Services
from domain.services.charging import BootInfo
from domain.services.metering import MeterReading, SampledValue
from store.mongo import MongoStore
from store.sqlite import SqliteStore
from tests.helpers import FastHasher
from tests.support.mongomock_async import async_mongomock_database

CP = "CP-RACE"


@dataclass
class Instances:
    a: Services
    b: Services
    store: Store  # A's: what is stored, read after the race
    station: d.Station
    connector: d.Connector


@contextlib.asynccontextmanager
async def two_stores(kind: str, path: Path) -> AsyncIterator[tuple[Store, Store]]:
    first: Store
    second: Store
    if kind == "sqlite":
        first, second = SqliteStore(str(path)), SqliteStore(str(path))
    else:
        db = async_mongomock_database()
        first, second = MongoStore(db, sweep_every=None), MongoStore(db, sweep_every=None)
    await first.start()
    await second.start()
    try:
        yield first, second
    finally:
        await second.close()
        await first.close()


@pytest.fixture(params=["sqlite", "mongo"])
async def two(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Instances]:
    async with two_stores(request.param, tmp_path / "shared.db") as (first, second):
        a, b = (Services(ServiceContext(store=s, policy=Policy(), hasher=FastHasher()))
                for s in (first, second))
        station, [plug] = await a.stations.create_station(
            SYSTEM, cp_id=CP, name="Potsdam", connectors=[ConnectorSpec(1, max_kw=50)])
        yield Instances(a, b, first, station, plug)


def once(hook: Callable[[], Awaitable[Any]], then: Callable[..., Awaitable[Any]]
         ) -> Callable[..., Awaitable[Any]]:
    """``then``, the first call of which runs ``hook`` (the other instance's write) after
    it: between the read ``then`` makes and whatever its caller writes next."""
    ran = False

    async def hooked(*args: Any, **kw: Any) -> Any:
        nonlocal ran
        result = await then(*args, **kw)
        if not ran:
            ran = True
            await hook()
        return result
    return hooked


async def sessions(store: Store) -> list[d.Session]:
    return await store.find_all(d.Session, Eq("cp_id", CP))


async def start(services: Services) -> Any:
    return await services.charging.start_transaction(
        CP, 1, "TAG-1", 0, datetime.now(UTC).replace(microsecond=0))


async def card_issued(two: Instances) -> None:
    """TAG-1 issued to a driver: its start is Accepted (charging), not refused Invalid."""
    driver = await two.a.accounts.create_user(
        SYSTEM, email="tina@example.com", password="pw-12345678", name="Tina",
        role=d.Role.DRIVER)
    await two.a.fleet.issue_id_tag(Viewer.of(driver), tag="TAG-1")


# ------------------------------------------------------------------ (A) removal vs start
async def test_a_start_whose_station_was_removed_meanwhile_writes_nothing(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """B's start has read the station (and cached it); A removes the station before B
    writes. B's write is refused whole: no session (an orphan held the card everywhere,
    ConcurrentTx, until endSession), and the charger is told its charge point is
    unknown, as after any removal (its handler hangs up on it)."""
    charging = two.b.charging
    # B holds the charger: the station is cached there.
    await charging.boot(CP, BootInfo(vendor="QA", model="R"))
    monkeypatch.setattr(charging, "_connector", once(
        lambda: two.a.stations.remove_station(SYSTEM, two.station.id), charging._connector))
    with pytest.raises(ValidationError) as raised:
        await start(two.b)
    assert (raised.value.code, raised.value.field) == ("NOT_FOUND", "cpId")
    assert await sessions(two.store) == []
    assert await two.store.get_many(d.Station, [two.station.id]) == [None]


async def test_a_removal_that_a_start_beat_is_refused_in_use(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """A has checked that nothing charges on the station; B's start commits before A's
    write. A's write is refused, run again, and answered as a removal of a station
    that charges is: IN_USE. The session keeps its station. (An issued card: a start
    refused Invalid charges nothing, and the removal closes it.)"""
    await card_issued(two)
    stations = two.a.stations
    monkeypatch.setattr(stations, "_end_state_history", once(
        lambda: start(two.b), stations._end_state_history))
    with pytest.raises(Conflict) as raised:
        await stations.remove_station(SYSTEM, two.station.id)
    assert raised.value.code == "IN_USE"
    [session] = await sessions(two.store)
    assert session.state is d.SessionState.ACTIVE
    assert await two.store.get_many(d.Station, [two.station.id]) == [two.station]


async def test_a_connector_removal_that_a_start_beat_is_refused_in_use(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    await card_issued(two)
    stations = two.a.stations
    monkeypatch.setattr(stations, "_end_state_history", once(
        lambda: start(two.b), stations._end_state_history))
    with pytest.raises(Conflict) as raised:
        await stations.remove_connector(SYSTEM, two.connector.id)
    assert raised.value.code == "IN_USE"
    assert await two.store.get_many(d.Connector, [two.connector.id]) == [two.connector]


# ------------------------------------------------------------------ (B) two edits at once
async def updates_of(store: Store, record_id: str) -> list[d.AuditEntry]:
    """The record's UPDATE entries in time order: the order they were written, even two
    in one millisecond (an entry is dated by the version it wrote, ``base._entry_at``)."""
    entries = await store.find_all(d.AuditEntry, Eq("entity_id", record_id),
                                   [Sort("at"), Sort("id")])
    return [e for e in entries if e.action is d.AuditAction.UPDATE]


def chained(entries: list[d.AuditEntry], field: str) -> bool:
    """Each entry's before-image of ``field`` is what the one before it wrote."""
    return all(later.before is not None and earlier.after is not None
               and later.before[field] == earlier.after[field]
               for earlier, later in itertools.pairwise(entries))


async def test_two_edits_of_a_station_at_once_both_land_and_chain(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reads the station to rename it; B renames it before A writes. A's write meets
    the newer version and runs again: last writer wins, and its audit entry's
    before-image is B's name, not the one A first read."""
    stations = two.a.stations
    monkeypatch.setattr(stations, "managed_station", once(
        lambda: two.b.stations.update_station(SYSTEM, two.station.id, name="By B"),
        stations.managed_station))
    await stations.update_station(SYSTEM, two.station.id, name="By A")
    [final] = await two.store.get_many(d.Station, [two.station.id])
    assert final is not None and final.name == "By A"
    entries = await updates_of(two.store, two.station.id)
    assert [e.after["name"] for e in entries if e.after] == ["By B", "By A"]
    assert chained(entries, "name")


async def test_two_edits_of_a_connector_at_once_both_land_and_chain(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    stations = two.a.stations
    monkeypatch.setattr(stations, "managed_connector", once(
        lambda: two.b.stations.update_connector(SYSTEM, two.connector.id, max_kw=200),
        stations.managed_connector))
    await stations.update_connector(SYSTEM, two.connector.id, max_kw=100)
    entries = await updates_of(two.store, two.connector.id)
    assert [e.after["max_kw"] for e in entries if e.after] == [200, 100]
    assert chained(entries, "max_kw")


async def test_two_edits_of_a_user_at_once_both_land_and_chain(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    accounts = two.a.accounts
    user = await accounts.create_user(SYSTEM, email="ana@example.com", password="pw-12345678",
                                      name="Ana", role=d.Role.DRIVER)
    monkeypatch.setattr(accounts, "visible", once(
        lambda: two.b.accounts.update_user(SYSTEM, user.id, name="Ana B"),
        accounts.visible))
    await accounts.update_user(SYSTEM, user.id, name="Ana A")
    entries = await updates_of(two.store, user.id)
    assert [e.after["name"] for e in entries if e.after] == ["Ana B", "Ana A"]
    assert chained(entries, "name")


async def test_a_charger_s_telemetry_meanwhile_neither_fails_nor_is_undone(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """A status report patches the connector between an operator's read and write: the
    edit runs again and lands, and the report (written without any version guard)
    stands."""
    stations = two.a.stations
    monkeypatch.setattr(stations, "managed_connector", once(
        lambda: two.b.charging.status_notification(CP, 1, "Faulted", "GroundFailure"),
        stations.managed_connector))
    await stations.update_connector(SYSTEM, two.connector.id, max_kw=150)
    [plug] = await two.store.get_many(d.Connector, [two.connector.id])
    assert plug is not None and plug.max_kw == 150
    assert plug.status.value == "Faulted"


async def test_two_starts_of_one_card_on_two_instances_are_never_both_accepted(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r26: A's start (the lower transaction id) has read everything and not yet
    written its session when B's start of the same card, on another charger, is written
    and answered. Each was asked about the card once its own session was written, and
    only lower ids held it: A met no earlier transaction, B had been judged before A's
    session existed, and both were Accepted. A's write is guarded by the card being
    held by no other session: it reads again and is told ConcurrentTx."""
    driver = await two.a.accounts.create_user(
        SYSTEM, email="dora@example.com", password="pw-12345678", name="Dora",
        role=d.Role.DRIVER)
    await two.a.fleet.issue_id_tag(Viewer.of(driver), tag="TAG-1")
    await two.a.stations.create_station(SYSTEM, cp_id="CP-OTHER", name="Werder",
                                        connectors=[ConnectorSpec(1, max_kw=50)])
    answers: list[Any] = []

    async def b_starts() -> None:
        answers.append(await two.b.charging.start_transaction(
            "CP-OTHER", 1, "TAG-1", 0, datetime.now(UTC).replace(microsecond=0)))

    monkeypatch.setattr(two.a.charging, "_lost_cut_by_start",
                        once(b_starts, two.a.charging._lost_cut_by_start))
    a_tx, a_told = await start(two.a)
    [(b_tx, b_told)] = answers
    assert a_tx < b_tx  # A drew its id first
    assert (a_told.status, b_told.status) == ("ConcurrentTx", "Accepted")
    held = {s.transaction_id: s.start_refused
            for s in await two.store.find_all(d.Session, Eq("id_tag", "TAG-1"))}
    assert held == {a_tx: "ConcurrentTx", b_tx: None}


async def test_two_starts_of_one_card_colliding_in_step_resolve_to_one_accepted(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r26-tx2: MongoDB's card guard is no lock. Two starts of one card on two
    instances at once, each writing its session and then reading for another (here: a
    slow round trip between the two), each met the other's write in flight: both were
    rolled back, read again together, met again, and after three attempts both chargers
    got an error and no session was written. Each reads again after a pause of its own
    (random; here one short, one long): one is Accepted, the other ConcurrentTx. On
    SQLite the guard is part of the write: the one written second reads again."""
    driver = await two.a.accounts.create_user(
        SYSTEM, email="dora@example.com", password="pw-12345678", name="Dora",
        role=d.Role.DRIVER)
    await two.a.fleet.issue_id_tag(Viewer.of(driver), tag="TAG-1")
    await two.a.stations.create_station(SYSTEM, cp_id="CP-OTHER", name="Werder",
                                        connectors=[ConnectorSpec(1, max_kw=50)])
    # In step: a session write of the card waits (a while) for the other instance's, so
    # both are in flight together; on MongoDB each reads for the other's, and their
    # rollbacks wait for both reads; then they read again together.
    writes: list[asyncio.Future[None]] = []
    checks: list[asyncio.Future[None]] = []
    retries: list[asyncio.Future[None]] = []

    async def in_step(waiting: list[asyncio.Future[None]]) -> None:
        if waiting:
            waiting.pop().set_result(None)
            return
        met = asyncio.get_running_loop().create_future()
        waiting.append(met)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(met), 0.1)
        if met in waiting:
            waiting.remove(met)

    for services in (two.a, two.b):
        store = services.charging.store

        async def rolled_back(cp_id: str, real: Any = services.charging._still_registered
                              ) -> Any:
            await in_step(retries)  # both read again together
            return await real(cp_id)

        monkeypatch.setattr(services.charging, "_still_registered", rolled_back)

        async def write(changes: Any, audit: Any, guards: Any = (),
                        real: Any = store.write) -> None:
            if any(g.kind is d.Session and not g.exists for g in guards):
                await in_step(writes)
            await real(changes, audit, guards)

        monkeypatch.setattr(store, "write", write)
        if isinstance(store, MongoStore):
            async def check(guards: Any, real: Any = store._check_guards) -> None:
                await asyncio.sleep(0.02)  # the other's write lands meanwhile
                try:
                    await real(guards)
                finally:
                    await in_step(checks)

            monkeypatch.setattr(store, "_check_guards", check)
    monkeypatch.setattr("domain.services.charging.START_RETRY_PAUSE",
                        timedelta(seconds=0.3))
    two.a.charging.retry_jitter = lambda: 0.0
    two.b.charging.retry_jitter = lambda: 0.99
    now = datetime.now(UTC).replace(microsecond=0)
    told = await asyncio.gather(
        two.a.charging.start_transaction(CP, 1, "TAG-1", 0, now),
        two.b.charging.start_transaction("CP-OTHER", 1, "TAG-1", 0, now))
    assert sorted(info.status for _, info in told) == ["Accepted", "ConcurrentTx"]
    held = {s.transaction_id: s.start_refused
            for s in await two.store.find_all(d.Session, Eq("id_tag", "TAG-1"))}
    assert sorted(held.values(), key=str) == ["ConcurrentTx", None]
    assert {tx: info.status for tx, info in told} == {
        tx: refused or "Accepted" for tx, refused in held.items()}


# ------------------------------------------------------------------ (C) owner vs demotion
async def operator(two: Instances) -> d.User:
    return await two.a.accounts.create_user(
        SYSTEM, email="own@example.com", password="pw-12345678", name="Own",
        role=d.Role.OPERATOR)


async def test_a_demotion_that_a_hand_over_beat_is_refused_in_use(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """A has counted the stations the operator owns (none) to make them a driver; B
    hands them a station before A writes. A runs again and refuses: they own one."""
    owner = await operator(two)
    accounts = two.a.accounts
    monkeypatch.setattr(accounts, "refuse_owner_demotion", once(
        lambda: two.b.stations.update_station(SYSTEM, two.station.id, owner_id=owner.id),
        accounts.refuse_owner_demotion))
    with pytest.raises(Conflict) as raised:
        await accounts.update_user(SYSTEM, owner.id, role=d.Role.DRIVER)
    assert (raised.value.code, raised.value.field) == ("IN_USE", "role")
    await _owner_may_own(two, owner)


async def test_a_hand_over_that_a_demotion_beat_is_refused(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """B has checked the new owner's role to hand them the station; A makes them a
    driver before B writes. B runs again and refuses: a driver cannot own a station."""
    owner = await operator(two)
    stations = two.b.stations
    read = stations.visible
    demoted = False

    async def owner_read(viewer: Any, kind: Any, record_id: Any, **kw: Any) -> Any:
        nonlocal demoted
        found = await read(viewer, kind, record_id, **kw)
        if kind is d.User and not demoted:
            demoted = True
            await two.a.accounts.update_user(SYSTEM, owner.id, role=d.Role.DRIVER)
        return found

    monkeypatch.setattr(stations, "visible", owner_read)
    with pytest.raises(ValidationError) as raised:
        await two.b.stations.update_station(SYSTEM, two.station.id, owner_id=owner.id)
    assert (raised.value.code, raised.value.field) == ("INVALID", "ownerId")
    [station] = await two.store.get_many(d.Station, [two.station.id])
    assert station is not None and station.owner_id is None


async def _owner_may_own(two: Instances, owner: d.User) -> None:
    [user] = await two.store.get_many(d.User, [owner.id])
    [station] = await two.store.get_many(d.Station, [two.station.id])
    assert user is not None and user.role is d.Role.OPERATOR
    assert station is not None and station.owner_id == owner.id




async def test_a_connector_added_while_its_station_is_removed_goes_with_it(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """A has read the station's connectors to remove them with it; B adds one before A
    writes. A runs again and removes it too: no connector of no station is left."""
    stations = two.a.stations
    monkeypatch.setattr(stations, "_end_state_history", once(
        lambda: two.b.stations.add_connector(SYSTEM, two.station.id, ConnectorSpec(2)),
        stations._end_state_history))
    await stations.remove_station(SYSTEM, two.station.id)
    assert await two.store.find_all(d.Connector, Eq("cp_id", CP)) == []


async def test_a_report_of_a_new_plug_after_its_station_was_removed_leaves_nothing(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s21: a StatusNotification for a connector not on record, its station read
    before a removal on another instance committed, inserted the connector after it: a
    connector of no station, its state interval open for good. Its charger is told its
    charge point is unknown."""
    from domain.errors import ValidationError
    from domain.services.charging import BootInfo

    charging = two.b.charging
    await charging.boot(CP, BootInfo(vendor="QA", model="R"))  # B holds the charger
    monkeypatch.setattr(charging, "_connector", once(
        lambda: two.a.stations.remove_station(SYSTEM, two.station.id), charging._connector))
    with pytest.raises(ValidationError) as raised:
        await charging.status_notification(CP, 2, "Available", "NoError")
    assert (raised.value.field, raised.value.code) == ("cpId", "NOT_FOUND")
    for kind in (d.Connector, d.StatusEvent, d.ConnectorInterval):
        assert await two.store.find_all(kind, Eq("station_id", two.station.id)) == [], kind


async def test_a_removal_run_again_asks_its_chargers_to_cancel_once(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s21: a removal whose write met a connector added on another instance runs
    again whole, and sent every CancelReservation its charger had not answered again
    (each waiting up to the command timeout)."""
    from datetime import UTC, datetime, timedelta

    from domain.errors import ChargerTimeout
    from domain.ports import Insert
    from domain.services import ConnectorSpec
    from domain.services.base import stamp_new

    held = stamp_new(d.Reservation(reservation_id=7, station_id=two.station.id, cp_id=CP,
                                   connector_id=1, id_tag="TAG-1",
                                   expires_at=datetime.now(UTC) + timedelta(hours=1),
                                   state=d.ReservationState.ACTIVE), SYSTEM)
    await two.store.write([Insert(held)], [])
    sent: list[str] = []

    async def send(viewer: Any, cp_id: str, action: str, payload: dict[str, Any],
                   **kw: Any) -> Any:
        sent.append(action)
        raise ChargerTimeout("no answer within the command timeout")

    monkeypatch.setattr(two.a.withdrawal.commands, "send", send)
    stations = two.a.stations
    monkeypatch.setattr(stations, "_end_state_history", once(
        lambda: two.b.stations.add_connector(SYSTEM, two.station.id, ConnectorSpec(2)),
        stations._end_state_history))
    await stations.remove_station(SYSTEM, two.station.id)
    assert sent == ["CancelReservation"]
    assert await two.store.find_all(d.Connector, Eq("station_id", two.station.id)) == []
    [cancelled] = await two.store.get_many(d.Reservation, [held.id])
    assert cancelled is not None and cancelled.state is d.ReservationState.CANCELLED


# ------------------------------------------------------------------ late meter values
def register(wh: int, at: datetime) -> list[MeterReading]:
    return [MeterReading(at, (SampledValue(str(wh)),))]


@pytest.mark.parametrize("second_wh", [1_500, 2_500])
async def test_late_readings_racing_move_each_share_once(
        two: Instances, monkeypatch: pytest.MonkeyPatch, second_wh: int) -> None:
    """A late reading moves energy from the stored sample after it to its own: B sends
    the same late frame (a charger resending it to another instance), or another late
    one, between A's read of that sample and A's write. Each share moves once; the
    session's increments add up to its energy."""
    begin = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    tx, _ = await two.a.charging.start_transaction(CP, 1, "TAG-1", 500, begin)
    await two.a.charging.meter_values(CP, 1, tx, register(3_500, begin + timedelta(minutes=40)))
    other = begin + timedelta(minutes=5 if second_wh == 1_500 else 20)
    charging = two.a.charging
    monkeypatch.setattr(charging, "_late_shares", once(
        lambda: two.b.charging.meter_values(CP, 1, tx, register(second_wh, other)),
        charging._late_shares))
    await charging.meter_values(CP, 1, tx, register(1_500, begin + timedelta(minutes=5)))
    [session] = await sessions(two.store)
    kept = await two.store.find_all(d.MeterSample, Eq("session_id", session.id))
    steps = {int((s.at - begin).total_seconds() // 60): s.delta_wh for s in kept}
    assert sum(s or 0 for s in steps.values()) == session.energy_wh == 3_000
    assert steps == ({5: 1_000, 40: 2_000} if second_wh == 1_500
                     else {5: 1_000, 20: 1_000, 40: 1_000}), steps


# ------------------------------------------------------------------ drivers' cards and cars
async def test_a_start_whose_holder_was_deactivated_meanwhile_is_not_accepted(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """B's start reads the card and its holder (active: Accepted); A's operator
    deactivates the driver once B has judged it (``_refusal``: none), before B writes
    the start. A
    deactivation leaves the card's record as it was, so the card-unchanged guard does
    not see it (session 33: told Accepted, a billed session of a deactivated driver
    whose card the deactivation's withdrawal had already left): the write is guarded on
    the holder still active, trips, and the start read again is told Blocked."""
    boss, driver, _, card = await fleet_of(two)
    charging = two.b.charging
    monkeypatch.setattr(charging, "_refusal", once(
        lambda: two.a.accounts.update_user(Viewer.of(boss), driver.id, active=False),
        charging._refusal))
    _, told = await charging.start_transaction(
        CP, 1, card.tag, 0, datetime.now(UTC).replace(microsecond=0))
    [stored] = await two.store.get_many(d.User, [driver.id])
    assert stored is not None and not stored.active
    [session] = await sessions(two.store)
    assert told.status == "Blocked", (told.status, session.start_refused)
    assert session.start_refused == "Blocked"
    for services in (two.a, two.b):
        await services.accounts.settled()
        await services.fleet.settled()


async def fleet_of(two: Instances) -> tuple[d.User, d.User, d.Vehicle, d.IdTag]:
    """An operator of a company, a driver of it with a car and a card linked to it."""
    company = await two.a.accounts.create_company(SYSTEM, name="Fleet Co")
    boss = await two.a.accounts.create_user(
        SYSTEM, email="boss@example.com", password="pw-12345678", name="Boss",
        role=d.Role.OPERATOR, company_id=company.id)
    driver = await two.a.accounts.create_user(
        SYSTEM, email="dora@example.com", password="pw-12345678", name="Dora",
        role=d.Role.DRIVER, company_id=company.id)
    car = await two.a.fleet.add_vehicle(Viewer.of(driver), license_plate="P-DO 1")
    card = await two.a.fleet.issue_id_tag(Viewer.of(driver), tag="DORA-1",
                                          vehicle_id=car.id)
    return boss, driver, car, card


async def entries_of(store: Store, record_id: str) -> list[d.AuditEntry]:
    return await store.find_all(d.AuditEntry, Eq("entity_id", record_id),
                                [Sort("at"), Sort("id")])


async def test_a_card_its_operator_blocked_meanwhile_is_not_removed_by_its_driver(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """A's driver has read their card (Accepted) to remove it; B's operator blocks it
    before A writes. The removal runs again on the blocked card and is refused, as a
    removal of a card its operator blocked is: it was deleted, the block gone with it
    (the driver then issued themselves a new card around it), and its DELETE entry's
    before-image was the Accepted card read, not the Blocked one it replaced."""
    boss, driver, _, card = await fleet_of(two)
    fleet = two.a.fleet
    monkeypatch.setattr(fleet, "visible", once(
        lambda: two.b.fleet.update_id_tag(Viewer.of(boss), card.id,
                                          status=d.IdTagStatus.BLOCKED),
        fleet.visible))
    with pytest.raises(Forbidden) as raised:
        await fleet.remove_id_tag(Viewer.of(driver), card.id)
    assert raised.value.field == "id"
    [kept] = await two.store.get_many(d.IdTag, [card.id])
    assert kept is not None and kept.status is d.IdTagStatus.BLOCKED
    assert kept.blocked_by == boss.id
    assert [e.action for e in await entries_of(two.store, card.id)] == [
        d.AuditAction.CREATE, d.AuditAction.UPDATE]
    await two.a.fleet.settled()
    await two.b.fleet.settled()


async def test_a_card_removal_that_a_start_of_it_beat_is_refused_in_use(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """A's removal of a card has read that no session holds it; B's start of the card
    is Accepted and written before A's delete. The delete is guarded (no session holding
    the card as the store stands with it): it runs again and is refused IN_USE, the
    card stays with the session charging on it (review r27-accounts2: deleted under an
    ACTIVE, billed session whose charger was told Accepted)."""
    _, driver, _, card = await fleet_of(two)
    fleet = two.a.fleet
    real_commit = fleet.commit
    answers: list[Any] = []

    async def commit(viewer: Viewer, changes: Any, *args: Any, **kwargs: Any) -> None:
        if not answers and any(isinstance(before, d.IdTag) for _, before in changes):
            answers.append(await two.b.charging.start_transaction(
                CP, 1, card.tag, 0, datetime.now(UTC).replace(microsecond=0)))
        await real_commit(viewer, changes, *args, **kwargs)

    monkeypatch.setattr(fleet, "commit", commit)
    with pytest.raises(Conflict) as raised:
        await fleet.remove_id_tag(Viewer.of(driver), card.id)
    assert raised.value.code == "IN_USE"
    [(_, told)] = answers
    assert told.status == "Accepted"
    [session] = await sessions(two.store)
    assert session.state is d.SessionState.ACTIVE and session.start_refused is None
    assert await two.store.get_many(d.IdTag, [card.id]) != [None]
    await two.a.fleet.settled()
    await two.b.fleet.settled()


async def test_a_start_whose_card_was_removed_meanwhile_is_not_accepted(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """B's start has judged the card (Accepted); A removes the card before B writes
    the session. B's write is refused (its card no longer on record), it reads again
    and the charger is told Invalid: no session charging, billed, on a card that is
    gone (review r27-accounts2)."""
    _, driver, _, card = await fleet_of(two)
    charging = two.b.charging
    monkeypatch.setattr(charging, "authorize_start", once(
        lambda: two.a.fleet.remove_id_tag(Viewer.of(driver), card.id),
        charging.authorize_start))
    _, told = await charging.start_transaction(
        CP, 1, card.tag, 0, datetime.now(UTC).replace(microsecond=0))
    assert told.status == "Invalid"
    assert await two.store.get_many(d.IdTag, [card.id]) == [None]
    [session] = await sessions(two.store)
    assert session.start_refused == "Invalid" and session.user_id is None
    await two.a.fleet.settled()
    await two.b.fleet.settled()


async def test_a_card_issued_inside_a_start_is_accepted_only_as_its_holders(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """B's start reads the card by its tag (none yet), then A issues it to a driver
    before B judges the start. Judged and written from one read of the card, guarded on
    it as read: the write meets the new card, the start reads again and is Accepted as
    the driver's, billed to them and holding the card, whose removal is refused IN_USE
    while it charges (review r27-accounts3: Accepted on the later read, written on the
    earlier, a session of no one's the card could be removed under)."""
    driver = await two.a.accounts.create_user(
        SYSTEM, email="tina@example.com", password="pw-12345678", name="Tina",
        role=d.Role.DRIVER)
    charging = two.b.charging
    issued: list[d.IdTag] = []

    async def issue() -> None:
        if not issued:
            issued.append(await two.a.fleet.issue_id_tag(Viewer.of(driver), tag="TAG-1"))
    real = charging.authorize_start

    async def authorize_start(*args: Any, **kw: Any) -> Any:
        await issue()
        return await real(*args, **kw)

    monkeypatch.setattr(charging, "authorize_start", authorize_start)
    _, told = await charging.start_transaction(
        CP, 1, "TAG-1", 0, datetime.now(UTC).replace(microsecond=0))
    [session] = await sessions(two.store)
    assert told.status == "Accepted"
    assert session.state is d.SessionState.ACTIVE and session.start_refused is None
    assert session.user_id == driver.id
    with pytest.raises(Conflict) as raised:
        await two.a.fleet.remove_id_tag(Viewer.of(driver), issued[0].id)
    assert raised.value.code == "IN_USE"
    await two.a.fleet.settled()
    await two.b.fleet.settled()


async def test_a_resend_of_an_invalid_start_after_its_card_is_issued_is_told_invalid(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start of an unknown tag is refused Invalid (a session of no one's). The tag is
    then issued to a driver and the charger resends the start (its answer lost). The
    session was judged on no card, so the new card is not the one its resend may accept
    it on: it is told what was recorded (Invalid) at once, without retries (review
    r27-accounts3: its guard could never hold, and after three tries it was told
    ConcurrentTx while no transaction held the card)."""
    stamp = datetime.now(UTC).replace(microsecond=0)
    charging = two.b.charging
    tx, first = await charging.start_transaction(CP, 1, "TAG-1", 0, stamp)
    assert first.status == "Invalid"
    driver = await two.a.accounts.create_user(
        SYSTEM, email="tina@example.com", password="pw-12345678", name="Tina",
        role=d.Role.DRIVER)
    await two.a.fleet.issue_id_tag(Viewer.of(driver), tag="TAG-1")
    pauses: list[int] = []

    async def pause(attempt: int) -> None:
        pauses.append(attempt)
    monkeypatch.setattr(charging, "pause_to_retry", pause)
    again, told = await charging.start_transaction(CP, 1, "TAG-1", 0, stamp)
    assert again == tx
    [session] = await sessions(two.store)
    assert (told.status, session.start_refused, session.user_id) == ("Invalid", "Invalid", None)
    assert pauses == []
    await two.a.fleet.settled()
    await two.b.fleet.settled()


async def test_a_card_blocked_inside_a_start_is_not_accepted(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """B's start reads the card (Accepted); A's operator blocks it (a lost card) while B
    reads the plug, before B writes the start. The Accepted write is guarded on the card
    unchanged as read: it trips, the start reads again and is told Blocked, recorded
    refused (review r27-accounts4: only the card's existence was guarded, and the
    charger was told Accepted, an ACTIVE billed session holding a blocked card that the
    block's withdrawal had run before and not seen)."""
    boss, _, _, card = await fleet_of(two)
    charging = two.b.charging
    monkeypatch.setattr(charging, "_connector", once(
        lambda: two.a.fleet.update_id_tag(Viewer.of(boss), card.id,
                                          status=d.IdTagStatus.BLOCKED),
        charging._connector))
    _, told = await charging.start_transaction(
        CP, 1, card.tag, 0, datetime.now(UTC).replace(microsecond=0))
    [stored] = await two.store.get_many(d.IdTag, [card.id])
    assert stored is not None and stored.status is d.IdTagStatus.BLOCKED
    [session] = await sessions(two.store)
    assert told.status == "Blocked", (told.status, session.start_refused)
    assert session.start_refused == "Blocked"
    await two.a.fleet.settled()
    await two.b.fleet.settled()


async def test_a_resend_of_an_invalid_start_after_its_tag_is_issued_and_blocked_is_told_invalid(
        two: Instances) -> None:
    """A start of an unknown tag is refused Invalid (a session of no one's). The tag is
    then issued to a driver, who blocks it (lost), and the charger resends the start. The
    card is not the one the session was judged on (none), so whatever its status the
    resend is told the refusal recorded (Invalid), never that other driver's card's
    status (review r27-accounts4: it was told Blocked)."""
    stamp = datetime.now(UTC).replace(microsecond=0)
    charging = two.b.charging
    tx, first = await charging.start_transaction(CP, 1, "TAG-1", 0, stamp)
    assert first.status == "Invalid"
    driver = await two.a.accounts.create_user(
        SYSTEM, email="tina@example.com", password="pw-12345678", name="Tina",
        role=d.Role.DRIVER)
    card = await two.a.fleet.issue_id_tag(Viewer.of(driver), tag="TAG-1")
    await two.a.fleet.update_id_tag(Viewer.of(driver), card.id,
                                    status=d.IdTagStatus.BLOCKED)
    again, told = await charging.start_transaction(CP, 1, "TAG-1", 0, stamp)
    assert again == tx
    [session] = await sessions(two.store)
    assert (session.start_refused, session.user_id) == ("Invalid", None)
    assert told.status == "Invalid", told.status
    await two.a.fleet.settled()
    await two.b.fleet.settled()


async def _refused_then_found(two: Instances
                              ) -> tuple[d.User, d.User, d.IdTag, int, datetime]:
    """A start of a blocked card on B refused Blocked, then the card unblocked on A (found):
    the boss, the driver, the card, the refused start's transaction and its stamp."""
    boss, driver, _, card = await fleet_of(two)
    stamp = datetime.now(UTC).replace(microsecond=0)
    await two.a.fleet.update_id_tag(Viewer.of(boss), card.id, status=d.IdTagStatus.BLOCKED)
    tx, first = await two.b.charging.start_transaction(CP, 1, card.tag, 0, stamp)
    assert first.status == "Blocked"
    await two.a.fleet.update_id_tag(Viewer.of(boss), card.id, status=d.IdTagStatus.ACCEPTED)
    return boss, driver, card, tx, stamp


async def test_a_resend_accepted_onto_a_refused_start_is_guarded_on_the_card_as_judged(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start of a blocked card is refused Blocked; the card is unblocked (found) and
    the charger resends the start (its answer lost): judged Accepted. The operator
    blocks the card again between that judgement and the resend's write. The write is
    guarded on the card unchanged as judged (its ``updated_at``), as a first start's
    is: it trips, the resend reads again and is told Blocked, the session still
    refused. Guarded only on the tag and holder, it was told Accepted and billed, an
    ACTIVE session holding a blocked card (review r28)."""
    boss, _, card, tx, stamp = await _refused_then_found(two)
    fleet, charging = two.a.fleet, two.b.charging
    monkeypatch.setattr(charging, "authorize_start", once(
        lambda: fleet.update_id_tag(Viewer.of(boss), card.id,
                                    status=d.IdTagStatus.BLOCKED),
        charging.authorize_start))
    again, told = await charging.start_transaction(CP, 1, card.tag, 0, stamp)
    assert again == tx
    [session] = await sessions(two.store)
    assert (told.status, session.start_refused) == ("Blocked", "Blocked")
    await two.a.fleet.settled()
    await two.b.fleet.settled()


async def test_a_resend_accepted_onto_a_refused_start_is_guarded_on_its_holder_active(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, the driver deactivated between the resend's judgement and its write
    instead: the card's record stays as it was, so the write is guarded on the holder
    still active too (session 33); it trips, and the resend read again is told
    Blocked, the session still refused."""
    boss, driver, card, tx, stamp = await _refused_then_found(two)
    charging = two.b.charging
    monkeypatch.setattr(charging, "authorize_start", once(
        lambda: two.a.accounts.update_user(Viewer.of(boss), driver.id, active=False),
        charging.authorize_start))
    again, told = await charging.start_transaction(CP, 1, card.tag, 0, stamp)
    assert again == tx
    [session] = await sessions(two.store)
    assert (told.status, session.start_refused) == ("Blocked", "Blocked")
    for services in (two.a, two.b):
        await services.accounts.settled()
        await services.fleet.settled()


async def test_a_card_removed_after_an_edit_meanwhile_is_audited_as_it_was(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator reads a card to remove it; another sets its expiry before the
    removal writes. The removal runs again: its DELETE entry's before-image is the card
    as it was deleted (the expiry set), chaining to the entry before it."""
    boss, _, _, card = await fleet_of(two)
    expiry = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    fleet = two.a.fleet
    monkeypatch.setattr(fleet, "visible", once(
        lambda: two.b.fleet.update_id_tag(Viewer.of(boss), card.id, expires_at=expiry),
        fleet.visible))
    await fleet.remove_id_tag(Viewer.of(boss), card.id)
    assert await two.store.get_many(d.IdTag, [card.id]) == [None]
    entries = await entries_of(two.store, card.id)
    assert [e.action for e in entries] == [
        d.AuditAction.CREATE, d.AuditAction.UPDATE, d.AuditAction.DELETE]
    assert entries[2].before == entries[1].after
    await two.a.fleet.settled()
    await two.b.fleet.settled()


async def test_a_car_removed_while_its_card_is_blocked_audits_the_card_as_it_is(
        two: Instances, monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver's removal of their car has read the card linked to it; their operator
    blocks the card before the removal writes. The unlink runs again on the blocked
    card: its entry's images say Blocked (they said Accepted, the card read, while the
    store kept the block: the log no longer told the card's state), and chain."""
    boss, driver, car, card = await fleet_of(two)
    fleet = two.a.fleet
    read = fleet.store.find_all
    blocked = False

    async def links_read(kind: Any, *args: Any, **kw: Any) -> Any:
        nonlocal blocked
        found = await read(kind, *args, **kw)
        if kind is d.IdTag and not blocked:
            blocked = True
            await two.b.fleet.update_id_tag(Viewer.of(boss), card.id,
                                            status=d.IdTagStatus.BLOCKED)
        return found

    monkeypatch.setattr(fleet.store, "find_all", links_read)
    await fleet.remove_vehicle(Viewer.of(driver), car.id)
    [kept] = await two.store.get_many(d.IdTag, [card.id])
    assert kept is not None and kept.vehicle_id is None
    assert kept.status is d.IdTagStatus.BLOCKED
    entries = await updates_of(two.store, card.id)
    assert [e.after["status"] for e in entries if e.after] == ["Blocked", "Blocked"]
    assert entries[1].before == entries[0].after
    await two.a.fleet.settled()
    await two.b.fleet.settled()


async def test_two_case_twins_created_in_step_on_mongodb_make_one_station(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MongoDB's guard is no lock (``MongoStore._check_guards``: read after the write):
    ``cp-new`` and ``CP-NEW`` created at the same moment on two instances each wrote its
    station, each guard then read the other's in flight, and both were rolled back: no
    station, and neither caller had one (review r28-leftocpp). Exactly one is created;
    the other caller is told its cpId exists (``DUPLICATE``). Each tries again after
    the one pause of writes tried again, its jitter the instance's (``retry_jitter``,
    wired by ``Services``: ``createStation`` had a copy drawing ``random`` of its own)."""
    async with two_stores("mongo", tmp_path / "unused.db") as (first, second):
        a, b = (Services(ServiceContext(store=s, policy=Policy(), hasher=FastHasher()))
                for s in (first, second))
        drawn: list[str] = []
        for name, services, jitter in (("a", a, 0.0), ("b", b, 0.99)):
            def drawing(name: str = name, jitter: float = jitter) -> float:
                drawn.append(name)
                return jitter

            services.charging.retry_jitter = drawing
        read, wrote, checking = asyncio.Barrier(2), asyncio.Barrier(2), asyncio.Barrier(2)
        for services, store in ((a, first), (b, second)):
            commit, check = services.stations.commit, store._check_guards  # type: ignore[attr-defined]
            hooked = [False, False]

            async def in_step(*args: Any, commit: Any = commit, hooked: list[bool] = hooked,
                              **kw: Any) -> Any:
                if not hooked[0]:  # both have read for a twin before either writes
                    hooked[0] = True
                    await asyncio.wait_for(read.wait(), 2)
                return await commit(*args, **kw)

            async def checked(*args: Any, check: Any = check, hooked: list[bool] = hooked,
                              **kw: Any) -> Any:
                if hooked[1]:
                    return await check(*args, **kw)
                hooked[1] = True
                # Both have written before either checks its guard, and both have
                # checked before either rolls back.
                await asyncio.wait_for(wrote.wait(), 2)
                try:
                    return await check(*args, **kw)
                finally:
                    await asyncio.wait_for(checking.wait(), 2)

            monkeypatch.setattr(services.stations, "commit", in_step)
            monkeypatch.setattr(store, "_check_guards", checked)
        got = await asyncio.gather(
            a.stations.create_station(SYSTEM, cp_id="cp-new", name="A"),
            b.stations.create_station(SYSTEM, cp_id="CP-NEW", name="B"),
            return_exceptions=True)
        stored = await first.find_all(d.Station, Eq("cp_id_key", "cp-new"))
        assert len(stored) == 1, (stored, got)
        created = [g for g in got if not isinstance(g, BaseException)]
        refused = [g for g in got if isinstance(g, BaseException)]
        assert [station.id for station, _ in created] == [stored[0].id]
        assert [(type(e), getattr(e, "code", None)) for e in refused] == \
            [(UniqueViolation, "DUPLICATE")]
        # The one that wrote again paused first (the other may find its station then).
        assert drawn and set(drawn) <= {"a", "b"}, drawn


@pytest.mark.parametrize("third", [False, True], ids=["two", "three"])
async def test_spellings_registering_in_step_on_mongodb_are_given_the_stored_station(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, third: bool) -> None:
    """Auto-registration's insert is guarded on no case twin (``no_case_twin``). Two
    spellings of a new charger's cpId at two instances at once: both inserts written,
    each guard reads the other's in flight, both batches roll back. The instance whose
    rollback finishes first read ``station_whatever_case`` while the other's rolled-back
    insert was still there (MongoDB reads see a batch in flight) and signed its charger
    in as that station, never stored, while the other registered a new one (review
    r28-batch). Every handshake is given the one station stored. ``third``: a third
    handshake of the charger (at a third instance, C, on A's connection) arrives while
    A's insert is in flight: its first look, before the cpId's lock, found that insert
    and gave it to its charger at once, not read as committed (session 29)."""
    async with two_stores("mongo", tmp_path / "unused.db") as (first, second):
        a, b, c = (Services(ServiceContext(store=s, policy=Policy(), hasher=FastHasher()),
                            auto_register=True)
                   for s in (first, second, first))
        read, wrote, checking = asyncio.Barrier(2), asyncio.Barrier(2), asyncio.Barrier(2)
        for services in (a, b):
            commit = services.charging.commit
            first_commit = [False]

            async def in_step(*args: Any, commit: Any = commit, first_commit: list[bool]
                              = first_commit, **kw: Any) -> Any:
                if not first_commit[0]:  # both have looked for the cpId before either writes
                    first_commit[0] = True
                    await asyncio.wait_for(read.wait(), 2)
                return await commit(*args, **kw)

            monkeypatch.setattr(services.charging, "commit", in_step)
        # C's handshake, started once both inserts are written, A's checked after C read.
        c_read = asyncio.Event()
        c_got: list[asyncio.Future[Any]] = []
        c_station = c.charging.station

        async def c_looked(cp_id: str) -> d.Station | None:
            found = await c_station(cp_id)
            c_read.set()
            return found

        monkeypatch.setattr(c.charging, "station", c_looked)
        for store, late in ((first, False), (second, True)):
            check = store._check_guards  # type: ignore[attr-defined]
            hooked = [False]

            async def checked(*args: Any, check: Any = check, hooked: list[bool] = hooked,
                              late: bool = late, **kw: Any) -> Any:
                if hooked[0]:
                    return await check(*args, **kw)
                hooked[0] = True
                await asyncio.wait_for(wrote.wait(), 2)  # both inserts written
                if third and not late:
                    c_got.append(asyncio.ensure_future(
                        c.charging.station_for_connection("new-9", "10.0.0.3")))
                    await asyncio.wait_for(c_read.wait(), 2)  # it saw A's insert
                try:
                    return await check(*args, **kw)  # each sees the other's
                finally:
                    await asyncio.wait_for(checking.wait(), 2)
                    if late:
                        # B's rollback a moment after A's: ordinary scheduling.
                        await asyncio.sleep(0.2)

            monkeypatch.setattr(store, "_check_guards", checked)
        got: list[Any] = [*await asyncio.gather(
            a.charging.station_for_connection("new-9", "10.0.0.1"),
            b.charging.station_for_connection("NEW-9", "10.0.0.2"), return_exceptions=True),
            *await asyncio.gather(*c_got, return_exceptions=True)]  # C's, once started
        stored = await first.find_all(d.Station, Eq("cp_id_key", "new-9"))
        assert len(stored) == 1, (stored, got)
        assert [getattr(g, "id", g) for g in got] == [stored[0].id] * (2 + third), \
            (stored, got)


async def test_a_charger_connecting_while_its_station_s_creation_rolls_back_is_unknown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Auto-registration off: an operator's createStation on A, and its charger's
    handshake on B while A's batch is in flight (MongoDB reads see it). The handshake's
    look took the station as found, and A's batch then rolled back (its instance failed
    before the journal closed): the charger was signed in as a station never stored
    (session 29). It is read as committed, and the charger is unknown."""
    async with two_stores("mongo", tmp_path / "unused.db") as (first, second):
        a, b = (Services(ServiceContext(store=s, policy=Policy(), hasher=FastHasher()))
                for s in (first, second))
        seen: list[d.Station | None] = []
        looked = asyncio.Event()
        b_station = b.charging.station

        async def b_looked(cp_id: str) -> d.Station | None:
            found = await b_station(cp_id)
            seen.append(found)
            looked.set()
            return found

        monkeypatch.setattr(b.charging, "station", b_looked)
        handshakes: list[asyncio.Future[Any]] = []
        check = first._check_guards  # type: ignore[attr-defined]

        async def fails_once_looked_at(*args: Any, **kw: Any) -> Any:
            await check(*args, **kw)  # the guard holds: everything is written
            handshakes.append(asyncio.ensure_future(
                b.charging.station_for_connection("CP-LATE", "10.0.0.1")))
            await asyncio.wait_for(looked.wait(), 2)
            raise RuntimeError("A lost its database before the batch's end")

        monkeypatch.setattr(first, "_check_guards", fails_once_looked_at)
        with pytest.raises(RuntimeError):
            await a.stations.create_station(SYSTEM, cp_id="CP-LATE", name="Late")
        [handshake] = handshakes
        got = await asyncio.wait_for(handshake, 5)
        assert [s.cp_id if s else None for s in seen] == ["CP-LATE"]  # in flight, seen
        assert await second.find_all(d.Station, Eq("cp_id", "CP-LATE")) == []
        assert got is None
