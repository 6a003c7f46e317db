"""The group committer: concurrent writes share transactions, failures stay isolated."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from bson import ObjectId

from domain.entities import Record, Session, SessionState, Station
from domain.errors import Conflict, UniqueViolation
from domain.ports import Change, Insert, InsertIfAbsent, Update
from domain.query import ALL
from domain.services.base import charger, patch
from domain.services.batching import GroupCommitter, Pending, chains
from store.mongo import MongoStore, journal
from store.sqlite import SqliteStore
from tests.contract.factories import at, audit, meter_sample, put, session, station


class Counting:
    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.writes = 0

    async def write(self, changes: Any, audit: Any) -> None:
        self.writes += 1
        await self.inner.write(changes, audit)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    inner = SqliteStore(str(tmp_path / "g.db"))
    await inner.start()
    yield inner
    await inner.close()


async def test_concurrent_writes_share_transactions(store: SqliteStore) -> None:
    counting = Counting(store)
    committer = GroupCommitter(counting)  # type: ignore[arg-type]
    stations = [Station(cp_id=f"CP-{i}", name=str(i)) for i in range(100)]
    await asyncio.gather(*(committer.write([Insert(s)]) for s in stations))
    assert await store.count(Station, ALL) == 100
    assert counting.writes < 10  # the first alone, then the rest in a few batches


async def test_a_failing_write_does_not_fail_its_neighbours(store: SqliteStore) -> None:
    committer = GroupCommitter(store)
    await store.write([Insert(Station(cp_id="TAKEN", name="x"))], [])
    good = [Station(cp_id=f"OK-{i}", name=str(i)) for i in range(5)]
    results = await asyncio.gather(
        *(committer.write([Insert(s)]) for s in good[:2]),
        committer.write([Insert(Station(cp_id="TAKEN", name="clash"))]),
        *(committer.write([Insert(s)]) for s in good[2:]),
        return_exceptions=True)
    assert [type(r) for r in results].count(UniqueViolation) == 1
    assert await store.count(Station, ALL) == 6


async def trickle(committer: GroupCommitter, prefix: str, count: int) -> None:
    """``count`` writes, the i-th arriving i loop turns after the first (as messages from
    separate sockets do)."""

    async def later(i: int) -> None:
        for _ in range(i):
            await asyncio.sleep(0)
        await committer.write([Insert(Station(cp_id=f"{prefix}-{i}", name=str(i)))])

    await asyncio.gather(*(later(i) for i in range(count)))


async def test_writes_arriving_within_the_linger_share_one_commit(store: SqliteStore) -> None:
    lingering = Counting(store)
    await trickle(GroupCommitter(lingering, linger=0.05), "L", 20)  # type: ignore[arg-type]
    assert lingering.writes == 1
    eager = Counting(store)
    await trickle(GroupCommitter(eager, linger=0), "E", 20)  # type: ignore[arg-type]
    assert eager.writes > 1  # without it, each loop turn's arrivals commit on their own


# ---------------------------------------------------------------------------- a stuck record
# On MongoDB a document carrying the mark of a batch still in flight (or of one whose writer
# died, until the sweep rolls it back) makes every batch writing it wait for that batch and
# then fail ``CHANGED``. Telemetry of other chargers must not queue behind such a write.


class Retrying:
    """Fails every grouped write (more than one caller's changes), then records the order
    in which the single writes complete; writing a station named ``slow`` takes a few loop
    turns longer than the others."""

    def __init__(self, slow: str) -> None:
        self.slow = slow
        self.done: list[str] = []

    async def write(self, changes: Sequence[Change], audit: Any) -> None:
        if len(changes) > 1:
            raise Conflict("grouped", field="id", code="CHANGED")
        name = cast(Station, changes[0].record).name
        if name == self.slow:
            for _ in range(5):
                await asyncio.sleep(0)
        self.done.append(name)


async def test_the_writes_of_a_failed_batch_are_retried_at_once_each_record_in_order() -> None:
    fake = Retrying(slow="a1")
    committer = GroupCommitter(fake)  # type: ignore[arg-type]
    first = Station(cp_id="A", name="a1")
    second = dataclasses.replace(first, name="a2")
    other = Station(cp_id="B", name="b")
    await asyncio.gather(committer.write([Update(first)]), committer.write([Update(second)]),
                         committer.write([Update(other)]))
    # b is not held up behind a1's slow write; a2 still lands after a1.
    assert fake.done == ["b", "a1", "a2"]


def test_chains_join_writes_sharing_a_record_through_another() -> None:
    a, b, c = (Station(cp_id=name, name=name) for name in "abc")
    future: asyncio.Future[None] = asyncio.get_event_loop_policy().new_event_loop(
        ).create_future()
    batch: list[Pending] = [([Update(a)], future), ([Update(c)], future),
                            ([Update(b)], future), ([Update(a), Update(b)], future),
                            ([Update(c)], future)]
    assert [[index for index, item in enumerate(batch) if item in chain]
            for chain in chains(batch)] == [[0, 2, 3], [1, 4]]
    future.get_loop().close()


async def stuck(store: MongoStore, record: Record) -> ObjectId:
    """Leaves ``record`` as a batch whose writer died moments ago does: its mark on the
    document, its journal fresh (swept only once stale, minutes later)."""
    dead = ObjectId()
    await store.db[journal.JOURNAL].insert_one({"_id": dead, "at": datetime.now(UTC),
                                                "undo": [], "audit": [],
                                                journal.MARKED: True})
    await store.db[record.kind].update_one({"_id": ObjectId(record.id)},
                                           {"$set": {journal.MARK: dead}})
    return dead


def metering(st: Station, sess: Session, energy_wh: int) -> list[Change]:
    """A MeterValues frame's writes: its sample, and the session's live energy."""
    sample = meter_sample(st, sess, at=at(energy_wh), value=float(energy_wh))
    return [InsertIfAbsent(sample),
            patch(sess, charger(st.cp_id), only_if=("state", SessionState.ACTIVE),
                  required=True, energy_wh=energy_wh)]


async def test_a_stuck_session_holds_up_no_other_charger_s_telemetry(mongo: MongoStore) -> None:
    """20 chargers' frames share a group commit with one for a session a dead writer left
    marked: the batch fails (the session is not settled), and each frame is written again
    on its own. Those of the other 19 chargers are all stored before the stuck frame's
    wait is over (retried one after another, each waited behind the stuck one's wait)."""
    stations = [station() for _ in range(20)]
    sessions = [session(st, user_id=None, state=SessionState.ACTIVE) for st in stations]
    await put(mongo, *stations, *sessions)
    await stuck(mongo, sessions[0])
    committer = GroupCommitter(mongo)
    finished: list[int] = []

    async def frame(index: int) -> None:
        try:
            await committer.write(metering(stations[index], sessions[index], 10))
        finally:
            finished.append(index)

    results = await asyncio.gather(*(frame(i) for i in range(20)), return_exceptions=True)

    assert isinstance(results[0], Conflict) and results[0].code == "CHANGED"
    assert results[1:] == [None] * 19
    assert finished[-1] == 0  # nobody waited behind it
    stored = await mongo.get_many(Session, [s.id for s in sessions])
    assert [s.energy_wh for s in stored if s is not None] == [0] + [10] * 19


@pytest.mark.parametrize("audited", [False, True])
async def test_only_audited_batches_wait_long_for_a_batch_in_flight(
    mongo: MongoStore, monkeypatch: pytest.MonkeyPatch, audited: bool
) -> None:
    """A telemetry batch (no audit entries) gives up on an unsettled record after a short
    wait: it is written again at little cost, and every charger's frames in the group
    commit wait with it. A user's change waits as long as a slow batch may take."""
    st = station()
    sess = session(st, user_id=None, state=SessionState.ACTIVE)
    await put(mongo, st, sess)
    dead = await stuck(mongo, sess)
    waits: list[float] = []

    async def waiting(db: Any, batches: set[ObjectId], within: float) -> bool:
        assert batches == {dead}
        waits.append(within)
        return False  # still in flight

    monkeypatch.setattr(journal, "wait_settled", waiting)
    entries = [audit(sess, "system")] if audited else []

    with pytest.raises(Conflict) as raised:
        await mongo.write(metering(st, sess, 10), entries)

    assert raised.value.code == "CHANGED"
    [within] = waits
    expected = journal.SETTLE_WAIT_S if audited else journal.UNAUDITED_SETTLE_WAIT_S
    assert expected - 0.1 < within <= expected
    assert journal.UNAUDITED_SETTLE_WAIT_S <= journal.SETTLE_WAIT_S / 4
