"""`orderBy: NAME` as people read names (QA, frontend): case and accents ignored, ties by
id, paged both ways, for every list with a NAME order (stations, users, companies). The
names themselves read back as entered."""

from __future__ import annotations

from typing import Any

import pytest

from domain.services import Services
from domain.validation import name_key
from tests.graph.conftest import Api
from tests.graph.test_mutations import call, codes
from tests.graph.world import World

#: The QA's repro: sorted by their bytes these came after "Urban Tech Republic".
QA_NAMES = ("aachen lowercase", "Ärztehaus", "Zoo", "Urban Tech Republic")

LIST = """query($o: [%(kind)sOrder!], $first: Int, $after: String, $last: Int,
  $before: String) { %(field)s(orderBy: $o, first: $first, after: $after, last: $last,
  before: $before) { nodes { name } pageInfo { hasNextPage hasPreviousPage startCursor
  endCursor } } }"""
#: (list field, its order input's prefix, the mutation creating one, its input).
KINDS = {
    "stations": ("Station", "createStation",
                 lambda n, i: {"cpId": f"QA-{i}", "name": n}, "station { name }"),
    "users": ("User", "createUser",
              lambda n, i: {"email": f"qa{i}@example.com", "password": "long enough pw",
                            "name": n, "role": "DRIVER"}, "user { name }"),
    "companies": ("Company", "createCompany", lambda n, i: {"name": n}, "company { name }"),
}


async def create(api: Api, world: World, field: str, names: tuple[str, ...]) -> None:
    _, mutation, make, selection = KINDS[field]
    for i, name in enumerate(names):
        made = await call(api, world, "admin", mutation, make(name, i), selection)
        assert codes(made) == [], made


async def page(api: Api, world: World, field: str, direction: str = "ASC",
               **paging: Any) -> dict[str, Any]:
    query = LIST % {"kind": KINDS[field][0], "field": field}
    data = await api.gql(query, {"o": [{"field": "NAME", "direction": direction}],
                                 **paging}, as_user=world.users["admin"].id)
    return data[field]  # type: ignore[no-any-return]


def names(result: dict[str, Any]) -> list[str]:
    return [n["name"] for n in result["nodes"]]


@pytest.mark.parametrize("field", list(KINDS))
async def test_names_sort_as_people_read_them(api: Api, world: World, field: str) -> None:
    await create(api, world, field, QA_NAMES)
    listed = names(await page(api, world, field, first=100))
    assert set(QA_NAMES) <= set(listed)
    assert [n for n in listed if n in QA_NAMES] == [
        "aachen lowercase", "Ärztehaus", "Urban Tech Republic", "Zoo"]
    assert listed == sorted(listed, key=name_key)  # the world's own names too
    assert names(await page(api, world, field, "DESC", first=100)) == listed[::-1]


@pytest.mark.parametrize("field", list(KINDS))
async def test_cursors_page_the_name_order_both_ways(api: Api, world: World,
                                                     field: str) -> None:
    # Ties: one key each, told apart by id (not "zoo": company names are unique
    # whatever their case).
    await create(api, world, field, (*QA_NAMES, "Zóo", "Arztehaus", "Zöo"))
    whole = names(await page(api, world, field, first=100))
    forward: list[str] = []
    after = None
    for _ in range(len(whole)):  # bounded: a broken cursor must fail, not hang
        got = await page(api, world, field, first=2, after=after)
        forward += names(got)
        if not got["pageInfo"]["hasNextPage"]:
            break
        after = got["pageInfo"]["endCursor"]
    assert forward == whole
    backward: list[str] = []
    before = None
    for _ in range(len(whole)):
        got = await page(api, world, field, last=2, before=before)
        backward = names(got) + backward
        if not got["pageInfo"]["hasPreviousPage"]:
            break
        before = got["pageInfo"]["startCursor"]
    assert backward == whole
    # One key, in the order they were made (their ids).
    assert [n for n in whole if name_key(n) == "zoo"] == ["Zoo", "Zóo", "Zöo"]
    assert [n for n in whole if name_key(n) == "arztehaus"] == ["Ärztehaus", "Arztehaus"]


async def test_a_renamed_station_moves_and_reads_as_entered(api: Api, world: World) -> None:
    await create(api, world, "stations", QA_NAMES)
    zoo = await api.gql('{ stations(filter: {search: "Zoo"}) { nodes { id } } }',
                        as_user=world.users["admin"].id)
    renamed = await call(api, world, "admin", "updateStation",
                         {"id": zoo["stations"]["nodes"][0]["id"], "name": "  ärzte  Zoo "},
                         "station { name }")
    assert renamed["station"] == {"name": "ärzte Zoo"}
    listed = names(await page(api, world, "stations", first=100))
    assert [n for n in listed if n in (*QA_NAMES, "ärzte Zoo")] == [
        "aachen lowercase", "ärzte Zoo", "Ärztehaus", "Urban Tech Republic"]


async def test_a_station_a_charger_registered_sorts_by_its_name(
        api: Api, world: World, services: Services) -> None:
    """Auto-registration names a station after its cpId; it is keyed like any other."""
    services.charging.auto_register = True
    await create(api, world, "stations", QA_NAMES)
    assert await services.charging.station_for_connection("aardvark-01") is not None
    listed = names(await page(api, world, "stations", first=100))
    assert [n for n in listed if n in (*QA_NAMES, "aardvark-01")] == [
        "aachen lowercase", "aardvark-01", "Ärztehaus", "Urban Tech Republic", "Zoo"]
