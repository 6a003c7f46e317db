"""One spelling for one thing across the API's filters (QA s30): the station, connector,
reservation and session filters take lists of cpIds and stationIds as the analytics and
station feed filters do (the session and command feeds too, tests/graph/test_live_ws.py,
and sessions.csv its cpIds), connectors their types as `connectorTypes` as stations do,
and `nodes(ids:)` a list too long as TOO_LONG, as every filter list. The old one-value
forms still work, deprecated; both given, both must hold. Both stores."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

from domain import entities as d
from domain.clock import utcnow
from domain.policy import Viewer
from domain.ports import Insert
from domain.services import Services
from graph.csv_export import CsvExports
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
SESSIONS = """query($f: SessionFilter) { sessions(first: 50, filter: $f) {
    totalCount nodes { cpId } } }"""
PAYMENTS = """query($f: PaymentFilter) { payments(first: 50, filter: $f) {
    totalCount nodes { id } } }"""


async def listed(api: Api, world: World, query: str, f: dict[str, Any]) -> list[Any]:
    data = await api.gql(query, {"f": f}, as_user=world.users["admin"].id)
    page = next(iter(data.values()))
    assert page["totalCount"] == len(page["nodes"]), f
    return sorted(tuple(n.values()) for n in page["nodes"])


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
    plugs = {cp: [(cp, 1), (cp, 2)] for cp in ("A-001", "B-002")}
    # What each filter lists of A-001 alone, and of B-002: stations and reservations one
    # entry a station, connectors two.
    one_each = {"A-001": [("A-001",)], "B-002": [("B-002",)]}
    await spellings(api, world, STATIONS, one_each, by_station=False)
    await spellings(api, world, CONNECTORS, plugs)
    await spellings(api, world, RESERVATIONS, one_each)


async def test_sessions_by_lists_of_cp_ids_and_station_ids_old_forms_and_both(
        api: Api, world: World) -> None:
    """QA s30 leftovers: `SessionFilter` had a single, non-deprecated `cpId` and no
    `cpIds`; its `stationId` beside `stationIds` is deprecated as the others'."""
    # The world's sessions: s1 at A-001, s2 at B-001, s3 at A-002.
    await spellings(api, world, SESSIONS, {"A-001": [("A-001",)], "B-001": [("B-001",)]})


async def test_payments_by_a_list_of_station_ids_old_form_and_both(
        api: Api, world: World) -> None:
    """As sessions (payments have no cpId filter: a payment's cpId is not in every
    MongoDB document written before it was carried). The world's payments: s2's at B-001
    and s3's at A-002."""
    of = {cp: [(to_global_id("payment", world.payments[key].id),)]
          for cp, key in (("B-001", "s2"), ("A-002", "s3"))}
    await spellings(api, world, PAYMENTS, of, by_cp=False)


async def spellings(api: Api, world: World, query: str, of: dict[str, list[Any]],
                    by_station: bool = True, by_cp: bool = True) -> None:
    """``query``'s filter by the lists, by the old one-value forms, and by both, over
    the two chargers ``of`` names with what each alone lists."""
    first, second = of
    both = sorted(of[first] + of[second])
    if by_cp:
        await cp_spellings(api, world, query, of)
    if not by_station:
        return
    ids = [station(world, first), station(world, second)]
    assert await listed(api, world, query, {"stationIds": ids}) == both, query
    assert await listed(api, world, query, {"stationIds": []}) == [], query
    assert await listed(api, world, query, {"stationId": ids[0]}) == of[first]
    assert await listed(api, world, query, {"stationId": ids[0],
                                            "stationIds": ids}) == of[first]
    assert await listed(api, world, query, {"stationId": ids[0],
                                            "stationIds": ids[1:]}) == []
    assert await errors(api, world, query, {"stationIds": ids[:1] * 101}) == [
        ("filter.stationIds", "TOO_LONG")], query
    wrong_kind = {"stationIds": [to_global_id("user", world.users["admin"].id)]}
    assert [field for field, _ in await errors(api, world, query, wrong_kind)] == [
        "filter.stationIds"], query


async def cp_spellings(api: Api, world: World, query: str, of: dict[str, list[Any]]
                       ) -> None:
    """``spellings``' part of cpIds and cpId."""
    first, second = of
    both = sorted(of[first] + of[second])
    assert await listed(api, world, query, {"cpIds": [first, second]}) == both, query
    assert await listed(api, world, query, {"cpIds": []}) == [], query
    assert await listed(api, world, query, {"cpId": first}) == of[first], query
    # Both forms: both must hold.
    assert await listed(api, world, query, {"cpId": first,
                                            "cpIds": [first, second]}) == of[first]
    assert await listed(api, world, query, {"cpId": first, "cpIds": [second]}) == []
    assert await errors(api, world, query, {"cpIds": [first] * 101}) == [
        ("filter.cpIds", "TOO_LONG")], query
    assert len(await listed(api, world, query, {"cpIds": [first] * 100})) \
        == len(of[first])


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
        "SessionFilter": {"cpId": "cpIds", "stationId": "stationIds"},
        "PaymentFilter": {"stationId": "stationIds"},
        "SessionEventFilter": {"cpId": "cpIds"},
        "CommandEventFilter": {"cpId": "cpIds"},
        "ReserveNowInput": {"expiryDate": "expiresAt"},
        "IdTagInfoInput": {"expiryDate": "expiresAt"},
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


async def sessions_csv(services: Services, world: World, query: str) -> Any:
    """The cpIds of ``sessions.csv``'s rows as the admin exports them with ``query``, or,
    refused, its status and errors' fields and codes."""
    async def admin(authorization: str | None) -> Viewer:
        return world.viewer("admin")

    scope = {"type": "http", "method": "GET", "path": "/export/sessions.csv",
             "path_params": {"name": "sessions.csv"}, "query_string": query.encode(),
             "headers": []}
    response = await CsvExports(services, admin).respond(Request(scope))
    if response.status_code != 200:
        return response.status_code, [(e["field"], e["code"])
                                      for e in json.loads(bytes(response.body))["errors"]]
    assert isinstance(response, StreamingResponse)
    body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[misc]
    return sorted(row["cpId"] for row in csv.DictReader(io.StringIO(body.decode())))


async def test_sessions_csv_takes_cp_ids_repeated_as_its_other_lists(
        services: Services, world: World) -> None:
    """QA s30 leftovers: sessions.csv took a single cpId, as the filter it mirrors."""
    assert await sessions_csv(services, world, "cpIds=A-001&cpIds=B-001") == [
        "A-001", "B-001"]
    assert await sessions_csv(services, world, "cpIds=A-002") == ["A-002"]
    # The old one-value form still works; with the list, both must hold.
    assert await sessions_csv(services, world, "cpId=A-001") == ["A-001"]
    assert await sessions_csv(services, world, "cpId=A-001&cpIds=A-001&cpIds=B-001") == [
        "A-001"]
    assert await sessions_csv(services, world, "cpId=A-001&cpIds=B-001") == []
    assert await sessions_csv(services, world, "&".join(["cpIds=A-001"] * 101)) == (
        400, [("cpIds", "TOO_LONG")])
    assert await sessions_csv(services, world, "cpIds=") == (400, [("cpIds", "REQUIRED")])


async def test_sessions_csv_reads_a_list_joined_by_commas_as_its_items(
        services: Services, world: World) -> None:
    """QA s31: ``cpIds=A-001,B-001`` was one cpId, "A-001,B-001", that matched nothing,
    an empty file where the user asked for two chargers' sessions. No cpId or id can hold
    a comma, so it is split; repeated and joined mix, and the bound counts the items."""
    both = ["A-001", "B-001"]
    assert await sessions_csv(services, world, "cpIds=A-001,B-001") == both
    assert await sessions_csv(services, world, "cpIds=A-001%2C%20B-001") == both
    assert await sessions_csv(services, world, "cpIds=A-001,B-001&cpIds=A-002") == [
        "A-001", "A-002", "B-001"]
    ids = ",".join(station(world, cp) for cp in both)
    assert await sessions_csv(services, world, f"stationIds={ids}") == both
    assert await sessions_csv(services, world, "cpIds=" + ",".join(["A-001"] * 101)) == (
        400, [("cpIds", "TOO_LONG")])
    for empty in ("cpIds=A-001,", "cpIds=,A-001", "stationIds=" + ids + ",,"):
        assert await sessions_csv(services, world, empty) == (
            400, [(empty.split("=")[0], "REQUIRED")]), empty
