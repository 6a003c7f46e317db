"""What a late meter reading reads and writes (``ChargingService._late_shares``): the
first sample of its session stamped after it with an increment (among those from a
frame's earliest late reading on, in one read), and the update of that increment only
while it is the one read, on every backend."""

from __future__ import annotations

import pytest

from domain.entities import MeterSample
from domain.errors import Conflict
from domain.policy import SYSTEM
from domain.ports import Store
from domain.query import Eq, In, Range, Sort, all_of
from domain.services.base import patch
from tests.contract.factories import at, meter_sample, put, session, station


async def test_the_first_increment_after_a_late_reading(store: Store) -> None:
    st = station()
    mine, other = session(st, 1), session(st, 2)
    samples = [
        meter_sample(st, mine, at=at(5), delta_wh=700),  # at the late reading: not after
        meter_sample(st, mine, at=at(10), delta_wh=None),  # another measurand's
        meter_sample(st, mine, at=at(20), delta_wh=0),  # a lower reading: no increment
        meter_sample(st, other, at=at(25), delta_wh=300),  # another session's
        meter_sample(st, mine, at=at(40), delta_wh=2_000),
        meter_sample(st, mine, at=at(30), delta_wh=1_000),
    ]
    await put(store, st, mine, other, *samples)
    found = await store.find_all(MeterSample, all_of(
        Eq("session_id", mine.id), Range("at", gt=at(5)), Range("delta_wh", gt=0)),
        (Sort("at"),), limit=1)
    assert [s.delta_wh for s in found] == [1_000]
    stored = await store.find_all(MeterSample, In("id", (samples[0].id, "absent")))
    assert [s.id for s in stored] == [samples[0].id]


async def test_the_increments_from_the_earliest_late_reading_oldest_first(
        store: Store) -> None:
    """A frame's late readings read once (``MAX_LATE_SAMPLES``): the session's samples
    with an increment stamped at or after the earliest, oldest first, up to the limit."""
    st = station()
    mine, other = session(st, 1), session(st, 2)
    samples = [
        meter_sample(st, mine, at=at(4), delta_wh=400),  # before it
        meter_sample(st, mine, at=at(5), delta_wh=700),  # at it: its reading's twin
        meter_sample(st, mine, at=at(20), delta_wh=0),  # a lower reading: no increment
        meter_sample(st, other, at=at(25), delta_wh=300),  # another session's
        meter_sample(st, mine, at=at(40), delta_wh=2_000),  # past the limit
        meter_sample(st, mine, at=at(30), delta_wh=1_000),
    ]
    await put(store, st, mine, other, *samples)
    found = await store.find_all(MeterSample, all_of(
        Eq("session_id", mine.id), Range("at", gte=at(5)), Range("delta_wh", gt=0)),
        (Sort("at"),), limit=2)
    assert [s.delta_wh for s in found] == [700, 1_000]


async def test_an_increment_is_given_up_only_while_it_is_the_one_read(store: Store) -> None:
    st = station()
    mine = session(st, 1)
    giver = meter_sample(st, mine, at=at(40), delta_wh=3_000)
    await put(store, st, mine, giver)
    guarded = patch(giver, SYSTEM, only_if=("delta_wh", 3_000), required=True,
                    delta_wh=2_000)
    await store.write([guarded], [])
    with pytest.raises(Conflict):
        await store.write([patch(giver, SYSTEM, only_if=("delta_wh", 3_000), required=True,
                                 delta_wh=1_000)], [])
    [kept] = await store.get_many(MeterSample, [giver.id])
    assert kept is not None and kept.delta_wh == 2_000
