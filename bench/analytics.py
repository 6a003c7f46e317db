"""Analytics at size on the embedded store: 1,000 stations, 4,000 connectors, 1,000,000
meter samples (50,000 sessions over 30 days), then every analytics query, as an admin and
as an operator (whose scope is a sub-select), timed. Baseline: one full scan of the meter
samples (``SELECT COUNT(*), TOTAL(delta_wh)``) on the same file in the same run. Then a
long bucketed answer (ten stations by DAY over 990 days: 9,900 rows, QA s30), timed as
the service computes it and as a full GraphQL request over the in-process app, with and
without each row's station: what rendering the rows costs.

    python -m bench.analytics [--samples 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.common import report
from domain import entities as d
from domain.policy import SYSTEM, Policy, Viewer
from domain.services import ServiceContext, Services
from domain.services.analytics import BucketBudget, Scope
from domain.timebuckets import Bucket
from graph import TokenService, create_graphql_app
from store.sqlite import SqliteStore
from store.sqlite.codec import columns, quote, to_row
from tests.helpers import FastHasher

START = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 30
STATIONS, CONNECTORS_PER_STATION = 1_000, 4
COMPANIES = 10
#: The long bucketed answer: this many stations, a day each over LONG_DAYS to the clock.
LONG_STATIONS, LONG_DAYS = 10, 990
LONG_FIELDS = {
    "availability": "cpId start windowSeconds availableSeconds reportedSeconds "
                    "unknownSeconds availableShare reportedAvailableShare",
    "utilization": "cpId start windowSeconds occupiedSeconds chargingSeconds occupiedShare "
                   "chargingShare"}


def insert(db: sqlite3.Connection, records: list[d.Record]) -> None:
    kind = type(records[0])
    names = columns(kind)
    db.executemany(f"INSERT INTO {quote(kind.kind)} ({', '.join(quote(n) for n in names)}) "
                   f"VALUES ({', '.join('?' * len(names))})", [to_row(r) for r in records])


def load(path: Path, samples: int) -> dict[str, Any]:
    """Bulk-load a month of history straight into the store's tables (the loader is not
    what is measured)."""
    rng = random.Random(7)
    db = sqlite3.connect(path)
    companies = [d.Company(name=f"Company {i}") for i in range(COMPANIES)]
    operators = [d.User(email=f"op{i}@bench", name=f"op{i}", role=d.Role.OPERATOR,
                        company_id=c.id) for i, c in enumerate(companies)]
    stations = [d.Station(cp_id=f"CP-{i:05d}", name=f"Station {i}",
                          company_id=companies[i % COMPANIES].id, online=i % 7 != 0,
                          lat=52 + rng.random(), lon=13 + rng.random())
                for i in range(STATIONS)]
    connectors = [d.Connector(station_id=s.id, cp_id=s.cp_id, connector_id=c,
                              status=d.ConnectorStatus.AVAILABLE)
                  for s in stations for c in range(1, CONNECTORS_PER_STATION + 1)]
    admin = d.User(email="admin@bench", name="admin", role=d.Role.ADMIN)
    insert(db, companies)
    insert(db, [*operators, admin])
    insert(db, stations)
    insert(db, connectors)
    per_session = 20
    sessions_total = samples // per_session
    company_of = {s.id: s.company_id for s in stations}
    batch_sessions: list[d.Record] = []
    batch_payments: list[d.Record] = []
    batch_samples: list[d.Record] = []
    batch_intervals: list[d.Record] = []
    for tx in range(1, sessions_total + 1):
        connector = connectors[rng.randrange(len(connectors))]
        start = START + timedelta(seconds=rng.randrange(DAYS * 86_400 - 7_200))
        minutes = rng.randrange(20, 120)
        end = start + timedelta(minutes=minutes)
        step = timedelta(minutes=minutes) / per_session
        delta = rng.randrange(200, 1_500)
        session = d.Session(transaction_id=tx, station_id=connector.station_id,
                            cp_id=connector.cp_id, connector_id=connector.connector_id,
                            id_tag="BENCH", start_time=start, end_time=end,
                            meter_start_wh=0, meter_stop_wh=delta * per_session,
                            energy_wh=delta * per_session, state=d.SessionState.COMPLETED,
                            cost_minor=delta * per_session * 40 // 1000, currency="EUR")
        batch_sessions.append(session)
        # Revenue is what the payments billed (opened when their session ended).
        batch_payments.append(d.Payment(
            session_id=session.id, station_id=connector.station_id, cp_id=connector.cp_id,
            connector_id=connector.connector_id, user_id=None,
            amount_minor=session.cost_minor or 0, currency="EUR",
            status=d.PaymentStatus.CAPTURED, company_id=company_of[connector.station_id],
            created_at=end, updated_at=end))
        for i in range(per_session):
            batch_samples.append(d.MeterSample(
                session_id=session.id, cp_id=connector.cp_id,
                connector_id=connector.connector_id, at=start + step * (i + 1),
                measurand="Energy.Active.Import.Register", value=float(delta * (i + 1)),
                unit="Wh", transaction_id=tx, delta_wh=delta))
        for status, lo, hi in ((d.ConnectorStatus.CHARGING, start, end),
                               (d.ConnectorStatus.AVAILABLE, end,
                                end + timedelta(minutes=rng.randrange(5, 60)))):
            batch_intervals.append(d.ConnectorInterval(
                station_id=connector.station_id, cp_id=connector.cp_id,
                connector_id=connector.connector_id, status=status, start=lo, end=hi))
        if len(batch_samples) >= 100_000:
            for batch in (batch_sessions, batch_payments, batch_samples, batch_intervals):
                insert(db, batch)
                batch.clear()
    for batch in (batch_sessions, batch_payments, batch_samples, batch_intervals):
        if batch:
            insert(db, batch)
    faults = []
    for i in range(2_000):
        connector = connectors[rng.randrange(len(connectors))]
        at = START + timedelta(seconds=rng.randrange(DAYS * 86_400))
        faults.append(d.StatusEvent(station_id=connector.station_id, cp_id=connector.cp_id,
                                    connector_id=connector.connector_id,
                                    status=d.ConnectorStatus.FAULTED,
                                    error_code="GroundFailure" if i % 2 else "OverVoltage",
                                    at=at))
    insert(db, faults)
    db.commit()
    db.execute("ANALYZE")
    db.close()
    return {"operator": operators[0], "admin": admin, "sessions": sessions_total,
            "cp_ids": [s.cp_id for s in stations[:LONG_STATIONS]]}


async def timed(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def long_answers(services: Services, world: dict[str, Any], repeat: int
                       ) -> list[dict[str, Any]]:
    """The long bucketed answers: the service's time, then the full request's."""
    lo, hi = START + timedelta(days=DAYS - LONG_DAYS), START + timedelta(days=DAYS)
    scope = Scope(cp_ids=tuple(world["cp_ids"]))
    tokens = TokenService("bench-secret-that-is-long-enough-for-hs256", timedelta(hours=1))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(
            app=create_graphql_app(services, tokens)), base_url="http://bench") as http:
        headers = {"authorization": f"Bearer {tokens.issue(world['admin'].id).token}"}
        arguments = (f'from: "{lo.isoformat()}", to: "{hi.isoformat()}", bucket: DAY, '
                     f"filter: {{cpIds: {json.dumps(world['cp_ids'])}}}")
        rows = []
        for name, fields in LONG_FIELDS.items():
            use_case = getattr(services.analytics, name)
            served = await timed(lambda u=use_case: u(SYSTEM, scope, lo, hi, False, Bucket.DAY,
                                                      "UTC", BucketBudget()), repeat)
            label = f"{name} DAY, {LONG_STATIONS} stations, {LONG_DAYS} days"
            rows.append({"query": f"{label}: service", "viewer": "admin", "seconds": served,
                         "ratio": None})
            for suffix, selection in (("", fields), (" + station", f"{fields} station {{ name }}")):
                query = f"{{ {name}({arguments}) {{ {selection} }} }}"

                async def request(q: str = query, field: str = name) -> None:
                    answer = (await http.post("/graphql", json={"query": q},
                                              headers=headers)).json()
                    assert "errors" not in answer and len(answer["data"][field]) == \
                        LONG_STATIONS * LONG_DAYS, answer
                rows.append({"query": f"{label}: request{suffix}", "viewer": "admin",
                             "seconds": await timed(request, repeat), "ratio": None})
    return rows


async def main(samples: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        store = SqliteStore(str(path))
        await store.start()  # creates the schema
        await store.close()
        began = time.perf_counter()
        world = load(path, samples)
        load_s = time.perf_counter() - began
        store = SqliteStore(str(path))
        await store.start()
        services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                           clock=lambda: START + timedelta(days=DAYS)))
        analytics = services.analytics
        viewers = {"admin": SYSTEM, "operator": Viewer.of(world["operator"])}
        lo, hi = START, START + timedelta(days=DAYS)
        week = (START + timedelta(days=7), START + timedelta(days=14))

        def baseline() -> Any:
            async def scan() -> None:
                raw = sqlite3.connect(path)
                raw.execute("SELECT COUNT(*), TOTAL(delta_wh) FROM meter_sample").fetchone()
                raw.close()
            return scan

        base = await timed(baseline(), repeat)
        rows = [{"query": "baseline: full scan of meter_sample", "viewer": "-",
                 "seconds": base, "ratio": 1.0}]
        for who, viewer in viewers.items():
            queries = {
                "energyTrend DAY, 30 days, Europe/Berlin": lambda v=viewer: analytics
                .energy_trend(v, Scope(), lo, hi, Bucket.DAY, "Europe/Berlin"),
                "energyTrend HOUR, 7 days": lambda v=viewer: analytics.energy_trend(
                    v, Scope(), week[0], week[1], Bucket.HOUR, "Europe/Berlin"),
                "utilization by connector, 30 days": lambda v=viewer: analytics.utilization(
                    v, Scope(), lo, hi, True),
                "availability by station, 30 days": lambda v=viewer: analytics.availability(
                    v, Scope(), lo, hi, False),
                "faultReports, 30 days": lambda v=viewer: analytics.fault_reports(
                    v, Scope(), lo, hi),
                "overview": lambda v=viewer: analytics.overview(v, Scope(), "Europe/Berlin"),
            }
            for name, query in queries.items():
                seconds = await timed(query, repeat)
                rows.append({"query": name, "viewer": who, "seconds": seconds,
                             "ratio": seconds / base})
        rows += await long_answers(services, world, repeat)
        await store.close()
    report("analytics", rows, {"samples": samples, "sessions": world["sessions"],
                               "stations": STATIONS,
                               "connectors": STATIONS * CONNECTORS_PER_STATION,
                               "load_seconds": load_s})
    print(f"loaded {samples:,} samples in {load_s:.1f}s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.samples, arguments.repeat))
