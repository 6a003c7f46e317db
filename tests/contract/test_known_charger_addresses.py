"""Where stations' chargers passed their password check from, kept in the store
(``KnownChargerAddress``, ``domain.services.known_addresses``) on both stores: a charger
passing is stored once a day per pair, an instance starting later knows the pair, the
sweep deletes a pair 30 days after it last passed, and a station's removal drops its
pairs (review s31: known in memory only, a charger moved by a rolling restart was a
stranger where it landed)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from domain.entities import KnownChargerAddress, Station
from domain.errors import StoreUnavailable
from domain.policy import SYSTEM
from domain.ports import Delete, Store
from domain.query import ALL
from domain.services import Services, charger_sign_ins, known_addresses
from domain.services.charger_sign_ins import KNOWN_FOR, RETOLD_AFTER
from tests.contract.factories import put, station
from tests.contract.instances import T0, Clock, instance

CHARGER = "198.51.100.7"


async def passed(services: Services, at: Station, address: str = CHARGER) -> None:
    services.charging.charger_passed(at, at.auth_password_hash or "", address)
    await services.charging.keeping_known.settled()


async def kept(store: Store) -> list[KnownChargerAddress]:
    return await store.find_all(KnownChargerAddress, ALL)


async def test_a_pair_passed_on_one_instance_is_known_to_one_started_after(
        store: Store) -> None:
    clock = Clock()
    cp = station()
    await put(store, cp)
    first = instance(store, clock)
    await passed(first, cp)
    [row] = await kept(store)
    assert (row.station_id, row.passed_at) == (cp.id, T0)
    assert CHARGER not in row.pair  # a digest, not the address
    later = instance(store, clock)
    assert not later.charging.sign_ins.passed_from(cp.cp_id, CHARGER)
    await later.charging.load_known_addresses()
    assert later.charging.sign_ins.passed_from(cp.cp_id, CHARGER)
    assert not later.charging.sign_ins.passed_from(cp.cp_id, "198.51.100.8")
    assert not later.charging.sign_ins.passed_from("CP-OTHER", CHARGER)


async def test_a_pair_is_written_once_a_day_and_swept_30_days_after_it_last_passed(
        store: Store) -> None:
    clock = Clock()
    cp = station()
    await put(store, cp)
    services = instance(store, clock)
    await passed(services, cp)
    clock.now = T0 + RETOLD_AFTER / 2
    await passed(services, cp)
    assert [row.passed_at for row in await kept(store)] == [T0]  # not written again
    clock.now = T0 + RETOLD_AFTER
    await passed(services, cp)
    assert [row.passed_at for row in await kept(store)] == [T0 + RETOLD_AFTER]
    clock.now += timedelta(hours=1)
    await passed(services, cp, "203.0.113.9")
    clock.now = T0 + RETOLD_AFTER + KNOWN_FOR
    assert await services.charging.sweep_known_addresses() == 1  # the first address's
    [left] = await kept(store)
    assert left.passed_at == clock.now - KNOWN_FOR + timedelta(hours=1)
    # An instance starting now knows only the one not expired.
    later = instance(store, clock)
    await later.charging.load_known_addresses()
    assert not later.charging.sign_ins.passed_from(cp.cp_id, CHARGER)
    assert later.charging.sign_ins.passed_from(cp.cp_id, "203.0.113.9")
    clock.now += timedelta(hours=1)
    assert await services.charging.sweep_known_addresses() == 1
    assert await kept(store) == []


async def test_a_removed_stations_pairs_go_with_it_and_none_is_written_after(
        store: Store) -> None:
    clock = Clock()
    services = instance(store, clock)
    cp, other = station(), station()
    await put(store, cp, other)
    await passed(services, cp)
    await passed(services, cp, "203.0.113.9")
    await passed(services, other)
    await services.stations.remove_station(SYSTEM, cp.id)
    assert [row.station_id for row in await kept(store)] == [other.id]
    # And from the instance's memory: its cpId made again is a stranger there (the
    # memory's side told to the other instances: tests/e2e/test_two_instances.py).
    sign_ins = services.charging.sign_ins
    assert not sign_ins.passed_from(cp.cp_id, CHARGER)
    assert not sign_ins.passed_from(cp.cp_id, "203.0.113.9")
    assert sign_ins.passed_from(other.cp_id, CHARGER)
    # A pass told after the removal (the charger's check ended meanwhile) is not stored,
    # nor remembered: told as passed to every instance, then as forgotten (review r32-b:
    # remembered for 30 days).
    told: list[tuple[str, str, str]] = []
    sign_ins.known.share = lambda *message: told.append(message)
    clock.now = T0 + RETOLD_AFTER
    await passed(services, cp)
    assert [row.station_id for row in await kept(store)] == [other.id]
    assert not sign_ins.passed_from(cp.cp_id, CHARGER)
    assert [operation for _, operation, _ in told] == ["passed", "forgot"]
    assert told[0][2] == told[1][2]


async def test_two_instances_keeping_one_pair_at_once_forget_nothing(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r32-f: the pair kept by another instance between this one's read and its
    insert fails the insert as a duplicate (a ``Conflict``), taken for the station's
    guard: every instance was told "forgot" with the station there and the pair stored."""
    cp = station()
    await put(store, cp)
    pair = "ab" * 32
    forgotten: list[list[str]] = []
    get_many = store.get_many

    async def the_other_keeping_first(*args: Any, **kwargs: Any) -> Any:
        found = await get_many(*args, **kwargs)
        monkeypatch.setattr(store, "get_many", get_many)  # the other reads as usual
        await known_addresses.keep(store, cp.id, pair, T0, forgotten.append)
        return found

    monkeypatch.setattr(store, "get_many", the_other_keeping_first)
    await known_addresses.keep(store, cp.id, pair, T0 + timedelta(seconds=1),
                               forgotten.append)
    assert forgotten == []
    assert [(row.station_id, row.passed_at) for row in await kept(store)] == [(cp.id, T0)]


async def test_a_removals_deletions_failing_still_forget_the_pairs_read(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r32-f: the store failing at a removal's second deletion ended them, the
    pairs after it remembered on every instance up to ``KNOWN_FOR``. Now the page read
    is forgotten in memory, the rows not deleted left to the sweep."""
    clock = Clock()
    services = instance(store, clock)
    cp = station()
    await put(store, cp)
    addresses = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    for address in addresses:
        await passed(services, cp, address)
    pairs = sorted(row.pair for row in await kept(store))
    write = store.write
    deletions: list[str] = []

    async def failing_after_the_first_deletion(changes: Any, *args: Any,
                                               **kwargs: Any) -> None:
        if any(isinstance(change, Delete) and isinstance(change.record, KnownChargerAddress)
               for change in changes):
            deletions.append(changes[0].record.id)
            if len(deletions) > 1:
                raise StoreUnavailable("the disk is full", reason="disk full")
        await write(changes, *args, **kwargs)

    told: list[tuple[str, str, str]] = []
    services.charging.sign_ins.known.share = lambda *message: told.append(message)
    monkeypatch.setattr(store, "write", failing_after_the_first_deletion)
    await services.stations.remove_station(SYSTEM, cp.id)
    monkeypatch.undo()
    assert len(deletions) == 2  # the second failed, no third tried
    assert not any(services.charging.sign_ins.passed_from(cp.cp_id, address)
                   for address in addresses)
    assert sorted(key for _, operation, key in told if operation == "forgot") == pairs
    assert len(await kept(store)) == 2  # left to the sweep


async def test_a_pass_told_before_the_load_keeps_its_time_over_the_stored_one(
        store: Store) -> None:
    """The instances' bus is followed before the stored pairs are loaded (review s31): a
    pass told in between, later than the stored one, is not put back to the stored time
    (which would end the pair a day early)."""
    clock = Clock()
    cp = station()
    await put(store, cp)
    await passed(instance(store, clock), cp)
    [row] = await kept(store)
    clock.now = T0 + RETOLD_AFTER
    later = instance(store, clock)
    later.charging.sign_ins.known.apply("passed", row.pair)  # told, its write not landed
    await later.charging.load_known_addresses()
    clock.now = T0 + KNOWN_FOR + timedelta(hours=1)
    assert later.charging.sign_ins.passed_from(cp.cp_id, CHARGER)
    clock.now = T0 + RETOLD_AFTER + KNOWN_FOR
    assert not later.charging.sign_ins.passed_from(cp.cp_id, CHARGER)


async def test_a_pair_left_by_a_removed_station_is_taken_by_its_cpids_new_one(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A station removed (its pairs left: the removal's ``forget`` failed) and made again
    with its cpId: the pair passing for the new one is written as the new station's, so
    that station's removal drops it (review s31: the update kept the old station id)."""
    clock = Clock()
    services = instance(store, clock)
    old = station(cp_id="CP-AGAIN")
    await put(store, old)
    await passed(services, old)

    async def failing(*args: Any) -> None:
        raise RuntimeError("the database went away")

    with monkeypatch.context() as patch:
        patch.setattr(known_addresses, "forget", failing)
        await services.stations.remove_station(SYSTEM, old.id)
    assert [row.station_id for row in await kept(store)] == [old.id]
    new = station(cp_id="CP-AGAIN")
    await put(store, new)
    clock.now = T0 + RETOLD_AFTER
    await passed(services, new)
    assert [(row.station_id, row.passed_at) for row in await kept(store)] == [
        (new.id, clock.now)]
    await services.stations.remove_station(SYSTEM, new.id)
    assert await kept(store) == []


async def test_a_pair_its_cpids_new_station_took_during_the_removal_stays_that_ones(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r32-b: a station made again with a removed one's cpId, its charger passing
    from the same address between the removal's ``forget`` reading the rows and deleting
    them. The row (its id the pair's, cpId and address) was the new station's by then
    (``keep``), and was deleted, and the pair forgotten on every instance."""
    clock = Clock()
    services = instance(store, clock)
    old, new = station(cp_id="CP-AGAIN"), station(cp_id="CP-AGAIN")
    await put(store, old)
    await passed(services, old)
    read = known_addresses.pages

    async def new_passing_before_the_deletions(*args: Any, **kwargs: Any) -> Any:
        async for page in read(*args, **kwargs):
            # The old station is gone by now (the removal's write); the new one's
            # charger passes a day later (news again, written).
            await put(store, new)
            clock.now = T0 + RETOLD_AFTER
            await passed(services, new)
            yield page

    with monkeypatch.context() as patch:
        patch.setattr(known_addresses, "pages", new_passing_before_the_deletions)
        await services.stations.remove_station(SYSTEM, old.id)
    assert [(row.station_id, row.passed_at) for row in await kept(store)] == [
        (new.id, T0 + RETOLD_AFTER)]
    assert services.charging.sign_ins.passed_from(new.cp_id, CHARGER)
    later = instance(store, clock)
    await later.charging.load_known_addresses()
    assert later.charging.sign_ins.passed_from(new.cp_id, CHARGER)


async def test_an_instance_starting_reads_the_stored_pairs_a_page_at_a_time(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s31: the whole table was read at once as whole records (100,000 of them:
    some 97 MB before the OCPP server started). Pages, newest first, exact across pairs
    that passed at the same time; no more than the table keeps."""
    clock = Clock()
    first = instance(store, clock)
    cp = station()
    await put(store, cp)
    addresses = [f"198.51.100.{i}" for i in range(1, 7)]
    hours = [0, 1, 2, 2, 2, 3]  # three at once, across a page's end
    for address, hour in zip(addresses, hours, strict=True):
        clock.now = T0 + timedelta(hours=hour)
        await passed(first, cp, address)
    find_all = store.find_all
    reads: list[tuple[int, int]] = []  # (limit, rows)

    async def counting(kind: Any, *args: Any, **kwargs: Any) -> Any:
        found = await find_all(kind, *args, **kwargs)
        if kind is KnownChargerAddress:
            reads.append((kwargs["limit"], len(found)))
        return found

    monkeypatch.setattr(store, "find_all", counting)
    monkeypatch.setattr(known_addresses, "LOAD_PAGE", 2)
    later = instance(store, clock)
    await later.charging.load_known_addresses()
    assert reads == [(2, 2), (2, 2), (2, 2), (2, 0)]
    assert all(later.charging.sign_ins.passed_from(cp.cp_id, a) for a in addresses)
    # A table keeping four: the newest four, read in as many pages as they fill.
    for module in (known_addresses, charger_sign_ins):
        monkeypatch.setattr(module, "MAX_TRACKED", 4)
    reads.clear()
    smaller = instance(store, clock)
    await smaller.charging.load_known_addresses()
    assert reads == [(2, 2), (2, 2)]
    assert [smaller.charging.sign_ins.passed_from(cp.cp_id, a) for a in addresses] == [
        False, False, True, True, True, True]
