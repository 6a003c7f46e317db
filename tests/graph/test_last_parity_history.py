"""``last: n`` alone on telemetry histories, batched vs unbatched."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.ports import Insert
from domain.services.charging import books_of
from graph import relay
from tests.graph.conftest import Api, CountingStore
from tests.graph.test_batching import _more_stations
from tests.graph.world import World

CONN = ("totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } "
        "edges { cursor node { at } }")

QUERIES = {
    "statusHistory": f"{{ stations(first: 50) {{ nodes {{ "
        f"connectors {{ statusHistory(last: 2) {{ {CONN} }} }} }} }} }}",
    "connectionHistory": f"{{ stations(first: 50) {{ nodes {{ "
        f"connectionHistory(last: 2) {{ {CONN} }} }} }} }}",
    "meterValues": f"{{ sessions(first: 50) {{ nodes {{ meterValues(last: 2) {{ {CONN} }} }} }} }}",
}


@pytest.mark.parametrize("who", ["admin", "op_a"])
@pytest.mark.parametrize("name", sorted(QUERIES))
async def test_history_last_batched_equals_unbatched(
        api: Api, world: World, services, store: CountingStore, monkeypatch, who: str,
        name: str) -> None:
    made = await _more_stations(services, world, 2)
    at = utcnow() - timedelta(minutes=30)
    s = services.ctx.store
    sessions = await s.find_all(d.Session, __import__("domain.query", fromlist=["ALL"]).ALL)
    for station in [world.stations["A-001"], *made]:
        company_id, owner_id = books_of(station)
        rows = []
        for i in range(4):
            t = at + timedelta(seconds=i // 2)  # ties
            rows.append(Insert(d.StatusEvent(station_id=station.id, cp_id=station.cp_id,
                                             connector_id=1, status=d.ConnectorStatus.AVAILABLE,
                                             at=t, company_id=company_id,
                                             station_owner_id=owner_id)))
            rows.append(Insert(d.ConnectionEvent(station_id=station.id, cp_id=station.cp_id,
                                                 online=bool(i % 2), at=t,
                                                 company_id=company_id,
                                                 station_owner_id=owner_id)))
        await s.write(rows, [])
    for session in sessions:
        await s.write([Insert(d.MeterSample(
            session_id=session.id, cp_id=session.cp_id, connector_id=session.connector_id,
            at=at + timedelta(seconds=i // 2), measurand="Energy.Active.Import.Register",
            value=float(i), unit="Wh", station_id=session.station_id)) for i in range(4)], [])
    viewer = world.users[who].id
    batched = await api.gql(QUERIES[name], as_user=viewer)
    assert "cursor" in str(batched)
    monkeypatch.setattr(relay.PageArgs, "simple_last", property(lambda self: False))
    unbatched = await api.gql(QUERIES[name], as_user=viewer)
    assert batched == unbatched
