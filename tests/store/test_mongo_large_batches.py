"""MongoDB batches as large as the services write them (QA s19, /tmp/qa/s19/mongo:
bigstop.py, dupstop.py): a server refuses a document over 16 MiB, which mongomock does
not, so these tests check every document the store writes against that limit
(``SizeGuard``, raising what PyMongo raises); and a StopTransaction repeating samples
already stored sends each sample once, not once per earlier duplicate.

A week-long session's StopTransaction (50,400 samples, a 3.5 MiB frame) made one journal
document of 21 MiB: the stop failed with an internal error and the charger sent it again
for ever. Local-list batches (up to 100,000 entries, each deleted one with its image) are
larger still; mongomock is quadratic at that size, so they run scaled down against a
scaled-down limit (``JOURNAL_DOC_BYTES`` and the guard's limit by the same factor)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
from pymongo.errors import DocumentTooLarge

from domain import entities as d
from domain.entities import Company
from domain.ports import Insert, InsertIfAbsent
from domain.query import ALL
from domain.services.metering import MeterReading, SampledValue
from store.mongo import MongoStore, journal
from tests.domain.test_charging_telemetry import CP, world_on
from tests.support.mongomock_async import AsyncCollection, async_mongomock_database

SERVER_LIMIT = 16 * 1024 * 1024
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WRITES = frozenset({"insert_one", "insert_many", "replace_one", "update_one", "update_many",
                    "find_one_and_update"})


class SizeGuard:
    """Checks every document the store writes against ``limit``, as a server would: what
    it inserts or replaces, and every journal document after each write to it (an update
    may grow one: ``journal.record_image``). Over the limit, raises PyMongo's
    ``DocumentTooLarge`` and writes nothing. Records the largest journal document seen
    and the ``insert_many`` calls and documents per collection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, limit: int = SERVER_LIMIT) -> None:
        self.limit = limit
        self.largest_journal = 0
        self.journal_docs = 0
        self.insert_many: dict[str, list[int]] = {}
        original: Callable[[AsyncCollection, str], Any] = AsyncCollection.__getattr__
        guard = self

        def patched(collection: AsyncCollection, name: str) -> Any:
            method = original(collection, name)
            if name not in WRITES:
                return method

            async def call(*args: Any, **kwargs: Any) -> Any:
                guard.check(collection, name, args)
                result = await method(*args, **kwargs)
                if collection._c.name == journal.JOURNAL:
                    guard.check_stored(collection)
                return result

            return call

        monkeypatch.setattr(AsyncCollection, "__getattr__", patched)

    def check(self, collection: AsyncCollection, name: str, args: tuple[Any, ...]) -> None:
        kind = collection._c.name
        if name == "insert_many":
            self.insert_many.setdefault(kind, []).append(len(args[0]))
        written = list(args[0]) if name == "insert_many" else \
            [args[0]] if name == "insert_one" else [args[1]] if name == "replace_one" else []
        for doc in written:
            self._fits(len(bson.encode(doc)))

    def check_stored(self, collection: AsyncCollection) -> None:
        for doc in collection._c.find():
            size = len(bson.encode(doc))
            self.largest_journal = max(self.largest_journal, size)
            self.journal_docs = max(self.journal_docs, collection._c.count_documents({}))
            self._fits(size)

    def _fits(self, size: int) -> None:
        if size > self.limit:
            raise DocumentTooLarge(f"BSON document too large ({size} bytes) - the connected "
                                   f"server supports BSON document sizes up to {self.limit} "
                                   "bytes.")


@pytest.fixture
async def mongo() -> AsyncIterator[MongoStore]:
    store = MongoStore(async_mongomock_database(), sweep_every=None)
    await store.start()
    yield store
    await store.close()


def readings(minutes: int, start: datetime, measurands: int = 5) -> list[MeterReading]:
    """One reading a minute (bigstop.py's: energy, power, current, voltage, SoC)."""
    out = []
    for m in range(1, minutes + 1):
        values = (SampledValue(str(m * 100), "Energy.Active.Import.Register", "Wh",
                               context="Sample.Periodic"),
                  SampledValue("6.0", "Power.Active.Import", "kW", context="Sample.Periodic"),
                  SampledValue("16.0", "Current.Import", "A", context="Sample.Periodic"),
                  SampledValue("230.0", "Voltage", "V", context="Sample.Periodic"),
                  SampledValue(str(min(100, m // 100)), "SoC", "Percent",
                               context="Sample.Periodic"))
        out.append(MeterReading(start + timedelta(minutes=m), values[:measurands]))
    return out


def companies(n: int, prefix: str = "Company") -> list[Company]:
    return [Company(name=f"{prefix} {i:04d} " + "x" * 200) for i in range(n)]


# ---------------------------------------------------------------------------- duplicates


async def test_a_repeated_stop_sends_each_stored_sample_once(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """dupstop.py: the samples came as MeterValues during the session and again in the
    StopTransaction's transactionData, and the stop is sent again (its answer lost).
    Every ``InsertIfAbsent`` clashes: each clash restarted the ordered insert after it,
    N clashes sending N(N+1)/2 documents in N calls (480 samples: 115,440)."""
    minutes = 240
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes + 5)
    taken = readings(minutes, start, measurands=2)
    samples = 2 * minutes
    async with world_on(MongoStore(async_mongomock_database(), sweep_every=None)) as world:
        charging = world.services.charging
        tx, _ = await charging.start_transaction(CP, 1, "TAG-1", 0, start)
        for reading in taken:
            await charging.meter_values(CP, 1, tx, [reading])
        stop_at = start + timedelta(minutes=minutes + 1)
        for _ in range(2):  # the stop, then the same stop again
            guard = SizeGuard(monkeypatch)
            await charging.stop_transaction(CP, tx, minutes * 100, stop_at, readings=taken)
            sent = guard.insert_many.get("meter_sample", [])
            assert sum(sent) <= samples and len(sent) <= 2, sent[:5]
            monkeypatch.undo()
        assert (await world.session(tx)).state is d.SessionState.COMPLETED
        assert await world.store.count(d.MeterSample, ALL) == samples


async def test_a_plain_insert_clashing_in_a_run_still_fails_it_whole(
    mongo: MongoStore
) -> None:
    """Unordered, the rest of a run is written before the clash is known; the batch
    undoes it with the run. ``InsertIfAbsent`` clashes in the same run are no error."""
    there = Company(name="there")
    await mongo.write([Insert(there)], [])
    kept = await mongo.count(Company, ALL)
    others = companies(3)
    with pytest.raises(Exception, match="same"):
        await mongo.write([InsertIfAbsent(there), Insert(others[0]),
                           Insert(dataclasses.replace(there, name="again")),
                           Insert(others[1]), InsertIfAbsent(others[2])], [])
    assert await mongo.count(Company, ALL) == kept
    await mongo.write([InsertIfAbsent(there), *(InsertIfAbsent(c) for c in others),
                       InsertIfAbsent(others[0])], [])
    assert await mongo.count(Company, ALL) == kept + 3
