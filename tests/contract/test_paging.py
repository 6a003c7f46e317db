"""Keyset pagination: Relay's first/after and last/before over a total order (the sort
keys, then ``id`` ascending), with ties in the sort keys."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import pytest

from domain.entities import Company, Connector, Session, Station, User
from domain.errors import ValidationError
from domain.ports import Delete, Store
from domain.query import ALL, Eq, Filter, Page, PageRequest, Sort, encode_cursor
from tests.contract.factories import at, company, connector, oid, put, session, station

BY_NAME = [Sort("name")]
BY_NAME_DESC = [Sort("name", descending=True)]

#: id number -> station name. By name then id: A2 A5 B1 B4 B6 C3 D7.
NAMES = {1: "B", 2: "A", 3: "C", 4: "B", 5: "A", 6: "B", 7: "D"}
ASC = [2, 5, 1, 4, 6, 3, 7]
#: Descending names, ties still by ascending id.
DESC = [7, 3, 1, 4, 6, 2, 5]


@pytest.fixture
async def stations(store: Store) -> Store:
    await put(store, *(station(id=oid(n), name=name) for n, name in NAMES.items()))
    return store


def nums(page: Page[Station]) -> list[int]:
    return [int(s.id, 16) for s in page.items]


def flags(page: Page[Station]) -> tuple[bool, bool]:
    return page.has_previous, page.has_next


async def page_of(store: Store, sort: Sequence[Sort], where: Filter = ALL, **request: object
                  ) -> Page[Station]:
    return await store.find_page(Station, where, sort, PageRequest(**request))  # type: ignore[arg-type]


async def test_forward_pages_with_ties(stations: Store) -> None:
    p1 = await page_of(stations, BY_NAME, first=3)
    assert nums(p1) == [2, 5, 1] and flags(p1) == (False, True)
    assert len(p1.cursors) == 3

    p2 = await page_of(stations, BY_NAME, first=3, after=p1.cursors[-1])
    assert nums(p2) == [4, 6, 3] and flags(p2) == (True, True)

    p3 = await page_of(stations, BY_NAME, first=3, after=p2.cursors[-1])
    assert nums(p3) == [7] and flags(p3) == (True, False)


async def test_backward_pages_with_ties(stations: Store) -> None:
    p1 = await page_of(stations, BY_NAME, last=3)
    assert nums(p1) == [6, 3, 7] and flags(p1) == (True, False)

    p2 = await page_of(stations, BY_NAME, last=3, before=p1.cursors[0])
    assert nums(p2) == [5, 1, 4] and flags(p2) == (True, True)

    p3 = await page_of(stations, BY_NAME, last=3, before=p2.cursors[0])
    assert nums(p3) == [2] and flags(p3) == (False, True)


async def test_descending_sort_keeps_ascending_id_tie_breaker(stations: Store) -> None:
    forward: list[int] = []
    after = None
    for _ in range(len(NAMES) + 1):  # bounded: a broken cursor must fail, not hang
        page = await page_of(stations, BY_NAME_DESC, first=2, after=after)
        forward.extend(nums(page))
        if not page.has_next:
            break
        after = page.cursors[-1]
    assert forward == DESC

    p = await page_of(stations, BY_NAME_DESC, last=2)
    assert nums(p) == [2, 5]
    p = await page_of(stations, BY_NAME_DESC, last=2, before=p.cursors[0])
    assert nums(p) == [4, 6]
    p = await page_of(stations, BY_NAME_DESC, last=2, before=p.cursors[0])
    assert nums(p) == [3, 1]
    p = await page_of(stations, BY_NAME_DESC, last=2, before=p.cursors[0])
    assert nums(p) == [7] and flags(p) == (False, True)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 10])
@pytest.mark.parametrize(("sort", "expected"), [(BY_NAME, ASC), (BY_NAME_DESC, DESC),
                                                ([], sorted(NAMES))])
async def test_walking_all_pages_either_way_visits_every_row_once(
    stations: Store, size: int, sort: list[Sort], expected: list[int]
) -> None:
    # Bounded loops: a broken cursor must fail the test, not hang it.
    forward: list[int] = []
    page = await page_of(stations, sort, first=size)
    forward.extend(nums(page))
    for _ in range(len(NAMES)):
        if not page.has_next:
            break
        page = await page_of(stations, sort, first=size, after=page.cursors[-1])
        forward.extend(nums(page))

    backward: list[int] = []
    page = await page_of(stations, sort, last=size)
    backward[:0] = nums(page)
    for _ in range(len(NAMES)):
        if not page.has_previous:
            break
        page = await page_of(stations, sort, last=size, before=page.cursors[0])
        backward[:0] = nums(page)

    assert forward == expected
    assert backward == expected


async def test_cursors_work_across_directions(stations: Store) -> None:
    p = await page_of(stations, BY_NAME, first=3)  # 2 5 1
    back = await page_of(stations, BY_NAME, last=5, before=p.cursors[-1])
    assert nums(back) == [2, 5] and flags(back) == (False, True)
    on = await page_of(stations, BY_NAME, first=1, after=p.cursors[0])
    assert nums(on) == [5]


async def test_both_cursors_bound_the_window(stations: Store) -> None:
    everything = await page_of(stations, BY_NAME, first=7)  # 2 5 1 4 6 3 7
    after, before = everything.cursors[1], everything.cursors[5]

    assert nums(await page_of(stations, BY_NAME, first=10, after=after, before=before)) == [
        1, 4, 6
    ]
    assert nums(await page_of(stations, BY_NAME, last=2, after=after, before=before)) == [4, 6]


async def test_a_cursor_stays_valid_when_its_row_is_deleted(stations: Store) -> None:
    p1 = await page_of(stations, BY_NAME, first=3)  # 2 5 1
    last = p1.items[-1]
    await stations.write([Delete(last)], [])

    p2 = await page_of(stations, BY_NAME, first=3, after=p1.cursors[-1])
    assert nums(p2) == [4, 6, 3]


async def test_paging_within_a_filter(stations: Store) -> None:
    p1 = await page_of(stations, BY_NAME, Eq("name", "B"), first=2)
    assert nums(p1) == [1, 4] and flags(p1) == (False, True)
    p2 = await page_of(stations, BY_NAME, Eq("name", "B"), first=2, after=p1.cursors[-1])
    assert nums(p2) == [6] and flags(p2) == (True, False)


async def test_page_sizes_zero_and_default(store: Store) -> None:
    await put(store, *(company(id=oid(n), name=f"C{n:02}") for n in range(1, 26)))

    default = await store.find_page(Company, ALL, [Sort("name")], PageRequest())
    assert [c.name for c in default.items] == [f"C{n:02}" for n in range(1, 21)]
    assert default.has_next

    nothing = await store.find_page(Company, ALL, [Sort("name")], PageRequest(first=0))
    assert nothing.items == [] and nothing.cursors == [] and nothing.has_next

    tail = await store.find_page(Company, ALL, [Sort("name")], PageRequest(last=100))
    assert len(tail.items) == 25 and flags(tail) == (False, False)  # type: ignore[arg-type]


async def test_an_empty_result_is_an_empty_page(store: Store) -> None:
    page = await store.find_page(Company, ALL, [Sort("name")], PageRequest(first=5))
    assert (page.items, page.cursors, page.has_next, page.has_previous) == ([], [], False, False)


async def test_datetime_sort_keys_page_newest_first(store: Store) -> None:
    st = station()
    # Three sessions share a start time: they are ordered by id among themselves.
    times = {1: 0, 2: 10, 3: 10, 4: 10, 5: 20, 6: 5}
    await put(store, *(session(st, n, id=oid(n), start_time=at(m)) for n, m in times.items()))
    newest = [Sort("start_time", descending=True)]

    p1 = await store.find_page(Session, ALL, newest, PageRequest(first=3))
    assert [int(s.id, 16) for s in p1.items] == [5, 2, 3]
    p2 = await store.find_page(Session, ALL, newest, PageRequest(first=3, after=p1.cursors[-1]))
    assert [int(s.id, 16) for s in p2.items] == [4, 6, 1]
    assert not p2.has_next


async def test_several_sort_keys_in_mixed_directions(store: Store) -> None:
    a, b = station(cp_id="CP-A"), station(cp_id="CP-B")
    cons = [connector(b, 1, id=oid(1)), connector(a, 1, id=oid(2)), connector(a, 3, id=oid(3)),
            connector(b, 2, id=oid(4)), connector(a, 2, id=oid(5))]
    await put(store, *cons)
    order = [Sort("cp_id"), Sort("connector_id", descending=True)]

    p1 = await store.find_page(Connector, ALL, order, PageRequest(first=2))
    p2 = await store.find_page(Connector, ALL, order, PageRequest(first=2, after=p1.cursors[-1]))
    p3 = await store.find_page(Connector, ALL, order, PageRequest(first=2, after=p2.cursors[-1]))
    walked = [(c.cp_id, c.connector_id) for p in (p1, p2, p3) for c in p.items]
    assert walked == [("CP-A", 3), ("CP-A", 2), ("CP-A", 1), ("CP-B", 2), ("CP-B", 1)]


async def test_a_cursor_of_another_ordering_is_rejected(stations: Store) -> None:
    by_name = await page_of(stations, BY_NAME, first=2)

    for other in (BY_NAME_DESC, [Sort("cp_id")], [], [Sort("name"), Sort("cp_id")]):
        with pytest.raises(ValidationError) as raised:
            await page_of(stations, other, first=2, after=by_name.cursors[-1])
        assert raised.value.code == "INVALID_CURSOR"


async def test_a_cursor_of_another_list_is_rejected(stations: Store) -> None:
    by_name = await page_of(stations, BY_NAME, first=2)
    cursor = by_name.cursors[-1]
    for direction, request in (("after", PageRequest(first=2, after=cursor)),
                               ("before", PageRequest(last=2, before=cursor))):
        with pytest.raises(ValidationError) as raised:  # a station's cursor on users
            await stations.find_page(User, ALL, BY_NAME, request)
        assert (raised.value.field, raised.value.code) == (direction, "INVALID_CURSOR")


@pytest.mark.parametrize("cursor", ["garbage!", "=", "eyJ4IjoxfQ"])
async def test_a_malformed_cursor_is_rejected(stations: Store, cursor: str) -> None:
    with pytest.raises(ValidationError) as raised:
        await page_of(stations, BY_NAME, first=2, after=cursor)
    assert raised.value.code == "INVALID_CURSOR"
    with pytest.raises(ValidationError) as raised:
        await page_of(stations, BY_NAME, last=2, before=cursor)
    assert raised.value.code == "INVALID_CURSOR"


async def test_find_all_sorts_and_limits(stations: Store) -> None:
    assert [int(s.id, 16) for s in await stations.find_all(Station, ALL, BY_NAME)] == ASC
    assert [int(s.id, 16) for s in await stations.find_all(Station, ALL, BY_NAME_DESC, 3)] == [
        7, 3, 1
    ]
    assert [int(s.id, 16) for s in await stations.find_all(Station, Eq("name", "A"))] == [2, 5]


async def test_a_cursor_with_an_integer_no_store_holds_is_rejected(stations: Store) -> None:
    """QA (s17): a crafted cursor carrying 10^30 for an integer key was an internal error
    (SQLite cannot bind it), not a malformed cursor."""
    by_connector = [Sort("connector_id")]
    await put(stations, connector(station(id=oid(90), cp_id="CP-90"), id=oid(91)))
    first = await stations.find_page(Connector, ALL, by_connector, PageRequest(first=1))
    cursor = first.cursors[-1]
    payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    payload["v"] = [10**30]
    crafted = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    with pytest.raises(ValidationError) as raised:
        await stations.find_page(Connector, ALL, by_connector, PageRequest(first=1,
                                                                           after=crafted))
    assert (raised.value.field, raised.value.code) == ("after", "INVALID_CURSOR")


@pytest.mark.parametrize("value", ["101", 101.5, True, [101]], ids=["text", "fraction",
                                                                     "bool", "list"])
async def test_a_cursor_whose_value_does_not_fit_its_key_is_rejected(store: Store,
                                                                      value: object) -> None:
    """A tampered cursor (the key is an int): MongoDB compared it with the stored
    numbers, which gave an arbitrary page, or none."""
    where = station()
    await put(store, where, *(session(where, i + 1, transaction_id=100 + i) for i in range(3)))
    by_transaction = [Sort("transaction_id")]
    tampered = encode_cursor("session", by_transaction, [value], oid(11))

    with pytest.raises(ValidationError) as raised:
        await store.find_page(Session, ALL, by_transaction, PageRequest(first=2, after=tampered))
    assert raised.value.code == "INVALID_CURSOR"
