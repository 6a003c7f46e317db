"""``last: n`` alone, batched across parents, against the unbatched path
(``PageArgs.simple_last`` forced false): same edges, cursors, pageInfo, totalCount."""

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
        "edges { cursor node { id } }")

QUERIES = {
    "station.sessions": f"{{ stations(first: 50) {{ nodes {{ "
        f"cpId sessions(last: 2) {{ {CONN} }} }} }} }}",
    "station.reservations": f"{{ stations(first: 50) {{ nodes {{ "
        f"cpId reservations(last: 2) {{ {CONN} }} }} }} }}",
    "company.stations": f"{{ companies(first: 5) {{ nodes {{ "
        f"stations(last: 3) {{ {CONN} }} }} }} }}",
    "company.users": f"{{ companies(first: 5) {{ nodes {{ users(last: 2) {{ {CONN} }} }} }} }}",
    "user.sessions": f"{{ users(first: 20) {{ nodes {{ sessions(last: 3) {{ {CONN} }} }} }} }}",
    "user.idTags": f"{{ users(first: 20) {{ nodes {{ idTags(last: 1) {{ {CONN} }} }} }} }}",
    "user.stations": f"{{ users(first: 20) {{ nodes {{ stations(last: 2) {{ {CONN} }} }} }} }}",
    "user.vehicles": f"{{ users(first: 20) {{ nodes {{ vehicles(last: 1) {{ {CONN} }} }} }} }}",
    "last0": f"{{ stations(first: 50) {{ nodes {{ cpId sessions(last: 0) {{ {CONN} }} }} }} }}",
}


@pytest.mark.parametrize("who", ["admin", "op_a", "driver1"])
@pytest.mark.parametrize("name", sorted(QUERIES))
async def test_last_alone_batched_equals_unbatched(
        api: Api, world: World, services, store: CountingStore, monkeypatch, who: str,
        name: str) -> None:
    made = await _more_stations(services, world, 2)
    # ties: several sessions starting at the same instant on one station
    start = utcnow() - timedelta(minutes=30)
    for station in (world.stations["A-001"], made[0]):
        company_id, owner_id = books_of(station)
        for _ in range(4):
            await services.ctx.store.write([Insert(d.Session(
                transaction_id=await services.ctx.store.next_sequence("transaction"),
                station_id=station.id, cp_id=station.cp_id, connector_id=2,
                id_tag=world.tags["driver1"].tag, user_id=world.users["driver1"].id,
                start_time=start, meter_start_wh=0, state=d.SessionState.COMPLETED,
                end_time=start + timedelta(minutes=1), meter_stop_wh=10,
                company_id=company_id, station_owner_id=owner_id))], [])
    viewer = world.users[who].id
    batched = await api.gql(QUERIES[name], as_user=viewer)
    monkeypatch.setattr(relay.PageArgs, "simple_last", property(lambda self: False))
    unbatched = await api.gql(QUERIES[name], as_user=viewer)
    assert batched == unbatched
