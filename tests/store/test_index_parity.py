"""Both backends index the same lookups: for every index the SQLite schema ends up with
(all migrations applied, dropped ones gone), MongoDB has an index starting with the same
fields, apart from the deliberate exceptions below. A query the use cases send to both
then never scans a whole MongoDB collection where SQLite reads an index (QA found five
such gaps: the analytics' time ranges, a connector's reservations, a charger's
connection history)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiosqlite
import pytest

from store.mongo import MongoStore
from store.sqlite.migrations import apply_migrations
from tests.support.mongomock_async import AsyncDatabase, async_mongomock_database

#: SQLite indexes (table, columns) MongoDB covers differently, and why. An entry is only
#: allowed while it is needed (see the last test).
ALLOWED: dict[tuple[str, tuple[str, ...]], str] = {
    # Counters live in ``_counters``, one document per name: its ``_id``.
    ("sequence", ("name",)): "MongoStore.next_sequence",
    # Near narrows by a latitude band, then tests ``_geo``; it never ranges over lon.
    ("station", ("lat", "lon")): "store/mongo/query.py FilterCompiler._near",
    # SQLite adds delta_wh so its energy sums read the index alone; on MongoDB the
    # (at) index serves the time range.
    ("meter_sample", ("at", "delta_wh")): "energy sums",
    # A station has a handful of reservations: (station_id) finds them.
    ("reservation", ("station_id", "expires_at")): "Station.reservations",
    # SQLite carries a status report's books in its history index so the per-viewer
    # filter reads the index alone; MongoDB walks (station, connector, at, _id), the
    # nested list's order, and tests the books on the few documents it returns.
    ("status_event", ("station_id", "connector_id", "at", "_id", "company_id",
                      "station_owner_id")): "Connector.statusHistory",
    # The same for a station's connects and disconnects.
    ("connection_event", ("station_id", "at", "_id", "company_id", "station_owner_id")):
        "Station.connectionHistory",
}

Index = tuple[str, tuple[str, ...]]


async def sqlite_indexes() -> set[Index]:
    """(table, columns) of every index of a database migrated from scratch, primary keys
    and unique constraints included; ``id`` named ``_id`` as MongoDB names it."""
    async with aiosqlite.connect(":memory:", isolation_level=None) as conn:
        await apply_migrations(conn)
        tables = [row[0] for row in await conn.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        found: set[Index] = set()
        for table in tables:
            for index in await conn.execute_fetchall(f'PRAGMA index_list("{table}")'):
                columns = await conn.execute_fetchall(f'PRAGMA index_info("{index[1]}")')
                found.add((table, tuple("_id" if c[2] == "id" else c[2] for c in columns)))
    return found


@pytest.fixture
async def mongo_indexes() -> AsyncIterator[dict[str, list[tuple[str, ...]]]]:
    """The key fields of every index a started MongoDB store has, by collection."""
    store = MongoStore(async_mongomock_database(), sweep_every=None)
    await store.start()
    db: AsyncDatabase = store.db
    raw = db.sync()
    yield {name: [tuple(key for key, _ in info["key"])
                  for info in raw[name].index_information().values()]
           for name in raw.list_collection_names()}
    await store.close()


def covered(index: Index, mongo: dict[str, list[tuple[str, ...]]]) -> bool:
    table, columns = index
    if columns == ("_id",):
        return True  # every collection has it
    return any(keys[:len(columns)] == columns for keys in mongo.get(table, []))


async def test_every_sqlite_index_has_a_mongodb_counterpart(
    mongo_indexes: dict[str, list[tuple[str, ...]]]
) -> None:
    missing = sorted(index for index in await sqlite_indexes()
                     if not covered(index, mongo_indexes) and index not in ALLOWED)
    assert missing == [], "add them to store/mongo/indexes.py (or, with a reason, ALLOWED)"


async def test_every_exception_is_still_needed(
    mongo_indexes: dict[str, list[tuple[str, ...]]]
) -> None:
    sqlite = await sqlite_indexes()
    stale = sorted(index for index in ALLOWED
                   if index not in sqlite or covered(index, mongo_indexes))
    assert stale == [], "no longer an exception: remove it from ALLOWED"
