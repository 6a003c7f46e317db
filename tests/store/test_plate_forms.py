"""Plates stored before they were kept in their compatibility form (NFKC, QA s25): SQLite
migration 61 and MongoDB's ``migrations._plate_forms`` bring every car to that form and
its key, and where one owner kept several cars of one key (the cars the bug made), the
oldest (``created_at``, then ``id``) stays and the others are removed, their cards linked
to the car kept. Both stores end with the same data (review s25: the version that left
such a car as stored kept its old key for good, so its owner could add the plate again,
and MongoDB converted the first by id where SQLite converted neither)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from domain import entities as d
from domain.errors import UniqueViolation
from domain.policy import SYSTEM, Policy, Viewer
from domain.ports import Insert, Store
from domain.query import ALL, Eq, Search, all_of
from domain.services import ServiceContext, Services
from domain.services.base import stamp_new
from store.mongo import MongoStore, migrations
from store.mongo.codec import to_doc
from store.sqlite import SqliteStore
from store.sqlite.codec import columns, quote, to_row
from store.sqlite.migrations import MIGRATIONS, apply_migrations
from tests.helpers import FastHasher
from tests.support.mongomock_async import async_mongomock_database

T0 = datetime(2024, 5, 1, tzinfo=UTC)
BOB = d.User(email="bob@example.com", name="Bob", role=d.Role.DRIVER)


def old_key(plate: str) -> str:
    """``plate_key`` as the build before the compatibility form computed it."""
    return "".join(c for c in plate.upper() if c.isalnum())


def car(plate: str, age: int = 0, *, owner: d.User = BOB, removed: bool = False
        ) -> d.Vehicle:
    """A car as stored before migration 61, made ``age`` minutes after ``T0``."""
    made = T0 + timedelta(minutes=age)
    return d.Vehicle(owner_id=owner.id, license_plate=plate, plate_key=old_key(plate),
                     created_at=made, updated_at=made, created_by=owner.id,
                     updated_by=owner.id, removed_at=T0 if removed else None)


def card(tag: str, vehicle: d.Vehicle) -> d.IdTag:
    return d.IdTag(tag=tag, user_id=vehicle.owner_id, vehicle_id=vehicle.id,
                   created_at=T0, updated_at=T0)


@pytest.fixture(params=["sqlite", "mongo"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def upgraded(backend: str, tmp_path: Path, records: Iterable[d.Record]
                   ) -> AsyncIterator[Store]:
    """A store of ``backend`` holding ``records`` as written before plates took their
    compatibility form, started by this build (which migrates them)."""
    records = list(records)
    store: SqliteStore | MongoStore
    if backend == "sqlite":
        path = str(tmp_path / "chargegraph.db")
        async with aiosqlite.connect(path, isolation_level=None) as conn:
            await apply_migrations(conn, [m for m in MIGRATIONS if m[0] < 61])
            for record in records:
                # Only the columns the table had then (a card's ``expiry_set_by`` came
                # with migration 80).
                cursor = await conn.execute(f"PRAGMA table_info({quote(record.kind)})")
                had = {row[1] for row in await cursor.fetchall()}
                kept = [(name, value) for name, value
                        in zip(columns(type(record)), to_row(record), strict=True)
                        if name in had]
                await conn.execute(
                    f"INSERT INTO {quote(record.kind)} "
                    f"({', '.join(quote(name) for name, _ in kept)}) "
                    f"VALUES ({', '.join('?' * len(kept))})", [value for _, value in kept])
        store = SqliteStore(path)
        await store.start()
    else:
        store = MongoStore(async_mongomock_database(interleave=True), sweep_every=None)
        await store.start()
        db: Any = store.db.sync()
        for record in records:
            db[record.kind].insert_one(to_doc(record))
        db[migrations.MIGRATIONS].delete_many({})  # a database from before the step
        await store.start()
    try:
        yield store
    finally:
        await store.close()


async def kept_plates(store: Store, owner: d.User = BOB) -> list[str]:
    return sorted(c.plate_key for c in await store.find_all(
        d.Vehicle, all_of(Eq("owner_id", owner.id), Eq("removed_at", None))))


@pytest.mark.parametrize("older", ["plain", "full width"])
async def test_an_owner_of_two_cars_of_one_plate_keeps_one_and_can_never_add_a_second(
        backend: str, tmp_path: Path, older: str) -> None:
    """Bob had "B-MI 2024" and "Ｂ-ＭＩ ２０２４" (the QA s25 bug). The older stays, in
    compatibility form; the other is removed, its card linked to the car kept. Whatever
    bob removes and adds after, he never again keeps two cars of that plate (review s25:
    the car left as stored kept its old key, and the plain plate could be added again)."""
    plain = car("B-MI 2024", 1 if older == "plain" else 2)
    wide = car("Ｂ-ＭＩ ２０２４", 1 if older == "full width" else 2)
    kept, gone = (plain, wide) if older == "plain" else (wide, plain)
    async with upgraded(backend, tmp_path, [plain, wide, card("CARD-1", gone)]) as store:
        assert await kept_plates(store) == ["BMI2024"]
        stored = {c.id: c for c in await store.find_all(d.Vehicle, ALL)}
        assert stored[kept.id].removed_at is None
        assert stored[kept.id].license_plate == "B-MI 2024"
        assert stored[gone.id].removed_at is not None
        assert (stored[gone.id].license_plate, stored[gone.id].plate_key) == (
            "B-MI 2024", "BMI2024")
        assert stored[gone.id].updated_by == SYSTEM.actor
        [linked] = await store.find_all(d.IdTag, ALL)
        assert linked.vehicle_id == kept.id

        await store.write([Insert(stamp_new(BOB, SYSTEM))], [])
        services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher()))
        with pytest.raises(UniqueViolation):
            await services.fleet.add_vehicle(Viewer.of(BOB), license_plate="b-mi 2024")
        await services.fleet.remove_vehicle(Viewer.of(BOB), kept.id)
        await services.fleet.add_vehicle(Viewer.of(BOB), license_plate="B-MI 2024")
        for typed in ("B-MI 2024", "ｂ-ｍｉ ２０２４"):
            with pytest.raises(UniqueViolation):
                await services.fleet.add_vehicle(Viewer.of(BOB), license_plate=typed)
        assert await kept_plates(store) == ["BMI2024"]


async def test_both_stores_migrate_two_forms_of_one_plate_alike(tmp_path: Path) -> None:
    """Store parity on every shape migration 61 meets: two forms of one plate made at
    the same time (the id decides), three forms of one plate, a car already in its
    form beside a full-width twin, removed cars (never removed again, converted), another
    owner's car of that plate, and cards of the cars removed."""
    ann = d.User(email="ann@example.com", name="Ann", role=d.Role.DRIVER)
    cars = [car("ＢＭＩ２０２４"), car("BMI２０２４"),  # one time: by id
            car("Ｘ-１", 3), car("x 1", 2), car("X１", 4),
            car("K 9", 5), car("Ｋ９", 4, removed=True), car("ｋ ９", 6),
            car("ＢＭＩ ２０２４", owner=ann), car("ann 1", owner=ann)]
    cards = [card(f"CARD-{n}", c) for n, c in enumerate(cars)]

    async def migrated(backend: str) -> tuple[dict[str, Any], dict[str, Any]]:
        async with upgraded(backend, tmp_path / backend, [*cars, *cards]) as store:
            return ({c.id: (c.license_plate, c.plate_key, c.removed_at is not None,
                            c.updated_by)
                     for c in await store.find_all(d.Vehicle, ALL)},
                    {t.tag: t.vehicle_id for t in await store.find_all(d.IdTag, ALL)})

    (tmp_path / "sqlite").mkdir()
    in_sqlite, in_mongo = await migrated("sqlite"), await migrated("mongo")
    assert in_sqlite == in_mongo
    vehicles, links = in_sqlite
    first, second = sorted(cars[:2], key=lambda c: c.id)
    assert vehicles[first.id] == ("BMI2024", "BMI2024", False, BOB.id)
    assert vehicles[second.id] == ("BMI2024", "BMI2024", True, "system")
    assert links[cards[cars.index(second)].tag] == first.id
    assert [vehicles[c.id][2] for c in cars[2:5]] == [True, False, True]
    assert {links[f"CARD-{n}"] for n in (2, 3, 4)} == {cars[3].id}
    assert [vehicles[c.id][2] for c in cars[5:8]] == [False, True, True]
    assert vehicles[cars[6].id] == ("K9", "K9", True, BOB.id)  # removed before: as was
    assert vehicles[cars[8].id] == ("BMI 2024", "BMI2024", False, ann.id)


async def test_a_converted_plate_is_found_by_its_plain_form(backend: str,
                                                            tmp_path: Path) -> None:
    wide = car("Ｂ-ＭＩ ２０２４")
    async with upgraded(backend, tmp_path, [wide, car("X 1")]) as store:
        found = await store.find_all(d.Vehicle, Search(("license_plate",), "b-mi 2024"))
        assert [c.id for c in found] == [wide.id]
