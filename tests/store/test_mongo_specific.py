"""MongoDB backend specifics: ids as ObjectIds, index creation, the undo journal."""

from __future__ import annotations

from decimal import Decimal

import pytest
from bson import ObjectId

from domain.entities import (
    AuditAction,
    AuditEntry,
    Company,
    Connector,
    Station,
    Tariff,
)
from domain.errors import UniqueViolation
from domain.ports import Insert, Update
from domain.query import ALL, Eq, Near
from store.mongo import MongoStore
from store.mongo.store import JOURNAL
from tests.support.mongomock_async import async_mongomock_database


@pytest.fixture
async def mongo() -> MongoStore:
    store = MongoStore(async_mongomock_database())
    await store.start()
    return store


def raw(store: MongoStore):  # type: ignore[no-untyped-def]
    return store.db.sync()


async def test_ids_and_foreign_keys_are_object_ids(mongo: MongoStore) -> None:
    company = Company(name="Acme")
    station = Station(cp_id="CP-1", name="One", company_id=company.id, lat=52.5, lon=13.4)
    await mongo.write([Insert(company), Insert(station)], [])
    doc = raw(mongo)["station"].find_one({"cp_id": "CP-1"})
    assert doc["_id"] == ObjectId(station.id)
    assert doc["company_id"] == ObjectId(company.id)
    assert set(doc["_geo"]) == {"x", "y", "z"}
    assert (await mongo.get_many(Station, [station.id]))[0] == station


async def test_decimals_are_exact_and_compare_as_numbers(mongo: MongoStore) -> None:
    cheap = Tariff(company_id=ObjectId().__str__(), price_per_kwh=Decimal("9.50"),
                   currency="EUR")
    dear = Tariff(company_id=ObjectId().__str__(), price_per_kwh=Decimal("10.0"),
                  currency="EUR")
    await mongo.write([Insert(cheap), Insert(dear)], [])
    from domain.query import Range, Sort

    found = await mongo.find_all(Tariff, Range("price_per_kwh", gt=Decimal("9.6")))
    assert [t.id for t in found] == [dear.id]  # as text "10.0" < "9.6"
    ordered = await mongo.find_all(Tariff, ALL, [Sort("price_per_kwh")])
    assert [t.price_per_kwh for t in ordered] == [Decimal("9.50"), Decimal("10.0")]


async def test_near_is_exact_great_circle(mongo: MongoStore) -> None:
    berlin = Station(cp_id="BER", name="Berlin", lat=52.5200, lon=13.4050)
    potsdam = Station(cp_id="PDM", name="Potsdam", lat=52.3906, lon=13.0645)
    await mongo.write([Insert(berlin), Insert(potsdam)], [])
    assert {s.cp_id for s in await mongo.find_all(Station, Near(52.52, 13.405, 26))} == {"BER"}
    assert {s.cp_id for s in await mongo.find_all(Station, Near(52.52, 13.405, 28))} == {
        "BER", "PDM"}


async def test_start_is_idempotent(mongo: MongoStore) -> None:
    await mongo.start()
    indexes = raw(mongo)["user"].index_information()
    assert "uniq_user_email" in indexes


async def test_failed_batch_is_undone(mongo: MongoStore) -> None:
    station = Station(cp_id="CP-1", name="One")
    await mongo.write([Insert(station)], [])
    renamed = Station(**{**station.__dict__, "name": "Renamed"})
    clash = Station(cp_id="CP-1", name="Copy")
    audit = AuditEntry(entity="station", entity_id=station.id, action=AuditAction.UPDATE,
                       actor="system")
    with pytest.raises(UniqueViolation) as err:
        await mongo.write([Update(renamed), Insert(clash)], [audit])
    assert err.value.field == "cp_id"
    assert (await mongo.get_many(Station, [station.id]))[0] == station  # rename undone
    assert await mongo.count(AuditEntry, ALL) == 0
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


async def test_crash_mid_batch_is_undone_on_start(mongo: MongoStore) -> None:
    """Simulate a process that died after writing the journal and half the batch."""
    station = Station(cp_id="CP-9", name="Nine")
    connector = Connector(station_id=station.id, cp_id="CP-9", connector_id=1)
    db = raw(mongo)
    from store.mongo.codec import to_doc

    db[JOURNAL].insert_one({"_id": ObjectId(), "audit": [],
                            "undo": [{"kind": "station", "id": ObjectId(station.id),
                                      "before": None},
                                     {"kind": "connector", "id": ObjectId(connector.id),
                                      "before": None}]})
    db["station"].insert_one(to_doc(station))  # the crash came before the connector
    await mongo.start()
    assert await mongo.find_one(Station, Eq("cp_id", "CP-9")) is None
    assert db[JOURNAL].count_documents({}) == 0
