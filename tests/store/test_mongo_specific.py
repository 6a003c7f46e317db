"""MongoDB backend specifics (the shared behaviour is in tests/contract): how values are
stored, the indexes, the undo journal (rollback, crash recovery, several instances), the
mapping of duplicate-key errors to rules, and the filter edge cases of ObjectId fields.

Runs on mongomock through the async adapter; the tests that build server-shaped errors
check what mongomock cannot produce."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import bson
import mongomock
import pytest
from bson import ObjectId
from pymongo import ReadPreference, _csot
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DuplicateKeyError,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from chargegraph.startup import StartupFailed, starting
from domain.aggregation import Count
from domain.availability import (
    connector_fits,
    connectors_available_now,
    connectors_not_available_now,
    stations_with,
)
from domain.clock import utcnow
from domain.entities import (
    AuditAction,
    AuditEntry,
    Company,
    ConnectionEvent,
    Connector,
    ConnectorInterval,
    ConnectorStatus,
    ConnectorType,
    IdTag,
    InstanceLease,
    MeterSample,
    Payment,
    PaymentStatus,
    PendingStart,
    PowerType,
    Record,
    Refund,
    Registration,
    Reservation,
    ReservationState,
    Role,
    Session,
    SessionState,
    SignedMeterValue,
    Station,
    StatusEvent,
    Tariff,
    User,
    Vehicle,
    audit_after,
)
from domain.errors import Conflict, NotFound, StoreUnavailable, UniqueViolation
from domain.policy import SYSTEM, Policy, Viewer
from domain.ports import (
    PARTIAL_UNIQUE_RULES,
    UNIQUE_RULES,
    Change,
    Delete,
    Insert,
    InsertIfAbsent,
    Update,
)
from domain.query import (
    ALL,
    SEARCHED,
    Eq,
    In,
    Near,
    PageRequest,
    Range,
    Search,
    Sort,
    Sub,
    all_of,
)
from domain.services.base import patch
from domain.services.commands import owed_cancels
from domain.services.personal_data import NEWEST_FIRST as PERSONAL_NEWEST_FIRST
from graph.history import NEWEST_FIRST as HISTORY_NEWEST_FIRST
from graph.history import OLDEST_FIRST
from graph.nodes import BY_CONNECTOR, NEWEST_FIRST
from graph.query import NEWEST_AUDIT
from store.mongo import MongoStore, journal, migrations, writes
from store.mongo import batch as batch_module
from store.mongo import store as store_module
from store.mongo.codec import to_doc
from store.mongo.indexes import SUPERSEDED, index_name, violated_field
from store.mongo.journal import JOURNAL
from store.mongo.query import compile_query, sort_spec
from store.sqlite import migrations as sqlite_migrations
from tests.support.mongomock_async import (
    AsyncCollection,
    AsyncCursor,
    AsyncDatabase,
    async_mongomock_database,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


def raw(store: MongoStore) -> Any:
    """The mongomock database behind the adapter, for looking at stored documents."""
    db: AsyncDatabase = store.db
    return db.sync()


def audit_of(record: Any, action: AuditAction = AuditAction.UPDATE) -> AuditEntry:
    return AuditEntry(entity=record.kind, entity_id=record.id, action=action, actor="system")


def session_on(station: Station, connector_id: int, transaction_id: int,
               state: SessionState = SessionState.ACTIVE) -> Session:
    return Session(transaction_id=transaction_id, station_id=station.id, cp_id=station.cp_id,
                   connector_id=connector_id, id_tag="TAG", start_time=T0, meter_start_wh=0,
                   state=state)


# ---------------------------------------------------------------------------- storage


async def test_ids_and_foreign_keys_are_object_ids(mongo: MongoStore) -> None:
    company = Company(name="Acme")
    station = Station(cp_id="CP-1", name="One", company_id=company.id, lat=52.5, lon=13.4)
    await mongo.write([Insert(company), Insert(station)], [])

    doc = raw(mongo)["station"].find_one({"cp_id": "CP-1"})
    assert doc["_id"] == ObjectId(station.id)
    assert "id" not in doc
    assert doc["company_id"] == ObjectId(company.id)
    assert doc["owner_id"] is None  # a missing foreign key stays null
    assert set(doc["_geo"]) == {"x", "y", "z"}
    assert (await mongo.get_many(Station, [station.id]))[0] == station


async def test_values_are_stored_as_documented(mongo: MongoStore) -> None:
    station = Station(cp_id="CP-2", name="Two", registration=Registration.PENDING,
                      last_seen=T0)
    tariff = Tariff(station_id=station.id, price_per_kwh=Decimal("0.3950"), currency="EUR")
    entry = AuditEntry(entity="station", entity_id=station.id, action=AuditAction.CREATE,
                       actor="system", after={"name": "Two", "last_seen": T0.isoformat()})
    await mongo.write([Insert(station), Insert(tariff)], [entry])

    db = raw(mongo)
    s = db["station"].find_one({"_id": ObjectId(station.id)})
    assert s["registration"] == "Pending"  # enums as their value
    assert s["last_seen"] == T0  # a BSON date
    t = db["tariff"].find_one({"_id": ObjectId(tariff.id)})
    assert t["price_per_kwh"] == "0.3950"  # exact text ...
    assert t["_n_price_per_kwh"] == pytest.approx(0.395)  # ... and a numeric shadow
    a = db["audit_entry"].find_one({"_id": ObjectId(entry.id)})
    assert a["entity_id"] == station.id  # text: audit entries name any kind of id
    assert a["after"] == {"name": "Two", "last_seen": T0.isoformat()}  # kept as given
    assert (await mongo.get_many(Tariff, [tariff.id]))[0] == tariff
    assert (await mongo.get_many(AuditEntry, [entry.id]))[0] == entry


async def test_naive_datetimes_from_the_driver_read_as_utc() -> None:
    store = MongoStore(async_mongomock_database(tz_aware=False), sweep_every=None)
    await store.start()
    station = Station(cp_id="CP-3", name="Three", last_seen=T0)
    await store.write([Insert(station)], [])

    assert raw(store)["station"].find_one()["last_seen"].tzinfo is None
    loaded = (await store.get_many(Station, [station.id]))[0]
    assert loaded is not None and loaded.last_seen == T0
    assert loaded.last_seen.tzinfo is UTC
    await store.close()


async def test_a_field_added_later_reads_as_its_default(mongo: MongoStore) -> None:
    """MongoDB has no ALTER TABLE ... DEFAULT: a user written before ``token_epoch``
    existed reads with the dataclass default, not None."""
    user = User(email="old@example.com", name="Old", role=Role.DRIVER, password_hash="x")
    await mongo.write([Insert(user)], [])
    raw(mongo)["user"].update_one({"_id": ObjectId(user.id)}, {"$unset": {"token_epoch": ""}})
    assert "token_epoch" not in raw(mongo)["user"].find_one()
    loaded = (await mongo.get_many(User, [user.id]))[0]
    assert loaded is not None and loaded.token_epoch == 0


async def test_a_reservation_stored_before_cancel_claims_is_claimed_and_let_go(
        mongo: MongoStore) -> None:
    """Migration 79 has no MongoDB step: a reservation written before
    ``cancel_sending_since`` has no such key. A send's claim, guarded on the claim read
    (null), takes it; its release, guarded on the claim it wrote (our clock's
    microseconds, stored to the millisecond), lets it go."""
    owed = Reservation(reservation_id=1, station_id=str(ObjectId()), cp_id="CP-1",
                       connector_id=1, id_tag="T", expires_at=T0 + timedelta(hours=1),
                       state=ReservationState.CANCELLED, cancel_owed_since=T0)
    await mongo.write([Insert(owed)], [])
    raw(mongo)["reservation"].update_one({"_id": ObjectId(owed.id)},
                                         {"$unset": {"cancel_sending_since": ""}})
    [old] = await mongo.get_many(Reservation, [owed.id])
    assert old is not None and old.cancel_sending_since is None
    at = T0 + timedelta(microseconds=123_456)
    claim = patch(old, SYSTEM, only_if=("cancel_sending_since", None), required=True,
                  cancel_sending_since=at)
    await mongo.write([claim], [])
    with pytest.raises(Conflict):  # a second send reading it unclaimed loses
        await mongo.write([patch(old, SYSTEM, only_if=("cancel_sending_since", None),
                                 required=True, cancel_sending_since=at)], [])
    claimed = cast(Reservation, claim.record)
    await mongo.write([patch(claimed, SYSTEM, required=True,
                             only_if=("cancel_sending_since", claimed.cancel_sending_since),
                             cancel_sending_since=None)], [])
    [let_go] = await mongo.get_many(Reservation, [owed.id])
    assert let_go is not None and let_go.cancel_sending_since is None


async def test_a_reservation_stored_before_owed_cancels_owes_none(mongo: MongoStore
                                                                  ) -> None:
    """Migration 63 has no MongoDB step: a reservation written before
    ``cancel_owed_since`` has no such key, which reads null and is in no range: the
    owed-cancel filter (``Range(gte=1970)``) does not find it (review s25)."""
    station_id = str(ObjectId())
    old, owed = (Reservation(reservation_id=n, station_id=station_id, cp_id="CP-1",
                             connector_id=1, id_tag="T", expires_at=T0 + timedelta(hours=1),
                             state=ReservationState.CANCELLED,
                             cancel_owed_since=T0) for n in (1, 2))
    await mongo.write([Insert(old), Insert(owed)], [])
    raw(mongo)["reservation"].update_one({"_id": ObjectId(old.id)},
                                         {"$unset": {"cancel_owed_since": ""}})
    assert "cancel_owed_since" not in raw(mongo)["reservation"].find_one(
        {"_id": ObjectId(old.id)})
    [loaded] = await mongo.get_many(Reservation, [old.id])
    assert loaded is not None and loaded.cancel_owed_since is None
    found = await mongo.find_all(Reservation, owed_cancels(T0))
    assert [r.id for r in found] == [owed.id]


async def test_a_status_event_stored_before_vendor_codes_reads_as_none(mongo: MongoStore
                                                                        ) -> None:
    """``StatusEvent.vendor_error_code`` came later: an older document has no such key
    and reads as "none reported", not as a broken record."""
    event = StatusEvent(station_id=str(ObjectId()), cp_id="CP-1", connector_id=1,
                        status=ConnectorStatus.FAULTED, error_code="GroundFailure",
                        vendor_error_code="E42", at=T0)
    await mongo.write([Insert(event)], [])
    raw(mongo)["status_event"].update_one({"_id": ObjectId(event.id)},
                                          {"$unset": {"vendor_error_code": ""}})
    assert "vendor_error_code" not in raw(mongo)["status_event"].find_one()
    [loaded] = await mongo.get_many(StatusEvent, [event.id])
    assert loaded is not None and loaded.vendor_error_code is None
    assert loaded.error_code == "GroundFailure"


async def test_tariffs_and_sessions_stored_before_idle_fees_bands_and_plugs_read_as_none(
        mongo: MongoStore) -> None:
    """A tariff written before idle fees, time-of-day prices and plug scopes bills no
    idle time (price 0, grace 0, no cap), has no bands and prices all plugs; a session
    closed before them measured neither and records no plug."""
    tariff = Tariff(company_id=str(ObjectId()), price_per_kwh=Decimal("0.30"), currency="EUR",
                    idle_price_per_minute=Decimal("0.10"), idle_grace_minutes=15,
                    idle_fee_cap=Decimal("9"), time_zone="Europe/Berlin",
                    energy_bands=[{"days": ["MON"], "start": "07:00", "end": "09:00",
                                   "price_per_kwh": "0.5"}], power_type=PowerType.DC)
    session = Session(transaction_id=1, station_id=str(ObjectId()), cp_id="CP-1",
                      connector_id=1, id_tag="T", start_time=T0, meter_start_wh=0,
                      idle_seconds=60, band_energy_wh=[1, 2],
                      connector_type=ConnectorType.CCS2)
    await mongo.write([Insert(tariff), Insert(session)], [])
    raw(mongo)["tariff"].update_one({"_id": ObjectId(tariff.id)}, {"$unset": {
        "idle_price_per_minute": "", "_n_idle_price_per_minute": "",
        "idle_grace_minutes": "", "idle_fee_cap": "", "_n_idle_fee_cap": "",
        "energy_bands": "", "time_zone": "", "power_type": ""}})
    raw(mongo)["session"].update_one({"_id": ObjectId(session.id)}, {"$unset": {
        "idle_seconds": "", "band_energy_wh": "", "connector_type": ""}})
    [old] = await mongo.get_many(Tariff, [tariff.id])
    assert old is not None and (old.idle_price_per_minute, old.idle_grace_minutes,
                                old.idle_fee_cap) == (Decimal(0), 0, None)
    assert not old.bills_idle and old.price_per_kwh == Decimal("0.30")
    assert (old.energy_bands, old.time_zone, old.power_type) == ([], None, None)
    [closed] = await mongo.get_many(Session, [session.id])
    assert closed is not None and (closed.idle_seconds, closed.band_energy_wh,
                                   closed.connector_type) == (None, None, None)


async def test_decimals_compare_as_numbers(mongo: MongoStore) -> None:
    cheap = Tariff(company_id=str(ObjectId()), price_per_kwh=Decimal("9.50"), currency="EUR")
    dear = Tariff(company_id=str(ObjectId()), price_per_kwh=Decimal("10.0"), currency="EUR")
    await mongo.write([Insert(cheap), Insert(dear)], [])

    found = await mongo.find_all(Tariff, Range("price_per_kwh", gt=Decimal("9.6")))
    assert [t.id for t in found] == [dear.id]  # as text, "10.0" < "9.6"
    ordered = await mongo.find_all(Tariff, ALL, [Sort("price_per_kwh")])
    assert [t.price_per_kwh for t in ordered] == [Decimal("9.50"), Decimal("10.0")]


async def test_near_is_exact_great_circle(mongo: MongoStore) -> None:
    berlin = Station(cp_id="BER", name="Berlin", lat=52.5200, lon=13.4050)
    potsdam = Station(cp_id="PDM", name="Potsdam", lat=52.3906, lon=13.0645)
    await mongo.write([Insert(berlin), Insert(potsdam)], [])

    assert {s.cp_id for s in await mongo.find_all(Station, Near(52.52, 13.405, 26))} == {"BER"}
    assert {s.cp_id for s in await mongo.find_all(Station, Near(52.52, 13.405, 28))} == {
        "BER", "PDM"}


async def test_a_station_without_position_leaves_the_map(mongo: MongoStore) -> None:
    station = Station(cp_id="GEO", name="Geo", lat=52.52, lon=13.405)
    await mongo.write([Insert(station)], [])
    moved = dataclasses.replace(station, lat=None, lon=None)

    await mongo.write([Update(moved, frozenset({"lat", "lon"}))], [])

    assert "_geo" not in raw(mongo)["station"].find_one({"cp_id": "GEO"})
    assert await mongo.find_all(Station, Near(52.52, 13.405, 1)) == []


async def test_counters_live_in_their_own_collection(mongo: MongoStore) -> None:
    assert [await mongo.next_sequence("transaction") for _ in range(2)] == [1, 2]
    assert raw(mongo)[store_module.COUNTERS].find_one({"_id": "transaction"})["value"] == 2


# ---------------------------------------------------------------------------- indexes


def index_snapshot(store: MongoStore) -> dict[str, Any]:
    db = raw(store)
    return {name: db[name].index_information() for name in sorted(db.list_collection_names())}


async def test_start_is_idempotent(mongo: MongoStore) -> None:
    before = index_snapshot(mongo)
    await mongo.start()
    await mongo.start()
    assert index_snapshot(mongo) == before
    for kind, rules in UNIQUE_RULES.items():
        for fields in rules:
            assert before[kind][index_name(kind, fields)]["unique"] is True


async def test_start_drops_the_indexes_longer_ones_replaced(mongo: MongoStore) -> None:
    """A database made by an earlier version had the per-key loads' indexes without the
    ``_id`` tie-breaker: ``start`` drops them (and only them)."""
    db = raw(mongo)
    db["connector"].create_index([("station_id", 1), ("connector_id", 1)])
    db["session"].create_index([("station_id", 1), ("state", 1)])
    for key in ("station_id", "user_id"):
        db["session"].create_index([(key, 1), ("start_time", -1)])
    db["session"].create_index([("vehicle_id", 1)])
    db["meter_sample"].create_index([("session_id", 1), ("at", 1)])
    db["connection_event"].create_index([("station_id", 1), ("at", 1)])
    for key in ("actor", "holder_id"):  # ties oldest first, before session 30
        db["audit_entry"].create_index([(key, 1), ("at", -1), ("_id", 1)])
    db["audit_entry"].create_index([("at", -1), ("_id", 1)])  # so was the log's
    assert "station_id_1_state_1" in db["session"].index_information()
    await mongo.start()
    snapshot = index_snapshot(mongo)
    for kind, names in SUPERSEDED.items():
        assert not set(names) & set(snapshot[kind]), snapshot[kind]
    assert "station_id_1_connector_id_1__id_1" in snapshot["connector"]
    assert "station_id_1_state_1__id_1" in snapshot["session"]
    for key in ("station_id", "user_id", "vehicle_id"):
        assert f"{key}_1_start_time_-1__id_1" in snapshot["session"]
    assert "session_id_1_at_1" in snapshot["meter_sample"]  # kept: MeterValues writes it
    assert "station_id_1_at_1__id_1" in snapshot["connection_event"]
    for key in ("actor", "holder_id"):
        assert f"{key}_1_at_-1__id_-1" in snapshot["audit_entry"]
    # Newest first is (at, _id) read backwards: one index for both orders (review s30).
    assert "at_-1__id_1" not in snapshot["audit_entry"]
    assert "at_1__id_1" in snapshot["audit_entry"]


async def test_start_drops_the_indexes_no_longer_wanted(mongo: MongoStore) -> None:
    """What earlier versions created on every start (``git log -p --
    store/mongo/indexes.py``: the sample indexes of f36a9df and 48d7a05's tag index, QA
    s19 leftover.py) and dropped from ``INDEXES`` later: ``create_index`` only adds, so a
    database made then kept them, and every MeterValues paid for two of them."""
    db = raw(mongo)
    db["meter_sample"].create_index([("session_id", 1), ("at", 1), ("_id", 1)])
    db["meter_sample"].create_index([("session_id", 1), ("measurand", 1), ("at", 1),
                                     ("_id", 1)])
    db["local_list_entry"].create_index([("tag", 1)])
    await mongo.start()
    samples = set(db["meter_sample"].index_information())
    entries = set(db["local_list_entry"].index_information())
    assert not samples & {"session_id_1_at_1__id_1", "session_id_1_measurand_1_at_1__id_1"}
    assert "tag_1" not in entries
    assert {"session_id_1_at_1", "cp_id_1_at_1", "at_1"} <= samples  # the wanted ones stay
    assert {"card_id_1", "uniq_local_list_entry_station_id_tag"} <= entries


def answering_build_info(monkeypatch: pytest.MonkeyPatch, info: dict[str, Any]
                         ) -> AsyncDatabase:
    """A database whose server answers ``buildInfo`` with ``info``."""
    db = async_mongomock_database()

    async def command(name: str) -> dict[str, Any]:
        return {**info, "ok": 1.0} if name == "buildInfo" else {"ok": 1.0}

    monkeypatch.setattr(db, "command", command)
    return db


@pytest.mark.parametrize("info", [{"version": "4.4.29", "versionArray": [4, 4, 29, 0]},
                                  {"version": "4.2.0"}], ids=["array", "text"])
async def test_start_refuses_a_server_older_than_5_0(
    monkeypatch: pytest.MonkeyPatch, info: dict[str, Any]
) -> None:
    """Reads with sub-selects use the ``$lookup`` form of 5.0 (``localField`` with a
    ``pipeline``): an older server failed each such read, long after a start that said
    nothing. The start refuses it first, and ``serve`` says so in one line."""
    db = answering_build_info(monkeypatch, info)
    store = MongoStore(db, sweep_every=None)
    message = r"MongoDB 4\.\d\.\d+ is too old: ChargeGraph needs MongoDB 5\.0 or later"
    with pytest.raises(store_module.ServerTooOld, match=message):
        await store.start()
    assert db.sync().list_collection_names() == []  # nothing created
    with pytest.raises(StartupFailed, match="cannot start the store at mongodb://h/db: "
                                            + message), starting("the store at mongodb://h/db"):
        await store.start()


@pytest.mark.parametrize("info", [{"version": "5.0.0", "versionArray": [5, 0, 0, 0]},
                                  {"version": "8.0.0-rc3"}, {"version": "7.0.14"}])
async def test_start_accepts_a_server_of_5_0_or_later(
    monkeypatch: pytest.MonkeyPatch, info: dict[str, Any]
) -> None:
    store = MongoStore(answering_build_info(monkeypatch, info), sweep_every=None)
    await store.start()
    await store.close()


def _lookups(stages: Any, into: str) -> list[dict[str, Any]]:
    """Every ``$lookup`` into ``into`` in an aggregation, nested ones included."""
    found: list[dict[str, Any]] = []
    if isinstance(stages, dict):
        lookup = stages.get("$lookup")
        if isinstance(lookup, dict) and lookup.get("from") == into:
            found.append(lookup)
        for value in stages.values():
            found += _lookups(value, into)
    elif isinstance(stages, list):
        for stage in stages:
            found += _lookups(stage, into)
    return found


async def test_available_now_joins_reservations_by_their_station(mongo: MongoStore) -> None:
    """"Available now" looks for a live reservation of each plug and of its station's
    connector 0 by the reservation's ``station_id`` (indexed): per connector, its
    station's few reservations, never the collection."""
    now = utcnow()
    for kind, where in ((Connector, connectors_available_now(now)),
                        (Connector, connectors_not_available_now(now)),
                        (Station, stations_with(connector_fits(), available_now=True,
                                                now=now)),
                        (Station, stations_with(connector_fits(), available_now=False,
                                                now=now))):
        lookups = _lookups(compile_query(kind, where).pipeline(), "reservation")
        assert [lookup["foreignField"] for lookup in lookups] == ["station_id"] * 2
    indexed = [info["key"][0][0] for info in
               raw(mongo)["reservation"].index_information().values()]
    assert "station_id" in indexed


async def test_one_active_session_per_connector_is_a_partial_unique_index(
    mongo: MongoStore
) -> None:
    (fields, (cond_field, cond_value)), = PARTIAL_UNIQUE_RULES["session"]
    info = raw(mongo)["session"].index_information()[index_name("session", fields, True)]
    assert info["unique"] is True
    assert info["partialFilterExpression"] == {cond_field: cond_value}

    station = Station(cp_id="CP-S", name="S")
    done = session_on(station, 1, 1, SessionState.COMPLETED)
    also_done = session_on(station, 1, 2, SessionState.COMPLETED)
    running = session_on(station, 1, 3)
    await mongo.write([Insert(done), Insert(also_done), Insert(running)], [])
    with pytest.raises(UniqueViolation) as raised:
        await mongo.write([Insert(session_on(station, 1, 4))], [])
    assert raised.value.field == "connector_id"


# ---------------------------------------------------------------------------- grouped reads
#: The nested lists of the graph (``graph/nodes.py``): kind, key, the fields the filter
#: holds equal, sort. Each is a ``find_grouped`` whose per-key read an index must serve.
NESTED_LISTS = [
    pytest.param(Session, "station_id", (), NEWEST_FIRST, id="Station.sessions"),
    pytest.param(Session, "user_id", (), NEWEST_FIRST, id="User.sessions"),
    pytest.param(Session, "vehicle_id", (), NEWEST_FIRST, id="Vehicle.sessions"),
    pytest.param(Session, "station_id", ("state",), (), id="Connector.activeSession"),
    pytest.param(Connector, "station_id", (), BY_CONNECTOR, id="Station.connectors"),
    # Not Session.meterValues: its index is (session, at), since every MeterValues writes
    # it; a reading's few sampled values at one instant are sorted on read.
    pytest.param(SignedMeterValue, "session_id", (), OLDEST_FIRST,
                 id="Session.signedMeterValues"),
    pytest.param(StatusEvent, "station_id", ("connector_id",), HISTORY_NEWEST_FIRST,
                 id="Connector.statusHistory"),
    pytest.param(ConnectionEvent, "station_id", (), HISTORY_NEWEST_FIRST,
                 id="Station.connectionHistory"),
]


@pytest.mark.parametrize(("kind", "key", "equal", "sort"), NESTED_LISTS)
async def test_each_nested_list_reads_its_first_rows_from_an_index(
    mongo: MongoStore, kind: type[Record], key: str, equal: tuple[str, ...],
    sort: tuple[Sort, ...]
) -> None:
    """The key and the equal fields, then the sort with the ``_id`` tie-breaker (in its
    direction or wholly reversed): the server walks the index and stops at the limit."""
    order = sort_spec(kind, sort)
    backward = [(name, -direction) for name, direction in order]
    indexes = [list(info["key"]) for info in raw(mongo)[kind.kind].index_information().values()]
    assert any({name for name, _ in keys[:1 + len(equal)]} == {key, *equal}
               and keys[1 + len(equal):] in (order, backward) for keys in indexes), indexes


async def test_a_grouped_read_takes_each_key_s_first_rows_only(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One limited find per key, no aggregation of every matching document (a $group
    pushing a station's whole history, which a server refuses past 100 MiB)."""
    busy, quiet = Station(cp_id="CP-BUSY", name="Busy"), Station(cp_id="CP-Q", name="Quiet")
    sessions = [session_on(busy, 1, n, SessionState.COMPLETED) for n in range(1, 31)]
    sessions.append(session_on(quiet, 1, 99, SessionState.COMPLETED))
    await mongo.write([Insert(r) for r in sessions], [])
    reads: list[tuple[str, Any]] = []
    original_limit, original_aggregate = AsyncCursor.limit, AsyncCollection.aggregate

    def limit(cursor: AsyncCursor, n: int) -> AsyncCursor:
        reads.append(("find", n))
        return original_limit(cursor, n)

    async def aggregate(collection: AsyncCollection, pipeline: list[dict[str, Any]]) -> Any:
        reads.append(("aggregate", pipeline))
        return await original_aggregate(collection, pipeline)

    monkeypatch.setattr(AsyncCursor, "limit", limit)
    monkeypatch.setattr(AsyncCollection, "aggregate", aggregate)

    got = await mongo.find_grouped(Session, "station_id", [busy.id, quiet.id, busy.id],
                                   ALL, NEWEST_FIRST, 3)

    assert reads == [("find", 3), ("find", 3)]
    assert {k: len(v) for k, v in got.items()} == {busy.id: 3, quiet.id: 1}


# ---------------------------------------------------------------------------- rule mapping


def server_error(index: str, key_pattern: dict[str, int]) -> dict[str, Any]:
    """A duplicate-key error's details as a MongoDB server reports them."""
    keys = ", ".join(f'{k}: "x"' for k in key_pattern)
    return {"index": 0, "code": 11000, "keyPattern": key_pattern,
            "keyValue": dict.fromkeys(key_pattern, "x"),
            "errmsg": f"E11000 duplicate key error collection: cg.c index: {index} "
                      f"dup key: {{ {keys} }}"}


@pytest.mark.parametrize(("kind", "details", "field"), [
    ("user", server_error("uniq_user_email", {"email": 1}), "email"),
    ("connector", server_error("uniq_connector_cp_id_connector_id",
                               {"cp_id": 1, "connector_id": 1}), "cp_id"),
    ("session", server_error("uniq_session_cp_id_connector_id_active",
                             {"cp_id": 1, "connector_id": 1}), "connector_id"),
    ("session", server_error("uniq_session_transaction_id", {"transaction_id": 1}),
     "transaction_id"),
    ("station", server_error("_id_", {"_id": 1}), "id"),
    # Without a known index name the key pattern decides (per kind).
    ("station", {"code": 11000, "keyPattern": {"cp_id": 1}}, "cp_id"),
    ("connector", {"code": 11000, "keyPattern": {"cp_id": 1, "connector_id": 1}}, "cp_id"),
    ("session", {"code": 11000, "keyPattern": {"cp_id": 1, "connector_id": 1}},
     "connector_id"),
    ("company", {"code": 11000, "keyPattern": {"_id": 1}}, "id"),
    # mongomock says nothing: the store has to look.
    ("user", {"code": 11000, "errmsg": "E11000 Duplicate Key Error"}, None),
    ("user", None, None),
])
def test_violated_field_reads_server_details(kind: str, details: dict[str, Any] | None,
                                             field: str | None) -> None:
    assert violated_field(kind, details) == field


class RaisingCollection:
    """Fails like a server would, so the mapping is checked without mongomock's gaps."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.lookups = 0

    async def insert_many(self, docs: Any, ordered: bool = True) -> None:
        raise self.exc

    async def update_one(self, *args: Any, **kwargs: Any) -> None:
        raise self.exc

    async def replace_one(self, *args: Any, **kwargs: Any) -> None:
        raise self.exc

    async def find_one(self, *args: Any, **kwargs: Any) -> None:
        self.lookups += 1
        return None


class OneCollectionDb:
    def __init__(self, collection: RaisingCollection) -> None:
        self.collection = collection

    def __getitem__(self, name: str) -> RaisingCollection:
        return self.collection


async def test_a_bulk_insert_error_names_the_rule() -> None:
    station = Station(cp_id="CP-X", name="X")
    connector = Connector(station_id=station.id, cp_id="CP-X", connector_id=1)
    details = server_error("uniq_connector_cp_id_connector_id",
                           {"cp_id": 1, "connector_id": 1})
    collection = RaisingCollection(BulkWriteError({"writeErrors": [details],
                                                   "nInserted": 0}))

    with pytest.raises(UniqueViolation) as raised:
        await writes.insert(OneCollectionDb(collection), [Insert(connector)])

    assert raised.value.field == "cp_id"
    assert collection.lookups == 0  # the server's details were enough


async def test_an_update_error_names_the_rule() -> None:
    user = User(email="a@example.com", name="A", role=Role.DRIVER)
    details = server_error("uniq_user_email", {"email": 1})
    collection = RaisingCollection(DuplicateKeyError(details["errmsg"], 11000, details))

    for change in (Update(user), Update(user, frozenset({"email"}))):
        with pytest.raises(UniqueViolation) as raised:
            await writes.update(OneCollectionDb(collection), change)
        assert raised.value.field == "email"
    assert collection.lookups == 0


@pytest.mark.parametrize("rule", sorted(f"{k}.{f[0]}" for k, rs in UNIQUE_RULES.items()
                                         for f in rs))
def test_every_unique_index_name_maps_to_its_rule(rule: str) -> None:
    kind, field = rule.split(".")
    (fields,) = [f for f in UNIQUE_RULES[kind] if f[0] == field]
    pattern = dict.fromkeys(fields, 1)
    assert violated_field(kind, server_error(index_name(kind, fields), pattern)) == field


# ---------------------------------------------------------------------------- rollback


async def test_a_second_change_breaking_a_unique_rule_undoes_the_first(
    mongo: MongoStore
) -> None:
    station = Station(cp_id="CP-1", name="One")
    await mongo.write([Insert(station)], [])
    renamed = dataclasses.replace(station, name="Renamed")
    clash = Station(cp_id="CP-1", name="Copy")

    with pytest.raises(UniqueViolation) as raised:
        await mongo.write([Update(renamed), Insert(clash)],
                          [audit_of(renamed), audit_of(clash, AuditAction.CREATE)])

    assert raised.value.field == "cp_id"
    assert await mongo.get_many(Station, [station.id, clash.id]) == [station, None]
    assert await mongo.count(AuditEntry, ALL) == 0
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


async def test_a_missing_target_restores_deleted_and_updated_records(
    mongo: MongoStore
) -> None:
    gone, kept = Company(name="Gone"), Company(name="Kept")
    await mongo.write([Insert(gone), Insert(kept)], [])
    renamed = dataclasses.replace(kept, name="Renamed")
    ghost = Company(name="Never stored")

    with pytest.raises(NotFound):
        await mongo.write([Delete(gone), Update(renamed, frozenset({"name"})), Update(ghost)],
                          [audit_of(gone, AuditAction.DELETE), audit_of(renamed)])

    assert await mongo.get_many(Company, [gone.id, kept.id, ghost.id]) == [gone, kept, None]
    assert await mongo.count(AuditEntry, ALL) == 0


async def test_a_run_of_inserts_is_undone_as_a_whole(mongo: MongoStore) -> None:
    taken = Station(cp_id="TAKEN", name="T")
    await mongo.write([Insert(taken)], [])
    run = [Station(cp_id=f"NEW-{i}", name=str(i)) for i in range(3)]

    with pytest.raises(UniqueViolation) as raised:
        await mongo.write([*(Insert(s) for s in run), Insert(Station(cp_id="TAKEN", name="x")),
                           Insert(Station(cp_id="NEW-9", name="after"))], [])

    assert raised.value.field == "cp_id"
    assert await mongo.count(Station, ALL) == 1


async def test_insert_if_absent_skips_existing_and_repeated_records(mongo: MongoStore) -> None:
    def sample(value: float) -> MeterSample:
        return MeterSample(id=str(ObjectId()), session_id=None, cp_id="CP", connector_id=1,
                           at=T0, measurand="Energy.Active.Import.Register", value=value)

    old, new = sample(1), sample(2)
    await mongo.write([Insert(old)], [])
    changed_copy = dataclasses.replace(old, value=99)

    await mongo.write([InsertIfAbsent(changed_copy), InsertIfAbsent(new), InsertIfAbsent(new),
                       InsertIfAbsent(sample(3))], [])

    assert await mongo.count(MeterSample, ALL) == 3
    assert (await mongo.get_many(MeterSample, [old.id]))[0] == old  # not overwritten
    await mongo.write([InsertIfAbsent(new)], [])  # alone (no journal) too
    assert await mongo.count(MeterSample, ALL) == 3


async def test_rollback_restores_only_what_a_partial_update_wrote(mongo: MongoStore) -> None:
    station = Station(cp_id="CP-P", name="Before", online=False)
    await mongo.write([Insert(station)], [])
    renamed = dataclasses.replace(station, name="After")
    change = Update(renamed, frozenset({"name", "updated_at", "updated_by"}))

    undo = await journal.plan(mongo.db, [change])
    batch = ObjectId()
    await writes.apply(mongo.db, change, batch)
    # Other fields written in between, not by a store write (which would take the batch's
    # mark away: see the tests below), but as a migration's update does.
    raw(mongo)["station"].update_one({"_id": ObjectId(station.id)},
                                      {"$set": {"online": True, "last_seen": T0}})
    assert await journal.roll_back(mongo.db, batch, undo, []) == []

    loaded = (await mongo.get_many(Station, [station.id]))[0]
    assert loaded is not None
    assert loaded.name == "Before"  # the batch's own change is undone
    assert (loaded.online, loaded.last_seen) == (True, T0)  # the other fields survive
    assert journal.MARK not in raw(mongo)["station"].find_one()  # as before the batch


async def test_a_batch_past_its_deadline_is_rolled_back(mongo: MongoStore,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setattr(journal, "BATCH_DEADLINE_S", 0.0)
    company = Company(name="Late")

    with pytest.raises(batch_module.BatchTimeout):
        await mongo.write([Insert(company)], [audit_of(company, AuditAction.CREATE)])

    assert await mongo.count(Company, ALL) == 0
    assert await mongo.count(AuditEntry, ALL) == 0
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


async def test_the_batch_deadline_bounds_the_writes_of_its_journal(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer stalled while writing its journal is stopped by the deadline as in its
    batch's writes (the server aborts an operation past it): the journal's ``at`` is
    taken before, and a sweep takes it for a dead writer's once stale."""
    bounds: list[float | None] = []
    original: Callable[[AsyncCollection, str], Any] = AsyncCollection.__getattr__

    def recording(collection: AsyncCollection, name: str) -> Any:
        if collection._c.name == JOURNAL and name == "insert_one":
            bounds.append(_csot.remaining())
        return original(collection, name)

    monkeypatch.setattr(AsyncCollection, "__getattr__", recording)
    company = Company(name="Bounded")
    await mongo.write([Insert(company)], [audit_of(company, AuditAction.CREATE)])

    [bound] = bounds
    assert bound is not None and bound <= journal.BATCH_DEADLINE_S


async def test_a_batch_past_its_deadline_before_its_journal_writes_nothing(
    mongo: MongoStore
) -> None:
    """Written again after yielding, on its first attempt's deadline, already past."""
    with pytest.raises(batch_module.BatchTimeout):
        await batch_module.Batch.open(mongo.db, [Insert(Company(name="Late"))], [],
                                      deadline=time.monotonic())
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


# ---------------------------------------------------------------------------- concurrent writers
# Two batches interleaved at a fixed point: the other request's write lands while batch A
# is paused inside ``MongoStore.write``, then A goes on and fails. What the other request
# committed must survive A's rollback, as it does on SQLite (where A holds the lock).


class Paused:
    """Pauses the first call of ``module.name`` after it returned and the predicate holds
    for its arguments, until ``resume``; ``reached`` is set when it is paused."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any, name: str,
                 when: Callable[..., bool] = lambda *args: True) -> None:
        self.reached, self.resume = asyncio.Event(), asyncio.Event()
        original = getattr(module, name)

        async def paused(*args: Any, **kwargs: Any) -> Any:
            result = await original(*args, **kwargs)
            if not self.reached.is_set() and when(*args):
                self.reached.set()
                await asyncio.wait_for(self.resume.wait(), 5)
            return result

        monkeypatch.setattr(module, name, paused)

    async def meanwhile(self, batch: Coroutine[Any, Any, None],
                        other: Callable[[], Awaitable[None]],
                        fails: type[Exception] = NotFound) -> None:
        """Runs ``batch`` up to the pause, then ``other`` to its end, then the rest of
        ``batch``, which is expected to fail with ``fails``."""
        task = asyncio.create_task(batch)
        await asyncio.wait_for(self.reached.wait(), 5)
        await other()
        self.resume.set()
        with pytest.raises(fails):
            await task


def writing(record_id: str, name: str) -> Callable[..., bool]:
    """Whether a step of ``writes.apply`` is the update naming ``record_id`` ``name``."""
    return lambda db, step, *rest: (isinstance(step, Update) and step.record.id == record_id
                                    and getattr(step.record, "name", None) == name)


def rename(station: Station, name: str, whole: bool = False) -> Update:
    renamed = dataclasses.replace(station, name=name)
    return Update(renamed) if whole else Update(renamed, frozenset({"name"}))


GHOST = Company(name="Never stored")  # an update of it fails the batch with NotFound


async def stored(store: MongoStore, station: Station) -> Station:
    loaded = (await store.get_many(Station, [station.id]))[0]
    assert loaded is not None
    return loaded


@pytest.mark.parametrize("whole", [False, True], ids=["partial", "replace"])
async def test_an_update_committed_after_the_batch_wrote_survives_its_rollback(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    whole: bool
) -> None:
    station = Station(cp_id="CP-L", name="original")
    await mongo.write([Insert(station)], [])
    pause = Paused(monkeypatch, writes, "apply", writing(station.id, "A"))

    async def other() -> None:
        await mongo.write([rename(station, "B", whole)], [])

    await pause.meanwhile(mongo.write([rename(station, "A", whole), Update(GHOST)], []), other)

    assert (await stored(mongo, station)).name == "B"
    assert raw(mongo)[JOURNAL].count_documents({}) == 0
    assert f"station {station.id}" not in caplog.text  # nothing of the batch was left


class Blocked:
    """Set when a batch cannot go on: it waits for another batch in flight to finish
    (``journal.wait_settled``), or it reached a write the test holds back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.event = asyncio.Event()
        original = journal.wait_settled

        async def waiting(*args: Any, **kwargs: Any) -> bool:
            self.event.set()
            return await original(*args, **kwargs)

        monkeypatch.setattr(journal, "wait_settled", waiting)


@pytest.mark.parametrize("whole", [False, True], ids=["partial", "replace"])
async def test_a_batch_writes_over_another_batch_in_flight_only_once_it_is_settled(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, whole: bool
) -> None:
    """Batch B meets A's uncommitted rename: it waits for A (which fails) and then writes
    on the document as A's rollback left it, as SQLite's write lock orders them."""
    station = Station(cp_id="CP-W", name="original")
    await mongo.write([Insert(station)], [])
    pause = Paused(monkeypatch, writes, "apply", writing(station.id, "A"))
    blocked = Blocked(monkeypatch)
    entry = audit_of(station)
    a = asyncio.create_task(mongo.write([rename(station, "A", whole), Update(GHOST)], []))
    await asyncio.wait_for(pause.reached.wait(), 5)
    b = asyncio.create_task(mongo.write([rename(station, "B", whole)], [entry]))
    await asyncio.wait_for(blocked.event.wait(), 5)

    pause.resume.set()
    with pytest.raises(NotFound):
        await a
    await asyncio.wait_for(b, 5)

    assert (await stored(mongo, station)).name == "B"
    assert (await mongo.get_many(AuditEntry, [entry.id]))[0] == entry
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


@pytest.mark.parametrize("whole", [False, True], ids=["partial", "replace"])
@pytest.mark.parametrize("b_read", ["after", "before"])
async def test_two_failing_batches_on_one_document_leave_nothing_of_either(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, whole: bool, b_read: str
) -> None:
    """A renames the station, B (another request) sets its address; A fails, then B
    fails. B used to take A's uncommitted rename as its image: A's rollback left the
    document (B's mark), B's restored A's rename, and name 'A' stayed with no audit.
    ``b_read``: whether B read its images after A wrote (``Batch.open``) or before (its
    write then finds the document changed and reads it again)."""
    station = Station(cp_id="CP-C", name="original")
    await mongo.write([Insert(station)], [])
    b_ghost = Company(name="Never stored either")
    b_planned = Paused(monkeypatch, journal, "plan", lambda db, changes: any(
        change.record is b_ghost for change in changes))
    if b_read == "after":
        b_planned.resume.set()
    a_wrote = Paused(monkeypatch, writes, "apply", writing(station.id, "A"))
    blocked = Blocked(monkeypatch)
    a_done = asyncio.Event()
    apply = writes.apply

    async def b_fails_after_a(db: Any, step: Any, *rest: Any) -> list[Record]:
        if isinstance(step, Update) and step.record is b_ghost:
            blocked.event.set()
            await asyncio.wait_for(a_done.wait(), 5)
        return await apply(db, step, *rest)

    monkeypatch.setattr(writes, "apply", b_fails_after_a)
    addressed = dataclasses.replace(station, address="B street")
    b_change = Update(addressed) if whole else Update(addressed, frozenset({"address"}))

    async def batch_a() -> None:
        try:
            await mongo.write([rename(station, "A", whole), Update(GHOST)], [audit_of(station)])
        finally:
            a_done.set()

    async def batch_b() -> None:
        await mongo.write([b_change, Update(b_ghost)], [audit_of(station)])

    if b_read == "before":
        b = asyncio.create_task(batch_b())
        await asyncio.wait_for(b_planned.reached.wait(), 5)
    a = asyncio.create_task(batch_a())
    await asyncio.wait_for(a_wrote.reached.wait(), 5)
    if b_read == "after":
        b = asyncio.create_task(batch_b())
    b_planned.resume.set()
    await asyncio.wait_for(blocked.event.wait(), 5)  # B waits for A, or wrote and waits
    a_wrote.resume.set()
    for task in (a, b):
        with pytest.raises(NotFound):
            await asyncio.wait_for(task, 5)

    assert await stored(mongo, station) == station
    assert await mongo.count(AuditEntry, ALL) == 0
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


async def test_a_read_as_committed_waits_for_the_batch_in_flight_that_wrote_it(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``get_committed``: a station a batch in flight inserted is read (``get_many``)
    while that batch may still roll it back; read as committed it is the station once
    the batch has settled, here none (review r28-batch: a charger signed in as it)."""
    station = Station(cp_id="CP-Q", name="in flight")
    inserting = Paused(monkeypatch, writes, "apply", lambda db, step, *rest: isinstance(
        step, list) and any(change.record.id == station.id for change in step))
    blocked = Blocked(monkeypatch)
    a = asyncio.create_task(mongo.write([Insert(station), Update(GHOST)], []))
    await asyncio.wait_for(inserting.reached.wait(), 5)
    assert await mongo.get_many(Station, [station.id]) == [station]  # uncommitted
    read = asyncio.create_task(mongo.get_committed(Station, [station.id]))
    await asyncio.wait_for(blocked.event.wait(), 5)
    assert not read.done()
    inserting.resume.set()
    with pytest.raises(NotFound):
        await a
    assert await asyncio.wait_for(read, 5) == [None]
    committed = Station(cp_id="CP-Q2", name="committed")
    await mongo.write([Insert(committed), Insert(Company(name="with it"))], [])
    assert await mongo.get_committed(Station, [committed.id, station.id]) == [committed, None]


@pytest.mark.parametrize(("spelt", "late"), [("CP-TWIN", False), ("cp-twin", False),
                                             ("CP-TWIN", True)])
async def test_create_station_is_not_refused_for_a_twin_whose_insert_rolls_back(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, spelt: str, late: bool
) -> None:
    """Another create's station with the cpId (or its case twin), in flight and rolled
    back after, is no twin: the read for one (or, ``late``: inserted after that read,
    the unique index) met it, and createStation answered DUPLICATE though no station
    kept the cpId (QA s29 mongo). It waits for that write to settle and, finding no
    station committed, creates its own (``late``: tried again)."""
    from domain.services import ServiceContext, Services
    from domain.services.base import stamp_new
    from tests.helpers import FastHasher

    services = Services(ServiceContext(store=mongo, policy=Policy(), hasher=FastHasher()))
    other = stamp_new(Station(cp_id=spelt, name="rolled back"), SYSTEM)
    inserting = Paused(monkeypatch, writes, "apply", lambda db, step, *rest: isinstance(
        step, list) and any(change.record.id == other.id for change in step))
    blocked = Blocked(monkeypatch)

    async def other_inserts() -> None:
        await mongo.write([Insert(other), Update(GHOST)], [])

    a = asyncio.create_task(other_inserts())
    if late:  # between createStation's read for a twin and its write
        commit = services.stations.commit

        async def after_read(*args: Any, **kw: Any) -> Any:
            await asyncio.wait_for(inserting.reached.wait(), 5)
            return await commit(*args, **kw)

        monkeypatch.setattr(services.stations, "commit", after_read)
    else:
        await asyncio.wait_for(inserting.reached.wait(), 5)
    create = asyncio.create_task(
        services.stations.create_station(SYSTEM, cp_id="CP-TWIN", name="kept"))
    await asyncio.wait_for(blocked.event.wait(), 5)  # waits for the write in flight
    assert not create.done()
    inserting.resume.set()
    with pytest.raises(NotFound):
        await a
    station, _ = await asyncio.wait_for(create, 5)
    assert [s.id for s in await mongo.find_all(Station, Eq("cp_id_key", "cp-twin"))] \
        == [station.id]


async def test_a_batch_another_batch_holds_up_too_long_fails_changed(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rather than capture an uncommitted image (a batch paused here, a writer that died
    and is not yet stale): the request may be sent again."""
    station = Station(cp_id="CP-T", name="original")
    await mongo.write([Insert(station)], [])
    pause = Paused(monkeypatch, writes, "apply", writing(station.id, "A"))
    monkeypatch.setattr(journal, "SETTLE_WAIT_S", 0.05)
    a = asyncio.create_task(mongo.write([rename(station, "A"), Update(GHOST)], []))
    await asyncio.wait_for(pause.reached.wait(), 5)

    with pytest.raises(Conflict) as raised:
        await mongo.write([rename(station, "B")], [audit_of(station)])

    assert (raised.value.code, raised.value.field) == ("CHANGED", "id")
    pause.resume.set()
    with pytest.raises(NotFound):
        await a
    assert await stored(mongo, station) == station
    assert await mongo.count(AuditEntry, ALL) == 0
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


@pytest.mark.parametrize("audited", [True, False], ids=["audited", "telemetry"])
async def test_two_batches_writing_two_documents_in_opposite_orders_both_go_through(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, audited: bool
) -> None:
    """Each batch writes its first document, then meets the other's uncommitted write on
    its second. Each waited for the other and both failed ``CHANGED``; now the younger
    rolls back and runs again after the older, as SQLite's write lock orders them."""
    one, two = Station(cp_id="CP-X1", name="one"), Station(cp_id="CP-X2", name="two")
    await mongo.write([Insert(one), Insert(two)], [])
    opened: set[str] = set()
    wrote: set[str] = set()
    both_opened, both_wrote = asyncio.Event(), asyncio.Event()
    apply = writes.apply

    async def both(seen: set[str], name: str, event: asyncio.Event) -> None:
        seen.add(name)
        if len(seen) == 2:
            event.set()
        await asyncio.wait_for(event.wait(), 5)

    async def first_writes_cross(db: Any, step: Any, mark: Any = None, *rest: Any
                                 ) -> list[Record]:
        # Each batch's first write waits for the other batch to have read its images,
        # and its second for the other's first write: neither sees the other's write
        # before its own, and each then meets the other's. (Written again after
        # yielding, a batch passes at once.)
        name = getattr(getattr(step, "record", None), "name", "")
        if mark is None or not name.endswith("-first"):
            return await apply(db, step, mark, *rest)
        await both(opened, name, both_opened)
        done = await apply(db, step, mark, *rest)
        await both(wrote, name, both_wrote)
        return done

    monkeypatch.setattr(writes, "apply", first_writes_cross)

    async def batch(first: Station, second: Station, tag: str) -> None:
        await mongo.write([rename(first, f"{tag}-first"), rename(second, f"{tag}-second")],
                          [audit_of(first)] if audited else [])

    await asyncio.wait_for(asyncio.gather(batch(one, two, "A"), batch(two, one, "B")), 10)

    names = {(await stored(mongo, one)).name, (await stored(mongo, two)).name}
    assert names in ({"A-first", "A-second"}, {"B-first", "B-second"})  # one after the other
    assert await mongo.count(AuditEntry, ALL) == (2 if audited else 0)
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


@pytest.mark.parametrize("whole", [False, True], ids=["partial", "replace"])
async def test_a_document_changed_elsewhere_after_the_batch_wrote_it_gets_back_its_own_fields(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, whole: bool
) -> None:
    """Another writer wrote other fields (a heartbeat) after the batch renamed the
    station: the rollback puts back the name and keeps the heartbeat, as on SQLite,
    where the heartbeat waits for the rollback. The batch's rename stayed, with no audit
    entry, when a rollback left any document another writer had touched."""
    station = Station(cp_id="CP-H", name="original")
    await mongo.write([Insert(station)], [])
    pause = Paused(monkeypatch, writes, "apply", writing(station.id, "A"))
    heartbeat = Update(dataclasses.replace(station, last_seen=T0), frozenset({"last_seen"}))

    async def other() -> None:
        await mongo.write([heartbeat], [])

    await pause.meanwhile(mongo.write([rename(station, "A", whole), Update(GHOST)],
                                      [audit_of(station)]), other)

    loaded = await stored(mongo, station)
    assert (loaded.name, loaded.last_seen) == ("original", T0)
    assert await mongo.count(AuditEntry, ALL) == 0
    assert raw(mongo)["station"].find_one()[journal.MARK] is not None  # a new version


async def test_a_failed_batch_leaves_no_unaudited_part_whatever_lands_in_between(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QA's case: the batch renames A, then gives B a charge point id C holds; a
    heartbeat of A lands between the two writes. A kept the new name, and the batch's
    audit entry went."""
    a, b, c = (Station(cp_id=f"CP-{n}", name=f"Old {n}") for n in "ABC")
    await mongo.write([Insert(a), Insert(b), Insert(c)], [])
    pause = Paused(monkeypatch, writes, "apply", writing(a.id, "New A"))
    heartbeat = Update(dataclasses.replace(a, last_seen=T0), frozenset({"last_seen"}))
    taken = Update(dataclasses.replace(b, cp_id="CP-C"), frozenset({"cp_id"}))

    async def other() -> None:
        await mongo.write([heartbeat], [])

    await pause.meanwhile(mongo.write([rename(a, "New A"), taken], [audit_of(a)]), other,
                          UniqueViolation)

    loaded = await stored(mongo, a)
    assert (loaded.name, loaded.last_seen) == ("Old A", T0)
    assert (await stored(mongo, b)).cp_id == "CP-B"
    assert await mongo.count(AuditEntry, ALL) == 0


async def test_a_field_another_writer_wrote_too_is_theirs_and_the_others_go_back(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    station = Station(cp_id="CP-F", name="original", address="old street")
    await mongo.write([Insert(station)], [])
    both = Update(dataclasses.replace(station, name="A", address="A street"),
                  frozenset({"name", "address"}))
    pause = Paused(monkeypatch, writes, "apply", writing(station.id, "A"))

    async def other() -> None:
        await mongo.write([rename(station, "B")], [])

    await pause.meanwhile(mongo.write([both, Update(GHOST)], [audit_of(station)]), other)

    loaded = await stored(mongo, station)
    assert (loaded.name, loaded.address) == ("B", "old street")
    assert await mongo.count(AuditEntry, ALL) == 0


async def test_an_insert_another_writer_changed_since_stays_with_its_audit_entry(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleting it would delete the other writer's change too: it stays, and so does its
    entry (it stood unaudited)."""
    station = Station(cp_id="CP-N", name="new")
    created = audit_of(station, AuditAction.CREATE)
    pause = Paused(monkeypatch, writes, "apply", lambda db, step, *rest: isinstance(
        step, list) and step[0].record is station)
    heartbeat = Update(dataclasses.replace(station, last_seen=T0), frozenset({"last_seen"}))

    async def other() -> None:
        await mongo.write([heartbeat], [])

    await pause.meanwhile(mongo.write([Insert(station), Update(GHOST)], [created]), other)

    assert (await stored(mongo, station)).last_seen == T0
    assert (await mongo.get_many(AuditEntry, [created.id]))[0] == created


async def test_a_rollback_keeps_an_audit_entry_of_another_write_with_the_same_id(
    mongo: MongoStore
) -> None:
    """The batch's entry clashes with a stored one (the batch fails on it): the rollback
    deleted the stored entry, which was not the batch's."""
    station = Station(cp_id="CP-E", name="original")
    earlier = audit_of(station, AuditAction.CREATE)
    await mongo.write([Insert(station)], [earlier])
    clashing = dataclasses.replace(audit_of(station), id=earlier.id)

    with pytest.raises(UniqueViolation):
        await mongo.write([rename(station, "A"), rename(station, "A2")], [clashing])

    assert (await mongo.get_many(AuditEntry, [earlier.id]))[0] == earlier
    assert (await stored(mongo, station)).name == "original"


@pytest.mark.parametrize("whole", [False, True], ids=["partial", "replace"])
async def test_an_update_committed_before_the_batch_wrote_is_what_its_rollback_restores(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, whole: bool
) -> None:
    """The other write lands between the batch reading its images and writing: the batch
    reads that document again (and journals it) before it writes over it."""
    station = Station(cp_id="CP-R", name="original", online=False)
    await mongo.write([Insert(station)], [])
    pause = Paused(monkeypatch, journal, "plan")
    online = Update(dataclasses.replace(station, name="B", online=True),
                    frozenset({"name", "online"}))

    async def other() -> None:
        await mongo.write([online], [])

    await pause.meanwhile(mongo.write([rename(station, "A", whole), Update(GHOST)], []), other)

    loaded = await stored(mongo, station)
    assert (loaded.name, loaded.online) == ("B", True)


async def test_a_record_deleted_after_the_batch_wrote_it_stays_deleted(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    station = Station(cp_id="CP-D", name="original")
    await mongo.write([Insert(station)], [])
    pause = Paused(monkeypatch, writes, "apply", writing(station.id, "A"))

    async def other() -> None:
        await mongo.write([Delete(station)], [])

    await pause.meanwhile(mongo.write([rename(station, "A", True), Update(GHOST)], []),
                          other)

    assert await mongo.count(Station, ALL) == 0


async def test_a_document_changed_between_two_writes_of_a_batch_fails_it(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither image could undo the batch without undoing the other writer too."""
    station = Station(cp_id="CP-2W", name="original")
    await mongo.write([Insert(station)], [])
    pause = Paused(monkeypatch, writes, "apply", writing(station.id, "A"))

    async def other() -> None:
        await mongo.write([rename(station, "B")], [])

    await pause.meanwhile(mongo.write([rename(station, "A"), rename(station, "A2")], []),
                          other, Conflict)

    assert (await stored(mongo, station)).name == "B"


def sample(value: float = 1.0) -> MeterSample:
    return MeterSample(id=str(ObjectId()), session_id=None, cp_id="CP", connector_id=1, at=T0,
                       measurand="Energy.Active.Import.Register", value=value)


@pytest.mark.parametrize("audited", [False, True], ids=["alone", "batch"])
@pytest.mark.parametrize("insert", [InsertIfAbsent, Insert])
async def test_a_record_inserted_by_another_write_first_survives_the_rollback(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, audited: bool,
    insert: type[Insert] | type[InsertIfAbsent]
) -> None:
    """The other write inserts the same record (a charger message handled twice) after the
    batch read its images: the batch's insert is skipped (``InsertIfAbsent``) or fails
    (``Insert``), and either way the record is not the batch's to delete."""
    x = sample()
    entry = audit_of(x, AuditAction.CREATE)
    pause = Paused(monkeypatch, journal, "plan", lambda db, changes: len(changes) == 2)

    async def other() -> None:
        await mongo.write([InsertIfAbsent(x)], [entry] if audited else [])

    await pause.meanwhile(mongo.write([insert(x), Update(GHOST)], []), other,
                          NotFound if insert is InsertIfAbsent else UniqueViolation)

    assert (await mongo.get_many(MeterSample, [x.id]))[0] == x
    assert (await mongo.get_many(AuditEntry, [entry.id]))[0] == (entry if audited else None)


@pytest.mark.parametrize("audited", [False, True], ids=["alone", "batch"])
async def test_a_record_another_write_found_in_flight_survives_the_rollback(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, audited: bool
) -> None:
    """The batch inserted the record; the other write's ``InsertIfAbsent`` found it there
    and counted it as stored; then the batch failed. Deleting it would lose the other
    write's record (SQLite would have made the other write wait and then insert it)."""
    x = sample()
    pause = Paused(monkeypatch, writes, "apply", lambda db, step, *rest: isinstance(
        step, list) and step[0].record.id == x.id)

    async def other() -> None:
        await mongo.write([InsertIfAbsent(x)], [audit_of(x)] if audited else [])

    await pause.meanwhile(mongo.write([InsertIfAbsent(x), Update(GHOST)], []), other)

    assert (await mongo.get_many(MeterSample, [x.id]))[0] == x


async def test_the_batch_own_repeated_insert_is_still_undone(mongo: MongoStore) -> None:
    x = sample()
    with pytest.raises(NotFound):
        await mongo.write([InsertIfAbsent(x), InsertIfAbsent(x), Update(GHOST)], [])
    assert await mongo.count(MeterSample, ALL) == 0


# ---------------------------------------------------------------------------- crash recovery


def leave_half_a_batch(store: MongoStore, at: datetime | None, marked: bool = True
                       ) -> tuple[Station, Connector]:
    """What a writer that died half-way leaves: its journal and its first change. Not
    ``marked``: as a version before the marks left it (no mark on either)."""
    station = Station(cp_id="CP-9", name="Nine")
    connector = Connector(station_id=station.id, cp_id="CP-9", connector_id=1)
    entry = audit_of(station, AuditAction.CREATE)
    doc: dict[str, Any] = {
        "_id": ObjectId(), "audit": [ObjectId(entry.id)],
        "undo": [{"kind": "station", "id": ObjectId(station.id), "before": None,
                  "fields": None},
                 {"kind": "connector", "id": ObjectId(connector.id), "before": None,
                  "fields": None}]}
    if at is not None:
        doc["at"] = at
    if marked:
        doc[journal.MARKED] = True
    db = raw(store)
    db[JOURNAL].insert_one(doc)
    # The crash came before the connector.
    db["station"].insert_one(writes.marked(to_doc(station), doc["_id"] if marked else None))
    return station, connector


@pytest.mark.parametrize("marked", [True, False], ids=["marked", "before-marks"])
async def test_start_rolls_back_a_batch_whose_writer_died(mongo: MongoStore, marked: bool
                                                          ) -> None:
    leave_half_a_batch(mongo, datetime.now(UTC) - timedelta(minutes=10), marked)

    await mongo.start()

    assert await mongo.find_one(Station, Eq("cp_id", "CP-9")) is None
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


async def test_a_journal_without_a_time_counts_as_stale(mongo: MongoStore) -> None:
    leave_half_a_batch(mongo, None)
    await mongo.start()
    assert await mongo.count(Station, ALL) == 0


async def test_start_leaves_a_batch_another_instance_is_writing(mongo: MongoStore) -> None:
    now = datetime.now(UTC)
    station, _ = leave_half_a_batch(mongo, now)

    await mongo.start()  # e.g. a second instance starting during a rolling deploy

    assert (await mongo.get_many(Station, [station.id]))[0] == station
    assert raw(mongo)[JOURNAL].count_documents({}) == 1
    # Had that writer died, a later sweep (at start or periodic) rolls its batch back.
    assert await journal.sweep(mongo.db, now + journal.STALE_AFTER + timedelta(seconds=1)) == 1
    assert await mongo.count(Station, ALL) == 0
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


async def test_concurrent_sweeps_roll_a_batch_back_once() -> None:
    # Operations interleave as on a server: both sweeps see the stale batch, one claims it.
    store = MongoStore(async_mongomock_database(interleave=True), sweep_every=None)
    await store.start()
    leave_half_a_batch(store, datetime.now(UTC) - timedelta(minutes=10))
    counts = await asyncio.gather(journal.sweep(store.db), journal.sweep(store.db))
    assert sorted(counts) == [0, 1]
    assert await store.count(Station, ALL) == 0


async def test_the_periodic_sweep_runs_while_open_and_stops_on_close() -> None:
    store = MongoStore(async_mongomock_database(), sweep_every=0.01)
    await store.start()
    await store.start()  # idempotent: still one sweeper
    leave_half_a_batch(store, datetime.now(UTC) - timedelta(minutes=10))
    for _ in range(100):
        if raw(store)[JOURNAL].count_documents({}) == 0:
            break
        await asyncio.sleep(0.01)
    assert await store.count(Station, ALL) == 0
    sweeper = store._sweeper
    await store.close()
    assert sweeper is not None and sweeper.done()


async def test_a_sweep_undoes_what_a_dead_writer_wrote_and_nobody_changed_since(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, renamed, later = Company(name="Kept"), Company(name="Renamed"), Company(name="Later")
    await mongo.write([Insert(kept), Insert(renamed), Insert(later)], [])
    fresh, touched = Company(name="Fresh"), Company(name="Touched")

    async def dies(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise ConnectionError("the writer is gone")  # its journal stays, nothing undone

    monkeypatch.setattr(journal, "roll_back", dies)
    with pytest.raises(NotFound):
        await mongo.write([Update(dataclasses.replace(kept, name="A1"), frozenset({"name"})),
                           Update(dataclasses.replace(renamed, name="A2")),
                           Insert(fresh), Insert(touched), Update(GHOST),
                           Update(dataclasses.replace(later, name="A3"))], [])
    monkeypatch.undo()
    # Other requests go on writing: some of what the dead writer wrote, and a record its
    # batch would have changed after the failure.
    for record in (renamed, touched, later):
        await mongo.write([Update(dataclasses.replace(record, name=f"B {record.name}"),
                                  frozenset({"name"}))], [])

    assert await journal.sweep(mongo.db, datetime.now(UTC) + journal.STALE_AFTER
                               + timedelta(seconds=1)) == 1

    names = {c.id: c.name for c in await mongo.find_all(Company, ALL)}
    assert names == {kept.id: "Kept", renamed.id: "B Renamed", touched.id: "B Touched",
                     later.id: "B Later"}
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


def completing(session: Session) -> Update:
    """The stop of ``session`` as the charging service writes it (a partial update)."""
    done = dataclasses.replace(session, state=SessionState.COMPLETED,
                               end_time=T0 + timedelta(hours=1))
    return Update(done, frozenset({"state", "end_time"}))


async def test_a_restore_a_unique_rule_refuses_leaves_the_document_and_closes_the_journal(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop batch fails after completing the session; meanwhile a new ACTIVE session
    took the connector. Putting ``state: ACTIVE`` back would break the one-active-session
    index: the rollback raised, kept its journal, and every sweep (every start) failed."""
    station = Station(cp_id="CP-U", name="U")
    old = session_on(station, 1, 1)
    await mongo.write([Insert(station), Insert(old)], [])
    new = session_on(station, 1, 2)
    pause = Paused(monkeypatch, writes, "apply", lambda db, step, *rest: isinstance(
        step, Update) and step.record.id == old.id)

    async def other() -> None:
        await mongo.write([Insert(new)], [])

    renamed = rename(station, "renamed")
    entries = [audit_of(old), audit_of(station), audit_of(GHOST)]
    await pause.meanwhile(mongo.write([completing(old), renamed, Update(GHOST)], entries),
                          other)

    states = {s.transaction_id: s.state for s in await mongo.find_all(Session, ALL)}
    assert states == {1: SessionState.COMPLETED, 2: SessionState.ACTIVE}
    assert (await stored(mongo, station)).name == "U"
    # The stop stays, so does its entry (nothing changes unaudited); the rest are gone.
    assert await mongo.find_all(AuditEntry, ALL) == [entries[0]]
    assert raw(mongo)[JOURNAL].count_documents({}) == 0
    assert f"could not put back session {old.id}" in caplog.text


async def test_a_sweep_a_unique_rule_refuses_still_closes_the_journal_and_starts(
    mongo: MongoStore
) -> None:
    """The same, left by a writer that died after its first write: the sweep must not
    raise, and a store starting afterwards must start."""
    station = Station(cp_id="CP-V", name="V")
    old = session_on(station, 1, 1)
    await mongo.write([Insert(station), Insert(old)], [])
    changes = [completing(old), rename(station, "x")]
    entries = [audit_of(old), audit_of(station)]
    dead = await batch_module.Batch.open(mongo.db, changes, entries)
    await dead._write(writes.steps(changes)[0], dead.id)  # then the writer dies
    await mongo.write([Insert(session_on(station, 1, 2))], [])

    later = datetime.now(UTC) + journal.STALE_AFTER + timedelta(seconds=1)
    assert await journal.sweep(mongo.db, later) == 1

    assert raw(mongo)[JOURNAL].count_documents({}) == 0
    assert await mongo.find_all(AuditEntry, ALL) == [entries[0]]  # the stop's, kept
    restarted = MongoStore(mongo.db, sweep_every=None)
    await restarted.start()
    states = {s.transaction_id: s.state for s in await restarted.find_all(Session, ALL)}
    assert states == {1: SessionState.COMPLETED, 2: SessionState.ACTIVE}


def priced_stop(station: Station, session: Session
                ) -> tuple[list[Update | Insert], list[AuditEntry], Payment]:
    """A StopTransaction's batch as the charging service writes it: the session completed
    and priced, its payment opened, an entry for each."""
    done = dataclasses.replace(session, state=SessionState.COMPLETED, cost_minor=420,
                               currency="EUR", end_time=T0 + timedelta(hours=1))
    payment = Payment(session_id=session.id, station_id=station.id, user_id=None,
                      amount_minor=420, currency="EUR", created_by="ocpp:" + station.cp_id)
    entries = [audit_of(done),
               AuditEntry(entity="payment", entity_id=payment.id, action=AuditAction.CREATE,
                          actor="ocpp:" + station.cp_id, after=audit_after(None, payment))]
    changes: list[Update | Insert] = [
        Update(done, frozenset({"state", "end_time", "cost_minor", "currency"})),
        Insert(payment)]
    return changes, entries, payment


async def test_a_refused_restore_of_a_stop_keeps_its_payment(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop batch fails after writing the session and the payment; a new ACTIVE
    session took the connector meanwhile, so the session stays completed and priced. Its
    payment was undone with the rest: a priced session without a payment."""
    station = Station(cp_id="CP-P", name="P")
    old = session_on(station, 1, 1)
    await mongo.write([Insert(station), Insert(old)], [])
    changes, entries, payment = priced_stop(station, old)
    pause = Paused(monkeypatch, writes, "apply", lambda db, step, *rest: isinstance(
        step, Update) and step.record.id == old.id)

    async def other() -> None:
        await mongo.write([Insert(session_on(station, 1, 2))], [])

    await pause.meanwhile(mongo.write([*changes, Update(GHOST)],
                                      [*entries, audit_of(GHOST)]), other)

    [kept] = [s for s in await mongo.find_all(Session, ALL) if s.transaction_id == 1]
    assert (kept.state, kept.cost_minor) == (SessionState.COMPLETED, 420)
    assert await mongo.find_all(Payment, ALL) == [payment]  # as the batch created it
    assert await mongo.find_all(AuditEntry, ALL) == entries  # both changes stand, audited
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


async def test_a_sweep_gives_a_kept_stop_its_payment_exactly_once(mongo: MongoStore) -> None:
    """The writer died after completing the session, before the payment; the sweep's
    restore is refused. The payment comes back from the journal, and a second recovery of
    the same journal (a sweep finishing a rollback cut short) adds no second one."""
    station = Station(cp_id="CP-Q", name="Q")
    old = session_on(station, 1, 1)
    await mongo.write([Insert(station), Insert(old)], [])
    changes, entries, payment = priced_stop(station, old)
    dead = await batch_module.Batch.open(mongo.db, changes, entries)
    await dead._write(writes.steps(changes)[0], dead.id)  # then the writer dies
    await mongo.write([Insert(session_on(station, 1, 2))], [])
    left = raw(mongo)[JOURNAL].find_one({"_id": dead.id})

    later = datetime.now(UTC) + journal.STALE_AFTER + timedelta(seconds=1)
    assert await journal.sweep(mongo.db, later) == 1
    await journal.roll_back(mongo.db, dead.id, left["undo"], left["audit"],
                            entries=left[journal.ENTRIES])

    assert await mongo.find_all(Payment, ALL) == [payment]
    assert await mongo.find_all(AuditEntry, ALL) == entries
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


async def test_a_kept_stop_whose_session_has_a_payment_gets_no_second(
    mongo: MongoStore
) -> None:
    """A payment's identity is its session: one opened meanwhile (another writer's)
    stands, and the batch's is not added beside it, nor its entry kept."""
    station = Station(cp_id="CP-R", name="R")
    old = session_on(station, 1, 1)
    await mongo.write([Insert(station), Insert(old)], [])
    changes, entries, _ = priced_stop(station, old)
    dead = await batch_module.Batch.open(mongo.db, changes, entries)
    await dead._write(writes.steps(changes)[0], dead.id)
    theirs = Payment(session_id=old.id, station_id=station.id, user_id=None,
                     amount_minor=420, currency="EUR")
    await mongo.write([Insert(session_on(station, 1, 2)), Insert(theirs)], [])

    later = datetime.now(UTC) + journal.STALE_AFTER + timedelta(seconds=1)
    assert await journal.sweep(mongo.db, later) == 1

    assert await mongo.find_all(Payment, ALL) == [theirs]
    assert await mongo.find_all(AuditEntry, ALL) == entries[:1]


def stale() -> datetime:
    """A sweep's now at which every journal written so far is stale."""
    return datetime.now(UTC) + journal.STALE_AFTER + timedelta(seconds=1)


def split_journals(monkeypatch: pytest.MonkeyPatch, split: bool) -> None:
    """Journals of a few KiB in parts (``split``), else in one document as usual."""
    if split:
        monkeypatch.setattr(journal, "JOURNAL_DOC_BYTES", 1024)


def padded(n: int) -> list[Company]:
    """Companies large enough that ten of them journaled pass 1 KiB."""
    return [Company(name=f"c{i} " + "x" * 200) for i in range(n)]


@pytest.mark.parametrize("split", [False, True], ids=["one-document", "split"])
@pytest.mark.parametrize("reached", [0, 1, 2], ids=["after-journal", "after-update",
                                                     "after-first-delete"])
async def test_a_sweep_writes_no_delete_entry_for_a_record_still_there(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, split: bool, reached: int
) -> None:
    """A writer killed before its batch's deletes (right after its journal, after an
    earlier step, after one delete of several): the sweep's undo of a delete upserted the
    image over the record still there, clashed on its id, took that for a unique rule
    (``REFUSED``), and wrote the batch's DELETE entry of a record never deleted."""
    split_journals(monkeypatch, split)
    kept = padded(10)
    other = Company(name="other")
    await mongo.write([Insert(other), *(Insert(c) for c in kept)], [])
    changes: list[Update | Delete] = [Update(dataclasses.replace(other, name="renamed"),
                                             frozenset({"name"})),
                                      *(Delete(c) for c in kept)]
    entries = [audit_of(other), *(audit_of(c, AuditAction.DELETE) for c in kept)]
    dead = await batch_module.Batch.open(mongo.db, changes, entries)
    assert (dead.layout.parts > 0) == split
    for step in writes.steps(changes)[:reached]:
        await dead._write(step, dead.id)  # then the writer dies

    assert await journal.sweep(mongo.db, stale()) == 1

    names = {c.id: c.name for c in await mongo.find_all(Company, ALL, limit=100)}
    assert names == {c.id: c.name for c in [other, *kept]}
    assert await mongo.find_all(AuditEntry, ALL) == []
    assert raw(mongo)[JOURNAL].count_documents({}) == 0
    assert raw(mongo)[journal.JOURNAL_PARTS].count_documents({}) == 0


def snapshot(store: MongoStore) -> dict[str, list[dict[str, Any]]]:
    """Every stored company and audit entry, as stored (marks too)."""
    db = raw(store)
    return {kind: list(db[kind].find().sort([("_id", 1)]))
            for kind in ("company", "audit_entry")}


@pytest.mark.parametrize("split", [False, True], ids=["one-document", "split"])
async def test_a_sweep_finishing_a_rollback_cut_short_changes_nothing(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, split: bool
) -> None:
    """Undoing a batch twice is undoing it once. The writer's rollback (of every kind of
    change: an insert, a partial and a whole update, a delete it puts back, a delete a
    unique rule keeps) dies before closing the journal; the sweep undoes it all again.
    Before, the record the rollback had put back clashed with the sweep's upsert on its
    id, and the sweep wrote the DELETE entry of a deletion that was undone."""
    split_journals(monkeypatch, split)
    partial, whole, back, gone, *rest = padded(8)
    await mongo.write([Insert(c) for c in (partial, whole, back, gone, *rest)], [])
    fresh = Company(name="fresh")
    changes: list[Change] = [
        Insert(fresh), Update(dataclasses.replace(partial, name="p2"), frozenset({"name"})),
        Update(dataclasses.replace(whole, name="w2")), Delete(back), Delete(gone),
        *(Update(dataclasses.replace(c, name=f"{c.name} 2"), frozenset({"name"}))
          for c in rest)]
    entries = [audit_of(fresh, AuditAction.CREATE), audit_of(partial), audit_of(whole),
               audit_of(back, AuditAction.DELETE), audit_of(gone, AuditAction.DELETE)]
    batch = await batch_module.Batch.open(mongo.db, changes, entries)
    assert (batch.layout.parts > 0) == split
    for step in writes.steps([*changes, *(Insert(e) for e in entries)]):
        await batch._write(step, batch.id)
    # Another writer takes the name the batch freed: ``gone`` cannot come back.
    await mongo.write([Insert(Company(name=gone.name))], [])
    # The writer's rollback, cut short before closing the journal (the process dies).
    await journal.roll_back(mongo.db, batch.id, batch.undo, [e["_id"] for e in batch.audit],
                            entries=batch.audit, written=batch.written, audit_marked=True)
    once = snapshot(mongo)
    names = {doc["name"] for doc in once["company"]}
    assert names == {partial.name, whole.name, back.name, gone.name,
                     *(c.name for c in rest)}  # ``gone``'s name is the other writer's
    assert [doc["entity_id"] for doc in once["audit_entry"]] == [gone.id]

    assert await journal.sweep(mongo.db, stale()) == 1

    assert snapshot(mongo) == once
    assert raw(mongo)[JOURNAL].count_documents({}) == 0
    assert raw(mongo)[journal.JOURNAL_PARTS].count_documents({}) == 0


async def test_a_start_does_not_fail_on_a_batch_its_sweep_cannot_roll_back(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    leave_half_a_batch(mongo, datetime.now(UTC) - timedelta(minutes=10))

    async def fails(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise RuntimeError("cannot roll back now")

    monkeypatch.setattr(journal, "roll_back", fails)
    await mongo.start()  # logged; the journal waits for a later sweep
    assert raw(mongo)[JOURNAL].count_documents({}) == 1


# ---------------------------------------------------------------------------- filters


async def test_text_that_is_no_object_id_matches_no_id_field(mongo: MongoStore) -> None:
    owner = User(email="o@example.com", name="O", role=Role.OPERATOR)
    station = Station(cp_id="CP-O", name="O", owner_id=owner.id)
    await mongo.write([Insert(owner), Insert(station)], [])

    assert await mongo.find_all(Station, Eq("owner_id", "not-an-id")) == []
    assert await mongo.find_all(Station, Eq("id", "not-an-id")) == []
    assert await mongo.find_all(Station, In("owner_id", ("nope", owner.id))) == [station]
    assert await mongo.find_all(Station, In("owner_id", ("nope",))) == []
    assert await mongo.get_many(Station, ["nope", station.id]) == [None, station]


async def test_sub_converts_between_object_ids_and_text(mongo: MongoStore) -> None:
    ada = User(email="ada@example.com", name="Ada", role=Role.ADMIN)
    bob = User(email="bob@example.com", name="Bob", role=Role.DRIVER)
    by_ada = AuditEntry(entity="user", entity_id=bob.id, action=AuditAction.UPDATE,
                        actor=ada.id)
    by_system = AuditEntry(entity="station", entity_id="not-an-id", action=AuditAction.UPDATE,
                           actor="system")
    await mongo.write([Insert(ada), Insert(bob)], [by_ada, by_system])

    # Outer text field (``actor``), inner ObjectIds (user ids).
    admins = Sub("actor", "user", Eq("role", Role.ADMIN))
    assert await mongo.find_all(AuditEntry, admins) == [by_ada]
    # Outer ObjectId field, inner text (``entity_id``); text that is no id is dropped.
    audited = Sub("id", "audit_entry", ALL, select="entity_id")
    assert await mongo.find_all(User, audited) == [bob]


class CommandSizes:
    """The BSON size of every query a store sends (find filters, pipelines, distinct)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        find, aggregate, getattr_ = (AsyncCollection.find, AsyncCollection.aggregate,
                                     AsyncCollection.__getattr__)

        def sized(*args: Any) -> None:
            self.sizes.append(len(bson.encode({"args": list(args)})))

        def finding(collection: AsyncCollection, *args: Any, **kwargs: Any) -> AsyncCursor:
            sized(*args)
            return find(collection, *args, **kwargs)

        async def aggregating(collection: AsyncCollection, pipeline: list[dict[str, Any]],
                              **options: Any) -> Any:
            sized(pipeline)
            return await aggregate(collection, pipeline, **options)

        def other(collection: AsyncCollection, name: str) -> Any:
            method = getattr_(collection, name)

            async def call(*args: Any, **kwargs: Any) -> Any:
                sized(*args)
                return await method(*args, **kwargs)

            return call

        monkeypatch.setattr(AsyncCollection, "find", finding)
        monkeypatch.setattr(AsyncCollection, "aggregate", aggregating)
        monkeypatch.setattr(AsyncCollection, "__getattr__", other)


async def test_an_operator_audit_read_stays_small_whatever_their_books_hold(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each ``Sub`` used to be run first and inlined as an ``$in`` of every id: past ~240k
    sessions and payments in a company's books the operator's audit read was over the
    16 MiB command limit. Here 2,000 sessions (stored before the indexes, which mongomock
    checks in one pass then): the commands must stay the size of the filter."""
    company = Company(name="Big")
    operator = User(email="op@example.com", name="Op", role=Role.OPERATOR,
                    company_id=company.id)
    station = Station(cp_id="CP-BIG", name="Big", company_id=company.id)
    sessions = [dataclasses.replace(session_on(station, n, n, SessionState.COMPLETED),
                                    company_id=company.id) for n in range(2000)]
    db = async_mongomock_database()
    db.sync()["session"].insert_many([to_doc(s) for s in sessions])
    mongo = MongoStore(db, sweep_every=None)
    await mongo.start()
    elsewhere = dataclasses.replace(session_on(station, 0, 9999), company_id=str(ObjectId()))
    mine, theirs = audit_of(sessions[1234]), audit_of(elsewhere)
    await mongo.write([Insert(company), Insert(operator), Insert(station), Insert(elsewhere)],
                      [mine, theirs])
    scope = Policy().scope(Viewer(operator.id, Role.OPERATOR, company.id), "audit_entry")
    sizes = CommandSizes(monkeypatch)

    page = await mongo.find_page(AuditEntry, scope, [Sort("at", descending=True)],
                                 PageRequest(first=10))
    counted = await mongo.count(AuditEntry, scope)

    assert [entry.id for entry in page.items] == [mine.id] and counted == 1
    assert sizes.sizes and max(sizes.sizes) < 8 * 1024  # 2,000 ids inlined: ~40 KiB more


@pytest.mark.parametrize("sort", [NEWEST_AUDIT, (Sort("at"),)], ids=["newest", "oldest"])
async def test_the_audit_log_is_read_in_its_order_from_an_index(
        mongo: MongoStore, sort: tuple[Sort, ...]) -> None:
    """A viewer's audit scope has sub-selects, so a page is an aggregation that sorts and
    then joins entries until the page is full: only an index giving the sort order (the
    ``_id`` tie-breaker included) lets the server walk it and stop there, instead of
    sorting every entry first (no spilling to disk on 5.0: failing past 100 MB)."""
    for reverse in (False, True):  # a page forwards, and one paged back (``last``)
        order = sort_spec(AuditEntry, sort, reverse)
        backward = [(name, -direction) for name, direction in order]
        indexes = [list(info["key"]) for info in
                   raw(mongo)["audit_entry"].index_information().values()]
        assert any(keys in (order, backward) for keys in indexes), (order, indexes)


@pytest.mark.parametrize("key", ["holder_id", "actor"])
async def test_a_persons_audit_lists_are_read_in_their_order_from_an_index(
        mongo: MongoStore, key: str) -> None:
    """A person's copy of their data pages through the entries about them and those
    they made, newest first (``personal_data.AuditLog``): without the ``_id``
    tie-breaker in the index the server sorted every entry an admin ever made for each
    page of 100."""
    order = [(key, 1), *sort_spec(AuditEntry, PERSONAL_NEWEST_FIRST, False)]
    indexes = [list(info["key"]) for info in
               raw(mongo)["audit_entry"].index_information().values()]
    assert order in indexes, (order, indexes)


async def test_every_aggregation_may_spill_to_disk(mongo: MongoStore,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    options: list[dict[str, Any]] = []
    aggregate = AsyncCollection.aggregate

    async def recording(self: AsyncCollection, pipeline: list[dict[str, Any]],
                        **kwargs: Any) -> Any:
        options.append(kwargs)
        return await aggregate(self, pipeline, **kwargs)

    monkeypatch.setattr(AsyncCollection, "aggregate", recording)
    station = Station(cp_id="CP-A", name="A", lat=52.5, lon=13.4)
    await mongo.write([Insert(station), Insert(session_on(station, 1, 1))], [])
    joined = Sub("station_id", "station", Eq("name", "A"))
    await mongo.find_all(Session, joined)
    await mongo.count(Session, joined)
    await mongo.find_page(Session, joined, [Sort("start_time")], PageRequest(first=5))
    await mongo.count_grouped(Session, "station_id", [station.id], ALL)
    await mongo.find_all(Station, Near(52.5, 13.4, 5.0), [Sort.by_distance(52.5, 13.4)])
    await mongo.aggregate(Session, ALL, [], {"n": Count()})

    assert len(options) == 6
    assert all(kwargs.get("allowDiskUse") is True for kwargs in options)


async def test_search_over_no_fields_matches_nothing(mongo: MongoStore) -> None:
    await mongo.write([Insert(Company(name="Acme"))], [])
    assert await mongo.find_all(Company, Search((), "acme")) == []
    assert len(await mongo.find_all(Company, Search(("name",), "ACM"))) == 1
    assert await mongo.find_all(Company, ALL, limit=0) == []


async def test_search_matches_the_folded_shadow_case_sensitively(mongo: MongoStore) -> None:
    """A searched field keeps its text folded beside it (``_f_<field>``, null for null),
    and ``Search`` matches that with the escaped folded needle and no "i" option: a real
    server's PCRE2 folds case otherwise than the domain (its caseless "istanbul" misses
    "İstanbul"), which mongomock's Python ``re`` would hide."""
    station = Station(cp_id="CP-İ", name="İstanbul Merkez", address=None)
    await mongo.write([Insert(station)], [])

    doc = raw(mongo)["station"].find_one({"_id": ObjectId(station.id)})
    assert (doc["_f_name"], doc["_f_cp_id"], doc["_f_address"]) == (
        "istanbul merkez", "cp-i", None)
    assert doc["name"] == "İstanbul Merkez"  # the field itself as written
    assert "_f_vendor" not in doc  # no search is made on it: no shadow
    query = compile_query(Station, Search(("name", "address"), "İSTANBUL (M."))
    assert query.before == {"$or": [{"_f_name": {"$regex": re.escape("istanbul (m.")}},
                                    {"_f_address": {"$regex": re.escape("istanbul (m.")}}]}
    assert "$options" not in str(query.before)
    assert [s.id for s in await mongo.find_all(Station, Search(("name",), "ISTANBUL"))] == [
        station.id]


async def test_searched_text_from_before_its_folded_shadow_gets_it_at_start_up(
        mongo: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents stored before searched fields carried their folded text get it at the
    next start (``migrations._search_folded``, one step per searched field), so every
    search finds them; a document whose text changed meanwhile keeps what its writer
    stored; once one start has done it, later ones do not look again."""
    from domain.entities import IdTag, Vehicle
    from tests.contract.factories import id_tag, station, user, vehicle

    driver = user(name="Işık Yılmaz", email="ISIK@example.com")
    records: list[Record] = [
        Company(name="ΟΔΟΣ Energy"), driver, vehicle(driver, license_plate="İZ-34 AB",
                                                      make="Škoda", model="Enyaq"),
        id_tag(driver, tag="İD-TAG"), station(name="Kadıköy", cp_id="CP-Σ", address="Οδός 1")]
    await mongo.write([Insert(r) for r in records], [])
    db = raw(mongo)
    for kind, fields in SEARCHED.items():  # as written before
        db[kind].update_many({}, {"$unset": {f"_f_{name}": "" for name in fields}})
    db[migrations.MIGRATIONS].delete_many({})

    await mongo.start()

    for entity, name, needle in ((Company, "name", "οδος"), (User, "name", "ışık"),
                                 (User, "email", "isik@"), (Vehicle, "license_plate", "iz-34"),
                                 (Vehicle, "plate_key", "iz34"), (Vehicle, "make", "ŠKODA"),
                                 (Vehicle, "model", "enyaq"), (IdTag, "tag", "id-tag"),
                                 (Station, "name", "KADIKÖY"), (Station, "cp_id", "cp-ς"),
                                 (Station, "address", "ΟΔΌΣ")):
        assert len(await mongo.find_all(entity, Search((name,), needle))) == 1, (entity, name)
    for kind, fields in SEARCHED.items():
        for name in fields:
            assert db[migrations.MIGRATIONS].find_one(
                {"_id": f"search_folded_{kind}_{name}"})["done"] is True
            assert db[kind].count_documents({f"_f_{name}": {"$exists": False}}) == 0

    looked: list[str] = []
    find = AsyncCollection.find

    def finding(self: AsyncCollection, *args: Any, **kwargs: Any) -> AsyncCursor:
        if "_f_" in str(args[0] if args else kwargs.get("filter")):
            looked.append(self._c.name)
        return find(self, *args, **kwargs)

    monkeypatch.setattr(AsyncCollection, "find", finding)
    await mongo.start()  # every later start
    assert looked == []


async def test_shadows_folded_by_an_earlier_rule_are_folded_again(
        mongo: MongoStore) -> None:
    """A shadow folded when searches kept accents ("münchen") matches no needle folded
    now ("munchen", and "München" folds to that too): the next start folds the shadows of
    non-ASCII text again, once per rule (``FOLD_VERSION``; QA s27), and leaves a text
    renamed meanwhile to its writer."""
    from tests.contract.factories import station

    munich = station(name="Ladepark München", address="Straße 1")
    plain = station(name="Plain Name")
    await mongo.write([Insert(munich), Insert(plain)], [])
    db = raw(mongo)
    # As the version before folded them: case only.
    db["station"].update_one({"_id": ObjectId(munich.id)},
                             {"$set": {"_f_name": "ladepark münchen"}})
    plain_before = db["station"].find_one({"_id": ObjectId(plain.id)})
    assert await mongo.find_all(Station, Search(("name",), "munchen")) == []
    db[migrations.MIGRATIONS].delete_many({"_id": {"$regex": "^search_fold3_"}})

    await mongo.start()

    for needle in ("munchen", "MÜNCHEN", "München"):
        assert [s.id for s in await mongo.find_all(Station, Search(("name",), needle))] == [
            munich.id], needle
    assert [s.id for s in await mongo.find_all(Station, Search(("address",), "strasse"))
            ] == [munich.id]
    # ASCII text folded as before: not written again.
    assert db["station"].find_one({"_id": ObjectId(plain.id)}) == plain_before
    assert db[migrations.MIGRATIONS].find_one(
        {"_id": migrations._refold_step("station", "name")})["done"] is True
    assert migrations._refold_step("station", "name", 2) == "search_unaccented_station_name"


async def test_an_old_fold_written_during_a_rolling_upgrade_is_folded_again_at_start(
        mongo: MongoStore) -> None:
    """Review r27-lists: an instance of the version before, still serving after this
    version's one-time step, writes a shadow by its own rule (accents kept); a later
    write of other fields (a heartbeat) leaves it. The next start folds it again (the
    one-time step does not run twice): found by every spelling, as on SQLite."""
    from tests.contract.factories import station

    munich = station(name="Ladepark München")
    await mongo.write([Insert(munich)], [])
    db = raw(mongo)
    db["station"].update_one({"_id": ObjectId(munich.id)},
                             {"$set": {"_f_name": "ladepark münchen"}})
    seen = dataclasses.replace(munich, online=True,
                               last_seen=datetime(2026, 12, 6, 9, 0, tzinfo=UTC))
    await mongo.write([Update(seen, fields=frozenset({"online", "last_seen"}))], [])
    assert await mongo.find_all(Station, Search(("name",), "munchen")) == []

    await mongo.start()

    for needle in ("munchen", "München"):
        found = await mongo.find_all(Station, Search(("name",), needle))
        assert [s.id for s in found] == [munich.id], needle


async def test_old_folds_are_healed_hourly_a_bounded_round_at_a_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a restart the periodic sweep folds them again (hourly), each round reading
    at most ``HEAL_ROUND`` documents per field and going on where the last stopped,
    starting over past the last."""
    from tests.contract.factories import station

    monkeypatch.setattr(migrations, "HEAL_ROUND", 2)
    monkeypatch.setattr(store_module, "HEAL_EVERY_S", 0.0)
    store = MongoStore(async_mongomock_database(), sweep_every=None)
    await store.start()
    names = [f"Čerpací stanice {n}" for n in range(5)]
    stations = [station(name=name) for name in names]
    await store.write([Insert(st) for st in stations], [])
    db = raw(store)

    def stale() -> int:
        return db["station"].count_documents({"_f_name": {"$regex": "č"}})

    db["station"].update_many({}, {"$set": {"_f_name": "čerpací stanice"}})
    await migrations.heal_search_shadows(store.db)
    assert stale() == 3  # one round: two of five
    await migrations.heal_search_shadows(store.db)
    await migrations.heal_search_shadows(store.db)
    assert stale() == 0
    db["station"].update_one({"_id": ObjectId(stations[0].id)},
                             {"$set": {"_f_name": "čerpací stanice 0"}})
    await migrations.heal_search_shadows(store.db)  # past the last: from the first again
    assert stale() == 0

    # The periodic loop runs it (the hour shortened here).
    db["station"].update_many({}, {"$set": {"_f_name": "čerpací stanice"}})
    periodic = MongoStore(store.db, sweep_every=0.01)
    await periodic.start()
    db["station"].update_many({}, {"$set": {"_f_name": "čerpací stanice"}})
    for _ in range(200):
        if stale() == 0:
            break
        await asyncio.sleep(0.01)
    assert stale() == 0
    await periodic.close()


async def test_the_folded_shadow_is_not_filled_from_text_renamed_meanwhile(
        mongo: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several instances may run the step at once, and one of the version before may
    rename a company between the step's read and its write: the write is made only on
    the text it folded (and only where the shadow is still missing)."""
    company = Company(name="Old Name")
    await mongo.write([Insert(company)], [])
    db = raw(mongo)
    db["company"].update_many({}, {"$unset": {"_f_name": ""}})
    find = AsyncCollection.find

    class RenamedAfterTheRead(AsyncCursor):
        async def to_list(self, length: int | None = None) -> list[Any]:
            docs = await super().to_list(length)
            db["company"].update_one({}, {"$set": {"name": "New Name"}})
            return docs

    def finding(self: AsyncCollection, *args: Any, **kwargs: Any) -> AsyncCursor:
        cursor = find(self, *args, **kwargs)
        return RenamedAfterTheRead(cursor._cursor) if "_f_name" in str(args[0]) else cursor

    monkeypatch.setattr(AsyncCollection, "find", finding)
    await migrations._search_folded(mongo.db, "company", "name")
    assert "_f_name" not in db["company"].find_one()


# ---------------------------------------------------------------------------- connection


async def test_ping(mongo: MongoStore) -> None:
    assert await mongo.ping() is True
    assert await mongo.health() is None


async def test_ping_is_false_quickly_without_a_server(monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    monkeypatch.setattr(store_module, "PING_TIMEOUT_S", 0.2)
    store = MongoStore.connect("mongodb://127.0.0.1:1/cg_ping?serverSelectionTimeoutMS=5000")
    assert await store.ping() is False
    # No host or driver text for an unauthenticated health check.
    assert await store.health() == "the database does not answer"
    await store.close()
    assert await store.ping() is False


@pytest.mark.parametrize(("url", "database", "name"), [
    ("mongodb://127.0.0.1:1/fleet", None, "fleet"),
    ("mongodb://127.0.0.1:1", None, "chargegraph"),
    ("mongodb://127.0.0.1:1/fleet", "other", "other"),
])
async def test_connect_picks_the_database(url: str, database: str | None, name: str) -> None:
    store = MongoStore.connect(url, database)
    assert store.db.name == name
    await store.close()


class Outage:
    """Makes every call of ``method`` on the adapter's collections raise ``error``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, method: str, error: Exception
                 ) -> None:
        getattr_ = AsyncCollection.__getattr__

        def failing(collection: AsyncCollection, name: str) -> Any:
            if name != method:
                return getattr_(collection, name)

            async def call(*args: Any, **kwargs: Any) -> Any:
                raise error

            return call

        monkeypatch.setattr(AsyncCollection, "__getattr__", failing)


OUTAGES = [
    ServerSelectionTimeoutError("127.0.0.1:27017: [Errno 111] Connection refused"),
    AutoReconnect("connection closed"),
    NetworkTimeout("127.0.0.1:27017: timed out"),
    NotPrimaryError("not primary"),
    OperationFailure("Out of disk space", code=14031),
    BulkWriteError({"writeErrors": [{"index": 0, "code": 14031,
                                     "errmsg": "Out of disk space"}]}),
]


@pytest.mark.parametrize("error", OUTAGES, ids=lambda e: type(e).__name__)
async def test_an_outage_is_store_unavailable(mongo: MongoStore, monkeypatch: pytest.MonkeyPatch,
                                              error: Exception) -> None:
    """As the SQLite store reports a full disk: a user error with its code (a charger
    connecting is then told 1013), not an unexpected error with a traceback."""
    station = Station(cp_id="CP-O", name="O")
    Outage(monkeypatch, "insert_many", error)
    with pytest.raises(StoreUnavailable) as raised:
        await mongo.write([Insert(station)], [])
    assert raised.value.code == "STORE_UNAVAILABLE"
    assert raised.value.reason == str(error)
    assert "127.0.0.1" not in raised.value.message  # hosts go to logs, not to clients


@pytest.mark.parametrize("read", ["count", "get_many", "find_all", "find_page", "sub"])
async def test_reads_in_an_outage_are_store_unavailable(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    station = Station(cp_id="CP-R", name="R")
    await mongo.write([Insert(station)], [])
    error = ServerSelectionTimeoutError("no server")

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(AsyncCursor, "to_list", failing)
    Outage(monkeypatch, "count_documents", error)
    calls = {
        "count": lambda: mongo.count(Station, ALL),
        "get_many": lambda: mongo.get_many(Station, [station.id]),
        "find_all": lambda: mongo.find_all(Station, ALL),
        "find_page": lambda: mongo.find_page(Station, ALL, [], PageRequest(first=1)),
        "sub": lambda: mongo.find_all(Connector, Sub("station_id", "station", ALL)),
    }
    if read == "sub":
        async def aggregating(*args: Any, **options: Any) -> Any:
            raise error

        monkeypatch.setattr(AsyncCollection, "aggregate", aggregating)
    with pytest.raises(StoreUnavailable):
        await calls[read]()


async def test_other_driver_errors_are_not_outages(mongo: MongoStore,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    Outage(monkeypatch, "count_documents", OperationFailure("bad query", code=2))
    with pytest.raises(OperationFailure):
        await mongo.count(Station, ALL)


@pytest.mark.parametrize(("url", "expected"), [
    ("mongodb://127.0.0.1:1/fleet", 5.0),
    ("mongodb://127.0.0.1:1/fleet?serverSelectionTimeoutMS=12000", 12.0),
    ("mongodb://127.0.0.1:1/fleet?appname=x&SERVERSELECTIONTIMEOUTMS=700", 0.7),
])
async def test_server_selection_waits_seconds_unless_the_url_says(url: str, expected: float
                                                                  ) -> None:
    store = MongoStore.connect(url)
    client = store.db.client
    assert client.options.server_selection_timeout == expected
    assert client.options.pool_options.connect_timeout == 5.0
    await store.close()


async def test_a_store_that_fails_to_start_closes_its_client(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from chargegraph.startup import StartupFailed
    from chargegraph.stores import started_store

    closed: list[MongoStore] = []
    close = MongoStore.close

    async def failing_start(self: MongoStore) -> None:
        raise ServerSelectionTimeoutError("127.0.0.1:1: Connection refused")

    async def recording_close(self: MongoStore) -> None:
        closed.append(self)
        await close(self)

    monkeypatch.setattr(MongoStore, "start", failing_start)
    monkeypatch.setattr(MongoStore, "close", recording_close)
    with pytest.raises(StartupFailed, match="Connection refused"):
        async with started_store("mongodb://127.0.0.1:1/cg_fail"):
            pass
    assert len(closed) == 1


# ---------------------------------------------------------------------------- migrations


async def test_documents_from_before_get_their_books_and_minor_units(mongo: MongoStore
                                                                     ) -> None:
    """What SQLite migrations 8 and 10 do, on documents: books from the station (its
    company, or its owner for a station of no company), amounts rescaled to the
    currency's minor unit; once, however often instances start."""
    from tests.contract.factories import company, payment, session, station, user

    co, owner = company(), user()
    of_company, own = station(cp_id="CP-C", company_id=co.id, owner_id=owner.id), \
        station(cp_id="CP-O", owner_id=owner.id)
    done: dict[str, Any] = {"state": SessionState.COMPLETED, "updated_at": T0, "created_at": T0}
    yen = session(of_company, cost_minor=50_049, currency="JPY", **done)
    dinar = session(own, 2, cost_minor=123, currency="KWD", **done)
    euro = session(own, 3, cost_minor=440, currency="EUR", **done)
    paid = payment(yen, amount_minor=50_049, currency="JPY", created_at=T0, updated_at=T0)
    await mongo.write([Insert(r) for r in (co, owner, of_company, own, yen, dinar, euro,
                                           paid)], [])
    db = raw(mongo)
    for kind in ("session", "payment"):  # as written before these fields existed
        db[kind].update_many({}, {"$unset": {"company_id": "", "station_owner_id": ""}})
    db[migrations.MIGRATIONS].delete_many({})  # a database from before the migrations

    await migrations.migrate(mongo.db)
    later = payment(dinar, amount_minor=1230, currency="KWD")  # new rules: fils already
    await mongo.write([Insert(later)], [])
    await migrations.migrate(mongo.db)  # another start

    got = {s.id: s for s in await mongo.find_all(Session, ALL)}
    assert (got[yen.id].cost_minor, got[yen.id].company_id, got[yen.id].station_owner_id) \
        == (500, co.id, None)
    assert (got[dinar.id].cost_minor, got[dinar.id].company_id,
            got[dinar.id].station_owner_id) == (1230, None, owner.id)
    assert got[euro.id].cost_minor == 440
    amounts = {p.id: p.amount_minor for p in await mongo.find_all(Payment, ALL)}
    assert amounts == {paid.id: 500, later.id: 1230}


async def test_blocked_cards_from_before_take_their_last_writer_as_blocker(
        mongo: MongoStore) -> None:
    """What SQLite migration 16 does: a card blocked before ``blocked_by`` existed keeps
    whose block it was (a driver's own block of a lost card stays theirs)."""
    from domain.entities import IdTag, IdTagStatus
    from tests.contract.factories import user

    driver = user()
    own = IdTag(tag="LOST-1", user_id=driver.id, status=IdTagStatus.BLOCKED,
                updated_by=driver.id)
    fine = IdTag(tag="FINE-1", user_id=driver.id, updated_by="op-1")
    await mongo.write([Insert(r) for r in (driver, own, fine)], [])
    raw(mongo)["id_tag"].update_many({}, {"$unset": {"blocked_by": ""}})  # as written before
    await migrations.migrate(mongo.db)
    await migrations.migrate(mongo.db)  # another start
    got = {t.tag: t.blocked_by for t in await mongo.find_all(IdTag, ALL)}
    assert got == {"LOST-1": driver.id, "FINE-1": None}


async def test_replaced_prices_from_before_end_where_the_next_one_begins(
        mongo: MongoStore) -> None:
    """What SQLite migration 83 does, on its test's versions (ties, one dated back, one
    removed after the next one's start, a plug standard's scope): a version a later one
    of its owner and scope replaced ends at that one's start; a removal before that
    stays, the latest and one alone in its scope stay open; documents without
    ``valid_until`` read as open."""
    from domain.entities import ConnectorType, PowerType, Tariff
    from tests.store.test_sqlite_specific import TARIFF_CHAINS

    base = utcnow() - timedelta(days=1)
    ids = {name: str(ObjectId()) for name in ("co1", "co2", "co3", "co4", "st1")}

    def at(minutes: int | None) -> datetime | None:
        return None if minutes is None else base + timedelta(minutes=minutes)

    tariffs = {name: Tariff(company_id=ids.get(company or ""), station_id=ids.get(station or ""),
                            power_type=PowerType(power) if power else None,
                            connector_type=ConnectorType(plug) if plug else None,
                            price_per_kwh=Decimal(1), currency="EUR",
                            valid_from=at(start) or base, valid_until=at(until),
                            created_at=at(created) or base, updated_at=at(created) or base)
               for name, company, station, power, plug, start, created, until, _
               in TARIFF_CHAINS}
    await mongo.write([Insert(t) for t in tariffs.values()], [])
    raw(mongo)["tariff"].update_many({"valid_until": None}, {"$unset": {"valid_until": ""}})
    raw(mongo)[migrations.MIGRATIONS].delete_many({})  # a database from before
    await migrations.migrate(mongo.db)
    got = {t.id: t.valid_until for t in await mongo.find_all(Tariff, ALL)}
    assert got == {tariffs[name].id: at(until) for name, *_, until in TARIFF_CHAINS}


async def test_a_price_an_old_build_set_ends_the_one_it_replaced_at_the_next_start(
        mongo: MongoStore) -> None:
    """A rolling upgrade: after this build's start (its once-only step done), an instance
    of the build before sets a company price, leaving the one it replaced open. The next
    start ends that one where the new one begins (review s31: the step ran once); a
    version given back by a removal (open, the later one ended) stays open, and so does
    another scope's."""
    from domain.entities import PowerType, Tariff

    base = utcnow() - timedelta(days=1)
    co1 = str(ObjectId())

    def version(start: int, until: int | None = None,
                power: PowerType | None = None) -> Tariff:
        at = base + timedelta(minutes=start)
        return Tariff(company_id=co1, power_type=power, price_per_kwh=Decimal(1),
                      currency="EUR", valid_from=at, created_at=at, updated_at=at,
                      valid_until=None if until is None else base + timedelta(minutes=until))

    given_back, removed = version(100, power=PowerType.DC), version(200, 300, PowerType.DC)
    replaced, old_builds = version(100), version(200)
    await mongo.write([Insert(t) for t in (given_back, removed, replaced)], [])
    await migrations.migrate(mongo.db)  # this build's start
    await mongo.write([Insert(old_builds)], [])
    raw(mongo)["tariff"].update_one({"_id": ObjectId(old_builds.id)},
                                    {"$unset": {"valid_until": ""}})  # as written before
    await migrations.migrate(mongo.db)  # the next start
    await migrations.migrate(mongo.db)  # and another: nothing more changes
    got = {t.id: t.valid_until for t in await mongo.find_all(Tariff, ALL)}
    assert got == {given_back.id: None, removed.id: removed.valid_until,
                   replaced.id: old_builds.valid_from, old_builds.id: None}


async def test_the_heal_leaves_a_price_of_a_batch_in_flight(
        mongo: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another instance sets a price: its batch inserted the new version, not yet ended
    the one it replaces, when this one starts and heals. The batch then fails and rolls
    back: the version it replaces is open as before (review s31: healed, it kept the end
    at the deleted version's start, and the company had no price of its own from then
    on). Run again once nothing is in flight, the heal ends nothing more."""
    from domain.entities import Tariff

    base = utcnow() - timedelta(days=1)
    co1 = str(ObjectId())

    def version(start: int) -> Tariff:
        at = base + timedelta(minutes=start)
        return Tariff(company_id=co1, price_per_kwh=Decimal(1), currency="EUR",
                      valid_from=at, created_at=at, updated_at=at)

    old, new = version(100), version(200)
    await mongo.write([Insert(old)], [])
    ended = dataclasses.replace(old, valid_until=new.valid_from)
    apply = writes.apply
    healed = False

    async def heal_then_fail(db: Any, step: Any, *rest: Any) -> list[Record]:
        nonlocal healed
        if isinstance(step, Update) and step.record is ended:
            await migrations.heal_open_tariffs(mongo.db)  # the new one inserted
            healed = True
            raise RuntimeError("the batch fails")
        return await apply(db, step, *rest)

    monkeypatch.setattr(writes, "apply", heal_then_fail)
    with pytest.raises(RuntimeError):
        await mongo.write([Insert(new), Update(ended, frozenset({"valid_until"}))],
                          [audit_of(new, AuditAction.CREATE)])
    monkeypatch.setattr(writes, "apply", apply)
    assert healed
    await migrations.heal_open_tariffs(mongo.db)
    got = {t.id: t.valid_until for t in await mongo.find_all(Tariff, ALL)}
    assert got == {old.id: None}


async def test_cards_from_before_record_who_set_their_expiry(mongo: MongoStore) -> None:
    """What SQLite migration 80 does: a card with an expiry written before
    ``expiry_set_by`` existed takes its creator, or its last writer when its holder
    created it (a driver set an expiry only when issuing their card); one without an
    expiry none. Once, and a card written since keeps its own."""
    from domain.entities import IdTag
    from tests.contract.factories import user

    driver = user()
    at = utcnow() + timedelta(days=1)
    cards = [IdTag(tag="OWN-1", user_id=driver.id, expires_at=at, created_by=driver.id,
                   updated_by=driver.id),
             IdTag(tag="MOVED-1", user_id=driver.id, expires_at=at, created_by=driver.id,
                   updated_by="op-1"),
             IdTag(tag="GIVEN-1", user_id=driver.id, expires_at=at, created_by="op-1",
                   updated_by=driver.id),
             IdTag(tag="NEVER-1", user_id=driver.id, created_by="op-1", updated_by="op-1")]
    await mongo.write([Insert(r) for r in (driver, *cards)], [])
    raw(mongo)["id_tag"].update_many({}, {"$unset": {"expiry_set_by": ""}})  # as before
    raw(mongo)[migrations.MIGRATIONS].delete_many({})  # a database from before
    await migrations.migrate(mongo.db)
    since = IdTag(tag="SINCE-1", user_id=driver.id, expires_at=at, created_by=driver.id,
                  updated_by="op-1", expiry_set_by=driver.id)
    await mongo.write([Insert(since)], [])
    await migrations.migrate(mongo.db)  # another start
    got = {t.tag: t.expiry_set_by for t in await mongo.find_all(IdTag, ALL)}
    assert got == {"OWN-1": driver.id, "MOVED-1": "op-1", "GIVEN-1": "op-1",
                   "NEVER-1": None, "SINCE-1": driver.id}


async def test_state_and_connection_history_from_before_get_their_books(
        mongo: MongoStore) -> None:
    """What SQLite migration 76 does: status reports, state intervals and connection
    events written before they recorded their books take their station's now (none when
    it is gone); once, and a record written since keeps its own."""
    from domain.ids import new_id
    from tests.contract.factories import company, station, user

    co, owner, gone = company(), user(), new_id()
    of_company, of_owner = station(company_id=co.id), station(owner_id=owner.id)
    records: list[Record] = [co, owner, of_company, of_owner]
    for st_id, cp_id in ((of_company.id, of_company.cp_id), (of_owner.id, of_owner.cp_id),
                         (gone, "GONE")):
        records += [
            StatusEvent(station_id=st_id, cp_id=cp_id, connector_id=1,
                        status=ConnectorStatus.AVAILABLE),
            ConnectorInterval(station_id=st_id, cp_id=cp_id, connector_id=1,
                              status=ConnectorStatus.AVAILABLE, start=utcnow()),
            ConnectionEvent(station_id=st_id, cp_id=cp_id, online=True)]
    await mongo.write([Insert(r) for r in records], [])
    for name in ("status_event", "connector_interval", "connection_event"):
        raw(mongo)[name].update_many({}, {"$unset": {"company_id": "",
                                                     "station_owner_id": ""}})
    raw(mongo)[migrations.MIGRATIONS].delete_many({})  # a database from before
    await migrations.migrate(mongo.db)
    await migrations.migrate(mongo.db)  # another start
    expected = {of_company.id: (co.id, None), of_owner.id: (None, owner.id),
                gone: (None, None)}
    kinds: tuple[type[StatusEvent | ConnectorInterval | ConnectionEvent], ...] = (
        StatusEvent, ConnectorInterval, ConnectionEvent)
    got = {kind.kind: {r.station_id: (r.company_id, r.station_owner_id)
                       for r in await mongo.find_all(kind, ALL)} for kind in kinds}
    assert got == dict.fromkeys(("status_event", "connector_interval", "connection_event"),
                                expected)


async def test_station_audit_entries_from_before_get_their_books(mongo: MongoStore) -> None:
    """What SQLite migration 18 does: entries of a station or a reservation take the
    station's books (none when it is gone), other entries are left alone; once."""
    from domain.entities import AuditAction, AuditEntry
    from tests.contract.factories import audit, company, reservation, station, user

    co, owner = company(), user()
    of_company, own = station(company_id=co.id), station(owner_id=owner.id)
    booked = reservation(own)
    entries = [audit(of_company, owner.id, action=AuditAction.COMMAND),
               audit(booked, owner.id), audit(station(), owner.id), audit(owner, owner.id)]
    await mongo.write([Insert(r) for r in (co, owner, of_company, own, booked)], entries)
    raw(mongo)["audit_entry"].update_many(  # as written before these fields existed
        {}, {"$unset": {"company_id": "", "station_owner_id": ""}})
    raw(mongo)[migrations.MIGRATIONS].delete_many({})  # a database from before
    await migrations.migrate(mongo.db)
    await migrations.migrate(mongo.db)  # another start
    got = {e.id: (e.company_id, e.station_owner_id)
           for e in await mongo.find_all(AuditEntry, ALL)}
    assert got == {entries[0].id: (co.id, None), entries[1].id: (None, owner.id),
                   entries[2].id: (None, None), entries[3].id: (None, None)}
    assert raw(mongo)["audit_entry"].count_documents({"company_id": {"$exists": False}}) == 1


async def test_audit_entries_from_before_get_whose_their_record_was(
        mongo: MongoStore) -> None:
    """What SQLite migration 47 does: entries take their person (``holder_id``) and, for
    a company's people, cards, cars, connectors, tariffs, sessions and payments, their
    books, from their images (before the change, else after it); what the images do not
    say as it stands now. Books recorded before (a station's) stay; once."""
    from tests.contract.factories import company, station, user

    co, old_co = company(), company()
    holder, driver = user(company_id=co.id), user()
    of_company, own = station(company_id=co.id), station(owner_id=holder.id)

    def entry(entity: str, entity_id: str, before: dict[str, Any] | None,
              after: dict[str, Any] | None, **books: Any) -> AuditEntry:
        return AuditEntry(entity=entity, entity_id=entity_id, action=AuditAction.UPDATE,
                          actor="system", before=before, after=after, **books)

    gone = str(ObjectId())
    car = {"owner_id": holder.id, "license_plate": "B-A 1", "make": None, "model": None}
    entries = {
        "moved": entry("user", holder.id, {"company_id": old_co.id}, {"company_id": co.id}),
        "card": entry("id_tag", gone, {"user_id": holder.id}, None),
        "car": entry("vehicle", gone, {"owner_id": driver.id}, {"owner_id": holder.id}),
        "plug": entry("connector", gone, {"station_id": own.id}, None),
        "plug_gone": entry("connector", gone, {"station_id": gone}, None),
        "tariff": entry("tariff", gone, None, {"company_id": None,
                                               "station_id": of_company.id}),
        "session": entry("session", gone, None, {"user_id": driver.id, "company_id": None,
                                                 "station_owner_id": holder.id}),
        "company": entry("company", co.id, {"name": "A"}, {"name": "B"}),
        "command": entry("station", own.id, None, {"command": "Reset"},
                         station_owner_id=holder.id),
        # Removed before station entries recorded books (review s21): its image's.
        "removed": entry("station", gone, {"company_id": co.id, "owner_id": holder.id},
                         None),
        "removed_own": entry("station", gone, {"company_id": None, "owner_id": holder.id},
                             None),
        # A car's battery changed by its owner: theirs alone (review s21).
        "battery": AuditEntry(entity="vehicle", entity_id=gone, action=AuditAction.UPDATE,
                              actor=holder.id, before={**car, "battery_kwh": 50},
                              after={**car, "battery_kwh": 60}),
    }
    await mongo.write([Insert(r) for r in (co, old_co, holder, driver, of_company, own)],
                      list(entries.values()))
    db = raw(mongo)
    db["audit_entry"].update_many({}, {"$unset": {"holder_id": ""}})  # written before
    db["audit_entry"].update_many({"entity": {"$ne": "station"}}, {
        "$unset": {"company_id": "", "station_owner_id": ""}})
    db[migrations.MIGRATIONS].delete_many({})  # a database from before the migrations

    await migrations.migrate(mongo.db)
    await migrations.migrate(mongo.db)  # another start

    stored = {e.id: (e.company_id, e.station_owner_id, e.holder_id)
              for e in await mongo.find_all(AuditEntry, ALL)}
    assert {name: stored[e.id] for name, e in entries.items()} == {
        "moved": (old_co.id, None, holder.id), "card": (co.id, None, holder.id),
        "car": (None, None, driver.id), "plug": (None, holder.id, None),
        "plug_gone": (None, None, None), "tariff": (co.id, None, None),
        "session": (None, holder.id, driver.id), "company": (co.id, None, None),
        "command": (None, holder.id, None), "removed": (co.id, None, None),
        "removed_own": (None, holder.id, None), "battery": (None, None, holder.id)}
    assert db["audit_entry"].count_documents({"holder_id": {"$exists": False}}) == 0
    assert db[migrations.MIGRATIONS].find_one({"_id": "audit_holders"})["done"] is True


async def test_stations_charging_before_charger_registration_are_told_accepted(
        mongo: MongoStore) -> None:
    """What SQLite migration 60 does (review s25): a station from before
    ``charger_registration`` with a session open (ACTIVE, or awaiting its late stop) was
    charging, so its charger was told Accepted; without the field it read as the
    station's registration (Rejected, made so mid-session), and its charger's stop was
    refused after the upgrade; also one that booted after the session began. Review s26:
    not a station whose charger never booted (told nothing). Others stay without it
    (null), and a station whose charger booted since (the field written) keeps what it
    was told."""
    booted_at = {"active": T0 - timedelta(hours=1), "awaiting": T0 - timedelta(hours=1),
                 "rebooted": T0 + timedelta(hours=1), "unbooted": None,
                 "stopped": T0 - timedelta(hours=1), "idle": T0 - timedelta(hours=1),
                 "booted": T0 + timedelta(hours=1)}
    stations = {name: Station(cp_id=f"CP-{name}", name=name,
                              registration=Registration.REJECTED, booted_at=booted)
                for name, booted in booted_at.items()}

    def session(name: str, tx: int, **more: Any) -> Session:
        return Session(station_id=stations[name].id, cp_id=f"CP-{name}", connector_id=1,
                       transaction_id=tx, id_tag="T", start_time=T0, meter_start_wh=0,
                       **more)

    sessions = [session("active", 1), session("awaiting", 2, state=SessionState.COMPLETED),
                session("stopped", 3, state=SessionState.COMPLETED, stop_reason="Local"),
                session("booted", 4), session("rebooted", 5), session("unbooted", 6)]
    await mongo.write([*(Insert(s) for s in stations.values()),
                       *(Insert(s) for s in sessions)], [])
    db = raw(mongo)
    db["station"].update_many({}, {"$unset": {"charger_registration": ""}})  # from before
    db["station"].update_one({"_id": ObjectId(stations["unbooted"].id)},
                             {"$unset": {"booted_at": ""}})  # never written
    db["station"].update_one({"_id": ObjectId(stations["booted"].id)},
                             {"$set": {"charger_registration": "Rejected"}})  # a boot since
    db[migrations.MIGRATIONS].delete_many({})

    await migrations.migrate(mongo.db)
    await migrations.migrate(mongo.db)  # another start

    told = {s.name: s.charger_registration for s in await mongo.find_all(Station, ALL)}
    assert told == {"active": Registration.ACCEPTED, "awaiting": Registration.ACCEPTED,
                    "rebooted": Registration.ACCEPTED, "unbooted": None,
                    "stopped": None, "idle": None, "booted": Registration.REJECTED}
    assert db["station"].count_documents({"charger_registration": {"$exists": True}}) == 4
    assert db[migrations.MIGRATIONS].find_one(
        {"_id": "charger_registrations"})["done"] is True


async def test_command_entries_from_before_get_their_command(mongo: MongoStore) -> None:
    """What SQLite migration 56 does: command entries written before they carried their
    command beside the image (``AuditEntry.command``) take the image's, so a query on it
    finds them; other entries have none."""
    entries = {
        "set": AuditEntry(entity="station", entity_id="st1", action=AuditAction.COMMAND,
                          actor="u1", after={"command": "SetChargingProfile"}),
        "reset": AuditEntry(entity="station", entity_id="st1", action=AuditAction.COMMAND,
                            actor="u1", after={"command": "Reset"}),
        "update": AuditEntry(entity="station", entity_id="st1", action=AuditAction.UPDATE,
                             actor="u1", after={"command": "not a command entry"}),
    }
    await mongo.write([], list(entries.values()))
    db = raw(mongo)
    db["audit_entry"].update_many({}, {"$unset": {"command": ""}})  # written before
    db[migrations.MIGRATIONS].delete_many({})  # a database from before the migrations

    await migrations.migrate(mongo.db)
    await migrations.migrate(mongo.db)  # another start

    stored = {e.id: e.command for e in await mongo.find_all(AuditEntry, ALL)}
    assert {name: stored[e.id] for name, e in entries.items()} == {
        "set": "SetChargingProfile", "reset": "Reset", "update": None}
    found = await mongo.find_all(AuditEntry, In("command", ("SetChargingProfile",)))
    assert [e.id for e in found] == [entries["set"].id]
    assert db[migrations.MIGRATIONS].find_one({"_id": "audit_commands"})["done"] is True


async def test_command_entries_from_before_get_their_command_id(mongo: MongoStore) -> None:
    """What SQLite migration 88 does: command entries written before they carried their
    command's id beside the image (``AuditEntry.command_id``) take the image's, so
    ``auditLog(filter: {commandId})`` finds them; other entries have none."""
    entries = {
        "sent": AuditEntry(entity="station", entity_id="st1", action=AuditAction.COMMAND,
                           actor="u1", after={"command": "Reset", "commandId": "c1"}),
        "other": AuditEntry(entity="station", entity_id="st1", action=AuditAction.COMMAND,
                            actor="u1", after={"command": "Reset", "commandId": "c2"}),
        "update": AuditEntry(entity="station", entity_id="st1", action=AuditAction.UPDATE,
                             actor="u1", after={"commandId": "c1"}),
    }
    await mongo.write([], list(entries.values()))
    db = raw(mongo)
    db["audit_entry"].update_many({}, {"$unset": {"command_id": ""}})  # written before
    db[migrations.MIGRATIONS].delete_many({})  # a database from before the migrations

    await migrations.migrate(mongo.db)
    await migrations.migrate(mongo.db)  # another start

    stored = {e.id: e.command_id for e in await mongo.find_all(AuditEntry, ALL)}
    assert {name: stored[e.id] for name, e in entries.items()} == {
        "sent": "c1", "other": "c2", "update": None}
    found = await mongo.find_all(AuditEntry, Eq("command_id", "c1"))
    assert [e.id for e in found] == [entries["sent"].id]


async def test_reservations_from_before_get_their_books_once(mongo: MongoStore) -> None:
    """What SQLite migration 23 does: reservations take their station's books (its
    company, or its owner for a station of no company; none when it is gone). The step
    is marked done once none is left, so later starts do not scan for them again."""
    from domain.entities import Reservation
    from tests.contract.factories import company, reservation, station, user

    co, owner = company(), user()
    of_company, own = station(company_id=co.id), station(owner_id=owner.id)
    made = [reservation(of_company), reservation(own), reservation(station())]
    await mongo.write([Insert(r) for r in (co, owner, of_company, own, *made)], [])
    db = raw(mongo)
    db["reservation"].update_many(  # as written before these fields existed
        {}, {"$unset": {"company_id": "", "station_owner_id": ""}})
    db[migrations.MIGRATIONS].delete_many({})  # a database from before the migrations

    await migrations.migrate(mongo.db)
    await migrations.migrate(mongo.db)  # another start

    got = {r.id: (r.company_id, r.station_owner_id)
           for r in await mongo.find_all(Reservation, ALL)}
    assert got == {made[0].id: (co.id, None), made[1].id: (None, owner.id),
                   made[2].id: (None, None)}
    assert db["reservation"].count_documents({"company_id": {"$exists": False}}) == 0
    assert db[migrations.MIGRATIONS].find_one({"_id": "reservation_books"})["done"] is True


async def test_payments_refunded_before_partial_refunds_were_refunded_whole(
        mongo: MongoStore) -> None:
    """What SQLite migration 24 does: a REFUNDED payment without ``refunded_minor`` was
    refunded whole; any other reads 0 (the field's default)."""
    from domain.entities import Payment, PaymentStatus
    from tests.contract.factories import payment, session, station

    where = station()
    refunded = payment(session(where), status=PaymentStatus.REFUNDED, amount_minor=660)
    captured = payment(session(where), status=PaymentStatus.CAPTURED, amount_minor=250)
    await mongo.write([Insert(p) for p in (refunded, captured)], [])
    db = raw(mongo)
    db["payment"].update_many({}, {"$unset": {"refunded_minor": ""}})  # written before
    db[migrations.MIGRATIONS].delete_many({})

    await migrations.migrate(mongo.db)

    got = {p.id: p.refunded_minor for p in await mongo.find_all(Payment, ALL)}
    assert got == {refunded.id: 660, captured.id: 0}
    assert db[migrations.MIGRATIONS].find_one({"_id": "refunded_whole"})["done"] is True


async def test_refunds_made_before_become_records_and_pending_payments_of_nothing_void(
        mongo: MongoStore) -> None:
    """What SQLite migration 37 does: a payment refunded before refunds were records is
    one refund (its id the payment's, dated by its last write); a PENDING payment of 0 is
    VOIDED. Two instances running the step at once write each refund once."""
    from domain.entities import Payment, PaymentStatus, Refund
    from tests.contract.factories import at, payment, session, station

    where = station(company_id="c" * 24)
    sold, zero = (session(where, n, user_id="a" * 24, vehicle_id="b" * 24)
                  for n in (1, 2))
    refunded = payment(sold, status=PaymentStatus.CAPTURED, refunded_minor=300,
                       provider_ref="manual:refund", updated_at=at(90), updated_by="op-1")
    nothing = payment(zero, amount_minor=0)
    await mongo.write([Insert(r) for r in (where, sold, zero, refunded, nothing)], [])
    db = raw(mongo)
    db[migrations.MIGRATIONS].delete_many({})  # a database from before

    await asyncio.gather(migrations.migrate(mongo.db), migrations.migrate(mongo.db))

    [record] = await mongo.find_all(Refund, ALL)
    assert record == Refund(
        id=refunded.id, created_at=at(90), updated_at=at(90), created_by="op-1",
        updated_by="op-1", payment_id=refunded.id, session_id=sold.id, station_id=where.id,
        cp_id=where.cp_id, connector_id=1, user_id="a" * 24, vehicle_id="b" * 24,
        amount_minor=300, currency="EUR", at=at(90), provider_ref="manual:refund",
        company_id=where.company_id, station_owner_id=None)
    [voided] = await mongo.get_many(Payment, [nothing.id])
    assert voided is not None and voided.status is PaymentStatus.VOIDED
    for step in ("refund_records", "voided_zero_payments"):
        assert db[migrations.MIGRATIONS].find_one({"_id": step})["done"] is True


async def test_refunds_recorded_before_take_their_payment_s_provider(
        mongo: MongoStore) -> None:
    """What SQLite migration 84 does: a refund recorded before refunds named the provider
    that paid them back takes its payment's; one whose payment is gone the default."""
    from tests.contract.factories import payment, refund, session, station

    where = station()
    sold = session(where, 1)
    paid = payment(sold, provider="acquirer")
    kept, orphan = refund(sold, paid.id, provider="other"), refund(sold, provider="other")
    unpaid = refund(sold, provider="other")
    await mongo.write([Insert(r) for r in (where, sold, paid, kept, orphan, unpaid)], [])
    db = raw(mongo)
    db["refund"].update_many({}, {"$unset": {"provider": ""}})  # written before
    # One without a payment at all (review r32-b: a KeyError stopped the step, and every
    # start with it): the default, as SQLite gives it.
    db["refund"].update_one({"_id": ObjectId(unpaid.id)}, {"$unset": {"payment_id": ""}})
    db[migrations.MIGRATIONS].delete_many({})

    await migrations.migrate(mongo.db)

    providers = {doc["_id"]: doc["provider"] for doc in db["refund"].find()}
    assert providers == {ObjectId(kept.id): "acquirer", ObjectId(orphan.id): "manual",
                         ObjectId(unpaid.id): "manual"}
    assert db[migrations.MIGRATIONS].find_one({"_id": "refund_providers"})["done"] is True


async def test_a_start_after_the_books_were_filled_in_looks_for_none(
        mongo: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents lacking their books are found by the field's absence, which no index
    answers: every start read each audit entry, session, payment and reservation of no
    company."""
    looked: list[str] = []
    find = AsyncCollection.find

    def finding(self: AsyncCollection, *args: Any, **kwargs: Any) -> AsyncCursor:
        if "company_id" in str(args[0] if args else kwargs.get("filter")):
            looked.append(self._c.name)
        return find(self, *args, **kwargs)

    monkeypatch.setattr(AsyncCollection, "find", finding)
    raw(mongo)[migrations.MIGRATIONS].delete_many({})  # a database from before
    await migrations.migrate(mongo.db)
    assert sorted(set(looked)) == ["audit_entry", "payment", "reservation", "session"]
    looked.clear()
    await migrations.migrate(mongo.db)  # every later start
    assert looked == []


#: Legacy amounts in hundredths, halves among them (JPY: whole yen; KWD: fils).
LEGACY_AMOUNTS = [0, 49, 50, 51, 150, 250, 350, 1050, 2050, 12345, 50_049, 50_050]


def sqlite_rescaled(currency: str, amounts: list[int]) -> list[int]:
    """What SQLite migration 10 makes of the same amounts (its own SQL, on a bare table)."""
    script = dict(sqlite_migrations.MIGRATIONS)[10]
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute('CREATE TABLE "session" ("id" INTEGER, "cost_minor" INTEGER, '
                     '"currency" TEXT)')
        conn.execute('CREATE TABLE "payment" ("amount_minor" INTEGER, "currency" TEXT)')
        conn.executemany('INSERT INTO "session" VALUES (?, ?, ?)',
                         [(i, amount, currency) for i, amount in enumerate(amounts)])
        for statement in sqlite_migrations.split_statements(script):
            conn.execute(statement)
        rows = conn.execute('SELECT "cost_minor" FROM "session" ORDER BY "id"').fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize("currency", ["JPY", "KWD", "EUR"])
async def test_minor_units_round_half_up_as_sqlite_does(mongo: MongoStore, currency: str
                                                        ) -> None:
    from tests.contract.factories import session, station

    st = station()
    done: dict[str, Any] = {"state": SessionState.COMPLETED, "updated_at": T0, "created_at": T0,
                            "currency": currency}
    legacy = [session(st, i + 1, cost_minor=amount, **done)
              for i, amount in enumerate(LEGACY_AMOUNTS)]
    await mongo.write([Insert(s) for s in legacy], [])
    raw(mongo)[migrations.MIGRATIONS].delete_many({})  # a database from before the migration

    await migrations.migrate(mongo.db)

    got = {s.id: s.cost_minor for s in await mongo.find_all(Session, ALL)}
    assert [got[s.id] for s in legacy] == sqlite_rescaled(currency, LEGACY_AMOUNTS)
    if currency == "JPY":  # half a yen and more is a yen
        assert [got[s.id] for s in legacy[:4]] == [0, 0, 1, 1]


async def test_a_migrated_document_gets_a_new_version(mongo: MongoStore) -> None:
    """So a batch that read the document before the step journals it again before it
    writes (an undo then puts back the migrated document, not the one from before)."""
    from tests.contract.factories import session, station

    yen = session(station(), cost_minor=150, currency="JPY", state=SessionState.COMPLETED,
                  updated_at=T0, created_at=T0)
    await mongo.write([Insert(yen)], [])
    db = raw(mongo)
    db["session"].update_one({}, {"$unset": {"company_id": ""}})  # from before the books
    db[migrations.MIGRATIONS].delete_many({})
    before = db["session"].find_one().get(journal.MARK)

    await migrations.migrate(mongo.db)

    doc = db["session"].find_one()
    assert (doc["cost_minor"], "company_id" in doc) == (2, True)
    assert doc[journal.MARK] not in (None, before)


async def test_a_plate_is_unique_among_kept_cars_from_the_start_after_the_upgrade(
        mongo: MongoStore) -> None:
    """QA s22: a database from before held the plate's rule over every car; ``start``
    puts the rule over the cars kept (``removed_at`` null or, on cars written before,
    missing: no backfill) in its place, so a removed car's plate may be added again."""
    from domain.entities import Vehicle
    from tests.contract.factories import at, user, vehicle

    db = raw(mongo)
    kept = index_name("vehicle", ("plate_key", "owner_id"), True)
    db["vehicle"].drop_index(kept)
    db["vehicle"].create_index([("plate_key", 1), ("owner_id", 1)], unique=True,
                               name=index_name("vehicle", ("plate_key", "owner_id")))
    owner = user()
    old = vehicle(owner, license_plate="B-LE 123")
    await mongo.write([Insert(owner), Insert(old)], [])
    db["vehicle"].update_many({}, {"$unset": {"removed_at": ""}})  # as written before

    await mongo.start()

    indexes = db["vehicle"].index_information()
    assert index_name("vehicle", ("plate_key", "owner_id")) not in indexes
    assert indexes[kept]["partialFilterExpression"] == {"removed_at": None}
    with pytest.raises(UniqueViolation) as raised:
        await mongo.write([Insert(vehicle(owner, license_plate="BLE123"))], [])
    assert raised.value.field == "plate_key"
    [stored] = await mongo.find_all(Vehicle, Eq("removed_at", None))
    await mongo.write([Update(dataclasses.replace(stored, removed_at=at(0)))], [])
    await mongo.write([Insert(vehicle(owner, license_plate="BLE123"))], [])


async def test_plates_from_before_are_keyed_by_their_stored_form_before_the_index(
        mongo: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """What SQLite migration 29 does: a plate stored before was stored as its key
    ("BMI2024"), which becomes its ``plate_key``, and how it goes on reading. That
    happens before the unique index on (plate_key, owner_id) is built (two cars of one
    owner without a key would clash there), the index on the plate itself is dropped,
    and once one start has done it, later ones do not look for such vehicles again."""
    from domain.entities import Vehicle
    from tests.contract.factories import user, vehicle

    owner, other = user(), user()
    cars = [vehicle(owner, license_plate="BMI2024"), vehicle(owner, license_plate="PJO77"),
            vehicle(other, license_plate="BMI2024")]
    await mongo.write([Insert(r) for r in (owner, other, *cars)], [])
    db = raw(mongo)
    db["vehicle"].drop_index(index_name("vehicle", ("plate_key", "owner_id"), True))
    db["vehicle"].update_many({}, {"$unset": {"plate_key": ""}})  # as written before
    db["vehicle"].create_index([("license_plate", 1), ("owner_id", 1)], unique=True,
                               name="uniq_vehicle_license_plate_owner_id")
    db[migrations.MIGRATIONS].delete_many({})  # a database from before the migrations

    await mongo.start()

    got = {v.id: (v.license_plate, v.plate_key) for v in await mongo.find_all(Vehicle, ALL)}
    assert got == {cars[0].id: ("BMI2024", "BMI2024"), cars[1].id: ("PJO77", "PJO77"),
                   cars[2].id: ("BMI2024", "BMI2024")}
    indexes = db["vehicle"].index_information()
    assert "uniq_vehicle_license_plate_owner_id" not in indexes
    assert indexes[index_name("vehicle", ("plate_key", "owner_id"), True)]["unique"] is True
    with pytest.raises(UniqueViolation) as raised:
        await mongo.write([Insert(vehicle(owner, license_plate="B-MI 2024"))], [])
    assert raised.value.field == "plate_key"
    assert db[migrations.MIGRATIONS].find_one({"_id": "plate_keys"})["done"] is True

    looked: list[str] = []
    find = AsyncCollection.find

    def finding(self: AsyncCollection, *args: Any, **kwargs: Any) -> AsyncCursor:
        query = str(args[0] if args else kwargs.get("filter"))
        # Searched text's shadows are checked at each start (``heal_search_shadows``):
        # that reads non-ASCII keys, not every key.
        if "plate_key" in query and "$regex" not in query:
            looked.append(self._c.name)
        return find(self, *args, **kwargs)

    monkeypatch.setattr(AsyncCollection, "find", finding)
    await mongo.start()  # every later start
    assert looked == []


async def test_names_from_before_their_sort_key_get_it_at_start_up(
        mongo: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """What SQLite's migration adding ``name_key`` does: documents stored before get
    the key of their name (``validation.name_key``), so NAME order holds for them,
    across pages; once one start has done it, later ones do not look again."""
    from tests.contract.factories import station, user

    names = ["Zoo", "Ärztehaus", "aachen lowercase", "Urban Tech"]
    records = [*(Company(name=n) for n in names), *(user(name=n) for n in names),
               *(station(name=n) for n in names)]
    await mongo.write([Insert(r) for r in records], [])
    db = raw(mongo)
    for collection in migrations.NAME_KEYED:
        db[collection].update_many({}, {"$unset": {"name_key": ""}})  # as written before
    db[migrations.MIGRATIONS].delete_many({})

    await mongo.start()

    for kind in (Company, User, Station):
        by_name = [Sort("name_key")]
        first = await mongo.find_page(kind, ALL, by_name, PageRequest(first=2))
        rest = await mongo.find_page(kind, ALL, by_name,
                                     PageRequest(first=2, after=first.cursors[-1]))
        assert [cast(Company, r).name for r in [*first.items, *rest.items]] == [
            "aachen lowercase", "Ärztehaus", "Urban Tech", "Zoo"], kind
    assert db[migrations.MIGRATIONS].find_one({"_id": "name_keys"})["done"] is True

    looked: list[str] = []
    find = AsyncCollection.find

    def finding(self: AsyncCollection, *args: Any, **kwargs: Any) -> AsyncCursor:
        if "name_key" in str(args[0] if args else kwargs.get("filter")):
            looked.append(self._c.name)
        return find(self, *args, **kwargs)

    monkeypatch.setattr(AsyncCollection, "find", finding)
    await mongo.start()  # every later start
    assert looked == []


async def test_stations_from_before_their_cp_id_key_get_it_at_start_up(
        mongo: MongoStore) -> None:
    """What SQLite's migration 78 does: stations stored before get their cpId's key
    (``Station.cp_id_key``), twins that differ only in case both kept."""
    from tests.contract.factories import station

    records = [station(cp_id=cp_id) for cp_id in ("CP-001", "cp-001", "Acme-7")]
    await mongo.write([Insert(r) for r in records], [])
    db = raw(mongo)
    db["station"].update_many({}, {"$unset": {"cp_id_key": ""}})  # as written before
    db[migrations.MIGRATIONS].delete_many({})

    await mongo.start()

    found = await mongo.find_all(Station, Eq("cp_id_key", "cp-001"))
    assert sorted(s.cp_id for s in found) == ["CP-001", "cp-001"]
    [acme] = await mongo.find_all(Station, Eq("cp_id_key", "acme-7"))
    assert acme.cp_id == "Acme-7"


async def test_a_station_an_older_build_writes_after_the_backfill_gets_its_key(
        mongo: MongoStore) -> None:
    """A rolling upgrade: an instance of a build from before ``Station.cp_id_key``, still
    running after this build's start gave every station its key, registers a station
    without one (review r28-leftocpp: the backfill ran once, so a charger connecting
    under its cpId in other case never found it). It gets its key at this build's next
    start, and within a sweep of a running instance."""
    from tests.contract.factories import station

    db = raw(mongo)
    older = station(cp_id="Old-1")
    await mongo.write([Insert(older)], [])
    db["station"].update_one({"cp_id": "Old-1"}, {"$unset": {"cp_id_key": ""}})
    assert await mongo.find_all(Station, Eq("cp_id_key", "old-1")) == []
    await mongo.start()  # the next start
    [found] = await mongo.find_all(Station, Eq("cp_id_key", "old-1"))
    assert found.id == older.id

    later = station(cp_id="Old-2")
    await mongo.write([Insert(later)], [])
    running = MongoStore(mongo.db, sweep_every=0.01)  # an instance sweeping meanwhile
    await running.start()
    db["station"].update_one({"cp_id": "Old-2"}, {"$unset": {"cp_id_key": ""}})
    try:
        for _ in range(200):  # sweeps every 10 ms
            await asyncio.sleep(0.01)
            if await mongo.find_all(Station, Eq("cp_id_key", "old-2")):
                break
    finally:
        await running.close()
    [found] = await mongo.find_all(Station, Eq("cp_id_key", "old-2"))
    assert found.id == later.id


async def test_duplicate_company_names_from_before_the_rule_are_kept_renamed(
        mongo: MongoStore) -> None:
    """What SQLite migration 14 does: before the unique index is built, every duplicate
    but the oldest gets its id appended; the index then holds."""
    from domain.errors import UniqueViolation
    from store.mongo.indexes import ensure_indexes

    db = raw(mongo)
    db["company"].drop_indexes()  # a database from before the rule
    first, second, solo = Company(name="Acme"), Company(name="Acme"), Company(name="Solo")
    for record in (first, second, solo):
        db["company"].insert_one({"_id": ObjectId(record.id), "name": record.name,
                                  "created_at": T0, "updated_at": T0,
                                  "created_by": "system", "updated_by": "system"})
    await migrations.before_indexes(mongo.db)
    await ensure_indexes(mongo.db)
    names = {c.id: c.name for c in await mongo.find_all(Company, ALL)}
    assert names == {first.id: "Acme", second.id: f"Acme ({second.id})", solo.id: "Solo"}
    # Searched by its new name (its folded shadow written with it), as any rename is.
    renamed = await mongo.find_all(Company, Search(("name",), f"ACME ({second.id.upper()})"))
    assert [c.id for c in renamed] == [second.id]
    with pytest.raises(UniqueViolation):
        await mongo.write([Insert(Company(name="Solo"))], [])


async def test_company_names_from_before_get_their_identity_older_twins_left_alone(
        mongo: MongoStore, caplog: pytest.LogCaptureFixture) -> None:
    """What SQLite migration 55 does: companies stored before get their name's identity
    (``Company.name_identity``), the oldest of names one this way keeping it, the
    others left without (null, under no rule: the index holds among documents with
    one) and logged for an admin to rename; the store then refuses a taken identity, and
    later starts do not look again."""
    from domain.errors import UniqueViolation

    caplog.set_level(logging.WARNING, logger="chargegraph.store")
    db = raw(mongo)
    records = [Company(name=name) for name in
               ("Bäckerei X", "BÄCKEREI X", "Ba\u0308ckerei x", "Solo")]
    for record in records:
        db["company"].insert_one({"_id": ObjectId(record.id), "name": record.name,
                                  "created_at": T0, "updated_at": T0,
                                  "created_by": "system", "updated_by": "system"})
    db[migrations.MIGRATIONS].delete_many({})  # a database from before the step
    await mongo.start()
    stored = {c.id: c.name_identity for c in await mongo.find_all(Company, ALL)}
    assert stored == {records[0].id: "bäckerei x", records[1].id: None,
                      records[2].id: None, records[3].id: "solo"}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and records[1].id in warned[0] and records[2].id in warned[1]
    with pytest.raises(UniqueViolation) as raised:
        await mongo.write([Insert(Company(name="SOLO", name_identity="solo"))], [])
    assert raised.value.field == "name_identity"
    assert db[migrations.MIGRATIONS].find_one({"_id": "name_identities"})["done"] is True


async def test_plates_from_before_take_their_compatibility_form(
        mongo: MongoStore, caplog: pytest.LogCaptureFixture) -> None:
    """What SQLite migration 61 does: plates stored before take their compatibility form
    (NFKC) and its key, searched by it; where an owner kept two cars of one key, the
    older is kept and the other removed by the system, logged, its cards linked to the
    car kept; removed cars all take it."""
    caplog.set_level(logging.WARNING, logger="chargegraph.store")
    db = raw(mongo)
    ann, bob = ObjectId(), ObjectId()
    cars = {}
    for name, owner, plate, removed, age in (
            ("v1", ann, "Ｂ-ＭＩ ２０２４", None, 0), ("v2", bob, "B-MI 2024", None, 1),
            ("v3", bob, "Ｂ-ＭＩ ２０２４", None, 2), ("v4", bob, "Ｂ ＭＩ ２０２４", T0, 0)):
        car = Vehicle(owner_id=str(owner), license_plate=plate,
                      plate_key="".join(c for c in plate.upper() if c.isalnum()),
                      removed_at=removed, created_at=T0 + timedelta(minutes=age),
                      updated_by=str(owner))
        db["vehicle"].insert_one(to_doc(car))
        cars[name] = car.id
    card = IdTag(tag="BOB-1", user_id=str(bob), vehicle_id=cars["v3"])
    db["id_tag"].insert_one(to_doc(card))
    db[migrations.MIGRATIONS].delete_many({})  # a database from before the step
    await mongo.start()
    stored = {c.id: (c.license_plate, c.plate_key, c.removed_at is None, c.updated_by)
              for c in await mongo.find_all(Vehicle, ALL)}
    assert stored == {cars["v1"]: ("B-MI 2024", "BMI2024", True, str(ann)),
                      cars["v2"]: ("B-MI 2024", "BMI2024", True, str(bob)),
                      cars["v3"]: ("B-MI 2024", "BMI2024", False, "system"),
                      cars["v4"]: ("B MI 2024", "BMI2024", False, str(bob))}
    [linked] = await mongo.find_all(IdTag, ALL)
    assert (linked.vehicle_id, linked.updated_by) == (cars["v2"], "system")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and cars["v3"] in warned[0], warned
    found = await mongo.find_all(Vehicle, all_of(Eq("owner_id", str(ann)),
                                                 Search(("license_plate",), "b-mi 2024")))
    assert [c.id for c in found] == [cars["v1"]]
    assert db[migrations.MIGRATIONS].find_one({"_id": "plate_forms"})["done"] is True


# ------------------------------------------------------- fields added later with a default


def added_with_default_in_sqlite() -> set[tuple[str, str]]:
    """The columns SQLite's migrations add with ``NOT NULL DEFAULT`` to existing tables."""
    added = re.compile(r'ALTER TABLE "(\w+)" ADD COLUMN "(\w+)" [^;]*NOT NULL DEFAULT')
    return {(m[1], m[2]) for _, script in sqlite_migrations.MIGRATIONS
            for m in added.finditer(script)}


def test_every_field_sqlite_added_with_a_default_is_back_filled() -> None:
    """A field added later with a default must be stored in older documents as SQLite's
    column default stores it in older rows (``plate_key`` and ``name_key`` have steps
    of their own: their values are the plate's and the name's keys, a refund's
    ``provider`` its payment's)."""
    own_step = {("vehicle", "plate_key"), ("station", "cp_id_key"), ("refund", "provider"),
                *((kind, "name_key") for kind in migrations.NAME_KEYED)}
    assert set(migrations.ADDED_WITH_DEFAULT) == added_with_default_in_sqlite() - own_step


async def test_documents_from_before_a_field_with_a_default_get_it_stored(
        mongo: MongoStore) -> None:
    from domain.entities import PaymentStatus
    from tests.contract.factories import payment, session, station, tariff, user

    where = station()
    legacy = [where, user(), session(where), tariff(idle_price_per_minute=Decimal("0.25")),
              payment(session(where), status=PaymentStatus.REFUNDED, amount_minor=660),
              ConnectorInterval(station_id=where.id, cp_id=where.cp_id, connector_id=1,
                                status=ConnectorStatus.AVAILABLE, start=utcnow()),
              ConnectionEvent(station_id=where.id, cp_id=where.cp_id, online=False),
              InstanceLease(host="old:1", started_at=utcnow(), expires_at=utcnow()),
              PendingStart(station_id=where.id, cp_id=where.cp_id, id_tag="TAG",
                           expires_at=utcnow())]
    await mongo.write([Insert(r) for r in legacy], [])
    db = raw(mongo)
    for kind, name in migrations.ADDED_WITH_DEFAULT:  # written before the fields
        db[kind].update_many({}, {"$unset": {name: "", f"_n_{name}": ""}})
    db[migrations.MIGRATIONS].delete_many({})

    await migrations.migrate(mongo.db)

    stored = {(kind, name): db[kind].find_one({}) for kind, name in
              migrations.ADDED_WITH_DEFAULT}
    assert {key: doc.get(key[1]) for key, doc in stored.items()} == {
        ("user", "token_epoch"): 0, ("payment", "refunded_minor"): 660,  # refunded whole
        ("payment", "refunding_minor"): 0,
        ("tariff", "idle_price_per_minute"): "0", ("tariff", "idle_grace_minutes"): 0,
        ("tariff", "energy_bands"): [], ("session", "meter_offset_wh"): 0,
        ("session", "start_clock_behind"): False,
        ("session", "closed_without_stop"): False, ("connector_interval", "known"): True,
        ("connection_event", "server_outage"): False,
        ("station", "configuration_truncated"): False,
        ("station", "diagnostics_previous_uploading"): False, ("station", "sight"): 0,
        ("instance_lease", "serves_chargers"): True,
        ("pending_start", "outcome_unknown"): False}
    assert stored["tariff", "idle_price_per_minute"]["_n_idle_price_per_minute"] == 0.0
    assert db[migrations.MIGRATIONS].find_one({"_id": "default_user_token_epoch"})["done"]


def legacy_user(mongo: MongoStore) -> User:
    """A user stored as a version before ``token_epoch`` stored it (or an older instance
    during a rolling upgrade, after this start's back-fill)."""
    user = User(email="old@example.com", name="Old", role=Role.DRIVER, password_hash="x")
    doc = to_doc(user)
    del doc["token_epoch"]
    raw(mongo)["user"].insert_one(doc)
    return user


async def test_a_guard_on_a_field_s_default_holds_where_the_field_is_missing(
        mongo: MongoStore) -> None:
    """A deactivation moves ``token_epoch`` on only from the value read (``only_if``,
    ``required``): on a user without the field that guard matched nothing, so the user
    could never be deactivated nor have their password reset (``CHANGED``)."""
    user = legacy_user(mongo)
    off = dataclasses.replace(user, active=False, token_epoch=1)
    await mongo.write([Update(off, fields=frozenset({"active", "token_epoch"}),
                              only_if=("token_epoch", 0), required=True)],
                      [audit_of(user)])
    [stored] = await mongo.get_many(User, [user.id])
    assert stored is not None and (stored.active, stored.token_epoch) == (False, 1)


async def test_a_guard_on_another_value_still_fails_where_the_field_is_missing(
        mongo: MongoStore) -> None:
    user = legacy_user(mongo)
    off = dataclasses.replace(user, active=False, token_epoch=2)
    with pytest.raises(Conflict):
        await mongo.write([Update(off, fields=frozenset({"active", "token_epoch"}),
                                  only_if=("token_epoch", 1), required=True)], [])
    [stored] = await mongo.get_many(User, [user.id])
    assert stored is not None and stored.active


async def test_the_refund_back_fill_does_not_count_a_refund_recorded_while_it_ran(
        mongo: MongoStore) -> None:
    """An instance that finished the step serves, and refunds, while another still runs
    it: the slower one's back-fill booked that refund a second time (reviewer s18)."""
    from domain.policy import SYSTEM
    from domain.services import ServiceContext, Services
    from tests.contract.factories import payment, session, station
    from tests.helpers import FastHasher

    where = station(company_id="c" * 24)
    sold, older = session(where, 1, user_id="a" * 24), session(where, 2, user_id="a" * 24)
    paid = payment(sold, status=PaymentStatus.CAPTURED)
    # Refunded 200 before refunds were records, then 100 more by an upgraded instance.
    partly = payment(older, status=PaymentStatus.CAPTURED, refunded_minor=200)
    await mongo.write([Insert(r) for r in (where, sold, older, paid, partly)], [])
    services = Services(ServiceContext(store=mongo, policy=Policy(), hasher=FastHasher()))
    await services.payments.refund(SYSTEM, paid.id)
    await services.payments.refund(SYSTEM, partly.id, Decimal("1.00"))
    await migrations._refund_records(mongo.db)
    refunds = await mongo.find_all(Refund, ALL)
    booked: dict[str, int] = {}
    for refund in refunds:
        booked[refund.payment_id] = booked.get(refund.payment_id, 0) + refund.amount_minor
    stored = {p.id: p.refunded_minor for p in await mongo.find_all(Payment, ALL)}
    assert booked == stored == {paid.id: paid.amount_minor, partly.id: 300}


async def test_a_company_stations_books_lose_the_owner_recorded_before_the_rule(
        mongo: MongoStore) -> None:
    """What SQLite migration 40 does for books: sessions, payments and refunds written
    before a company's station was its company's books alone also named its owner, who
    still saw them after leaving the company (reviewer s18). A station of no company
    keeps its owner's books."""
    from tests.contract.factories import payment, refund, session, station, user

    owner = user()
    ours, own = station(company_id="c" * 24, owner_id=owner.id), station(owner_id=owner.id)
    then = session(ours, 1, company_id=ours.company_id, station_owner_id=owner.id)
    kept = session(own, 1, station_owner_id=owner.id)
    paid = payment(then)
    await mongo.write([Insert(r) for r in (owner, ours, own, then, kept, paid,
                                           refund(then, paid.id))], [])
    raw(mongo)[migrations.MIGRATIONS].delete_many({})  # a database from before the step
    await migrations.migrate(mongo.db)
    books = {(r.kind, r.id): getattr(r, "station_owner_id")  # noqa: B009 (three types)
             for kind in (Session, Payment, Refund) for r in await mongo.find_all(kind, ALL)}
    assert books == {("session", then.id): None, ("session", kept.id): owner.id,
                     ("payment", paid.id): None,
                     **{("refund", r.id): None for r in await mongo.find_all(Refund, ALL)}}


async def test_a_payment_from_before_it_recorded_its_plug_is_grouped_under_no_charger(
        mongo: MongoStore) -> None:
    """Revenue is grouped by fields of the payments (``cp_id``, ``connector_id``); a
    document written before they were has none and reads them as null. Its revenue is
    still counted, in a row of its station with no charger nor connector, beside rows
    that have one (the rows raised TypeErrors: sorting None with a cpId, int(None))."""
    from domain.services.analytics import GroupBy, Scope
    from domain.timebuckets import Bucket
    from tests.support.late_stops import JULY_1, build_late_stops

    late = await build_late_stops(mongo)
    hour = timedelta(hours=1)
    old, _ = await late.ended_by_the_operator(JULY_1 + 10 * hour, JULY_1 + 11 * hour)
    await late.ended_by_the_operator(JULY_1 + 12 * hour, JULY_1 + 13 * hour)
    raw(mongo)["payment"].update_one(
        {"_id": ObjectId((await late.payment(old)).id)},
        {"$unset": {"cp_id": "", "connector_id": "", "vehicle_id": ""}})
    rows = await late.services.analytics.energy_trend(
        late.viewer("admin"), Scope(), JULY_1, JULY_1 + 24 * hour, Bucket.DAY,
        group_by=GroupBy.CONNECTOR)
    station = late.stations["CP-LATE"].id
    assert [(r.station_id, r.cp_id, r.connector_id, r.revenue_minor) for r in rows] == [
        (station, None, None, 200), (station, "CP-LATE", 1, 200)]


async def test_payments_from_before_they_recorded_their_plug_take_their_sessions(
        mongo: MongoStore) -> None:
    """What SQLite migration 41 does: revenue is grouped and filtered by the payment's
    charger, connector and vehicle, which older payments did not record."""
    from tests.contract.factories import payment, session, station

    where = station(company_id="c" * 24)
    sold = session(where, 2, user_id="a" * 24, vehicle_id="b" * 24)
    paid = payment(sold, cp_id=sold.cp_id, connector_id=2, vehicle_id=sold.vehicle_id)
    await mongo.write([Insert(r) for r in (where, sold, paid)], [])
    db = raw(mongo)
    db["payment"].update_many({}, {"$unset": {"cp_id": "", "connector_id": "",
                                              "vehicle_id": ""}})
    db[migrations.MIGRATIONS].delete_many({})
    await migrations.migrate(mongo.db)
    [back] = await mongo.find_all(Payment, ALL)
    assert (back.cp_id, back.connector_id, back.vehicle_id) == (sold.cp_id, 2, "b" * 24)


async def test_stations_holding_more_configuration_keys_than_kept_are_flagged(
        mongo: MongoStore) -> None:
    """What SQLite migration 42 does: every key was kept before; a station holding more
    than are kept now says so, the others read false."""
    from domain.entities import ConfigurationKey
    from domain.services.configuration import MAX_KEYS
    from tests.contract.factories import configuration_key, station

    many, few = station(), station()
    keys = [configuration_key(many, f"Vendor.Key{i:05d}")
            for i in range(MAX_KEYS + 1)]
    await mongo.write([Insert(r) for r in (many, few, *keys[:2],
                                           configuration_key(few))], [])
    db = raw(mongo)
    db["configuration_key"].insert_many([to_doc(k) for k in keys[2:]])
    db["station"].update_many({}, {"$unset": {"configuration_truncated": ""}})
    db[migrations.MIGRATIONS].delete_many({})
    await migrations.migrate(mongo.db)
    flags = {s.id: s.configuration_truncated for s in await mongo.find_all(Station, ALL)}
    assert flags == {many.id: True, few.id: False}
    assert await mongo.count(ConfigurationKey, ALL) == MAX_KEYS + 2


async def test_list_entries_from_before_get_their_cards_holder(mongo: MongoStore) -> None:
    """What SQLite migration 64 does: a local list entry written before it kept the
    holder of its card (``LocalListEntry.holder_id``) takes it from the card where it is
    still there (QA s26: a removed card issued again to its holder is put back); one of a
    card gone, or of no card, holds none."""
    from domain.entities import IdTag, LocalListEntry

    holder = str(ObjectId())
    card = IdTag(tag="T1", user_id=holder)
    entries = {name: LocalListEntry(station_id=str(ObjectId()), cp_id="CP", tag="T1",
                                    status="Accepted", card_id=card_id)
               for name, card_id in (("kept", card.id), ("gone", str(ObjectId())),
                                     ("none", None))}
    await mongo.write([Insert(card), *(Insert(e) for e in entries.values())], [])
    db = raw(mongo)
    db["local_list_entry"].update_many({}, {"$unset": {"holder_id": ""}})  # from before
    db[migrations.MIGRATIONS].delete_many({})

    await migrations.migrate(mongo.db)
    await migrations.migrate(mongo.db)  # another start

    found = {e.id: e.holder_id for e in await mongo.find_all(LocalListEntry, ALL)}
    assert {name: found[e.id] for name, e in entries.items()} == {
        "kept": holder, "gone": None, "none": None}
    assert db["local_list_entry"].count_documents({"holder_id": {"$exists": True}}) == 3


async def test_sessions_from_before_record_whether_they_were_closed_without_a_stop(
        mongo: MongoStore) -> None:
    """What SQLite migration 66 does: a session written before ``closed_without_stop`` was
    recorded is flagged when the CSMS closed it without its stop (null meterStop, reason
    Other), not when a charger's stop of -1 closed it so (flagged IMPLAUSIBLE_STOP, review
    r26: its resend was taken for a correction of the close), nor when stopped or open."""
    from domain.entities import MeterAnomaly, Session, SessionState
    from tests.contract.factories import session, station

    where = station()
    done: dict[str, Any] = {"state": SessionState.COMPLETED, "end_time": utcnow(),
                            "stop_reason": "Other"}
    made = {"lost": session(where, 1, **done),
            "minus_one": session(where, 2, **done,
                                 meter_anomaly=MeterAnomaly.IMPLAUSIBLE_STOP),
            "stopped": session(where, 3, **{**done, "stop_reason": "Local"},
                               meter_stop_wh=500),
            "open": session(where, 4)}
    await mongo.write([Insert(s) for s in made.values()], [])
    db = raw(mongo)
    db["session"].update_many({}, {"$unset": {"closed_without_stop": ""}})  # from before
    db[migrations.MIGRATIONS].delete_many({})

    await migrations.migrate(mongo.db)
    await migrations.migrate(mongo.db)  # another start

    found = {s.id: s.closed_without_stop for s in await mongo.find_all(Session, ALL)}
    assert {name: found[s.id] for name, s in made.items()} == {
        "lost": True, "minus_one": False, "stopped": False, "open": False}
    assert db["session"].count_documents({"closed_without_stop": {"$exists": True}}) == 4


async def test_a_database_a_newer_chargegraph_started_on_is_refused() -> None:
    """QA (s28, upgrade): README's "an older version refuses to start on a database a
    newer one migrated" held on SQLite only: on MongoDB, a rollback to an older build
    (its image reinstalled instead of the backup restored) started on the newer
    database and wrote documents without the fields the newer one relies on. A start
    records the schema its build knows (SQLite's number: one model for both stores); a
    build knowing less refuses to start, writing nothing."""
    db = async_mongomock_database(interleave=True)
    latest = sqlite_migrations.MIGRATIONS[-1][0]
    newer = MongoStore(db, sweep_every=None)
    await newer.start()
    await newer.close()
    record = await db[migrations.MIGRATIONS].find_one({"_id": migrations.SCHEMA})
    assert record is not None and record["version"] == latest


def as_newer_build(patched: pytest.MonkeyPatch, known: int) -> None:
    """Makes the stores started under ``patched`` a build knowing schema ``known``."""
    patched.setattr(store_module, "check_schema",
                    functools.partial(migrations.check_schema, known=known))
    patched.setattr(store_module, "claim_schema",
                    functools.partial(migrations.claim_schema, known=known))


async def newer_step(db: Any, known: int, *, killed_during: bool) -> None:
    """A step only a build knowing ``known`` has, writing a document, killed during it
    or once it is recorded done."""
    async def step(database: Any) -> None:
        await database["company"].update_many({}, {"$set": {"newer_only_field": 1}})
        if killed_during:
            raise RuntimeError("killed mid-upgrade")

    await migrations._once(db, "newer_only_step", step, known)
    raise RuntimeError("killed mid-upgrade")


async def assert_refused_by(db: Any, latest: int) -> None:
    older = MongoStore(db, sweep_every=None)
    try:
        with pytest.raises(migrations.NewerSchema,
                           match=rf"schema version {latest + 1}, written by a newer"):
            await older.start()
    finally:
        await older.close()
    record = await db[migrations.MIGRATIONS].find_one({"_id": migrations.SCHEMA})
    assert record is not None and record["version"] == latest + 1


@pytest.mark.parametrize("killed_during", [True, False], ids=["during", "after"])
async def test_a_newer_build_stopped_mid_migration_still_locks_out_an_older_one(
        monkeypatch: pytest.MonkeyPatch, killed_during: bool) -> None:
    """Review r28-upgrade: the record moved up only after the whole migration, while each
    step records itself done as it finishes. A newer build killed (or failing) between
    the two left steps done and the older number: the older build, the operator's
    natural rollback after a failed upgrade, started and wrote documents without the
    fields those steps filled, which the newer build, started again, never fills (they
    are done). The record moves up before a step first writes: the database is the
    newer build's from its first write, as a SQLite file is from its first migration,
    also when it is killed during that step."""
    db = async_mongomock_database(interleave=True)
    latest = sqlite_migrations.MIGRATIONS[-1][0]
    current = MongoStore(db, sweep_every=None)
    await current.start()
    await current.close()
    await db["company"].insert_one({"name": "Acme"})
    real_migrate = store_module.migrate

    async def newer_migrate_killed_midway(database: Any, *args: Any) -> None:
        await real_migrate(database, *args)
        await newer_step(database, latest + 1, killed_during=killed_during)

    with monkeypatch.context() as patched:
        as_newer_build(patched, latest + 1)
        patched.setattr(store_module, "migrate", newer_migrate_killed_midway)
        newer = MongoStore(db, sweep_every=None)
        with pytest.raises(RuntimeError, match="killed mid-upgrade"):
            await newer.start()
        await newer.close()
    assert await db["company"].count_documents({"newer_only_field": 1}) == 1

    await assert_refused_by(db, latest)


@pytest.mark.parametrize("failure", [OperationFailure("index build failed", 11000),
                                     asyncio.CancelledError()], ids=["error", "killed"])
async def test_a_newer_build_failing_before_its_first_step_leaves_the_older_one_its_database(
        monkeypatch: pytest.MonkeyPatch, failure: BaseException) -> None:
    """Session 30: a newer build claimed the database at its first line. Failing before
    it migrated anything (an index it could not build, a crash), it left the database
    claimed, and the older build, the natural rollback, was refused though nothing of
    the newer schema was written. As on SQLite, where such a start commits no migration,
    the database stays the older build's; the newer one started again claims it."""
    db = async_mongomock_database(interleave=True)
    latest = sqlite_migrations.MIGRATIONS[-1][0]
    current = MongoStore(db, sweep_every=None)
    await current.start()
    await current.close()

    async def failing_indexes(database: Any) -> None:
        raise failure

    with monkeypatch.context() as patched:
        as_newer_build(patched, latest + 1)
        patched.setattr(store_module, "ensure_indexes", failing_indexes)
        newer = MongoStore(db, sweep_every=None)
        with pytest.raises(type(failure)):
            await newer.start()
        await newer.close()
    record = await db[migrations.MIGRATIONS].find_one({"_id": migrations.SCHEMA})
    assert record is not None and record["version"] == latest

    older = MongoStore(db, sweep_every=None)
    await older.start()
    await older.close()

    # Started again, the newer build runs: the older one is refused from there.
    with monkeypatch.context() as patched:
        as_newer_build(patched, latest + 1)
        newer = MongoStore(db, sweep_every=None)
        await newer.start()
        await newer.close()
    await assert_refused_by(db, latest)


async def test_an_older_build_past_its_check_when_a_newer_one_migrates_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two builds starting at once: the older one found the database its own (nothing of
    the newer build claimed yet), then the newer one ran a step. The older start stops
    at its claim, before it serves on the newer schema."""
    db = async_mongomock_database(interleave=True)
    latest = sqlite_migrations.MIGRATIONS[-1][0]
    current = MongoStore(db, sweep_every=None)
    await current.start()
    await current.close()
    real_indexes = store_module.ensure_indexes

    async def newer_migrating_meanwhile(database: Any) -> None:
        with contextlib.suppress(RuntimeError):  # its own end, not the older build's
            await newer_step(database, latest + 1, killed_during=False)
        await real_indexes(database)

    with monkeypatch.context() as patched:
        patched.setattr(store_module, "ensure_indexes", newer_migrating_meanwhile)
        await assert_refused_by(db, latest)


async def test_a_newer_build_claiming_after_an_older_one_keeps_its_number() -> None:
    """The other order: the older build claimed first, then the newer one (a rolling
    upgrade). The newer number stays, whichever claims last."""
    db = async_mongomock_database(interleave=True)
    latest = sqlite_migrations.MIGRATIONS[-1][0]
    await migrations.claim_schema(db, latest)
    await migrations.claim_schema(db, latest + 1)
    with pytest.raises(migrations.NewerSchema):
        await migrations.claim_schema(db, latest)
    with pytest.raises(migrations.NewerSchema):
        await migrations.check_schema(db, latest)
    record = await db[migrations.MIGRATIONS].find_one({"_id": migrations.SCHEMA})
    assert record is not None and record["version"] == latest + 1


def schema_claims(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The writes made to the schema's record (``migrations.SCHEMA``) from here on, by
    method: each a round trip to the primary, with its write concern."""
    made: list[str] = []
    original: Callable[[AsyncCollection, str], Any] = AsyncCollection.__getattr__

    def recording(collection: AsyncCollection, name: str) -> Any:
        call = original(collection, name)
        if collection._c.name != migrations.MIGRATIONS or name in ("find_one",
                                                                   "count_documents"):
            return call

        async def counted(*args: Any, **kwargs: Any) -> Any:
            if (args[0] if args else kwargs.get("filter", {})).get("_id") == migrations.SCHEMA:
                made.append(name)
            return await call(*args, **kwargs)
        return counted

    monkeypatch.setattr(AsyncCollection, "__getattr__", recording)
    return made


async def test_a_first_start_on_a_new_database_claims_it_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 31: a first start on a new database wrote its claim before each step it
    ran (``_once``), some 40 writes, though only the first could change the record. A
    claim reads the record first and writes only when it holds less than the build's
    schema: one write on a new database, none at a later start; a newer build's claim
    still writes, and an older build's is still refused (the tests above)."""
    db = async_mongomock_database(interleave=True)
    claims = schema_claims(monkeypatch)
    first = MongoStore(db, sweep_every=None)
    await first.start()
    await first.close()
    assert claims == ["find_one_and_update"]
    done = await db[migrations.MIGRATIONS].count_documents({"done": True})
    assert done > 30, done  # the steps it ran, each claimed for before
    claims.clear()
    again = MongoStore(db, sweep_every=None)
    await again.start()
    await again.close()
    assert claims == []
    latest = sqlite_migrations.MIGRATIONS[-1][0]
    await migrations.claim_schema(db, latest + 1)
    assert claims == ["find_one_and_update"]
    record = await db[migrations.MIGRATIONS].find_one({"_id": migrations.SCHEMA})
    assert record is not None and record["version"] == latest + 1


async def test_what_decides_a_start_or_a_claim_is_read_from_the_primary(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s31: the schema claim reads its record first, and ``check_schema`` and
    each step's done mark are read too, with the URL's read preference: under
    ``readPreference=secondaryPreferred`` a secondary behind the primary could show a
    build its own number where a newer build had put its own, and its claim was not
    written. Every read of ``MIGRATIONS`` is the primary's, majority-committed, the
    database's own preference whatever it is, and so is every read of a start's back-fill
    steps (a stale secondary could hide documents a step fills); PyMongo's client given
    that URL agrees."""
    secondary: Any = mongomock.MongoClient(tz_aware=True).get_database(
        "chargegraph", read_preference=ReadPreference.SECONDARY_PREFERRED)
    db = AsyncDatabase(secondary, interleave=True)
    assert db["station"]._c.read_preference == ReadPreference.SECONDARY_PREFERRED
    reads: list[tuple[str, str | None]] = []
    # What every other collection's reads said, the back-fill steps' included (the
    # crash sweep's journal aside: a batch it misses is the next sweep's).
    others: set[tuple[str, str | None]] = set()
    original: Callable[[AsyncCollection, str], Any] = AsyncCollection.__getattr__

    def recording(collection: AsyncCollection, name: str) -> Any:
        said = (collection._c.read_preference.name, collection._c.read_concern.level)
        if collection._c.name == migrations.MIGRATIONS and name == "find_one":
            reads.append(said)
        elif name in {"find", "find_one", "aggregate", "count_documents", "distinct"} \
                and not collection._c.name.startswith(JOURNAL):
            others.add(said)
        return original(collection, name)

    monkeypatch.setattr(AsyncCollection, "__getattr__", recording)
    for _ in range(2):  # a first start (steps to run) and a later one (all done)
        store = MongoStore(db, sweep_every=None)
        await store.start()
        await store.close()
    await migrations.heal_search_shadows(db)
    await migrations.check_schema(db)
    assert len(reads) > 30, reads  # the schema's record, and each step's mark
    # Majority for the schema's record and the steps' marks; the heals' marks, read
    # round after round as written, not (review s31).
    assert set(reads) == {(ReadPreference.PRIMARY.name, "majority"),
                          (ReadPreference.PRIMARY.name, None)}, set(reads)
    # Not majority: a step's loop reads its own (w:1) writes (review s31).
    assert others == {(ReadPreference.PRIMARY.name, None)}, others

    client = MongoStore.connect("mongodb://127.0.0.1:1/fleet?readPreference=secondaryPreferred")
    try:
        assert client.db["station"].read_preference == ReadPreference.SECONDARY_PREFERRED
        records = migrations._migrations(client.db)
        assert records.read_preference == ReadPreference.PRIMARY
        assert records.read_concern.level == "majority"
    finally:
        await client.close()


# (Decimal128 is read too; mongomock's $max cannot compare one with a number.)
@pytest.mark.parametrize("stored", [float, bson.Int64], ids=["double", "long"])
async def test_a_newer_schema_number_of_any_numeric_type_is_refused(
        stored: Callable[[int], object]) -> None:
    """Review r28-upgrade: only an int counted, and mongosh writes numbers as doubles: a
    record an operator set there (`updateOne({_id: "schema"}, {$set: {version: 80}})`)
    let an older build start on the database."""
    db = async_mongomock_database(interleave=True)
    latest = sqlite_migrations.MIGRATIONS[-1][0]
    await db[migrations.MIGRATIONS].insert_one({"_id": migrations.SCHEMA,
                                                "version": stored(latest + 1)})
    older = MongoStore(db, sweep_every=None)
    try:
        with pytest.raises(migrations.NewerSchema,
                           match=rf"schema version {latest + 1}, written by a newer "
                                 rf"ChargeGraph \(this one knows up to {latest}\)"):
            await older.start()
    finally:
        await older.close()
    # The same number, written as one of those, is this build's: it starts.
    await db[migrations.MIGRATIONS].update_one({"_id": migrations.SCHEMA},
                                               {"$set": {"version": stored(latest)}})
    current = MongoStore(db, sweep_every=None)
    await current.start()
    await current.close()
    await db[migrations.MIGRATIONS].update_one({"_id": migrations.SCHEMA},
                                               {"$set": {"version": latest + 1}})
    db.sync()["company"].drop_indexes()
    older = MongoStore(db, sweep_every=None)
    message = (rf"the database has schema version {latest + 1}, written by a newer "
               rf"ChargeGraph \(this one knows up to {latest}\)")
    with pytest.raises(StartupFailed, match="cannot start the store at mongodb://h/db: "
                                            + message), starting("the store at mongodb://h/db"):
        await older.start()
    await older.close()
    record = await db[migrations.MIGRATIONS].find_one({"_id": migrations.SCHEMA})
    assert record is not None and record["version"] == latest + 1
    assert list(db.sync()["company"].index_information()) in ([], ["_id_"])  # none built
    # An older database (a build before this one's schema) is taken up to it.
    await db[migrations.MIGRATIONS].update_one({"_id": migrations.SCHEMA},
                                               {"$set": {"version": latest - 1}})
    current = MongoStore(db, sweep_every=None)
    await current.start()
    await current.close()
    record = await db[migrations.MIGRATIONS].find_one({"_id": migrations.SCHEMA})
    assert record is not None and record["version"] == latest


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The store's lines, their times as ``T``."""
    timed = re.compile(r" in \d+\.\d\d s$")
    return [timed.sub(" in T s", r.getMessage()) for r in caplog.records
            if r.name.startswith("chargegraph.store")]


async def _start(database: Any) -> None:
    store = MongoStore(database, sweep_every=None)
    await store.start()
    await store.close()


async def test_an_upgrade_says_each_step_and_its_end(caplog: pytest.LogCaptureFixture) -> None:
    """QA s32: an upgrade said nothing from its start to the ready line. Each step a start
    runs is said with its time, then the schema it migrated to; a start with nothing left
    to do says nothing (as SQLite's migrations). Review r32-f: a new database's some 40
    steps came before create-user's one useful line: it says the end alone."""
    caplog.set_level(logging.INFO, logger="chargegraph.store")
    database = async_mongomock_database()
    await _start(database)
    schema = migrations.SCHEMA_VERSION
    assert _said(caplog) == [f"created the database at schema {schema} in T s"]
    caplog.clear()
    # Two steps a newer build brings (their marks gone): an upgrade.
    await database[migrations.MIGRATIONS].delete_many({"_id": {"$in": ["books",
                                                                        "plate_forms"]}})
    await _start(database)
    await _start(database)  # nothing left to do
    assert _said(caplog) == ["migration step books done in T s",
                             "migration step plate_forms done in T s",
                             f"migrated the database to schema {schema} in T s"]


async def test_a_start_while_another_migrates_says_only_what_it_ran(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r32-f: a start counted the steps' done marks, so one starting while another
    instance migrated said "migrated the database" though it ran no step (and read the
    marks majority-committed right after its own writes)."""
    caplog.set_level(logging.INFO, logger="chargegraph.store")
    database = async_mongomock_database()
    before_indexes = store_module.before_indexes

    async def another_migrating_first(*args: Any, **kwargs: Any) -> None:
        monkeypatch.setattr(store_module, "before_indexes", before_indexes)
        await _start(database)  # the other instance, all its steps run
        await before_indexes(*args, **kwargs)

    monkeypatch.setattr(store_module, "before_indexes", another_migrating_first)
    await _start(database)
    assert _said(caplog) == [  # the other's alone
        f"created the database at schema {migrations.SCHEMA_VERSION} in T s"]
