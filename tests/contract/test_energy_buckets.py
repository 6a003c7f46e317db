"""Energy by time from meter samples, on every backend: a reading reports what flowed up to
its instant, so one taken exactly on a bucket's end is in the bucket that ends there, as
billing spreads it over the interval before it (QA s6: clock-aligned readings put every
hour one reading interval late)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from domain import entities as d
from domain.policy import SYSTEM
from domain.ports import Store
from domain.query import Eq, all_of
from domain.services import ConnectorSpec, analytics
from domain.services.analytics import Scope
from domain.tariff_bands import BandInput, attributed_wh
from domain.timebuckets import Bucket, BucketPlan, plan
from tests.support.history import History, build_history, register

BERLIN = "Europe/Berlin"
Q1 = Scope(cp_ids=("Q1",))
#: Berlin's midnight from Saturday 2026-04-04 to Sunday the 5th (summer time, UTC+2).
MIDNIGHT = datetime(2026, 4, 4, 22, 0, tzinfo=UTC)


@pytest.fixture
async def history(store: Store) -> History:
    h = await build_history(store)
    h.clock.now = MIDNIGHT - timedelta(hours=1)
    station, _ = await h.services.stations.create_station(
        SYSTEM, cp_id="Q1", name="Q1", company_id=h.users["op_a"].company_id,
        connectors=[ConnectorSpec(1)])
    # Saturday 23:00-24:00 in Berlin at a band price, so billing splits by the hour too.
    await h.services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, price_per_kwh=Decimal("0.20"), currency="EUR",
        time_zone=BERLIN, valid_from=MIDNIGHT - timedelta(hours=1),
        energy_bands=[BandInput(["SAT"], "23:00", "24:00", "0.60")])
    await h.services.charging.set_online("Q1", True)
    await h.services.charging.status_notification("Q1", 1, "Available", "NoError",
                                                  timestamp=h.clock.now)
    return h


async def charge(h: History, start: datetime, readings: list[tuple[datetime, int]]) -> int:
    """A session on Q1 from ``start`` with register readings (time, Wh; from 0), stopped
    at the last one; each message arrives when it is stamped. Its transaction id."""
    charging = h.services.charging
    h.clock.now = start
    tx, _ = await charging.start_transaction("Q1", 1, "TAG-driver1", 0, start)
    for at, wh in readings:
        h.clock.now = at
        await charging.meter_values("Q1", 1, tx, register(wh, at))
    await charging.stop_transaction("Q1", tx, readings[-1][1], readings[-1][0])
    return tx


async def energy(h: History, start: datetime, end: datetime, bucket: Bucket,
                 time_zone: str = BERLIN) -> list[tuple[datetime, int]]:
    buckets = await h.services.analytics.energy_trend(
        h.viewer("admin"), Q1, start, end, bucket, time_zone)
    return [(b.start, b.energy_wh) for b in buckets]


async def test_clock_aligned_readings_count_in_the_hour_they_end(history: History) -> None:
    """QA s6: +500 Wh at 23:59:30, 00:00:00, 00:00:30 and 00:01:00 (from a start at
    23:59:00) is 1.0 kWh before midnight and 1.0 after, as billed; the trend said 0.5 and
    1.5, and so did the overview's energy today."""
    second = timedelta(seconds=1)
    tx = await charge(history, MIDNIGHT - 60 * second, [
        (MIDNIGHT - 30 * second, 500), (MIDNIGHT, 1000), (MIDNIGHT + 30 * second, 1500),
        (MIDNIGHT + 60 * second, 2000)])
    hours = await energy(history, MIDNIGHT - timedelta(hours=1), MIDNIGHT + timedelta(hours=1),
                         Bucket.HOUR)
    assert hours == [(MIDNIGHT - timedelta(hours=1), 1000), (MIDNIGHT, 1000)]
    days = await energy(history, MIDNIGHT - timedelta(days=1), MIDNIGHT + timedelta(days=1),
                        Bucket.DAY)
    assert days == [(MIDNIGHT - timedelta(days=1), 1000), (MIDNIGHT, 1000)]
    # The split billing makes of the same readings: Saturday's band hour, then the base
    # price. (Not the session's own ``band_energy_wh``: the station is recorded now, and
    # a start months before its record is a clock never set, priced at its arrival.)
    store = history.services.ctx.store
    session = await store.find_one(d.Session, all_of(Eq("cp_id", "Q1"),
                                                     Eq("transaction_id", tx)))
    tariff = await store.find_one(d.Tariff, Eq("station_id", session.station_id)) \
        if session else None
    assert session is not None and tariff is not None
    samples = await store.find_all(d.MeterSample, Eq("session_id", session.id))
    assert attributed_wh(tariff, session.start_time, session.energy_wh,
                         [(s.at, s.delta_wh or 0) for s in samples]) == [1000, 1000]
    history.clock.now = MIDNIGHT + timedelta(minutes=5)
    overview = await history.services.analytics.overview(history.viewer("admin"), Q1, BERLIN)
    assert overview.energy_today_wh == 1000


async def test_readings_ending_on_the_hour_are_not_in_the_hour_after(history: History
                                                                     ) -> None:
    """QA s6: readings every 15 minutes ending at 22:00:00 UTC (Berlin's midnight) put
    1.0 kWh in the 22:00 hour, which starts after the session ended, and in the next
    Berlin day; the windows that start there hold none of it."""
    start = MIDNIGHT - timedelta(hours=1)
    await charge(history, start, [(start + timedelta(minutes=15 * k), 250 * k)
                                  for k in range(1, 5)])
    assert await energy(history, start, MIDNIGHT + timedelta(hours=1), Bucket.HOUR, "UTC") \
        == [(start, 1000), (MIDNIGHT, 0)]
    assert await energy(history, MIDNIGHT - timedelta(days=1), MIDNIGHT + timedelta(days=1),
                        Bucket.DAY) == [(MIDNIGHT - timedelta(days=1), 1000), (MIDNIGHT, 0)]
    # A window from the reading's instant holds none of it; one up to it holds it all.
    assert await energy(history, MIDNIGHT, MIDNIGHT + timedelta(days=1), Bucket.DAY) \
        == [(MIDNIGHT, 0)]
    assert await energy(history, start + timedelta(minutes=30), MIDNIGHT, Bucket.HOUR,
                        "UTC") == [(start, 500)]
    history.clock.now = MIDNIGHT + timedelta(minutes=5)
    overview = await history.services.analytics.overview(history.viewer("admin"), Q1, BERLIN)
    assert overview.energy_today_wh == 0


async def test_a_reading_at_the_end_of_a_month_is_that_months(history: History) -> None:
    """Months are buckets by boundaries (``ByTime.boundaries``): the reading at Berlin's
    midnight into May is April's energy; weeks too (Monday 2026-05-04 00:00 Berlin)."""
    may = datetime(2026, 4, 30, 22, 0, tzinfo=UTC)
    await charge(history, may - timedelta(minutes=30), [(may, 700)])
    assert await energy(history, datetime(2026, 3, 31, 22, tzinfo=UTC),
                        datetime(2026, 5, 31, 22, tzinfo=UTC), Bucket.MONTH) == [
        (datetime(2026, 3, 31, 22, tzinfo=UTC), 700), (may, 0)]
    monday = datetime(2026, 5, 3, 22, 0, tzinfo=UTC)
    await charge(history, monday - timedelta(minutes=30), [(monday, 300)])
    assert await energy(history, monday - timedelta(days=7), monday + timedelta(days=7),
                        Bucket.WEEK) == [(monday - timedelta(days=7), 1000), (monday, 0)]


async def test_a_trend_plans_its_buckets_once(history: History,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """QA s30: energyTrend built the same buckets three times (energy, sessions started,
    revenue billed), each plan the zone's offsets over the whole window again. One plan's
    keys serve every figure: closed on the right or not, on any field, they are the same."""
    planned: list[Bucket] = []

    def counted(field: str, bucket: Bucket, *rest: Any, **named: Any) -> BucketPlan:
        planned.append(bucket)
        return plan(field, bucket, *rest, **named)

    monkeypatch.setattr(analytics, "plan", counted)
    await charge(history, MIDNIGHT + timedelta(minutes=10),
                 [(MIDNIGHT + timedelta(minutes=20), 1000)])
    buckets = await history.services.analytics.energy_trend(
        history.viewer("admin"), Q1, MIDNIGHT - timedelta(hours=1),
        MIDNIGHT + timedelta(hours=2), Bucket.HOUR, BERLIN)
    assert planned == [Bucket.HOUR]
    assert [(b.start - MIDNIGHT, b.energy_wh, b.sessions, b.revenue_minor)
            for b in buckets] == [(timedelta(hours=-1), 0, 0, 0), (timedelta(0), 1000, 1, 20),
                                  (timedelta(hours=1), 0, 0, 0)]
