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
