"""One spelling for one thing across the API's filters (QA s30): the station, connector
and reservation filters take lists of cpIds and stationIds as the session, analytics and
subscription filters do, connectors their types as `connectorTypes` as stations do, and
`nodes(ids:)` a list too long as TOO_LONG, as every filter list. The old one-value forms
still work, deprecated; both given, both must hold. Both stores."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from domain import entities as d
from domain.clock import utcnow
from domain.ports import Insert
from domain.services import Services
from graph.ids import to_global_id
from tests.graph.conftest import Api
from tests.graph.test_list_filters import errors
from tests.graph.world import World

STATIONS = """query($f: StationFilter) { stations(first: 50, filter: $f) {
    totalCount nodes { cpId } } }"""
CONNECTORS = """query($f: ConnectorFilter) { connectors(first: 50, filter: $f) {
    totalCount nodes { cpId connectorId } } }"""
RESERVATIONS = """query($f: ReservationFilter) { reservations(first: 50, filter: $f) {
    totalCount nodes { cpId } } }"""


async def listed(api: Api, world: World, query: str, f: dict[str, Any]) -> list[Any]:
    data = await api.gql(query, {"f": f}, as_user=world.users["admin"].id)
    page = next(iter(data.values()))
    assert page["totalCount"] == len(page["nodes"]), f
    return sorted((n["cpId"], n.get("connectorId")) for n in page["nodes"])


def station(world: World, cp_id: str) -> str:
    return to_global_id("station", world.stations[cp_id].id)


async def reserve(services: Services, world: World) -> None:
    """A live reservation at A-001 and one at B-002."""
    expires = utcnow() + timedelta(hours=1)
    await services.ctx.store.write([
        Insert(d.Reservation(reservation_id=7000 + i, station_id=world.stations[cp].id,
                             cp_id=cp, connector_id=1, id_tag=world.tags["driver1"].tag,
                             expires_at=expires, state=d.ReservationState.ACTIVE))
        for i, cp in enumerate(("A-001", "B-002"))], [])


async def test_lists_of_cp_ids_and_station_ids_old_forms_and_both(
        api: Api, world: World, services: Services) -> None:
    await reserve(services, world)
    plugs = {cp: [(cp, 1), (cp, 2)] for cp in world.stations}
    # What each filter lists of A-001 alone, and of A-001 and B-002: stations and
    # reservations one entry a station, connectors two.
    cases = (
        (STATIONS, {"A-001": [("A-001", None)], "B-002": [("B-002", None)]}, False),
        (CONNECTORS, plugs, True),
        (RESERVATIONS, {"A-001": [("A-001", None)], "B-002": [("B-002", None)]}, True),
    )
    for query, of, by_station in cases:
        both = sorted(of["A-001"] + of["B-002"])
        assert await listed(api, world, query, {"cpIds": ["A-001", "B-002"]}) == both, query
        assert await listed(api, world, query, {"cpIds": []}) == [], query
        assert await listed(api, world, query, {"cpId": "A-001"}) == of["A-001"], query
        # Both forms: both must hold.
        assert await listed(api, world, query, {"cpId": "A-001",
                                                "cpIds": ["A-001", "B-002"]}) == of["A-001"]
        assert await listed(api, world, query, {"cpId": "A-001", "cpIds": ["B-002"]}) == []
        assert await errors(api, world, query, {"cpIds": ["A-001"] * 101}) == [
            ("filter.cpIds", "TOO_LONG")], query
        assert len(await listed(api, world, query, {"cpIds": ["A-001"] * 100})) \
            == len(of["A-001"])
        if not by_station:
            continue
        ids = [station(world, "A-001"), station(world, "B-002")]
        assert await listed(api, world, query, {"stationIds": ids}) == both, query
        assert await listed(api, world, query, {"stationIds": []}) == [], query
        assert await listed(api, world, query, {"stationId": ids[0]}) == of["A-001"]
        assert await listed(api, world, query, {"stationId": ids[0],
                                                "stationIds": ids}) == of["A-001"]
        assert await listed(api, world, query, {"stationId": ids[0],
                                                "stationIds": ids[1:]}) == []
        assert await errors(api, world, query, {"stationIds": ids[:1] * 101}) == [
            ("filter.stationIds", "TOO_LONG")], query
        wrong_kind = {"stationIds": [to_global_id("user", world.users["admin"].id)]}
        assert [field for field, _ in await errors(api, world, query, wrong_kind)] == [
            "filter.stationIds"], query


async def test_connector_types_on_connectors_as_on_stations(api: Api, world: World) -> None:
    ccs = sorted((cp, 1) for cp in world.stations)
    assert await listed(api, world, CONNECTORS, {"connectorTypes": ["CCS2"]}) == ccs
    assert await listed(api, world, CONNECTORS, {"types": ["CCS2"]}) == ccs
    assert await listed(api, world, CONNECTORS, {"connectorTypes": []}) == []
    assert await listed(api, world, CONNECTORS, {"connectorTypes": ["CCS2"],
                                                 "types": ["TYPE2"]}) == []
    assert await listed(api, world, CONNECTORS, {"connectorTypes": ["CCS2", "TYPE2"],
                                                 "types": ["CCS2"], "minKw": 100}) == ccs


INPUT_FIELDS = """query($t: String!) { __type(name: $t) {
    inputFields(includeDeprecated: true) { name isDeprecated deprecationReason } } }"""


async def test_the_old_forms_are_deprecated_in_introspection(api: Api, world: World) -> None:
    deprecated = {
        "StationFilter": {"cpId": "cpIds"},
        "ConnectorFilter": {"cpId": "cpIds", "stationId": "stationIds",
                            "types": "connectorTypes"},
        "ReservationFilter": {"cpId": "cpIds", "stationId": "stationIds"},
        "ReserveNowInput": {"expiryDate": "expiresAt"},
    }
    for type_name, old_to_new in deprecated.items():
        data = await api.gql(INPUT_FIELDS, {"t": type_name})
        fields = {f["name"]: f for f in data["__type"]["inputFields"]}
        for old, new in old_to_new.items():
            assert fields[old]["isDeprecated"], (type_name, old)
            assert f"`{new}`" in fields[old]["deprecationReason"], (type_name, old)
            assert not fields[new]["isDeprecated"], (type_name, new)
        assert {name for name, f in fields.items() if f["isDeprecated"]} == set(old_to_new)
        # An introspection that does not ask for them (the default) leaves them out.
        plain = await api.gql('query($t: String!) { __type(name: $t) { inputFields { name } } }',
                              {"t": type_name})
        assert {f["name"] for f in plain["__type"]["inputFields"]} == set(fields) - set(old_to_new)


async def test_nodes_with_too_many_ids_is_too_long(api: Api, world: World) -> None:
    """As a filter's list of over 100 ids (QA s30: OUT_OF_RANGE here alone)."""
    query = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"
    one = station(world, "A-001")
    response = await api.post(query, {"ids": [one] * 101},
                              api.token_for(world.users["admin"].id))
    assert [(e["extensions"]["field"], e["extensions"]["code"])
            for e in response.json()["errors"]] == [("ids", "TOO_LONG")]
    data = await api.gql(query, {"ids": [one] * 100}, as_user=world.users["admin"].id)
    assert data["nodes"] == [{"id": one}] * 100
