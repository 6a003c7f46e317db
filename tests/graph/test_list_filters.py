"""List filters a console or an export needs: sessions by several stations and by card,
payments by when they were opened. Visibility still decides first (the filters only
narrow what the viewer's scope lets through)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from starlette.routing import Route, Router

from domain import entities as d
from domain.ids import new_id
from domain.ports import Insert
from domain.services import Services
from domain.validation import stored_id_tag
from graph import TokenService, create_graphql_app
from graph.ids import to_global_id
from tests.graph.conftest import SECRET, Api
from tests.graph.world import World

SESSIONS = "query($f: SessionFilter) { sessions(first: 50, filter: $f) { nodes { id } } }"
PAYMENTS = "query($f: PaymentFilter) { payments(first: 50, filter: $f) { nodes { id } } }"


async def ids(api: Api, world: World, who: str, query: str, f: dict[str, Any]) -> set[str]:
    data = await api.gql(query, {"f": f}, as_user=world.users[who].id)
    return {node["id"] for node in next(iter(data.values()))["nodes"]}


def session(world: World, key: str) -> str:
    return to_global_id("session", world.sessions[key].id)


def station(world: World, cp_id: str) -> str:
    return to_global_id("station", world.stations[cp_id].id)


async def errors(api: Api, world: World, query: str, f: dict[str, Any]
                 ) -> list[tuple[str, str]]:
    response = await api.post(query, {"f": f}, api.token_for(world.users["admin"].id))
    return [(e["extensions"]["field"], e["extensions"]["code"])
            for e in response.json()["errors"]]


async def test_sessions_by_several_stations(api: Api, world: World) -> None:
    both = {"stationIds": [station(world, "A-001"), station(world, "A-002")]}
    assert await ids(api, world, "admin", SESSIONS, both) == {session(world, "s1"),
                                                              session(world, "s3")}
    assert await ids(api, world, "admin", SESSIONS, {"stationIds": []}) == set()
    # The other company's operator sees none of them, listed or not.
    assert await ids(api, world, "op_b", SESSIONS, both) == set()
    too_many = {"stationIds": [station(world, "A-001")] * 101}
    assert await errors(api, world, SESSIONS, too_many) == [("filter.stationIds", "TOO_LONG")]
    wrong_kind = {"stationIds": [session(world, "s1")]}
    assert [field for field, _ in await errors(api, world, SESSIONS, wrong_kind)] == [
        "filter.stationIds"]


async def test_sessions_by_card(api: Api, world: World) -> None:
    card = {"idTag": " tag-driver1 "}  # as a person types it
    assert await ids(api, world, "admin", SESSIONS, card) == {session(world, "s1"),
                                                              session(world, "s2")}
    # Company A's operator: only the card's sessions on its own stations.
    assert await ids(api, world, "op_a", SESSIONS, card) == {session(world, "s1")}
    assert await ids(api, world, "driver2", SESSIONS, card) == set()
    assert await errors(api, world, SESSIONS, {"idTag": "x" * 21}) == [
        ("filter.idTag", "TOO_LONG")]


async def test_sessions_by_a_card_no_one_issued(api: Api, world: World,
                                                services: Services) -> None:
    """A charger may present a tag no card was issued with (not ASCII): its sessions store
    it as presented, and the filter finds them rather than refusing the tag."""
    stray = replace(world.sessions["s3"], id=new_id(), transaction_id=9_999,
                    id_tag=stored_id_tag(" Müller-1 "))
    await services.ctx.store.write([Insert(stray)], [])
    assert await ids(api, world, "admin", SESSIONS, {"idTag": "müller-1"}) == {
        to_global_id("session", stray.id)}
    assert await errors(api, world, SESSIONS, {"idTag": "  "}) == [
        ("filter.idTag", "REQUIRED")]


async def test_payments_by_when_they_were_opened(api: Api, world: World) -> None:
    now = datetime.now(UTC)
    everything = await ids(api, world, "admin", PAYMENTS, {})
    assert len(everything) == 2
    hour = {"from": (now - timedelta(hours=1)).isoformat(),
            "to": (now + timedelta(hours=1)).isoformat()}
    assert await ids(api, world, "admin", PAYMENTS, hour) == everything
    later = {"from": (now + timedelta(hours=1)).isoformat()}
    assert await ids(api, world, "admin", PAYMENTS, later) == set()
    backwards = {"from": hour["to"], "to": hour["from"]}
    assert await errors(api, world, PAYMENTS, backwards) == [("filter.to", "OUT_OF_RANGE")]


AUDIT = "query($f: AuditFilter) { auditLog(first: 100, filter: $f) { nodes { entity } } }"


async def test_the_audit_log_by_entity_kind_or_type_name(api: Api, world: World) -> None:
    """``station`` and ``Station`` name one kind; a name that is neither is refused,
    not read as "nothing changed" (QA s19: ``Station`` matched no entry)."""
    as_admin = world.users["admin"].id
    by_kind = await api.gql(AUDIT, {"f": {"entity": "station"}}, as_user=as_admin)
    by_type = await api.gql(AUDIT, {"f": {"entity": "Station"}}, as_user=as_admin)
    kinds = {node["entity"] for node in by_kind["auditLog"]["nodes"]}
    assert kinds == {"station"}
    assert by_type == by_kind
    cards = await api.gql(AUDIT, {"f": {"entity": "IdTag"}}, as_user=as_admin)
    assert {node["entity"] for node in cards["auditLog"]["nodes"]} <= {"id_tag"}
    for name in ("stations", "nonsense", ""):
        assert await errors(api, world, AUDIT, {"entity": name}) \
            == [("filter.entity", "INVALID")], name


async def test_the_audit_log_lists_entries_of_one_instant_last_written_first(
        api: Api, world: World, services: Services) -> None:
    """Newest first means the last written first among entries of one millisecond too
    (QA s30: a ReserveNow's ``SENT`` was listed above its ``ANSWERED`` and the
    reservation's ``UPDATE``, the store's ``id`` tie-breaker being ascending), by
    default and asked for (``AT DESC``), page by page; oldest first is the reverse."""
    at = datetime(2031, 1, 1, tzinfo=UTC)  # after everything the world wrote
    written = [d.AuditEntry(entity="station", entity_id=new_id(), action=action,
                            actor="system", at=at)
               for action in (d.AuditAction.COMMAND, d.AuditAction.CREATE,
                              d.AuditAction.UPDATE)]
    assert sorted(e.id for e in written) == [e.id for e in written]  # ids count up
    await services.ctx.store.write([], written)
    query = """query($o: [AuditOrder!], $after: String, $before: String,
                     $first: Int, $last: Int) {
        auditLog(orderBy: $o, first: $first, after: $after, last: $last, before: $before) {
            nodes { id } pageInfo { endCursor startCursor } } }"""
    newest = [to_global_id("audit_entry", e.id) for e in reversed(written)]
    as_admin = world.users["admin"].id

    async def page(**args: Any) -> dict[str, Any]:
        return (await api.gql(query, args, as_user=as_admin))["auditLog"]  # type: ignore[no-any-return]

    for order in (None, [{"field": "AT", "direction": "DESC"}]):
        first = await page(o=order, first=2)
        rest = await page(o=order, first=1, after=first["pageInfo"]["endCursor"])
        assert [n["id"] for n in first["nodes"] + rest["nodes"]] == newest, order
        back = await page(o=order, last=1, before=rest["pageInfo"]["startCursor"])
        assert [n["id"] for n in back["nodes"]] == newest[1:2], order
    oldest = await page(o=[{"field": "AT", "direction": "ASC"}], last=3)
    assert [n["id"] for n in oldest["nodes"]] == newest[::-1]


async def test_connectors_in_the_order_asked(api: Api, world: World) -> None:
    """``connectors`` was the one root list without ``orderBy`` (QA s19)."""
    query = """query($o: [ConnectorOrder!], $after: String) {
        connectors(first: 2, orderBy: $o, after: $after) {
            nodes { cpId connectorId } pageInfo { hasNextPage endCursor } } }"""
    as_admin = world.users["admin"].id

    async def every(order: list[dict[str, str]] | None) -> list[tuple[str, int]]:
        seen: list[tuple[str, int]] = []
        after = None
        while True:  # two a page: the cursor keeps the order asked for
            page = (await api.gql(query, {"o": order, "after": after},
                                  as_user=as_admin))["connectors"]
            seen += [(n["cpId"], n["connectorId"]) for n in page["nodes"]]
            if not page["pageInfo"]["hasNextPage"]:
                return seen
            after = page["pageInfo"]["endCursor"]

    default = await every(None)
    assert len(default) > 2 and default == sorted(default)
    newest_first = await every([{"field": "CP_ID", "direction": "DESC"},
                                {"field": "CONNECTOR_ID", "direction": "DESC"}])
    assert newest_first == sorted(default, reverse=True)
    by_number = await every([{"field": "CONNECTOR_ID"}, {"field": "CP_ID"}])
    assert by_number == sorted(default, key=lambda plug: (plug[1], plug[0]))


WINDOW = {"from": "2026-03-28T00:00:00Z", "to": "2026-03-31T00:00:00Z"}
TREND = "query($f: EnergyTrendFilter!) { energyTrend(filter: $f, bucket: DAY) { sessions } }"
UTILIZATION = """query($f: AnalyticsFilter) { utilization(from: "2026-03-28T00:00:00Z",
    to: "2026-03-31T00:00:00Z", filter: $f) { cpId } }"""
OVERVIEW = "query($f: AnalyticsFilter) { overview(filter: $f) { activeSessions } }"


async def test_every_filter_list_of_ids_takes_at_most_a_hundred(
        api: Api, world: World, services: Services) -> None:
    """README: a filter argument of over 100 ids is TOO_LONG, as `SessionFilter.stationIds`
    answered; the analytics filters and the energy export took any number and handed
    them all to the store (QA s26). A hundred is taken, in every one of them."""
    stations = [station(world, "A-001")]
    for query, base in ((TREND, WINDOW), (UTILIZATION, {}), (OVERVIEW, {})):
        for name, one in (("stationIds", stations), ("cpIds", ["A-001"])):
            f = {**base, name: one * 101}
            assert await errors(api, world, query, f) == [(f"filter.{name}", "TOO_LONG")], (
                query, name)
            await api.gql(query, {"f": {**base, name: one * 100}},
                          as_user=world.users["admin"].id)
    # The energy export reads its parameters as `energyTrend`'s filter: the same bound.
    tokens = TokenService(SECRET, timedelta(hours=1))
    router = Router([Route("/export/{name}", create_graphql_app(services, tokens).export)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router),
                                 base_url="http://testserver") as http:
        for name, value in (("stationIds", stations[0]), ("cpIds", "A-001")):
            params: list[tuple[str, Any]] = [*WINDOW.items(), ("bucket", "DAY"),
                                             *[(name, value)] * 101]
            r = await http.get("/export/energy.csv", params=params, headers={
                "authorization": f"Bearer {tokens.issue(world.users['admin'].id).token}"})
            assert r.status_code == 400, r.text
            assert r.json()["errors"][0] | {"message": ""} == {
                "field": name, "code": "TOO_LONG", "message": ""}


STATIONS = """query($f: StationFilter) { stations(first: 50, filter: $f) {
    totalCount nodes { cpId } } }"""
CONNECTORS = """query($f: ConnectorFilter) { connectors(first: 50, filter: $f) {
    totalCount nodes { cpId } } }"""


async def test_an_empty_list_in_a_filter_matches_nothing(api: Api, world: World) -> None:
    """``[]`` is "any of none", in every list filter alike: a console whose type picker
    has nothing ticked lists no station, as `stationIds: []` lists no session. It read
    as "any type" for connector types alone, so unticking the last type showed them all
    (QA s26)."""
    for query, f in ((STATIONS, {"connectorTypes": []}),
                     (STATIONS, {"connectorTypes": [], "availableNow": False}),
                     (STATIONS, {"connectorTypes": [], "availableNow": True}),
                     (CONNECTORS, {"types": []}),
                     (SESSIONS, {"stationIds": []})):
        data = await api.gql(query, {"f": f}, as_user=world.users["admin"].id)
        page = next(iter(data.values()))
        assert page["nodes"] == [], (query, f)
        if "totalCount" in page:
            assert page["totalCount"] == 0, (query, f)
    # Left out (or null), a list filter asks nothing.
    everything = await api.gql(STATIONS, {"f": {"connectorTypes": None}},
                               as_user=world.users["admin"].id)
    assert everything["stations"]["totalCount"] == len(world.stations)


async def test_a_search_ignores_accents_as_name_order_does(
        api: Api, world: World, services: Services) -> None:
    """A driver on a keyboard without umlauts types "munchen" for München and "skoda"
    for their Škoda; NAME order sorts them with the plain letters, and a search found
    them only spelt with the accent (QA s27). Both ways, both stores, every searched
    list: the accent typed finds the plain spelling too."""
    from domain.policy import SYSTEM
    from domain.services import ConnectorSpec

    await services.stations.create_station(
        SYSTEM, cp_id="K-1", name="Kadıköy İskele", company_id=world.companies["a"].id,
        owner_id=world.users["op_a"].id, lat=41.0, lon=29.0,
        address="Rıhtım Cd. 5, München", password="station-secret-1",
        connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 50.0)])
    driver = world.users["driver1"].id
    await services.fleet.add_vehicle(world.viewer("driver1"), license_plate="M-SK 1",
                                     make="Škoda", model="Enyaq Coupé")
    for needle in ("munchen", "MUNCHEN", "München", "kadikoy", "KADIKÖY", "Kadıköy",
                   "rihtim"):
        found = await api.gql(STATIONS, {"f": {"search": needle}}, as_user=driver)
        assert [n["cpId"] for n in found["stations"]["nodes"]] == ["K-1"], needle
        assert found["stations"]["totalCount"] == 1, needle
    # Still the text as typed, found anywhere: the words in another order are not.
    plain = await api.gql(STATIONS, {"f": {"search": "münchen 5"}}, as_user=driver)
    assert plain["stations"]["nodes"] == []
    cars = "query($s: String) { vehicles(filter: {search: $s}) { nodes { make model } } }"
    for needle in ("skoda", "ŠKODA", "coupe", "enyaq coupé"):
        found = await api.gql(cars, {"s": needle}, as_user=driver)
        assert found["vehicles"]["nodes"] == [{"make": "Škoda", "model": "Enyaq Coupé"}], \
            needle
