"""A nested list's cursors belong to its parent's list: the same kind and order under
another parent (or the top-level list) refuse them, as the ``after`` docs promise."""

from __future__ import annotations

from tests.graph.conftest import Api
from tests.graph.world import World

STATION_SESSIONS = """query($cp: String!, $after: String) { station(cpId: $cp) {
  sessions(first: 5, after: $after) { edges { cursor node { id } } } } }"""


async def _error(api: Api, query: str, variables: dict, as_user: str) -> dict:
    response = await api.post(query, variables, api.token_for(as_user))
    [error] = response.json()["errors"]
    return error["extensions"]  # type: ignore[no-any-return]


async def test_a_cursor_pages_only_its_own_parent_s_list(api: Api, world: World) -> None:
    admin = world.users["admin"].id
    # The batched first page (one query for all parents) and a paged one agree on cursors.
    first = await api.gql(STATION_SESSIONS, {"cp": "A-001"}, as_user=admin)
    cursor = first["station"]["sessions"]["edges"][0]["cursor"]
    again = await api.gql(STATION_SESSIONS, {"cp": "A-001", "after": cursor}, as_user=admin)
    assert again["station"]["sessions"]["edges"] == first["station"]["sessions"]["edges"][1:]
    refused = {"code": "INVALID_CURSOR", "field": "after"}
    assert await _error(api, STATION_SESSIONS, {"cp": "B-001", "after": cursor},
                        admin) == refused
    top = await api.gql("{ sessions(first: 1) { edges { cursor } } }", as_user=admin)
    assert await _error(api, STATION_SESSIONS,
                        {"cp": "B-001", "after": top["sessions"]["edges"][0]["cursor"]},
                        admin) == refused
    nested_on_top = "query($after: String) { sessions(after: $after) { edges { cursor } } }"
    assert await _error(api, nested_on_top, {"after": cursor}, admin) == refused


async def test_a_cursor_made_before_cursors_named_their_list_still_pages(
        api: Api, world: World) -> None:
    """During a rolling upgrade an older instance's cursors (no list named at all) reach
    newer ones: they page on as before (review s21)."""
    import base64
    import json

    admin = world.users["admin"].id
    first = await api.gql(STATION_SESSIONS, {"cp": "B-001"}, as_user=admin)
    cursor = first["station"]["sessions"]["edges"][0]["cursor"]
    payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    assert payload.pop("p") == "station_id=" + world.stations["B-001"].id
    legacy = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    paged = await api.gql(STATION_SESSIONS, {"cp": "B-001", "after": legacy}, as_user=admin)
    assert paged["station"]["sessions"]["edges"] == first["station"]["sessions"]["edges"][1:]
