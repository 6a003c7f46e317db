"""Pending remote starts (``PendingStart``) in both stores: the queries the command
checks and the StartTransaction send (by card, by station, live ones only), the guard
that keeps two at once from both being stored (no other live one, its own excepted),
the sweep by expiry, and a second settling of one settled (or swept) already."""

from __future__ import annotations

from typing import Any

import pytest

from domain.entities import PendingStart, Station
from domain.errors import Conflict
from domain.policy import SYSTEM
from domain.ports import Delete, Guard, Insert, Store
from domain.query import ALL, Eq, NotSub, Range, all_of
from domain.services.base import patch
from domain.services.pending_starts import live_pending_starts, settle, started_by
from tests.contract.factories import T0, at, oid, put, station

STATION = oid(1)


def start(**fields: Any) -> PendingStart:
    return PendingStart(**{"station_id": STATION, "cp_id": "CP-1", "connector_id": 1,
                           "id_tag": "TAG-A", "expires_at": at(2), **fields})


async def test_only_live_starts_are_found_by_card_and_by_station(store: Store) -> None:
    live, expired = start(), start(expires_at=at(-1), connector_id=2)
    elsewhere = start(station_id=oid(2), cp_id="CP-2", id_tag="TAG-B")
    used = start(connector_id=3, settled_at=at(-0.5))
    await put(store, live, expired, elsewhere, used)
    by_card = await store.find_all(PendingStart, all_of(
        Eq("id_tag", "TAG-A"), Eq("cp_id", "CP-1"), live_pending_starts(T0)), limit=5)
    assert by_card == [live]
    by_station = await store.find_all(PendingStart, all_of(
        Eq("station_id", STATION), live_pending_starts(T0)), limit=100)
    assert by_station == [live]
    due = await store.find_all(PendingStart, Range("expires_at", lte=T0), limit=500)
    assert due == [expired]  # a settled one waits for its expiry too


def _alone(pending: PendingStart) -> Guard:
    """No other live start with its card: its own (written by the same write) excepted."""
    return Guard(PendingStart, all_of(live_pending_starts(T0), Eq("id_tag", pending.id_tag),
                                      NotSub("id", PendingStart.kind, Eq("id", pending.id))),
                 exists=False)


async def test_a_second_start_with_a_card_is_not_stored(store: Store) -> None:
    first, second = start(), start(connector_id=2)
    await store.write([Insert(first)], [], guards=[_alone(first)])  # its own is no clash
    with pytest.raises(Conflict):
        await store.write([Insert(second)], [], guards=[_alone(second)])
    assert await store.find_all(PendingStart, ALL) == [first]
    # An expired one is no clash either.
    await store.write([Delete(first)], [])
    await put(store, start(expires_at=at(-1)))
    await store.write([Insert(second)], [], guards=[_alone(second)])


async def test_settling_a_start_settled_or_swept_already_is_no_error(store: Store) -> None:
    pending = start()
    await put(store, pending)
    await store.write([settle(pending, SYSTEM, at(1))], [])  # its StartTransaction
    await store.write([settle(pending, SYSTEM, at(2))], [])  # an answer after it
    [stored] = await store.find_all(PendingStart, ALL)
    assert stored.settled_at == at(1)
    await store.write([Delete(stored)], [])  # the sweep
    await store.write([settle(pending, SYSTEM, at(3))], [])
    assert await store.find_all(PendingStart, ALL) == []


def test_a_start_takes_the_pending_start_of_its_connector_first() -> None:
    anywhere, named = start(connector_id=None), start(connector_id=2)
    assert started_by([anywhere, named], 2, None) is named
    assert started_by([anywhere, named], 1, None) is anywhere
    # The card tapped on the plug beside the one named: that start, carried out there.
    assert started_by([named], 1, None) is named


def test_a_start_takes_the_newest_start_sent_since_the_last_boot() -> None:
    """Review s26: the charger restarted (``booted_at`` B1) and was sent a new start with
    the card; the older one, sent in boot B0, is settled only once the new one's
    Accepted is handled, which may come after the StartTransaction: that is the new
    start's. One refused is settled (never live here), so the older keeps its car."""
    held = start(station_booted_at=at(-3), created_at=at(-2))
    new = start(station_booted_at=at(-1), created_at=at(-0.5))
    newer = start(station_booted_at=at(-1), created_at=at(-0.2))
    booted = station(id=STATION, booted_at=at(-1))
    assert started_by([held, new], 1, booted) is new
    assert started_by([held, new, newer], 1, booted) is newer
    assert started_by([held], 1, booted) is held  # the new one refused: settled


async def test_a_start_is_stored_only_in_the_boot_it_read(store: Store) -> None:
    """The insert of a remote start is guarded on its station's ``booted_at`` still
    being the one read (``CommandService._hold_start``): a boot stored meanwhile fails
    it (review s26), as does a first boot of a station never booted."""
    for booted in (at(-1), None):
        cp = station(id=oid(7 if booted else 8), cp_id=f"CP-{booted is None}",
                     booted_at=booted)
        await put(store, cp)
        read = Guard(Station, all_of(Eq("id", cp.id), Eq("booted_at", booted)))
        first = start(station_id=cp.id, id_tag=f"TAG-{booted is None}")
        await store.write([Insert(first)], [], guards=[read])
        await store.write([patch(cp, SYSTEM, booted_at=at(0))], [])
        with pytest.raises(Conflict):
            await store.write([Insert(start(station_id=cp.id, id_tag="TAG-C"))], [],
                              guards=[read])
        assert [p.id for p in await store.find_all(
            PendingStart, Eq("station_id", cp.id))] == [first.id]
