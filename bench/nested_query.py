"""Cost of a nested query: ``stations(first: N) { connectors { activeSession { user
vehicle } } }`` for N = 10 and 100 (the largest page), store calls and time, against
graphql-core executing the same query over the same data prefetched into memory: once
executing a document parsed and validated in advance (ChargeGraph caches both for a
repeated document), and once as a full request that parses and validates every time.

    python -m bench.nested_query [--repeat 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from inspect import isawaitable
from pathlib import Path
from typing import Any

from graphql import build_schema, execute, graphql, parse, validate

from bench.common import report
from chargegraph.runtime import tune_garbage_collector
from domain import entities as d
from domain.policy import SYSTEM, Policy
from domain.ports import Insert
from domain.query import ALL
from domain.services import ServiceContext, Services
from graph.context import GraphContext
from graph.schema import schema
from store.sqlite import SqliteStore
from tests.graph.conftest import CountingStore
from tests.helpers import FastHasher

QUERY = """query($n: Int!) { stations(first: $n) { nodes { cpId name connectors {
  connectorId status activeSession { transactionId energyKwh
  user { name } vehicle { licensePlate } } } } } }"""

BASELINE_SDL = """
type Query { stations(first: Int!): StationConnection! }
type StationConnection { nodes: [Station!]! }
type Station { cpId: String! name: String! connectors: [Connector!]! }
type Connector { connectorId: Int! status: String! activeSession: Session }
type Session { transactionId: Int! energyKwh: Float! user: User vehicle: Vehicle }
type User { name: String! }
type Vehicle { licensePlate: String! }
"""


async def seed(store: SqliteStore, stations: int = 100) -> dict[str, Any]:
    users = [d.User(email=f"u{i}@bench", name=f"Driver {i}", role=d.Role.DRIVER)
             for i in range(stations)]
    vehicles = [d.Vehicle(owner_id=u.id, license_plate=f"B{i:05d}",
                          plate_key=f"B{i:05d}") for i, u in
                enumerate(users)]
    records: list[d.Record] = [*users, *vehicles]
    memory: list[dict[str, Any]] = []
    tx = 0
    for i in range(stations):
        station = d.Station(cp_id=f"CP-{i:04d}", name=f"Station {i}")
        records.append(station)
        connectors = []
        for c in range(1, 5):
            connector = d.Connector(station_id=station.id, cp_id=station.cp_id,
                                    connector_id=c, status=d.ConnectorStatus.CHARGING
                                    if c % 2 else d.ConnectorStatus.AVAILABLE)
            records.append(connector)
            active = None
            if c % 2:
                tx += 1
                user, vehicle = users[i], vehicles[i]
                session = d.Session(transaction_id=tx, station_id=station.id,
                                    cp_id=station.cp_id, connector_id=c, id_tag="T",
                                    start_time=station.created_at, meter_start_wh=0,
                                    energy_wh=1234, user_id=user.id, vehicle_id=vehicle.id)
                records.append(session)
                active = {"transactionId": tx, "energyKwh": 1.234,
                          "user": {"name": user.name},
                          "vehicle": {"licensePlate": vehicle.license_plate}}
            connectors.append({"connectorId": c, "status": connector.status.name,
                               "activeSession": active})
        memory.append({"cpId": station.cp_id, "name": station.name, "connectors": connectors})
    await store.write([Insert(r) for r in records], [])
    return {"stations": memory}


async def measure(ours: Any, baselines: list[Any], repeat: int
                  ) -> tuple[float, list[float], list[float]]:
    """Median times of ours and of each baseline, and the median of each per-round ratio.
    They alternate round by round, so a slow spell of this shared machine hits all alike."""
    mine: list[float] = []
    theirs: list[list[float]] = [[] for _ in baselines]
    ratios: list[list[float]] = [[] for _ in baselines]
    for _ in range(repeat):
        start = time.perf_counter()
        await ours()
        spent = time.perf_counter() - start
        mine.append(spent)
        for index, baseline in enumerate(baselines):
            start = time.perf_counter()
            await baseline()
            theirs[index].append(time.perf_counter() - start)
            ratios[index].append(theirs[index][-1] / spent)
    return (statistics.median(mine), [statistics.median(t) for t in theirs],
            [statistics.median(r) for r in ratios])


async def main(repeat: int) -> None:
    # The garbage collector settings of `chargegraph serve`; the baseline runs in this
    # same process, so it gets them too.
    tune_garbage_collector()
    with tempfile.TemporaryDirectory() as folder:
        inner = SqliteStore(str(Path(folder) / "nested.db"))
        await inner.start()
        memory = await seed(inner)
        store = CountingStore(inner)
        services = Services(ServiceContext(store=store, policy=Policy(),  # type: ignore[arg-type]
                                           hasher=FastHasher()))
        baseline_schema = build_schema(BASELINE_SDL)
        # Parsed and validated once, as ChargeGraph's parser and validation caches do for
        # a repeated document: both sides are timed on execution alone.
        document = parse(QUERY)
        assert not validate(baseline_schema, document)
        rows = []
        for n in (10, 100):
            root = {"stations": lambda info, first, n=n: {"nodes": memory["stations"][:first]}}

            async def ours(n: int = n) -> None:
                context = GraphContext.build(services, None, SYSTEM)  # type: ignore[arg-type]
                result = await schema.execute(QUERY, variable_values={"n": n},
                                              context_value=context)
                assert result.errors is None, result.errors

            async def baseline(root: Any = root, n: int = n) -> None:
                result = execute(baseline_schema, document, root_value=root,
                                 variable_values={"n": n})
                if isawaitable(result):
                    result = await result
                assert result.errors is None, result.errors

            async def full_request(root: Any = root, n: int = n) -> None:
                # The same baseline paying parse and validation on every call, as a
                # graphql-core server without caches does.
                result = await graphql(baseline_schema, QUERY, root_value=root,
                                       variable_values={"n": n})
                assert result.errors is None, result.errors

            store.calls.clear()
            await ours()
            calls = len(store.calls)
            ours_s, (base_s, full_s), (ratio, full_ratio) = await measure(
                ours, [baseline, full_request], repeat)
            rows.append({"N": n, "store_calls": calls, "ours_ms": ours_s * 1000,
                         "graphql_core_in_memory_ms": base_s * 1000,
                         "speed_vs_baseline": ratio,
                         "graphql_core_full_request_ms": full_s * 1000,
                         "speed_vs_full_request": full_ratio})
        assert await inner.count(d.Station, ALL) == 100
        await inner.close()
    report("nested_query", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=50)
    asyncio.run(main(parser.parse_args().repeat))
