"""Lists nested under a station the viewer sees are asked by its id alone
(``Policy.scope_under``'s ``seen``): the station was just read through the station rule,
and the rule is not asked again as a sub-select (a ``$lookup`` on MongoDB) per batch.
A connector of a station the viewer does not see stays out of reach on every path
(subscriptions: ``test_live_ws.test_shared_execution_keeps_each_roles_view``, whose
events of another tenant's station reach no operator of the other)."""

from __future__ import annotations

from datetime import timedelta

from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM
from domain.ports import Insert
from domain.query import ALL, Filter
from domain.services import ConnectorSpec, Services
from domain.services.base import stamp_new
from store.mongo.query import compile_query
from tests.contract.factories import configuration_key, reservation
from tests.graph.conftest import Api, CountingStore
from tests.graph.test_mutations import call, gid
from tests.graph.world import World
from tests.helpers import subselects

NESTED = """{ stations { nodes { cpId tariff { id } connectors { connectorId } } } }"""


def asked_of(store: CountingStore, kind: type[d.Record]) -> list[Filter]:
    return [where for k, where in store.asked if k == kind.kind]


async def _pending_station(services: Services, world: World) -> d.Station:
    """A station of company A that nobody accepted: its operators', not the map's."""
    station, _ = await services.stations.create_station(
        SYSTEM, cp_id="A-NEW", name="A New", company_id=world.companies["a"].id,
        owner_id=world.users["op_a"].id, lat=52.6, lon=13.5, address=None,
        connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 50.0)], password=None)
    return await services.stations.update_station(
        SYSTEM, station.id, registration=d.Registration.PENDING)


async def test_connectors_under_stations_seen_are_asked_by_station_alone(
        api: Api, world: World, services: Services, store: CountingStore) -> None:
    await _pending_station(services, world)
    for who, cp_ids in (("op_a", ["A-001", "A-002", "A-NEW"]),
                        ("driver1", ["A-001", "A-002", "B-001", "B-002"])):
        store.asked.clear()
        store.calls.clear()
        listed = (await api.gql(NESTED, as_user=world.users[who].id))["stations"]["nodes"]
        assert sorted(s["cpId"] for s in listed) == cp_ids, who
        assert all(len(s["connectors"]) == (1 if s["cpId"] == "A-NEW" else 2)
                   for s in listed), listed
        # One store call per level: the stations' connectors, their own tariffs, and
        # their company's for those with none (by company, not under a station).
        assert store.calls.count("find_grouped") == 3, store.calls
        connectors = asked_of(store, d.Connector)
        assert len(connectors) == 1 and subselects(connectors[0]) == [], (who, connectors)
        assert compile_query(d.Connector, connectors[0]).stages == (), who
        # The company's prices too: a company-wide list names no station.
        tariffs = asked_of(store, d.Tariff)
        assert len(tariffs) == 2 and all(not subselects(w) for w in tariffs), (who, tariffs)
        assert all(compile_query(d.Tariff, w).stages == () for w in tariffs), who
    # A station's configuration is asked by its id alone too.
    station = world.stations["A-001"]
    await store.write([Insert(stamp_new(configuration_key(station), SYSTEM))], [])
    store.asked.clear()
    config = await api.gql('{ station(cpId: "A-001") { configuration { key } } }',
                           as_user=world.users["op_a"].id)
    assert config == {"station": {"configuration": [{"key": "HeartbeatInterval"}]}}
    asked = asked_of(store, d.ConfigurationKey)
    assert len(asked) == 1 and subselects(asked[0]) == [], asked
    # What is left of the scope is left: asked as under a station seen, a driver (who
    # sees A-001 on the map) still reads none of its configuration, its operator does.
    # (The graph does not even ask for a driver: ``configuration`` is the private view.)
    for who, keys in (("driver1", []), ("op_a", ["HeartbeatInterval"])):
        found = await services.reads.grouped(world.viewer(who), d.ConfigurationKey,
                                             "station_id", [station.id], ALL, (), 10,
                                             seen="station")
        assert [k.key for k in found.get(station.id, [])] == keys, who


async def test_a_connector_of_a_station_not_seen_stays_out_of_reach(
        api: Api, world: World, services: Services) -> None:
    pending = await _pending_station(services, world)
    hidden = {"op_a": world.connectors["B-001"][0],
              "driver1": (await services.reads.grouped(
                  SYSTEM, d.Connector, "station_id", [pending.id], ALL, (), 1))[pending.id][0]}
    for who, connector in hidden.items():
        uid = world.users[who].id
        cid = gid("connector", connector.id)
        reached = await api.gql("""query($c: ID!, $s: ID!) {
            node(id: $c) { id } nodes(ids: [$c]) { id }
            station: node(id: $s) { id }
            connectors(first: 100) { nodes { id } } }""",
                                {"c": cid, "s": gid("station", connector.station_id)},
                                as_user=uid)
        assert reached["node"] is None and reached["nodes"] == [None], who
        assert reached["station"] is None, who
        assert cid not in {c["id"] for c in reached["connectors"]["nodes"]}, who
    # Analytics count the connectors of the stations each sees, the pending one's for
    # its operators only.
    for who, count in (("op_a", 5), ("driver1", 8)):
        overview = (await api.gql('{ overview(timeZone: "UTC") { connectorsByStatus { '
                                  "count } } }", as_user=world.users[who].id))["overview"]
        assert sum(row["count"] for row in overview["connectorsByStatus"]) == count, who



PAYLOAD = "station { cpId tariff { id } connectors { connectorId } configuration { key } }"


async def test_a_removed_station_s_payload_lists_nothing_under_it(
        api: Api, world: World, store: CountingStore) -> None:
    """Review s30: the station ``removeStation`` returns passed ``Policy.sees`` (its
    fields are those of a station its operator runs) though it was just deleted, and its
    own price list, which stays in the history, was asked by its id alone: the payload
    showed a tariff that ``node(id:)`` and ``tariffs`` no longer do. A mutation's
    stations are not read through the viewer's scope, so what is under them is asked by
    the full rule: nothing under a station gone."""
    station = world.stations["A-002"]
    sid = gid("station", station.id)
    await store.write([Insert(stamp_new(configuration_key(station), SYSTEM))], [])
    set_ = await call(api, world, "op_a", "setTariff",
                      {"stationId": sid, "pricePerKwh": "0.59", "currency": "EUR"},
                      "tariff { id }")
    before = await call(api, world, "op_a", "updateStation", {"id": sid, "name": "Still"},
                        PAYLOAD)
    assert before["station"]["tariff"] == set_["tariff"]  # the full rule finds them
    assert len(before["station"]["connectors"]) == 2
    assert before["station"]["configuration"] == [{"key": "HeartbeatInterval"}]
    removed = await call(api, world, "op_a", "removeStation", {"id": sid}, PAYLOAD)
    assert removed == {"station": {"cpId": "A-002", "tariff": None, "connectors": [],
                                   "configuration": []}, "errors": []}
    left = await api.gql("query($t: ID!) { node(id: $t) { id } tariffs { totalCount } }",
                         {"t": set_["tariff"]["id"]}, as_user=world.users["op_a"].id)
    assert left == {"node": None, "tariffs": {"totalCount": 0}}


async def test_a_station_handed_to_another_owner_lists_nothing_under_it(
        api: Api, world: World, services: Services) -> None:
    """An operator who names another owner of their own station of no company no longer
    runs it: the payload's station lists nothing under it for them."""
    mine, _ = await services.stations.create_station(
        SYSTEM, cp_id="OWN-1", name="Own", company_id=None,
        owner_id=world.users["op_a"].id, lat=None, lon=None, address=None,
        connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 50.0)], password=None)
    sid = gid("station", mine.id)
    await call(api, world, "op_a", "setTariff",
               {"stationId": sid, "pricePerKwh": "0.59", "currency": "EUR"}, "tariff { id }")
    kept = await call(api, world, "op_a", "updateStation", {"id": sid, "name": "Mine"},
                      "station { tariff { id } connectors { connectorId } }")
    assert kept["station"]["tariff"] is not None and kept["station"]["connectors"] != []
    handed = await call(api, world, "op_a", "updateStation",
                        {"id": sid, "ownerId": gid("user", world.users["op_a2"].id)}, PAYLOAD)
    assert handed == {"station": {"cpId": "OWN-1", "tariff": None, "connectors": [],
                                  "configuration": []}, "errors": []}


PAGED = """{ stations { nodes { cpId tariff { id }
  sessions(first: 5) { totalCount nodes { id } }
  reservations(first: 5) { totalCount nodes { id } pageInfo { endCursor } }
  connectionHistory(first: 5) { totalCount } } } }"""


async def test_paged_lists_under_stations_seen_are_asked_by_station_alone(
        api: Api, world: World, services: Services, store: CountingStore) -> None:
    """Station.sessions, reservations and connectionHistory (page, count and a cursor
    page) under stations seen, and a station's company prices, ask no sub-select: an
    operator's live reservations "on a station I run" is the station seen; what else
    the scope says stays (a driver's own, an operator's books)."""
    a1 = world.stations["A-001"]
    live = reservation(a1, user_id=world.users["driver1"].id, reservation_id=9001,
                       state=d.ReservationState.ACTIVE, expires_at=utcnow() + timedelta(hours=1))
    other = reservation(a1, user_id=world.users["driver2"].id, reservation_id=9002,
                        state=d.ReservationState.ACTIVE, company_id=None,
                        station_owner_id=None, expires_at=utcnow() + timedelta(hours=1))
    await store.write([Insert(stamp_new(r, SYSTEM)) for r in (live, other)], [])
    for who, reservations in (("op_a", 2), ("driver1", 1)):
        store.asked.clear()
        listed = (await api.gql(PAGED, as_user=world.users[who].id))["stations"]["nodes"]
        mine = {s["cpId"]: s for s in listed}["A-001"]
        assert mine["reservations"]["totalCount"] == reservations, who
        assert len(mine["reservations"]["nodes"]) == reservations, who
        sessions = {s["cpId"]: s["sessions"]["totalCount"] for s in listed}
        full = {st.cp_id: len((await services.reads.grouped(
            world.viewer(who), d.Session, "station_id", [st.id], ALL, (), 10)).get(st.id, []))
            for st in world.stations.values() if st.cp_id in sessions}
        assert sessions == full, who
        for kind in (d.Session, d.Reservation, d.ConnectionEvent, d.Tariff):
            asked = asked_of(store, kind)
            assert asked and all(subselects(w) == [] for w in asked), (who, kind, asked)
        # One station's next page, by cursor: a query of its own (not the batched first
        # page's), asked by its id alone, its totalCount too.
        one_page = """query($s: ID!, $c: String) { node(id: $s) { ... on Station {
            reservations(first: 1, after: $c) { totalCount nodes { id }
                                                pageInfo { endCursor } } } } }"""
        first = await api.gql(one_page, {"s": gid("station", a1.id), "c": None},
                              as_user=world.users[who].id)
        cursor = first["node"]["reservations"]["pageInfo"]["endCursor"]
        assert cursor is not None, who
        store.asked.clear()
        page = await api.gql(one_page, {"s": gid("station", a1.id), "c": cursor},
                             as_user=world.users[who].id)
        assert page["node"]["reservations"]["totalCount"] == reservations, who
        assert len(page["node"]["reservations"]["nodes"]) == reservations - 1, who
        assert first["node"]["reservations"]["nodes"][0] \
            not in page["node"]["reservations"]["nodes"], who
        asked = asked_of(store, d.Reservation)
        # The page and its count, each a query of its own.
        assert len(asked) == 2 and all(subselects(w) == [] for w in asked), (who, asked)
    # In a mutation's payload the full rule applies: the operator's sub-select is asked.
    store.asked.clear()
    payload = await call(api, world, "op_a", "updateStation",
                         {"id": gid("station", a1.id), "name": "Renamed"},
                         "station { reservations(first: 5) { totalCount nodes { id } } }")
    assert payload["station"]["reservations"]["totalCount"] == 2
    assert any(subselects(w) for w in asked_of(store, d.Reservation))
