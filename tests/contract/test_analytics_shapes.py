"""Dashboard shapes on every backend: energy trends grouped per station or connector,
and utilization and availability per time bucket, compared with the scripted history
(``tests/support/history.py``) worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from domain.errors import ValidationError
from domain.policy import SYSTEM
from domain.ports import Store
from domain.services import analytics as analytics_module
from domain.services.analytics import BucketBudget, GroupBy, Scope
from domain.timebuckets import Bucket
from tests.contract.test_analytics import at_31, overlapping_sessions_on_r1, two_plug_station
from tests.support.history import WINDOW_FROM, WINDOW_TO, H, History, build_history, utc

#: Berlin midnights of the window's three days (the 30th starts in summer time).
DAYS = [utc(27, 23), utc(28, 23), utc(29, 22)]


@pytest.fixture
async def history(store: Store) -> History:
    return await build_history(store)


async def grouped(h: History, who: str, group_by: GroupBy, scope: Scope | None = None
                  ) -> dict[tuple[Any, ...], list[tuple[int, int, int]]]:
    rows = await h.services.analytics.energy_trend(
        h.viewer(who), scope or Scope(), WINDOW_FROM, WINDOW_TO, Bucket.DAY, "Europe/Berlin",
        group_by=group_by)
    series: dict[tuple[Any, ...], list[tuple[int, int, int]]] = {}
    for row in rows:
        key = (row.cp_id, row.connector_id)
        assert row.station_id == h.stations[str(row.cp_id)].id
        series.setdefault(key, []).append((row.energy_wh, row.sessions, row.revenue_minor))
        assert row.start == DAYS[len(series[key]) - 1]
    return series


async def test_energy_trend_per_station_and_connector(history: History) -> None:
    assert await grouped(history, "admin", GroupBy.STATION) == {
        ("S1", None): [(2000, 1, 0), (27000, 1, 870), (0, 0, 0)],
        ("S2", None): [(0, 0, 0), (0, 0, 0), (5000, 1, 0)]}
    assert await grouped(history, "admin", GroupBy.CONNECTOR) == {
        ("S1", 1): [(2000, 1, 0), (5000, 0, 210), (0, 0, 0)],
        ("S1", 2): [(0, 0, 0), (22000, 1, 660), (0, 0, 0)],
        ("S2", 1): [(0, 0, 0), (0, 0, 0), (5000, 1, 0)]}


async def test_grouped_energy_keeps_each_viewers_scope(history: History) -> None:
    """The same scope as the plain trend: an operator's stations' figures by the books,
    a driver's own charging only, each group adding up to the plain trend's figures."""
    assert await grouped(history, "op_b", GroupBy.STATION) == {
        ("S2", None): [(0, 0, 0), (0, 0, 0), (5000, 1, 0)]}
    assert await grouped(history, "driver2", GroupBy.CONNECTOR) == {
        ("S1", 2): [(0, 0, 0), (22000, 1, 660), (0, 0, 0)]}
    # S1 goes to B: A keeps its sessions' energy (the books), B gets none of it.
    before = await grouped(history, "op_a", GroupBy.STATION)
    await history.services.stations.update_station(
        SYSTEM, history.stations["S1"].id, company_id=history.users["op_b"].company_id)
    assert await grouped(history, "op_a", GroupBy.STATION) == before
    assert set(await grouped(history, "op_b", GroupBy.STATION)) == {("S2", None)}


async def test_grouped_energy_is_bounded(history: History,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # 71 hours x 3 connectors = 213 figures; x 2 stations = 142.
    monkeypatch.setattr(analytics_module, "MAX_CELLS", 200)
    analytics, admin = history.services.analytics, history.viewer("admin")
    rows = await analytics.energy_trend(admin, Scope(), WINDOW_FROM, WINDOW_TO, Bucket.HOUR,
                                        group_by=GroupBy.STATION)
    assert len(rows) == 142
    with pytest.raises(ValidationError) as refused:
        await analytics.energy_trend(admin, Scope(), WINDOW_FROM, WINDOW_TO, Bucket.HOUR,
                                     group_by=GroupBy.CONNECTOR)
    assert (refused.value.field, refused.value.code) == ("groupBy", "TOO_MANY")


async def test_an_energy_trend_s_window_is_named_as_its_caller_gave_it(
        history: History) -> None:
    """The service's own arguments by default; ``filter.`` only for the API's deprecated
    filter pair (review s30: the deprecated form was every new caller's default)."""
    analytics, admin = history.services.analytics, history.viewer("admin")
    with pytest.raises(ValidationError) as backwards:
        await analytics.energy_trend(admin, Scope(), WINDOW_TO, WINDOW_FROM, Bucket.DAY)
    assert (backwards.value.field, backwards.value.code) == ("to", "OUT_OF_RANGE")
    with pytest.raises(ValidationError) as backwards:
        await analytics.energy_trend(admin, Scope(), WINDOW_TO, WINDOW_FROM, Bucket.DAY,
                                     window_in="filter.")
    assert (backwards.value.field, backwards.value.code) == ("filter.to", "OUT_OF_RANGE")


def per_bucket(rows: list[Any]) -> dict[tuple[str, int | None], list[tuple[float, ...]]]:
    series: dict[tuple[str, int | None], list[tuple[float, ...]]] = {}
    for r in rows:
        series.setdefault((r.cp_id, r.connector_id), []).append(
            (r.window_seconds / H, r.first_seconds / H, r.second_seconds / H))
    return series


async def test_utilization_per_day(history: History) -> None:
    rows = await history.services.analytics.utilization(
        history.viewer("admin"), Scope(), WINDOW_FROM, WINDOW_TO, True, Bucket.DAY,
        "Europe/Berlin")
    assert [r.start for r in rows[:3]] == DAYS
    assert per_bucket(rows) == {
        ("S1", 1): [(24.0, 0.5, 0.5), (23.0, 1.5, 1.5), (24.0, 0.0, 0.0)],
        ("S1", 2): [(24.0, 0.0, 0.0), (23.0, 2.0, 2.0), (24.0, 0.0, 0.0)],
        ("S2", 1): [(24.0, 0.0, 0.0), (23.0, 0.0, 0.0), (24.0, 1.0, 0.0)]}
    stations = await history.services.analytics.utilization(
        history.viewer("op_a"), Scope(), WINDOW_FROM, WINDOW_TO, False, Bucket.DAY,
        "Europe/Berlin")
    assert per_bucket(stations) == {
        ("S1", None): [(48.0, 0.5, 0.5), (46.0, 3.5, 3.5), (48.0, 0.0, 0.0)]}


async def test_availability_per_day_adds_up_to_the_window(history: History) -> None:
    analytics, admin = history.services.analytics, history.viewer("admin")
    rows = await analytics.availability(admin, Scope(), WINDOW_FROM, WINDOW_TO, True,
                                        Bucket.DAY, "Europe/Berlin")
    assert per_bucket(rows) == {
        ("S1", 1): [(24.0, 1.0, 1.0), (23.0, 23.0, 23.0), (24.0, 2.0, 24.0)],
        ("S1", 2): [(24.0, 1.0, 1.0), (23.0, 21.0, 23.0), (24.0, 2.0, 24.0)],
        ("S2", 1): [(24.0, 1.0, 1.0), (23.0, 23.0, 23.0), (24.0, 22.0, 24.0)]}
    whole = per_bucket(await analytics.availability(admin, Scope(), WINDOW_FROM, WINDOW_TO,
                                                    True))
    for key, days in per_bucket(rows).items():
        assert tuple(map(sum, zip(*days, strict=True))) == whole[key][0], key
    # No history to see, no rows, per bucket as for the window.
    assert await analytics.availability(history.viewer("driver1"), Scope(), WINDOW_FROM,
                                        WINDOW_TO, True, Bucket.DAY) == []


async def test_each_bucket_is_capped_to_itself_and_ends_now(history: History) -> None:
    """R1 #1's sessions overlap (its clock stepped back: 14:00 → 15:00 and 14:30 →
    15:10): each hour is occupied at most the hour. Asked at 15:40, the 15:00 hour is 40
    minutes long and the hours after it empty."""
    await overlapping_sessions_on_r1(history)
    rows = await history.services.analytics.utilization(
        history.viewer("admin"), Scope(cp_ids=("R1",)), at_31(14), at_31(17), True,
        Bucket.HOUR)
    assert [(r.start, r.window_seconds / H, r.first_seconds / H) for r in rows
            if r.connector_id == 1] == [
        (at_31(14), 1.0, 1.0), (at_31(15), pytest.approx(2 / 3), pytest.approx(1 / 6)),
        (at_31(16), 0.0, 0.0)]


async def test_a_bucket_starting_before_the_window_counts_from_the_window(
        history: History) -> None:
    """From 14:30, asked at 16:00: the 14:00 hour is its last half (of two connectors),
    wholly occupied."""
    await two_plug_station(history)
    history.clock.now = at_31(16)
    rows = await history.services.analytics.utilization(
        history.viewer("admin"), Scope(cp_ids=("R1",)), at_31(14, 30), at_31(16), False,
        Bucket.HOUR)
    assert [(r.start, r.window_seconds / H, r.first_seconds / H) for r in rows] == [
        (at_31(14), 1.0, 1.0), (at_31(15), 2.0, 0.0)]


async def test_bucketed_shares_are_bounded_and_budgeted(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    analytics, admin = history.services.analytics, history.viewer("admin")
    monkeypatch.setattr(analytics_module, "MAX_CELLS", 200)
    assert len(await analytics.utilization(admin, Scope(), WINDOW_FROM, WINDOW_TO, False,
                                           Bucket.HOUR)) == 142
    for query in (analytics.utilization, analytics.availability):
        with pytest.raises(ValidationError) as refused:
            await query(admin, Scope(), WINDOW_FROM, WINDOW_TO, True, Bucket.HOUR)
        assert (refused.value.field, refused.value.code) == ("bucket", "TOO_MANY")
    budget = BucketBudget(left=70)  # 71 hours
    with pytest.raises(ValidationError) as spent:
        await analytics.availability(admin, Scope(), WINDOW_FROM, WINDOW_TO, False,
                                     Bucket.HOUR, budget=budget)
    assert spent.value.code == "QUERY_TOO_COMPLEX"
    with pytest.raises(ValidationError) as zone:
        await analytics.utilization(admin, Scope(), WINDOW_FROM, WINDOW_TO, False,
                                    Bucket.DAY, "Mars/Olympus")
    assert zone.value.field == "timeZone"


async def test_the_request_budget_counts_every_row_grouped_or_per_connector(
        history: History) -> None:
    """QA: the request's budget counted buckets, not rows: a trend grouped per connector
    or a share per connector spent one bucket for each of its stations' or connectors'
    rows, and twenty aliases of 10,000 rows each (200,000, 18 MB) held the event loop
    for seconds while the budget read 10,000. 71 hours by connector are 213 rows."""
    analytics, admin = history.services.analytics, history.viewer("admin")
    for query in (analytics.utilization, analytics.availability):
        enough = BucketBudget(left=213)
        assert len(await query(admin, Scope(), WINDOW_FROM, WINDOW_TO, True, Bucket.HOUR,
                               budget=enough)) == 213
        assert enough.left == 0
        with pytest.raises(ValidationError) as spent:
            await query(admin, Scope(), WINDOW_FROM, WINDOW_TO, True, Bucket.HOUR,
                        budget=BucketBudget(left=212))
        assert (spent.value.field, spent.value.code) == ("bucket", "QUERY_TOO_COMPLEX")
    # Grouped per connector: S1's two and S2's one have figures, 3 days each.
    enough = BucketBudget(left=9)
    assert len(await analytics.energy_trend(
        admin, Scope(), WINDOW_FROM, WINDOW_TO, Bucket.DAY, "Europe/Berlin",
        budget=enough, group_by=GroupBy.CONNECTOR)) == 9
    assert enough.left == 0
    with pytest.raises(ValidationError) as spent:
        await analytics.energy_trend(
            admin, Scope(), WINDOW_FROM, WINDOW_TO, Bucket.DAY, "Europe/Berlin",
            budget=BucketBudget(left=8), group_by=GroupBy.CONNECTOR)
    assert (spent.value.field, spent.value.code) == ("groupBy", "QUERY_TOO_COMPLEX")


async def test_bucketed_shares_refuse_drivers_filters(history: History) -> None:
    analytics, admin = history.services.analytics, history.viewer("admin")
    with pytest.raises(ValidationError) as refused:
        await analytics.utilization(admin, Scope(user_id=history.users["driver1"].id),
                                    WINDOW_FROM, WINDOW_TO, False, Bucket.DAY)
    assert (refused.value.field, refused.value.code) == ("filter.userId", "UNSUPPORTED")




async def test_buckets_summed_a_few_per_query_give_the_same_rows(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    analytics, admin = history.services.analytics, history.viewer("admin")
    whole = await analytics.availability(admin, Scope(), WINDOW_FROM, WINDOW_TO, True,
                                         Bucket.HOUR, "Europe/Berlin")
    monkeypatch.setattr(analytics_module, "SPANS_PER_QUERY", 4)  # 71 hours: 18 queries
    assert await analytics.availability(admin, Scope(), WINDOW_FROM, WINDOW_TO, True,
                                        Bucket.HOUR, "Europe/Berlin") == whole
    assert sum(r.first_seconds for r in whole) / H == 26.0 + 24.0 + 46.0
