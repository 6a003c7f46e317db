"""NAME order: by the name's stored key (``validation.name_key``: case folded, accents
dropped), ties by id, paged with keyset cursors both ways, on both stores. QA: sorted by
the names' bytes, "aachen lowercase" and "Ärztehaus" came after "Zoo"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from domain.entities import Company, Station, User
from domain.policy import SYSTEM
from domain.ports import Store
from domain.query import ALL, PageRequest, Sort
from domain.services.base import patch
from tests.contract.factories import company, oid, put, station, user

#: id number -> name. "Zoo", "zoo" and "ZOO" share a key: by id among themselves.
NAMES = {1: "Zoo", 2: "Ärztehaus", 3: "aachen lowercase", 4: "Urban Tech Republic",
         5: "zoo", 6: "Arena", 7: "ZOO", 8: "äbc"}
#: As a person reads them, ties by ascending id.
ASC = [3, 8, 6, 2, 4, 1, 5, 7]
#: Descending keys, ties still by ascending id.
DESC = [1, 5, 7, 4, 2, 6, 8, 3]

Kind = type[Company] | type[User] | type[Station]
MAKERS: dict[Kind, Callable[..., Any]] = {Company: company, User: user, Station: station}


@pytest.fixture(params=list(MAKERS), ids=lambda kind: kind.kind)
async def kind(request: pytest.FixtureRequest, store: Store) -> Kind:
    """Records of one name-ordered kind, keyed as the services key them."""
    made = cast(Kind, request.param)
    await put(store, *(MAKERS[made](id=oid(n), name=name) for n, name in NAMES.items()))
    return made


def nums(items: list[Any]) -> list[int]:
    return [int(r.id, 16) for r in items]


async def walk(store: Store, kind: Kind, sort: list[Sort], *, backward: bool) -> list[int]:
    """Every record, two a page, following the cursors forward (or backward from the
    end): the order the pages add up to."""
    seen: list[int] = []
    cursor = None
    for _ in range(len(NAMES)):  # bounded: a broken cursor must fail, not hang
        request = PageRequest(last=2, before=cursor) if backward \
            else PageRequest(first=2, after=cursor)
        page = await store.find_page(kind, ALL, sort, request)
        seen = nums(page.items) + seen if backward else seen + nums(page.items)
        if not (page.has_previous if backward else page.has_next):
            return seen
        cursor = page.cursors[0] if backward else page.cursors[-1]
    raise AssertionError(f"paging did not end: {seen}")


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
async def test_name_order_is_case_and_accent_insensitive_with_ties_by_id(
        store: Store, kind: Kind, backward: bool) -> None:
    assert await walk(store, kind, [Sort("name_key")], backward=backward) == ASC
    assert await walk(store, kind, [Sort("name_key", descending=True)],
                      backward=backward) == DESC


async def test_a_renamed_record_moves_to_its_new_place(store: Store, kind: Kind) -> None:
    """A rename writes the key with the name (``patch``), on both stores."""
    [arena] = await store.get_many(kind, [oid(6)])
    assert arena is not None
    renamed = patch(arena, SYSTEM, name="Über")
    assert renamed.fields is not None and {"name", "name_key"} <= renamed.fields
    await store.write([renamed], [])
    assert await walk(store, kind, [Sort("name_key")], backward=False) == [
        3, 8, 2, 6, 4, 1, 5, 7]
    [stored] = await store.get_many(kind, [oid(6)])
    assert stored is not None and (stored.name, stored.name_key) == ("Über", "uber")

