"""The group committer: concurrent writes share transactions, failures stay isolated."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from domain.entities import Station
from domain.errors import UniqueViolation
from domain.ports import Insert
from domain.query import ALL
from domain.services.batching import GroupCommitter
from store.sqlite import SqliteStore


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
