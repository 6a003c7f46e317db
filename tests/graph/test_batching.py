"""A nested query costs a fixed number of store calls, whatever the number of rows."""

from __future__ import annotations

from domain.policy import SYSTEM
from domain.services import ConnectorSpec
from tests.graph.conftest import Api, CountingStore
from tests.graph.world import World, build_world

QUERY = """query($n: Int!) { stations(first: $n) { edges { node { cpId owner { name }
  company { name } tariff { pricePerKwh }
  connectors { connectorId station { cpId } activeSession { transactionId
    user { name vehicles(first: 5) { nodes { licensePlate } } } vehicle { licensePlate }
    connector { connectorId } payment { status } } } } } } }"""


async def _calls_for(api: Api, store: CountingStore, uid: str, n: int) -> tuple[int, int]:
    store.calls.clear()
    data = await api.gql(QUERY, {"n": n}, as_user=uid)
    # The viewer lookup for the bearer token is one call of its own.
    return len(store.calls), len(data["stations"]["edges"])


async def test_same_store_calls_at_two_sizes(api: Api, services, store: CountingStore) -> None:
    world: World = await build_world(services, stations_per_company=2)
    admin = world.users["admin"].id
    small_calls, small_rows = await _calls_for(api, store, admin, 3)
    for i in range(20):
        await services.stations.create_station(
            SYSTEM, cp_id=f"X-{i:03d}", name=f"Extra {i}", company_id=world.companies["a"].id,
            owner_id=world.users["op_a"].id,
            connectors=[ConnectorSpec(1), ConnectorSpec(2), ConnectorSpec(3)],
        )
    large_calls, large_rows = await _calls_for(api, store, admin, 24)
    assert (small_rows, large_rows) == (3, 24)
    assert small_calls == large_calls
    # token viewer, page, owners, companies, station tariffs, company tariffs, connectors,
    # active sessions, session users, their vehicles, session vehicles, payments: one call
    # per relation, never one per row (a connector's station is its parent, already known).
    assert large_calls == 12


async def test_grouped_loads_per_level(api: Api, world: World, store: CountingStore) -> None:
    store.calls.clear()
    await api.gql("{ stations(first: 10) { nodes { connectors { connectorId } } } }",
                  as_user=world.users["admin"].id)
    assert store.calls == ["get_many", "find_page", "find_grouped"]


async def test_a_page_prefetches_its_levels_whatever_the_selection_shape(
        api: Api, world: World, store: CountingStore) -> None:
    """``nodes``, ``edges { node }`` and fragments select the same levels: each loads them
    up front for the whole page (one call per level), with the same answer as a station
    reached on its own."""
    admin = world.users["admin"].id
    inner = "cpId connectors { connectorId activeSession { transactionId user { name } " \
            "vehicle { licensePlate } } }"
    shapes = [
        f"{{ stations(first: 50) {{ nodes {{ {inner} }} }} }}",
        f"{{ stations(first: 50) {{ edges {{ node {{ {inner} }} }} }} }}",
        "{ stations(first: 50) { nodes { ...S } } } fragment S on Station { "
        "cpId connectors { ...C } } fragment C on Connector { connectorId activeSession { "
        "transactionId user { name } vehicle { licensePlate } } }",
    ]
    answers, calls = [], []
    for document in shapes:
        store.calls.clear()
        data = await api.gql(document, as_user=admin)
        page = data["stations"]
        answers.append(page["nodes"] if "nodes" in page else [e["node"] for e in page["edges"]])
        calls.append(list(store.calls))
    assert answers[0] == answers[1] == answers[2]
    assert any(c["activeSession"] for s in answers[0] for c in s["connectors"])
    # token viewer, page, connectors, active sessions, users, vehicles
    assert calls[0] == calls[1] == calls[2]
    assert len(calls[0]) == 6
    for station in answers[0]:
        one = await api.gql(f'{{ station(cpId: "{station["cpId"]}") {{ {inner} }} }}',
                            as_user=admin)
        assert one["station"] == station


SESSION_FIELDS = """transactionId user { name } vehicle { licensePlate } station { cpId }
  connector { connectorId } payment { status }"""


async def test_a_page_of_sessions_loads_each_relation_once(
        api: Api, world: World, store: CountingStore) -> None:
    """``sessions { user vehicle station connector payment }``: one call per relation for
    the page, and the same answers as each session read on its own (``node``)."""
    admin = world.users["admin"].id
    store.calls.clear()
    data = await api.gql(f"{{ sessions(first: 50) {{ nodes {{ id {SESSION_FIELDS} }} }} }}",
                         as_user=admin)
    nodes = data["sessions"]["nodes"]
    assert len(nodes) == len(world.sessions)
    assert any(n["payment"] for n in nodes) and any(n["payment"] is None for n in nodes)
    # token viewer, page, users, vehicles, stations, connectors, payments
    assert len(store.calls) == 7
    for node in nodes:
        one = await api.gql(f'{{ node(id: "{node["id"]}") {{ id ... on Session {{ '
                            f'{SESSION_FIELDS} }} }} }}', as_user=admin)
        assert one["node"] == node


async def test_a_page_of_connectors_loads_each_level_once(
        api: Api, world: World, store: CountingStore) -> None:
    admin = world.users["admin"].id
    document = ("{ connectors(first: 50) { nodes { id connectorId station { cpId } "
                f"activeSession {{ {SESSION_FIELDS} }} }} }} }}")
    store.calls.clear()
    nodes = (await api.gql(document, as_user=admin))["connectors"]["nodes"]
    assert any(n["activeSession"] for n in nodes)
    # token viewer, page, stations, active sessions, then the sessions' relations
    # (users, vehicles, stations are known, connectors, payments)
    assert len(store.calls) == 8
    for node in nodes:
        one = await api.gql(f'{{ node(id: "{node["id"]}") {{ id ... on Connector {{ '
                            f'connectorId station {{ cpId }} activeSession {{ '
                            f'{SESSION_FIELDS} }} }} }} }}', as_user=admin)
        assert one["node"] == node
