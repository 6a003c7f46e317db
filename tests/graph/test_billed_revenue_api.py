"""Billed revenue through GraphQL and the CSV export alike, per role, on both stores
(QA s18, billing2): after a late StopTransaction corrected a captured session to
nothing and the 2.00 EUR were paid back, energyTrend, overview and energy.csv read
revenue 2.00, refunds 2.00, net 0.00 (they read 0.00, 2.00, -2.00 while the cash was
0.00); a late stop across a month boundary leaves the revenue in the month it was
billed in. Over ``tests/support/late_stops.py``."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.routing import Route, Router

from graph import TokenService, create_graphql_app
from tests.graph.conftest import SECRET, CountingStore
from tests.support.late_stops import JULY_1, ROLES, LateStops, build_late_stops

SEES = {"admin": True, "op_a": True, "op_b": False, "driver": True, "driver2": False}
TREND = """query($f: EnergyTrendFilter!, $b: TimeBucket!) { energyTrend(filter: $f,
  bucket: $b, currency: "EUR") { start revenue refunds netRevenue currency } }"""
OVERVIEW = """{ overview { revenueToday { amount currency } refundsToday { amount currency }
  netRevenueToday { amount currency } } }"""


class Client:
    """GraphQL at ``/graphql`` and the CSV exports at ``/export/{name}``, as the service
    mounts them, over the late stops' services."""

    def __init__(self, late: LateStops) -> None:
        self.late = late
        self.tokens = TokenService(SECRET, timedelta(hours=1))
        app = create_graphql_app(late.services, self.tokens)
        router = Router([Route("/graphql", app), Route("/export/{name}", app.export)])
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=router),
                                      base_url="http://testserver")

    def _auth(self, who: str) -> dict[str, str]:
        token = self.tokens.issue(self.late.users[who].id).token
        return {"authorization": f"Bearer {token}"}

    async def gql(self, who: str, query: str, variables: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
        r = await self.http.post("/graphql", json={"query": query, "variables": variables},
                                 headers=self._auth(who))
        assert r.status_code == 200 and "errors" not in r.json(), r.text
        return r.json()["data"]  # type: ignore[no-any-return]

    async def csv(self, who: str, **params: str) -> list[dict[str, str]]:
        r = await self.http.get("/export/energy.csv", params=params, headers=self._auth(who))
        assert r.status_code == 200, r.text
        return list(csv.DictReader(io.StringIO(r.content.decode("utf-8"), newline="")))

    async def money(self, who: str, start: datetime, end: datetime, bucket: str
                    ) -> list[tuple[str, Decimal, Decimal, Decimal]]:
        """(start, revenue, refunds, net) per bucket, from GraphQL, checked to be the
        CSV export's rows too."""
        window = {"from": start.isoformat(), "to": end.isoformat()}
        trend = (await self.gql(who, TREND, {"f": window, "b": bucket}))["energyTrend"]
        found = [(b["start"], Decimal(b["revenue"]), Decimal(b["refunds"]),
                  Decimal(b["netRevenue"])) for b in trend]
        rows = await self.csv(who, bucket=bucket, currency="EUR", **window)
        assert [(r["start"], Decimal(r["revenue"]), Decimal(r["refunds"]),
                 Decimal(r["netRevenue"])) for r in rows] == found, who
        return found


@pytest.fixture
async def client(store: CountingStore) -> AsyncIterator[Client]:
    built = Client(await build_late_stops(store.inner))
    yield built
    await built.http.aclose()


def at(hour: int, minute: int = 0) -> datetime:
    return JULY_1 + timedelta(hours=hour, minutes=minute)


async def test_a_refunded_correction_to_nothing_nets_zero_in_graphql_and_csv(
        client: Client) -> None:
    late = client.late
    tx, payment = await late.ended_by_the_operator(at(10), at(11))
    await late.services.payments.capture(late.viewer("op_a"), payment.id)
    await late.late_stop(tx, 50000, at(10, 30), at(11, 10))
    late.clock.now = at(11, 20)
    await late.services.payments.refund(late.viewer("op_a"), payment.id, Decimal("2.00"))
    late.clock.now = at(12)
    two, zero = Decimal("2.00"), Decimal("0.00")
    for who in ROLES:
        figures = (two, two, zero) if SEES[who] else (zero, zero, zero)
        assert await client.money(who, JULY_1, JULY_1 + timedelta(days=1), "DAY") == [
            ("2025-07-01T00:00:00.000Z", *figures)], who
        today = (await client.gql(who, OVERVIEW))["overview"]
        eur = [{"amount": "2.00", "currency": "EUR"}] if SEES[who] else []
        assert today == {"revenueToday": eur, "refundsToday": eur,
                         "netRevenueToday": [{"amount": "0.00", "currency": "EUR"}]
                         if SEES[who] else []}, who


async def test_a_late_stop_across_months_stays_in_the_billed_month_in_graphql_and_csv(
        client: Client) -> None:
    late = client.late
    may_31, june_1 = datetime(2025, 5, 31, 23, tzinfo=UTC), datetime(2025, 6, 1, tzinfo=UTC)
    tx, payment = await late.ended_by_the_operator(may_31, june_1 + timedelta(hours=1))
    await late.services.payments.capture(late.viewer("op_a"), payment.id)
    await late.late_stop(tx, 54000, may_31 + timedelta(minutes=30),
                         june_1 + timedelta(hours=1, minutes=10))
    zero = Decimal("0.00")
    for who in ROLES:
        june = Decimal("2.00") if SEES[who] else zero
        assert await client.money(who, datetime(2025, 5, 1, tzinfo=UTC), JULY_1,
                                  "MONTH") == [
            ("2025-05-01T00:00:00.000Z", zero, zero, zero),
            ("2025-06-01T00:00:00.000Z", june, zero, june)], who
