"""Ordering by great-circle distance from a point (``Sort.by_distance``): nearest first,
keyset pages across ties (stations at one spot) in both directions, cursors bound to
their origin."""

from __future__ import annotations

import math

import pytest

from domain.entities import Company, Station
from domain.errors import ValidationError
from domain.ports import Store
from domain.query import Eq, Near, Page, PageRequest, Sort, all_of
from tests.contract.factories import company, oid, put, station

BERLIN = (52.5200, 13.4050)
EARTH_RADIUS_KM = 6371.0088

#: id number -> km east of BERLIN. Ties: 2, 5 and 7 share a spot, as do 3 and 8.
EAST_KM = {1: 9.0, 2: 3.0, 3: 0.4, 4: 12.5, 5: 3.0, 6: 0.0, 7: 3.0, 8: 0.4, 9: 700.0}
#: By distance, then id.
NEAREST = [6, 3, 8, 2, 5, 7, 1, 4]
#: Farthest first; ties still by ascending id.
FARTHEST = [4, 1, 2, 5, 7, 3, 8, 6]
#: Within it lie all but 9 (700 km away).
CIRCLE = Near(*BERLIN, radius_km=50.0)


def east_of(km: float) -> tuple[float, float]:
    lat, lon = BERLIN
    return lat, lon + math.degrees(km / EARTH_RADIUS_KM / math.cos(math.radians(lat)))


@pytest.fixture
async def spread(store: Store) -> Store:
    await put(store, *(station(id=oid(n), name=f"S{n}", lat=east_of(km)[0],
                               lon=east_of(km)[1]) for n, km in EAST_KM.items()),
              station(id=oid(10), name="nowhere"))
    return store


def nums(page: Page[Station] | list[Station]) -> list[int]:
    items = page.items if isinstance(page, Page) else page
    return [int(s.id, 16) for s in items]


async def walk(store: Store, sort: list[Sort], size: int, *, backward: bool = False
               ) -> list[int]:
    """Every station of the circle, page by page (bounded: a broken cursor must fail)."""
    seen: list[int] = []
    cursor: str | None = None
    for _ in range(len(EAST_KM) + 1):
        request = PageRequest(last=size, before=cursor) if backward \
            else PageRequest(first=size, after=cursor)
        page = await store.find_page(Station, CIRCLE, sort, request)
        if backward:
            seen[:0] = nums(page)
            if not page.has_previous:
                return seen
            cursor = page.cursors[0]
        else:
            seen.extend(nums(page))
            if not page.has_next:
                return seen
            cursor = page.cursors[-1]
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("size", [1, 2, 3, 8])
@pytest.mark.parametrize(("descending", "expected"), [(False, NEAREST), (True, FARTHEST)])
async def test_pages_by_distance_visit_every_station_once_in_order(
        spread: Store, size: int, descending: bool, expected: list[int]) -> None:
    sort = [Sort.by_distance(*BERLIN, descending=descending)]
    assert await walk(spread, sort, size) == expected
    assert await walk(spread, sort, size, backward=True) == expected


async def test_distance_then_another_key(spread: Store) -> None:
    # The ties at 3 km by name descending (S7, S5, S2), then id as always.
    sort = [Sort.by_distance(*BERLIN), Sort("name", descending=True)]
    assert await walk(spread, sort, 2) == [6, 8, 3, 7, 5, 2, 1, 4]


async def test_distance_order_combines_with_other_filters(spread: Store) -> None:
    where = all_of(CIRCLE, Eq("name", "S5"))
    page = await spread.find_page(Station, where, [Sort.by_distance(*BERLIN)],
                                  PageRequest(first=5))
    assert nums(page) == [5] and not page.has_next


async def test_find_all_and_find_grouped_order_by_distance(spread: Store) -> None:
    far_first = [Sort.by_distance(*BERLIN, descending=True)]
    assert nums(await spread.find_all(Station, CIRCLE, far_first, limit=3)) == [4, 1, 2]

    c = company(id=oid(20))
    await put(spread, c, *(station(id=oid(30 + n), company_id=c.id, lat=east_of(km)[0],
                                   lon=east_of(km)[1]) for n, km in ((1, 5.0), (2, 1.0),
                                                                     (3, 3.0))))
    grouped = await spread.find_grouped(Station, "company_id", [c.id], CIRCLE,
                                        [Sort.by_distance(*BERLIN)], 2)
    assert nums(grouped[c.id]) == [32, 33]


async def test_a_cursor_measured_from_another_point_is_rejected(spread: Store) -> None:
    here = [Sort.by_distance(*BERLIN)]
    page = await spread.find_page(Station, CIRCLE, here, PageRequest(first=2))
    for other in ([Sort.by_distance(BERLIN[0], BERLIN[1] + 0.001)],
                  [Sort.by_distance(*BERLIN, descending=True)], [Sort("name")]):
        with pytest.raises(ValidationError) as raised:
            await spread.find_page(Station, CIRCLE, other,
                                   PageRequest(first=2, after=page.cursors[-1]))
        assert (raised.value.field, raised.value.code) == ("after", "INVALID_CURSOR")
    with pytest.raises(ValidationError) as raised:  # and a plain cursor on a distance order
        plain = await spread.find_page(Station, CIRCLE, [Sort("name")], PageRequest(first=1))
        await spread.find_page(Station, CIRCLE, here,
                               PageRequest(last=1, before=plain.cursors[0]))
    assert (raised.value.field, raised.value.code) == ("before", "INVALID_CURSOR")


async def test_a_distance_sort_key_needs_its_origin() -> None:
    with pytest.raises(ValueError):
        Sort("distance")
    with pytest.raises(ValueError):
        Sort("name", origin=BERLIN)


async def test_a_distance_on_a_kind_without_a_position_is_refused(store: Store) -> None:
    # Companies have no lat/lon: a programming error, not an empty page.
    await put(store, company())
    with pytest.raises(ValueError):
        await store.find_page(Company, Near(*BERLIN, 10.0), [Sort.by_distance(*BERLIN)],
                              PageRequest(first=1))
