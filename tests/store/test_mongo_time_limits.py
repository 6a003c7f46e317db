"""A MongoDB write batch that runs out of time: past its own deadline
(``journal.BATCH_DEADLINE_S``), or stopped by the server at the time limit the batch gives
each of its operations (``pymongo.timeout``: the server answers MaxTimeMSExpired, code 50,
which mongomock never does). Either way the batch is rolled back, nothing of it stays, and
the caller is told so as SQLite tells a write its lock timed out: ``STORE_BUSY``, send it
again (QA s28 mongo2: an internal error, logged as a bug with its traceback, and a
GraphQL client could not tell that a retry was all it took)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from bson import ObjectId
from pymongo import _csot
from pymongo.errors import BulkWriteError, ExecutionTimeout, NetworkTimeout, OperationFailure

from domain.entities import AuditAction, AuditEntry, Company, Station, audit_after
from domain.errors import StoreBusy, StoreUnavailable
from domain.ports import Insert, Update
from domain.query import ALL
from store.mongo import MongoStore, journal
from store.mongo.journal import JOURNAL
from tests.support.mongomock_async import AsyncCollection

#: What a server answers an operation that ran past its ``maxTimeMS``.
TIME_LIMIT = {"ok": 0, "errmsg": "operation exceeded time limit", "code": 50,
              "codeName": "MaxTimeMSExpired"}


def entry(record: Any, action: AuditAction) -> AuditEntry:
    return AuditEntry(entity=record.kind, entity_id=record.id, action=action,
                      actor="tester", after=audit_after(None, record))


def raw(store: MongoStore) -> Any:
    return store.db.sync()


async def test_a_batch_past_its_deadline_is_store_busy(
        mongo: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "BATCH_DEADLINE_S", 0.0)
    company = Company(name="Late")

    with pytest.raises(StoreBusy) as raised:
        await mongo.write([Insert(company)], [entry(company, AuditAction.CREATE)])

    assert raised.value.code == "STORE_BUSY"
    assert "nothing was written" in raised.value.message
    assert await mongo.count(Company, ALL) == 0
    assert await mongo.count(AuditEntry, ALL) == 0
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


def server_time_limit(monkeypatch: pytest.MonkeyPatch, method: str, error: Exception
                      ) -> None:
    """``method`` of the station collection fails as a server fails it at the time limit
    a batch's operation carries (only there: a write alone has none)."""
    getattr_ = AsyncCollection.__getattr__

    def timed(collection: AsyncCollection, name: str) -> Any:
        real = getattr_(collection, name)
        if name != method or collection._c.name != "station":
            return real

        async def call(*args: Any, **kwargs: Any) -> Any:
            if _csot.get_timeout() is not None:
                raise error
            return await real(*args, **kwargs)

        return call

    monkeypatch.setattr(AsyncCollection, "__getattr__", timed)


async def rolled_back_rename(mongo: MongoStore, monkeypatch: pytest.MonkeyPatch,
                             fail: Callable[[], None]) -> StoreBusy:
    """A batch of an insert and a rename, timed out as ``fail`` makes it: its error,
    once checked that nothing of it stands (the station's old name, no new station,
    no audit), with ``fail`` undone."""
    station = Station(cp_id="CP-T", name="Before")
    await mongo.write([Insert(station)], [])
    renamed = Station(**{**station.__dict__, "name": "After"})
    other = Station(cp_id="CP-U", name="New")
    fail()
    with pytest.raises(StoreBusy) as raised:
        await mongo.write([Insert(other), Update(renamed, frozenset({"name"}))],
                          [entry(renamed, AuditAction.UPDATE)])
    monkeypatch.undo()
    [kept] = await mongo.get_many(Station, [station.id])
    assert kept is not None and kept.name == "Before"
    assert (await mongo.get_many(Station, [other.id])) == [None]
    assert raw(mongo)["station"].count_documents({"_id": ObjectId(other.id)}) == 0
    assert await mongo.count(AuditEntry, ALL) == 0
    return raised.value


@pytest.mark.parametrize(("method", "error"), [
    ("update_one", ExecutionTimeout("operation exceeded time limit", 50, TIME_LIMIT)),
    ("update_one", OperationFailure("operation exceeded time limit", 50, TIME_LIMIT)),
    ("insert_many", BulkWriteError({"writeErrors": [{"index": 0, **TIME_LIMIT}],
                                    "nInserted": 0})),
], ids=["ExecutionTimeout", "OperationFailure", "BulkWriteError"])
async def test_the_servers_time_limit_in_a_batch_is_store_busy_and_rolled_back(
        mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, method: str,
        error: Exception) -> None:
    refused = await rolled_back_rename(
        mongo, monkeypatch, lambda: server_time_limit(monkeypatch, method, error))
    assert refused.code == "STORE_BUSY"
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


def answer_lost(monkeypatch: pytest.MonkeyPatch, collection_name: str, method: str) -> None:
    """``method`` of ``collection_name`` does its work, then the driver gives up on its
    answer (``NetworkTimeout``, as under a batch's ``pymongo.timeout`` the socket's time
    runs out before the server's): the write landed, the caller cannot tell."""
    getattr_ = AsyncCollection.__getattr__
    lost: list[str] = []  # once: the rollback's own writes are answered

    def timed(collection: AsyncCollection, name: str) -> Any:
        real = getattr_(collection, name)
        if name != method or collection._c.name != collection_name or lost:
            return real

        async def call(*args: Any, **kwargs: Any) -> Any:
            await real(*args, **kwargs)
            lost.append(name)
            raise NetworkTimeout("timed out (configured timeouts: socketTimeoutMS: 30000.0ms)")

        return call

    monkeypatch.setattr(AsyncCollection, "__getattr__", timed)


@pytest.mark.parametrize(("collection", "method"), [
    ("station", "update_one"), ("station", "insert_many"), (JOURNAL, "insert_one")],
    ids=["update", "insert", "journal"])
async def test_an_answer_the_driver_gave_up_on_in_a_batch_is_store_busy_once_rolled_back(
        mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, collection: str,
        method: str) -> None:
    """The socket's timeout fired before the server's time limit answered (QA s29 mongo:
    STORE_UNAVAILABLE, "try again later", where the server's limit is STORE_BUSY, though
    the batch was rolled back alike): the batch, rolled back, says so, as the server's
    time limit does. Its journal's write timing out is too: nothing was written yet."""
    refused = await rolled_back_rename(
        mongo, monkeypatch, lambda: answer_lost(monkeypatch, collection, method))
    assert refused.code == "STORE_BUSY"
    assert "nothing was written" in refused.message
    assert raw(mongo)[JOURNAL].count_documents({}) == 0


async def test_an_answer_given_up_on_whose_rollback_fails_too_says_the_outcome_is_unknown(
        mongo: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rollback after it failed too (the database still not answering): the write
    stands until a sweep rolls it back (its journal stays), so the caller is not told
    nothing was written, but that part of it may stay."""
    station = Station(cp_id="CP-T", name="Before")
    await mongo.write([Insert(station)], [])
    renamed = Station(**{**station.__dict__, "name": "After"})
    answer_lost(monkeypatch, "station", "update_one")

    async def not_answering(*args: Any, **kwargs: Any) -> Any:
        raise NetworkTimeout("timed out")

    monkeypatch.setattr(journal, "roll_back", not_answering)

    with pytest.raises(StoreUnavailable) as raised:
        await mongo.write([Update(renamed, frozenset({"name"}))],
                          [entry(renamed, AuditAction.UPDATE)])

    assert raised.value.code == "STORE_OUTCOME_UNKNOWN"  # its answer kept for a key
    assert "may stay" in raised.value.message
    assert "nothing was written" not in raised.value.message
    monkeypatch.undo()
    assert raw(mongo)[JOURNAL].count_documents({}) == 1  # a sweep rolls it back
    [stands] = await mongo.get_many(Station, [station.id])
    assert stands is not None and stands.name == "After"


async def test_an_answer_given_up_on_while_closing_the_journal_says_the_outcome_is_unknown(
        mongo: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every change written, the journal's deletion (which commits the batch) timed out:
    committed if it landed, else a sweep rolls the batch back. Not "nothing was written"
    (STORE_BUSY): here it landed, and the write stands."""
    station = Station(cp_id="CP-T", name="Before")
    answer_lost(monkeypatch, JOURNAL, "delete_one")

    with pytest.raises(StoreUnavailable) as raised:
        await mongo.write([Insert(station)], [entry(station, AuditAction.CREATE)])

    assert raised.value.code == "STORE_OUTCOME_UNKNOWN"
    assert "may stay" in raised.value.message
    monkeypatch.undo()
    assert raw(mongo)[JOURNAL].count_documents({}) == 0
    assert await mongo.get_many(Station, [station.id]) == [station]
