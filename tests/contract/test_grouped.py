"""Batched nested lists: the first rows per parent key, and counts per key, each in one
query for a whole DataLoader batch."""

from __future__ import annotations

from domain.entities import Connector, Session, SessionState
from domain.ports import Store
from domain.query import ALL, NONE, Eq, Sort
from tests.contract.factories import at, connector, oid, put, session, station

NEWEST = [Sort("start_time", descending=True)]


async def _sessions(store: Store) -> tuple[str, str, str]:
    """Station a: 4 sessions (two share a start time), b: 1, c: none."""
    a, b, c = station(id=oid(101)), station(id=oid(102)), station(id=oid(103))
    rows = [
        session(a, 1, id=oid(1), start_time=at(0), state=SessionState.COMPLETED),
        session(a, 2, id=oid(2), start_time=at(30), state=SessionState.COMPLETED),
        session(a, 3, id=oid(3), start_time=at(30)),
        session(a, 4, id=oid(4), start_time=at(10)),
        session(b, 1, id=oid(5), start_time=at(5)),
    ]
    await put(store, a, b, c, *rows)
    return a.id, b.id, c.id


def nums(groups: dict[object, list[Session]]) -> dict[object, list[int]]:
    return {key: [int(s.id, 16) for s in rows] for key, rows in groups.items()}


async def test_find_grouped_takes_the_first_rows_of_each_key_in_order(store: Store) -> None:
    a, b, c = await _sessions(store)

    got = await store.find_grouped(Session, "station_id", [a, b, c], ALL, NEWEST, 2)
    # a: 30 (ids 2, 3 tie -> id order), then 10 and 0 are cut by the limit. c: absent.
    assert nums(got) == {a: [2, 3], b: [5]}


async def test_find_grouped_with_a_limit_above_the_group_sizes(store: Store) -> None:
    a, b, _ = await _sessions(store)

    got = await store.find_grouped(Session, "station_id", [b, a], ALL, [Sort("start_time")], 10)
    assert nums(got) == {a: [1, 4, 2, 3], b: [5]}


async def test_find_grouped_applies_where_before_the_limit(store: Store) -> None:
    a, b, c = await _sessions(store)

    completed = Eq("state", SessionState.COMPLETED)
    got = await store.find_grouped(Session, "station_id", [a, b, c], completed, NEWEST, 1)
    assert nums(got) == {a: [2]}
    assert await store.find_grouped(Session, "station_id", [a, b], NONE, NEWEST, 5) == {}


async def test_find_grouped_without_sort_orders_by_id(store: Store) -> None:
    a, _, _ = await _sessions(store)
    got = await store.find_grouped(Session, "station_id", [a, a], ALL, [], 3)
    assert nums(got) == {a: [1, 2, 3]}


async def test_find_grouped_of_no_keys_is_empty(store: Store) -> None:
    await _sessions(store)
    assert await store.find_grouped(Session, "station_id", [], ALL, NEWEST, 5) == {}


async def test_find_grouped_by_an_integer_key(store: Store) -> None:
    a, b = station(cp_id="CP-A"), station(cp_id="CP-B")
    await put(store, connector(a, 1, id=oid(1)), connector(b, 1, id=oid(2)),
              connector(a, 2, id=oid(3)))

    got = await store.find_grouped(Connector, "connector_id", [1, 2, 3], ALL,
                                   [Sort("cp_id", descending=True)], 5)
    assert {k: [c.cp_id for c in v] for k, v in got.items()} == {1: ["CP-B", "CP-A"],
                                                                  2: ["CP-A"]}


async def test_count_grouped_counts_per_key(store: Store) -> None:
    a, b, c = await _sessions(store)

    assert await store.count_grouped(Session, "station_id", [a, b, c], ALL) == {a: 4, b: 1}
    completed = Eq("state", SessionState.COMPLETED)
    assert await store.count_grouped(Session, "station_id", [a, b, c], completed) == {a: 2}
    assert await store.count_grouped(Session, "station_id", [b], ALL) == {b: 1}
    assert await store.count_grouped(Session, "station_id", [], ALL) == {}


async def test_a_key_that_is_no_id_finds_nothing(store: Store) -> None:
    """As in SQLite, where no row holds that text; MongoDB raised a bare ``InvalidId``."""
    where = station()
    charging = session(where)
    await put(store, where, charging)

    assert await store.find_grouped(Session, "station_id", ["zz", where.id], ALL, (), 3) == {
        where.id: [charging]}
    assert await store.count_grouped(Session, "station_id", ["zz", where.id], ALL) == {
        where.id: 1}
    assert await store.count_grouped(Session, "user_id", ["zz"], ALL) == {}
