"""MongoDB batches as large as the services write them (QA s19, /tmp/qa/s19/mongo:
bigstop.py, dupstop.py): a server refuses a document over 16 MiB, which mongomock does
not, so these tests check every document the store writes against that limit
(``SizeGuard``, failing as a server or PyMongo does); and a StopTransaction repeating samples
already stored sends each sample once, not once per earlier duplicate.

A week-long session's StopTransaction (50,400 samples, a 3.5 MiB frame) made one journal
document of 21 MiB: the stop failed with an internal error and the charger sent it again
for ever. Local-list batches (up to 100,000 entries, each deleted one with its image) are
larger still; mongomock is quadratic at that size, so they run scaled down against a
scaled-down limit (``JOURNAL_DOC_BYTES`` and the guard's limit by the same factor)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
from bson import ObjectId
from pymongo.errors import BulkWriteError, DocumentTooLarge, OperationFailure, WriteError

from domain import entities as d
from domain.entities import AuditAction, AuditEntry, Company, MeterSample, Station
from domain.errors import StoreRefused, StoreUnavailable
from domain.policy import SYSTEM
from domain.ports import Change, Insert, InsertIfAbsent, Update
from domain.query import ALL
from domain.services import withdrawal
from domain.services.base import stamp_new
from domain.services.metering import MeterReading, SampledValue
from store.mongo import MongoStore, journal, outage, writes
from store.mongo import batch as batch_module
from tests.domain.test_charging_telemetry import CP, world_on
from tests.support.mongo_backend import unhurried_batches
from tests.support.mongomock_async import AsyncCollection, async_mongomock_database

SERVER_LIMIT = 16 * 1024 * 1024
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WRITES = frozenset({"insert_one", "insert_many", "replace_one", "update_one", "update_many",
                    "find_one_and_update"})


class SizeGuard:
    """Checks every document the store writes against ``limit``, as a server would: what
    it inserts or replaces, and every journal document after each write to it (an update
    may grow one: ``journal.record_image``). Over the limit, an ``insert_many`` fails as
    on a server (PyMongo sends an acknowledged one whatever its documents' size): the
    server inserts the others (all of them unordered, those before it ordered) and
    answers a ``BulkWriteError`` with code 2, BadValue, "object to insert too large", for
    each one too large; an ``insert_one`` or ``replace_one`` raises PyMongo's
    ``DocumentTooLarge`` before sending (as PyMongo does for one past the limit and its
    16 KiB command overhead) and writes nothing. Records the largest journal document
    seen and the ``insert_many`` calls and documents per collection."""

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
                if name == "insert_many":
                    result = await guard.inserting_many(collection, method, *args, **kwargs)
                else:
                    guard.check(name, args)
                    result = await method(*args, **kwargs)
                if collection._c.name in (journal.JOURNAL, journal.JOURNAL_PARTS):
                    guard.check_stored(collection)
                return result

            return call

        monkeypatch.setattr(AsyncCollection, "__getattr__", patched)

    def check(self, name: str, args: tuple[Any, ...]) -> None:
        written = [args[0]] if name == "insert_one" else [args[1]] if name == "replace_one" \
            else []
        for doc in written:
            size = len(bson.encode(doc))
            if size > self.limit:
                raise DocumentTooLarge(f"BSON document too large ({size} bytes) - the "
                                       f"connected server supports BSON document sizes up "
                                       f"to {self.limit} bytes.")

    async def inserting_many(self, collection: AsyncCollection, method: Any,
                             docs: Sequence[dict[str, Any]], ordered: bool = True) -> Any:
        docs = list(docs)
        self.insert_many.setdefault(collection._c.name, []).append(len(docs))
        sizes = [len(bson.encode(doc)) for doc in docs]
        too_large = [i for i, size in enumerate(sizes) if size > self.limit]
        if not too_large:
            return await method(docs, ordered=ordered)
        if ordered:
            too_large = too_large[:1]
        sent = [i for i in range(len(docs)) if i not in too_large and
                (not ordered or i < too_large[0])]
        errors = [{"index": i, "code": 2,
                   "errmsg": f"object to insert too large. size in bytes: {sizes[i]}, "
                             f"max size: {self.limit}"} for i in too_large]
        inserted = len(sent)
        if sent:
            try:
                await method([docs[i] for i in sent], ordered=ordered)
            except BulkWriteError as exc:  # a duplicate among the others: reported too
                details = exc.details or {}
                inserted = int(details.get("nInserted") or 0)
                errors += [{**error, "index": sent[int(error["index"])]}
                           for error in details.get("writeErrors") or []]
        raise BulkWriteError({"writeErrors": sorted(errors, key=lambda e: int(e["index"])),
                              "writeConcernErrors": [], "nInserted": inserted,
                              "nUpserted": 0, "nMatched": 0, "nModified": 0, "nRemoved": 0,
                              "upserted": []})

    def check_stored(self, collection: AsyncCollection) -> None:
        for doc in collection._c.find():
            size = len(bson.encode(doc))
            self.largest_journal = max(self.largest_journal, size)
            self.journal_docs = max(self.journal_docs, collection._c.count_documents({}))
            if size > self.limit:
                raise DocumentTooLarge(f"BSON document too large ({size} bytes)")


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


# ---------------------------------------------------------------------------- the journal


async def test_a_week_long_sessions_stop_is_journaled_within_the_servers_limit(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """bigstop.py: 50,400 samples in the StopTransaction's transactionData."""
    unhurried_batches(monkeypatch)
    minutes = 7 * 24 * 60
    guard = SizeGuard(monkeypatch)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes + 5)
    async with world_on(MongoStore(async_mongomock_database(), sweep_every=None)) as world:
        charging = world.services.charging
        tx, _ = await charging.start_transaction(CP, 1, "TAG-1", 0, start)
        await charging.stop_transaction(CP, tx, minutes * 100,
                                        start + timedelta(minutes=minutes + 1),
                                        readings=readings(minutes, start))
        session = await world.session(tx)
        assert (session.state, session.energy_wh) == (d.SessionState.COMPLETED, minutes * 100)
        assert await world.store.count(d.MeterSample, ALL) == minutes * 5
    assert 0 < guard.largest_journal <= SERVER_LIMIT


async def test_unhurried_batches_are_left_to_their_writers_as_long_as_they_may_run(
        mongo: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """``unhurried_batches`` scales the deadline, and the sweeps keep well past it: a
    batch as old as a server's stale age is a live writer's, not swept (the periodic
    sweep took ``STALE_AFTER`` as it was when ``sweep`` was defined, and would have rolled
    back a batch still within the scaled deadline); once past the scaled age it is."""
    stale = journal.STALE_AFTER
    unhurried_batches(monkeypatch)
    assert journal.STALE_AFTER.total_seconds() > journal.BATCH_DEADLINE_S
    dead = await batch_module.Batch.open(mongo.db, [Insert(Company(name="Slow"))], [])
    assert dead.deadline - time.monotonic() > journal.BATCH_DEADLINE_S - 60
    assert await journal.sweep(mongo.db, datetime.now(UTC) + stale * 2) == 0
    later = datetime.now(UTC) + journal.STALE_AFTER + timedelta(seconds=1)
    assert await journal.sweep(mongo.db, later) == 1


async def test_an_inserted_documents_undo_keeps_no_image(mongo: MongoStore) -> None:
    """Its undo deletes it by id; ``after`` is read only to tell a journal of this
    version (it may leave a document another writer changed since) from an older one's.
    A document first updated keeps what the batch writes: its image may be recorded
    later, and then its fields are told from another writer's by it."""
    kept = Company(name="Kept")
    await mongo.write([Insert(kept)], [])
    new = Company(name="New")
    sample = MeterSample(id=str(ObjectId()), session_id=None, cp_id="CP", connector_id=1,
                         at=T0, measurand="Energy.Active.Import.Register", value=1.0)
    renamed = dataclasses.replace(kept, name="Renamed")
    undo = await journal.plan(mongo.db, [Insert(new), InsertIfAbsent(sample),
                                         Update(renamed, frozenset({"name"}))])
    after = {entry["id"]: entry["after"] for entry in undo}
    assert after[ObjectId(new.id)] == {} and after[ObjectId(sample.id)] == {}
    assert after[ObjectId(kept.id)]["name"] == "Renamed"
    # Inserted and then changed within the batch: not only inserted, the image is kept.
    both = await journal.plan(mongo.db, [Insert(new), Update(dataclasses.replace(
        new, name="Later"), frozenset({"name"}))])
    assert both[0]["after"]["name"] == "Later"


def scaled(monkeypatch: pytest.MonkeyPatch, doc_bytes: int = 8 * 1024) -> SizeGuard:
    """A journal document limit of ``doc_bytes`` and a server taking 4 times that: the
    proportions of 4 MiB and 16 MiB, at a size mongomock writes quickly."""
    monkeypatch.setattr(journal, "JOURNAL_DOC_BYTES", doc_bytes)
    return SizeGuard(monkeypatch, limit=4 * doc_bytes)


async def full_list(store: MongoStore, station: Station, version: int, prefix: str,
                    entries: int) -> None:
    await withdrawal.record_local_list(store, station, {
        "listVersion": version, "updateType": "Full",
        "localAuthorizationList": [{"idTag": f"{prefix}{i:06d}",
                                    "idTagInfo": {"status": "Accepted"}}
                                   for i in range(entries)]}, SYSTEM,
        ours=False, now=datetime.now(UTC))


async def test_a_large_local_list_batch_splits_its_journal_within_the_limit(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Full list replacing another: every entry deleted (journaled with its image) and
    every new one inserted, in one batch (``withdrawal.record_local_list``)."""
    station = stamp_new(Station(cp_id="CP-L", name="L"), SYSTEM)
    await mongo.write([Insert(station)], [])
    await full_list(mongo, station, 1, "A", 300)
    guard = scaled(monkeypatch)

    await full_list(mongo, station, 2, "B", 300)

    tags = {entry.tag for entry in await mongo.find_all(d.LocalListEntry, ALL, limit=1000)}
    assert tags == {f"B{i:06d}" for i in range(300)}
    assert guard.journal_docs > 1 and guard.largest_journal <= guard.limit  # in parts
    db = mongo.db.sync()
    assert db[journal.JOURNAL].count_documents({}) == 0  # closed, parts and all
    assert db[journal.JOURNAL_PARTS].count_documents({}) == 0


async def test_split_lists_hold_every_entry_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    items = [{"n": i, "pad": "y" * 100} for i in range(100)]
    pieces = journal._split({"undo": items, "audit": [ObjectId()] * 3, journal.ENTRIES: []},
                            2_000)
    assert len(pieces) > 1
    assert [item for piece in pieces for item in piece["undo"]] == items
    assert all(len(bson.encode(piece)) <= 2_000 for piece in pieces)
    assert sum(len(piece["audit"]) for piece in pieces) == 3
    # One item larger than the limit goes alone, not refused here.
    big = journal._split({"undo": [{"pad": "z" * 5_000}], "audit": [], journal.ENTRIES: []},
                         2_000)
    assert len(big) == 1


async def test_a_split_journal_is_rolled_back_whole_by_the_sweep(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that died half-way through a batch whose journal is in parts: the sweep
    reads them all and undoes everything the batch wrote, in whichever part its entry
    is, and deletes the head and the parts. An image recorded after the journal was
    opened (another writer changed a document first) goes into the part holding its
    entry, and the sweep puts back that image."""
    scaled(monkeypatch, doc_bytes=4 * 1024)
    old = companies(40)
    await mongo.write([Insert(c) for c in old], [])
    fresh = companies(40, "Fresh")
    last = old[-1]
    changes: list[Change] = [*(Insert(c) for c in fresh),
               *(Update(dataclasses.replace(c, name=f"dead {c.name}"), frozenset({"name"}))
                 for c in old)]
    entries = [AuditEntry(entity="company", entity_id=c.id, action=AuditAction.CREATE,
                          actor="system") for c in fresh]
    dead = await batch_module.Batch.open(mongo.db, changes, entries)
    assert dead.layout.parts > 0
    seq, _ = dead.layout.locate(dead.entries[("company", ObjectId(last.id))])
    assert seq > 0  # its entry is in a part
    # Another writer renames the last one before the dead batch reaches it.
    theirs = dataclasses.replace(last, name="theirs")
    await mongo.write([Update(theirs, frozenset({"name"}))], [])
    for step in writes.steps(changes):
        await dead._write(step, dead.id)  # then the writer dies, its journal left
    names = {c.id: c.name for c in await mongo.find_all(Company, ALL, limit=1000)}
    assert names[last.id] == f"dead {last.name}"

    later = datetime.now(UTC) + journal.STALE_AFTER + timedelta(seconds=1)
    assert await journal.sweep(mongo.db, later) == 1

    names = {c.id: c.name for c in await mongo.find_all(Company, ALL, limit=1000)}
    assert names == {**{c.id: c.name for c in old}, last.id: "theirs"}
    db = mongo.db.sync()
    assert db[journal.JOURNAL].count_documents({}) == 0
    assert db[journal.JOURNAL_PARTS].count_documents({}) == 0


async def test_a_failing_split_batch_rolls_back_and_closes_its_parts(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 inserts journal about 3.4 KiB (an insert's entry is its id): in parts at 1 KiB
    a document (at 4 KiB it was one, and the test held without parts to close)."""
    guard = scaled(monkeypatch, doc_bytes=1024)
    with pytest.raises(Exception, match="no such company"):
        await mongo.write([*(Insert(c) for c in companies(40)),
                           Update(Company(name="never stored"), frozenset({"name"}))], [])
    [parts] = guard.insert_many[journal.JOURNAL_PARTS]
    assert parts > 1
    assert await mongo.count(Company, ALL) == 0
    db = mongo.db.sync()
    assert db[journal.JOURNAL].count_documents({}) == 0
    assert db[journal.JOURNAL_PARTS].count_documents({}) == 0


async def test_a_writer_stalled_between_its_journals_head_and_parts_writes_nothing(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parts go after the head, with its ``at``. A writer stalled in between past
    ``STALE_AFTER`` has its head swept by another instance (nothing of the batch written:
    right); its parts then landed as orphans and the batch went on with no journal:
    nothing marked it in flight, and a writer dying half-way left it half-written for
    good. It fails instead, writing nothing, its parts deleted."""
    scaled(monkeypatch, doc_bytes=2 * 1024)
    old = companies(20)
    await mongo.write([Insert(c) for c in old], [])
    original: Callable[[AsyncCollection, str], Any] = AsyncCollection.__getattr__
    swept: list[int] = []

    def stalling(collection: AsyncCollection, name: str) -> Any:
        method = original(collection, name)
        if name != "insert_many" or collection._c.name != journal.JOURNAL_PARTS or swept:
            return method

        async def stalled(*args: Any, **kwargs: Any) -> Any:
            # Stalled here past STALE_AFTER: another instance's sweep meanwhile.
            later = datetime.now(UTC) + journal.STALE_AFTER + timedelta(seconds=1)
            swept.append(await journal.sweep(mongo.db, later))
            return await method(*args, **kwargs)

        return stalled

    monkeypatch.setattr(AsyncCollection, "__getattr__", stalling)
    with pytest.raises(StoreUnavailable) as raised:
        await mongo.write([Update(dataclasses.replace(c, name="half " + c.name),
                                  frozenset({"name"})) for c in old], [])

    assert swept == [1]
    assert raised.value.code == "STORE_UNAVAILABLE" and "nothing" in raised.value.message
    assert "swept" in raised.value.reason
    names = {c.id: c.name for c in await mongo.find_all(Company, ALL, limit=100)}
    assert names == {c.id: c.name for c in old}
    db = mongo.db.sync()
    assert db[journal.JOURNAL].count_documents({}) == 0
    assert db[journal.JOURNAL_PARTS].count_documents({}) == 0


async def test_the_sweep_drops_parts_whose_head_is_gone(mongo: MongoStore) -> None:
    """A writer that died between deleting a journal's head (its batch ended) and its
    parts: the parts are garbage once stale; a fresh one may belong to a batch being
    opened and stays, as do the parts of a head still there."""
    db = mongo.db.sync()
    now = datetime.now(UTC)
    orphan, opening, live = ObjectId(), ObjectId(), ObjectId()
    db[journal.JOURNAL].insert_one({"_id": live, "at": now, "undo": [], "audit": [],
                                    journal.PARTS: 1, journal.MARKED: True})
    db[journal.JOURNAL_PARTS].insert_many([
        {"journal": orphan, "seq": 1, "at": now - timedelta(minutes=10), "undo": []},
        {"journal": opening, "seq": 1, "at": now, "undo": []},
        {"journal": live, "seq": 1, "at": now - timedelta(minutes=10), "undo": []}])
    assert await journal.sweep(mongo.db, now) == 0
    assert sorted(p["journal"] for p in db[journal.JOURNAL_PARTS].find()) == sorted(
        [opening, live])


# ---------------------------------------------------------------------------- refusals


async def test_a_document_the_server_refuses_as_too_large_is_a_store_error(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of inserts is an acknowledged ``insert_many``, which PyMongo sends whatever
    its documents' size: the server inserts the others and answers code 2, BadValue,
    "object to insert too large", which was an internal error. The batch rolls back
    what the server did insert."""
    SizeGuard(monkeypatch, limit=1024)
    small, large = Company(name="small"), Company(name="L" * 2048)
    with pytest.raises(StoreRefused) as raised:
        await mongo.write([Insert(small), Insert(large)],
                          [AuditEntry(entity="company", entity_id=small.id,
                                      action=AuditAction.CREATE, actor="system")])
    assert raised.value.code == "STORE_REFUSED"
    assert "too large" in raised.value.message and "16 MiB" in raised.value.message
    assert "max size: 1024" in raised.value.reason
    assert await mongo.count(Company, ALL) == 0
    assert await mongo.count(AuditEntry, ALL) == 0
    assert mongo.db.sync()[journal.JOURNAL].count_documents({}) == 0
    with pytest.raises(StoreRefused):
        await mongo.write([Insert(large)], [])  # written alone too
    assert await mongo.count(Company, ALL) == 0


async def test_a_replacement_pymongo_refuses_as_too_large_is_a_store_error(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyMongo raises ``DocumentTooLarge`` (a bson ``InvalidDocument``, no
    ``PyMongoError``) before sending a single document far past the limit."""
    company = Company(name="small")
    await mongo.write([Insert(company)], [])
    SizeGuard(monkeypatch, limit=1024)
    with pytest.raises(StoreRefused) as raised:
        await mongo.write([Update(dataclasses.replace(company, name="L" * 2048))], [])
    assert "1024 bytes" in raised.value.reason
    assert [c.name for c in await mongo.find_all(Company, ALL)] == ["small"]


TOO_LARGE_INSERT = "object to insert too large. size in bytes: 17825814, max size: 16777216"


def test_the_servers_too_large_errors_are_store_refusals() -> None:
    update = OperationFailure("Resulting document after update is larger than 16777216",
                              code=17419)
    upsert = OperationFailure("Document to upsert is larger than 16777216", code=17420)
    bulk = BulkWriteError({"writeErrors": [{"index": 0, "code": 10334,
                                            "errmsg": "BSONObj size: 17000000 is invalid"}]})
    # What a server answers an insert PyMongo sent (an insert_many's document of any
    # size, an insert_one's up to 16 KiB past the limit): BadValue with these words.
    many = BulkWriteError({"writeErrors": [{"index": 0, "code": 2,
                                            "errmsg": TOO_LARGE_INSERT}], "nInserted": 1})
    one = WriteError(TOO_LARGE_INSERT, 2, {"index": 0, "code": 2, "errmsg": TOO_LARGE_INSERT})
    for error in (update, upsert, bulk, many, one):
        assert isinstance(outage.unavailable(error), StoreRefused), error
    # Any other bad value is no refusal of a size (a bug: left as it is).
    other = BulkWriteError({"writeErrors": [{"index": 0, "code": 2,
                                             "errmsg": "unknown operator: $foo"}]})
    assert outage.unavailable(other) is None
    unencodable = outage.refused(bson.errors.InvalidDocument("cannot encode object: {1}"))
    assert "cannot store" in unencodable.message


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
