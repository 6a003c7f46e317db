"""Lists nested under a station the viewer sees are asked by its id alone
(``Policy.scope_under``'s ``seen``): the station was just read through the station rule,
and the rule is not asked again as a sub-select (a ``$lookup`` on MongoDB) per batch.
A connector of a station the viewer does not see stays out of reach on every path
(subscriptions: ``test_live_ws.test_shared_execution_keeps_each_roles_view``, whose
events of another tenant's station reach no operator of the other)."""

from __future__ import annotations

from domain import entities as d
from domain.policy import SYSTEM
from domain.query import ALL, Filter
from domain.services import ConnectorSpec, Services
from store.mongo.query import compile_query
from tests.graph.conftest import Api, CountingStore
from tests.graph.test_mutations import gid
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
        tariffs = asked_of(store, d.Tariff)
        under = [where for where in tariffs if not subselects(where)]
        assert len(tariffs) == 2 and len(under) == 1, (who, tariffs)
        assert compile_query(d.Tariff, under[0]).stages == (), who
    # What is left of the scope is left: a driver still reads no configuration.
    store.asked.clear()
    config = await api.gql('{ station(cpId: "A-001") { configuration { key } } }',
                           as_user=world.users["op_a"].id)
    assert config == {"station": {"configuration": []}}
    assert all(subselects(where) == [] for where in asked_of(store, d.ConfigurationKey))


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

