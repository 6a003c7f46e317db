"""Analytics over the scripted history (``tests/support/history.py``), on every backend,
compared with figures worked out by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest

import domain.services.charger_connections as connections
import domain.services.charging as charging_module
import domain.services.intervals as intervals
import domain.services.stations as stations_module
from domain import entities as d
from domain.entities import Connector
from domain.errors import Unauthenticated
from domain.policy import ANONYMOUS, SYSTEM, Policy
from domain.ports import Delete, Insert, Store
from domain.query import Eq, all_of
from domain.services import ConnectorSpec, ServiceContext, Services
from domain.services.analytics import Scope
from domain.services.base import patch
from domain.timebuckets import Bucket
from tests.helpers import FastHasher
from tests.support.history import (
    WINDOW_FROM,
    WINDOW_TO,
    H,
    History,
    build_history,
    register,
    utc,
)


@pytest.fixture
async def history(store: Store) -> History:
    return await build_history(store)


async def trend(h: History, who: str) -> list[tuple[str, int, int, int]]:
    buckets = await h.services.analytics.energy_trend(
        h.viewer(who), Scope(), WINDOW_FROM, WINDOW_TO, Bucket.DAY, "Europe/Berlin")
    return [(b.start.isoformat(), b.energy_wh, b.sessions, b.revenue_minor) for b in buckets]


async def test_energy_trend_per_role(history: History) -> None:
    days = ["2026-03-27T23:00:00+00:00", "2026-03-28T23:00:00+00:00",
            "2026-03-29T22:00:00+00:00"]  # Berlin midnights; the 30th starts in summer time
    assert await trend(history, "admin") == [
        (days[0], 2000, 1, 0), (days[1], 27000, 1, 870), (days[2], 5000, 1, 0)]
    assert await trend(history, "op_a") == [
        (days[0], 2000, 1, 0), (days[1], 27000, 1, 870), (days[2], 0, 0, 0)]
    assert await trend(history, "op_b") == [
        (days[0], 0, 0, 0), (days[1], 0, 0, 0), (days[2], 5000, 1, 0)]
    assert await trend(history, "driver1") == [
        (days[0], 2000, 1, 0), (days[1], 5000, 0, 210), (days[2], 5000, 1, 0)]
    assert await trend(history, "driver2") == [
        (days[0], 0, 0, 0), (days[1], 22000, 1, 660), (days[2], 0, 0, 0)]


async def test_energy_follows_the_books_of_its_sessions_after_a_hand_over(
        history: History) -> None:
    """QA: after S1 went from A to B, A's trend read 0 kWh for its own sessions, B read
    energy of sessions it has no record of, and B's trend filtered by a driver it cannot
    see told that driver's energy. Samples of a session are in its books, as the session
    and its revenue are."""
    before = {who: await trend(history, who) for who in ("op_a", "op_b")}
    b = history.users["op_b"].company_id
    await history.services.stations.update_station(SYSTEM, history.stations["S1"].id,
                                                   company_id=b)
    for who in ("op_a", "op_b"):
        assert await trend(history, who) == before[who], who
    analytics = history.services.analytics
    hidden = await analytics.energy_trend(
        history.viewer("op_b"), Scope(user_id=history.users["driver2"].id), WINDOW_FROM,
        WINDOW_TO, Bucket.WEEK, "Europe/Berlin")
    assert [x.energy_wh for x in hidden] == [0, 0]
    # A company's energy is that of the sessions in its books, as its revenue is.
    a = history.users["op_a"].company_id
    by_company = await analytics.energy_trend(
        history.viewer("admin"), Scope(company_id=a), WINDOW_FROM, WINDOW_TO, Bucket.WEEK,
        "Europe/Berlin")
    assert [(x.energy_wh, x.sessions, x.revenue_minor) for x in by_company] == [
        (29000, 2, 870), (0, 0, 0)]


async def test_a_driver_learns_from_no_figure_who_runs_a_station(history: History) -> None:
    """QA: overview(filter: {companyId, cpIds}) counted S1 for A and not for B, telling a
    driver who runs it (a station's company is hidden from drivers). A company filter
    matches only what the viewer may know the company of: for a driver, nothing."""
    analytics, a = history.services.analytics, history.users["op_a"].company_id
    b = history.users["op_b"].company_id
    for company in (a, b):
        seen = await analytics.overview(history.viewer("driver1"),
                                        Scope(company_id=company, cp_ids=("S1",)))
        assert (seen.stations_online + seen.stations_offline, seen.connectors_by_status) \
            == (0, {}), company
        days = await analytics.energy_trend(
            history.viewer("driver1"), Scope(company_id=company), WINDOW_FROM, WINDOW_TO,
            Bucket.WEEK, "Europe/Berlin")
        assert [(x.energy_wh, x.sessions) for x in days] == [(0, 0), (0, 0)], company
    known = await analytics.overview(history.viewer("op_a"), Scope(company_id=a,
                                                                   cp_ids=("S1",)))
    assert known.stations_online + known.stations_offline == 1


async def test_energy_trend_hourly_across_the_switch(history: History) -> None:
    buckets = await history.services.analytics.energy_trend(
        history.viewer("admin"), Scope(cp_ids=("S1",)), utc(28, 22), utc(29, 2), Bucket.HOUR,
        "Europe/Berlin")
    assert [(b.start.isoformat(), b.energy_wh) for b in buckets] == [
        ("2026-03-28T22:00:00+00:00", 2000), ("2026-03-28T23:00:00+00:00", 4000),
        ("2026-03-29T00:00:00+00:00", 1000), ("2026-03-29T01:00:00+00:00", 0)]


async def test_energy_trend_filters(history: History) -> None:
    admin = history.viewer("admin")
    by_user = await history.services.analytics.energy_trend(
        admin, Scope(user_id=history.users["driver2"].id), WINDOW_FROM, WINDOW_TO, Bucket.WEEK,
        "Europe/Berlin")
    assert [(b.start.isoformat(), b.energy_wh) for b in by_user] == [
        ("2026-03-22T23:00:00+00:00", 22000), ("2026-03-29T22:00:00+00:00", 0)]
    by_station = await history.services.analytics.energy_trend(
        admin, Scope(station_ids=(history.stations["S2"].id,)), WINDOW_FROM, WINDOW_TO,
        Bucket.MONTH, "Europe/Berlin")
    assert [(b.start.isoformat(), b.energy_wh, b.sessions) for b in by_station] == [
        ("2026-02-28T23:00:00+00:00", 5000, 1)]


def shares(rows: list[Any], attribute: str) -> dict[tuple[str, int | None], float]:
    return {(r.cp_id, r.connector_id): round(getattr(r, attribute) / H, 3) for r in rows}


async def test_utilization(history: History) -> None:
    rows = await history.services.analytics.utilization(
        history.viewer("admin"), Scope(), WINDOW_FROM, WINDOW_TO, by_connector=False)
    assert shares(rows, "first_seconds") == {("S1", None): 4.0, ("S2", None): 1.0}
    assert shares(rows, "second_seconds") == {("S1", None): 4.0, ("S2", None): 0.0}
    assert {r.cp_id: r.window_seconds / H for r in rows} == {"S1": 142.0, "S2": 71.0}
    by_connector = await history.services.analytics.utilization(
        history.viewer("op_a"), Scope(), WINDOW_FROM, WINDOW_TO, by_connector=True)
    assert shares(by_connector, "first_seconds") == {("S1", 1): 2.0, ("S1", 2): 2.0}
    assert by_connector[0].share(by_connector[0].first_seconds) == pytest.approx(2 / 71)


async def test_availability(history: History) -> None:
    rows = await history.services.analytics.availability(
        history.viewer("admin"), Scope(), WINDOW_FROM, WINDOW_TO, by_connector=True)
    # S1 c1: online 22:00 (28th) → offline 00:00 (30th) = 26 h; c2 the same minus its 2 h
    # fault; S2 c1: online from 22:00 (28th) to the window's end minus the open fault.
    assert shares(rows, "first_seconds") == {("S1", 1): 26.0, ("S1", 2): 24.0,
                                             ("S2", 1): 46.0}
    op_b = await history.services.analytics.availability(
        history.viewer("op_b"), Scope(), WINDOW_FROM, WINDOW_TO, by_connector=False)
    assert shares(op_b, "first_seconds") == {("S2", None): 46.0}


async def test_no_rows_without_the_state_history(history: History) -> None:
    # Drivers see every connector's live status but no station's state history: rows of
    # 0 seconds available or charging would read as measured.
    store = history.services.ctx.store
    driver = history.viewer("driver1")
    assert await store.count(Connector, history.services.ctx.policy.scope(
        driver, "connector")) == 3
    analytics = history.services.analytics
    for group_by_connector in (False, True):
        for query in (analytics.availability, analytics.utilization):
            assert await query(driver, Scope(), WINDOW_FROM, WINDOW_TO,
                               group_by_connector) == [], query
    # Their own charging stays in the energy trend.
    assert (await trend(history, "driver1"))[0][1] == 2000


async def test_analytics_are_for_signed_in_viewers(history: History) -> None:
    # The public map shows stations and their live status, not analytics: anyone not
    # signed in is told to sign in, as by the energy trend, rather than given zeros or
    # empty lists that read as measured.
    public = Services(ServiceContext(store=history.services.ctx.store,
                                     policy=Policy(public_map=True), hasher=FastHasher(),
                                     clock=history.clock))
    assert await history.services.ctx.store.count(
        Connector, public.ctx.policy.scope(ANONYMOUS, "connector")) == 3
    analytics = public.analytics
    queries: list[Callable[[], Awaitable[object]]] = [
        lambda: analytics.overview(ANONYMOUS, Scope(), "Europe/Berlin"),
        lambda: analytics.utilization(ANONYMOUS, Scope(), WINDOW_FROM, WINDOW_TO, False),
        lambda: analytics.availability(ANONYMOUS, Scope(), WINDOW_FROM, WINDOW_TO, True),
        lambda: analytics.fault_reports(ANONYMOUS, Scope(), WINDOW_FROM, WINDOW_TO),
        lambda: analytics.energy_trend(ANONYMOUS, Scope(), WINDOW_FROM, WINDOW_TO,
                                       Bucket.DAY)]
    for query in queries:
        with pytest.raises(Unauthenticated, match="sign in first"):
            await query()


async def test_fault_reports(history: History) -> None:
    groups = await history.services.analytics.fault_reports(
        history.viewer("admin"), Scope(), WINDOW_FROM, WINDOW_TO)
    assert [(g.cp_id, g.connector_id, g.error_code, g.count, g.first_seen, g.last_seen,
             g.duration_seconds / H, g.open) for g in groups] == [
        ("S1", 2, "GroundFailure", 1, utc(29, 14), utc(29, 14), 2.0, False),
        ("S2", 1, "OverCurrentFailure", 1, utc(30, 20), utc(30, 20), 2.0, True)]
    op_b = await history.services.analytics.fault_reports(
        history.viewer("op_b"), Scope(), WINDOW_FROM, WINDOW_TO)
    assert [g.cp_id for g in op_b] == ["S2"]
    assert await history.services.analytics.fault_reports(
        history.viewer("driver1"), Scope(), WINDOW_FROM, WINDOW_TO) == []


async def test_fault_reports_count_faults_carried_into_the_window(history: History) -> None:
    faults = history.services.analytics.fault_reports

    def rows(groups: list[Any]) -> list[tuple[Any, ...]]:
        return [(g.cp_id, g.connector_id, g.error_code, g.count, g.first_seen, g.last_seen,
                 g.duration_seconds / H, g.open) for g in groups]

    # From 15:00 on the 29th: S1 c2's ground fault (14:00 → 16:00) ends inside the window,
    # S2's over-current fault (from 20:00 on the 30th) is reported inside it.
    admin = history.viewer("admin")
    assert rows(await faults(admin, Scope(), utc(29, 15), utc(31, 12))) == [
        ("S1", 2, "GroundFailure", 0, utc(29, 14), utc(29, 14), 1.0, False),
        ("S2", 1, "OverCurrentFailure", 1, utc(30, 20), utc(30, 20), 16.0, True)]
    # The day after: S2's fault is still going, with no new report.
    next_day = (utc(31, 0), utc(31, 12))
    assert rows(await faults(admin, Scope(), *next_day)) == [
        ("S2", 1, "OverCurrentFailure", 0, utc(30, 20), utc(30, 20), 12.0, True)]
    assert [g.cp_id for g in await faults(history.viewer("op_b"), Scope(), *next_day)] \
        == ["S2"]
    for who in ("op_a", "driver1"):  # not their station, or no station history at all
        assert await faults(history.viewer(who), Scope(), *next_day) == [], who
    assert await faults(admin, Scope(cp_ids=("S1",)), *next_day) == []
    # A window after a fault cleared has no group for it.
    assert await faults(admin, Scope(cp_ids=("S1",)), utc(29, 16), utc(30, 0)) == []


async def test_a_code_ocpp_has_not_is_one_fault_group_with_other_error(
        history: History) -> None:
    """Review s30: groups were made by the stored code, so OtherError and a code OCPP
    1.6 has not (a row written by another tool, read as OtherError: ``ocpp16.member``)
    were two groups, both shown OTHER_ERROR. They are one, their reports and time
    added up."""
    charging = history.services.charging
    for hour, status, code in ((13, "Faulted", "Glitch"), (14, "Faulted", "OtherError"),
                               (15, "Available", "NoError")):
        history.clock.now = utc(31, hour)
        await charging.status_notification("S2", 1, status, code, timestamp=utc(31, hour))
    history.clock.now = utc(31, 16)
    groups = await history.services.analytics.fault_reports(
        history.viewer("admin"), Scope(), utc(31, 13), utc(31, 16))
    assert [(g.cp_id, g.connector_id, g.error_code, g.count, g.first_seen, g.last_seen,
             g.duration_seconds / H, g.open) for g in groups] == [
        ("S2", 1, "OtherError", 2, utc(31, 13), utc(31, 14), 2.0, False)]


async def test_carried_fault_first_seen_is_its_report_across_a_disconnect(
        history: History) -> None:
    # S2 drops offline at 12:00 on the 31st, still faulted: its state interval starts
    # again then, but the fault was reported at 20:00 the day before.
    await history.services.charging.set_online("S2", False)
    history.clock.now = utc(31, 14)
    faults = history.services.analytics.fault_reports
    [group] = await faults(history.viewer("admin"), Scope(), utc(31, 13), utc(31, 14))
    assert (group.cp_id, group.error_code, group.count, group.first_seen, group.last_seen,
            group.duration_seconds, group.offline_seconds, group.open) == (
        "S2", "OverCurrentFailure", 0, utc(30, 20), utc(30, 20), H, H, True)
    # A window after "now" has had no time in the fault yet.
    assert await faults(history.viewer("admin"), Scope(), utc(31, 15), utc(31, 16)) == []


async def test_overview(history: History) -> None:
    overview = await history.services.analytics.overview(history.viewer("admin"), Scope(),
                                                         "Europe/Berlin")
    assert (overview.stations_online, overview.stations_offline) == (1, 1)
    # S1 is offline: its two connectors, last reported Available, are not advertised
    # as such; each connector counts once.
    assert overview.connectors_by_status == {"OFFLINE": 2, "FAULTED": 1}
    history.clock.now = utc(31, 13)
    await history.services.charging.set_online("S1", True)  # back: as last reported
    overview = await history.services.analytics.overview(history.viewer("admin"), Scope(),
                                                         "Europe/Berlin")
    assert overview.connectors_by_status == {"AVAILABLE": 2, "FAULTED": 1}
    history.clock.now = utc(31, 12)
    assert overview.active_sessions == 0
    assert overview.energy_today_wh == 0 and overview.revenue_today == {}
    history.clock.now = utc(29, 20)  # "today" is now the 29th in Berlin
    overview = await history.services.analytics.overview(history.viewer("op_a"), Scope(),
                                                         "Europe/Berlin")
    assert overview.energy_today_wh == 27000
    assert overview.revenue_today == {"EUR": 870}


async def test_overview_counts_a_station_down_as_a_whole_under_its_status(
        history: History) -> None:
    """QA: S1 back online, its charger reported connector 0 Unavailable (taken out of
    service) and then Faulted, its plugs still saying Available: the overview counted
    both as AVAILABLE, while availability, the map's ``availableNow`` and the plugs'
    state history all had them unusable. They count under the charge point's status,
    as the state history records them (``intervals.effective_state``)."""
    history.clock.now = utc(31, 13)
    charging, admin = history.services.charging, history.viewer("admin")
    await charging.set_online("S1", True)
    await charging.status_notification("S1", 0, "Unavailable", "NoError",
                                       timestamp=utc(31, 13))
    overview = await history.services.analytics.overview(admin, Scope())
    assert overview.connectors_by_status == {"UNAVAILABLE": 2, "FAULTED": 1}
    await charging.status_notification("S1", 0, "Faulted", "InternalError",
                                       timestamp=utc(31, 13, 5))
    overview = await history.services.analytics.overview(admin, Scope())
    assert overview.connectors_by_status == {"FAULTED": 3}
    await charging.status_notification("S1", 0, "Available", "NoError",
                                       timestamp=utc(31, 13, 10))
    overview = await history.services.analytics.overview(admin, Scope())
    assert overview.connectors_by_status == {"AVAILABLE": 2, "FAULTED": 1}


async def test_overview_energy_today_ends_at_midnight(history: History) -> None:
    # "Today" (the 29th in Berlin) ends at the next local midnight, as its revenue does:
    # the session on S2 metered on the 30th is not today's energy, so the overview and
    # the energy trend's day agree.
    history.clock.now = utc(29, 20)
    admin = history.viewer("admin")
    overview = await history.services.analytics.overview(admin, Scope(), "Europe/Berlin")
    [day] = await history.services.analytics.energy_trend(
        admin, Scope(), utc(28, 23), utc(29, 22), Bucket.DAY, "Europe/Berlin")
    assert overview.energy_today_wh == day.energy_wh == 27000


def at_31(hour: int, minute: int = 0) -> datetime:
    return utc(31, hour, minute)


async def two_plug_station(h: History, company_id: str | None = None
                           ) -> tuple[d.Station, list[d.Connector]]:
    """R1, two connectors, online from 13:00 on the 31st; both charge 14:00 → 15:00
    (driver1 on 1, driver2 on 2)."""
    charging = h.services.charging
    h.clock.now = at_31(13)
    station, connectors = await h.services.stations.create_station(
        SYSTEM, cp_id="R1", name="R1", connectors=[ConnectorSpec(1), ConnectorSpec(2)],
        company_id=company_id)
    await charging.set_online("R1", True)
    for c in (1, 2):
        await charging.status_notification("R1", c, "Available", "NoError",
                                           timestamp=at_31(13))
    h.clock.now = at_31(14)
    transactions = []
    for c, tag in ((1, "TAG-driver1"), (2, "TAG-driver2")):
        tx, _ = await charging.start_transaction("R1", c, tag, 0, at_31(14))
        transactions.append(tx)
        await charging.status_notification("R1", c, "Charging", "NoError",
                                           timestamp=at_31(14))
    h.clock.now = at_31(15)
    for c, tx in zip((1, 2), transactions, strict=True):
        await charging.stop_transaction("R1", tx, 1000, at_31(15))
        await charging.status_notification("R1", c, "Available", "NoError",
                                           timestamp=at_31(15))
    return station, connectors


def figures(rows: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.connector_id, r.window_seconds / H, r.first_seconds / H, r.second_seconds / H,
             r.share(r.first_seconds)) for r in rows]


async def test_station_rows_are_the_sum_of_their_connectors_rows(history: History) -> None:
    station, connectors = await two_plug_station(history)
    analytics, admin = history.services.analytics, history.viewer("admin")
    r1 = Scope(cp_ids=("R1",))
    hour = (at_31(14), at_31(15))
    assert figures(await analytics.utilization(admin, r1, *hour, False)) == [
        (None, 2.0, 2.0, 2.0, 1.0)]
    # A removed connector keeps its rows of the time it was there (its history is in the
    # window): removing it rewrites no past figures, and the station row stays the sum
    # of the connector rows, shares within 0..1. A window after the removal has none.
    history.clock.now = at_31(16)
    await history.services.stations.remove_connector(SYSTEM, connectors[1].id)
    assert figures(await analytics.utilization(admin, r1, *hour, True)) == [
        (1, 1.0, 1.0, 1.0, 1.0), (2, 1.0, 1.0, 1.0, 1.0)]
    assert figures(await analytics.utilization(admin, r1, *hour, False)) == [
        (None, 2.0, 2.0, 2.0, 1.0)]
    history.clock.now = at_31(18)
    after = (at_31(17), at_31(18))
    assert figures(await analytics.availability(admin, r1, *after, False)) == [
        (None, 1.0, 1.0, 1.0, 1.0)]  # plug 1 alone, available and known the hour
    # Connector 2 is added again: the same plug, its history counts as before.
    await history.services.stations.add_connector(SYSTEM, station.id, ConnectorSpec(2))
    assert figures(await analytics.utilization(admin, r1, *hour, False)) == [
        (None, 2.0, 2.0, 2.0, 1.0)]


async def test_a_removed_plug_has_no_rows_in_the_buckets_after_its_removal(
        history: History) -> None:
    """R1's plug 2 removed at 16:00, plug 1 available all along. Asked hour by hour
    15:00 -> 19:00, a bucket after the removal reads as that hour asked alone: plug 1
    alone, 100 % available (README: "a plug removed by anyone keeps its rows of the
    windows it was there in, none after"); the removed plug has a row only in the bucket
    it was there in, and the whole window counts only its time there, so the buckets
    add up to it (review r27-analytics4: a zero row in every bucket after, 50 %)."""
    _, connectors = await two_plug_station(history)
    analytics, admin = history.services.analytics, history.viewer("admin")
    r1 = Scope(cp_ids=("R1",))
    history.clock.now = at_31(16)
    await history.services.stations.remove_connector(SYSTEM, connectors[1].id)
    history.clock.now = at_31(19)
    alone = figures(await analytics.availability(admin, r1, at_31(17), at_31(18), False))
    assert alone == [(None, 1.0, 1.0, 1.0, 1.0)]
    hourly = await analytics.availability(admin, r1, at_31(15), at_31(19), False,
                                          Bucket.HOUR)
    by_hour = {r.start: figures([r])[0] for r in hourly}
    assert by_hour[at_31(17)] == alone[0], by_hour
    per_plug = await analytics.availability(admin, r1, at_31(15), at_31(19), True,
                                            Bucket.HOUR)
    assert {r.start for r in per_plug if r.connector_id == 2} == {at_31(15)}
    whole = figures(await analytics.availability(admin, r1, at_31(15), at_31(19), False))
    assert whole == [(None, 5.0, 5.0, 5.0, 1.0)]  # plug 1's 4 hours, plug 2's 1


async def overlapping_sessions_on_r1(history: History) -> None:
    """``two_plug_station``, and R1's first connector a second session stamped 14:30 →
    15:10 after the first (14:00 → 15:00) stopped (the charger's clock stepped back half
    an hour: the start reaches us at 15:00, the stop at 15:40, 40 minutes our clock saw,
    as its stamps say); asked at 15:40."""
    await two_plug_station(history)
    charging = history.services.charging
    history.clock.now = at_31(15)
    tx, _ = await charging.start_transaction("R1", 1, "TAG-driver1", 0, at_31(14, 30))
    history.clock.now = at_31(15, 40)
    await charging.stop_transaction("R1", tx, 100, at_31(15, 10))


async def test_a_connector_is_at_most_the_whole_window(history: History) -> None:
    # R1's first connector gets a second session stamped 14:30 → 15:10 after the first
    # (14:00 → 15:00) stopped: the charger's clock stepped back. A connector is occupied
    # at most the whole window, whatever its sessions overlap.
    await overlapping_sessions_on_r1(history)
    rows = await history.services.analytics.utilization(
        history.viewer("admin"), Scope(cp_ids=("R1",)), at_31(14), at_31(15), True)
    assert figures(rows) == [(1, 1.0, 1.0, 1.0, 1.0), (2, 1.0, 1.0, 1.0, 1.0)]
    [station] = await history.services.analytics.utilization(
        history.viewer("admin"), Scope(cp_ids=("R1",)), at_31(14), at_31(15), False)
    assert station.share(station.first_seconds) == 1.0


async def test_removing_a_connector_ends_its_state_history(history: History) -> None:
    # R1 #2 faults at 15:30 and is removed at 16:00: its fault ends with it rather than
    # staying open (and growing) in every fault report from then on.
    _, connectors = await two_plug_station(history)
    history.clock.now = at_31(15, 30)
    await history.services.charging.status_notification(
        "R1", 2, "Faulted", "GroundFailure", timestamp=at_31(15, 30))
    history.clock.now = at_31(16)
    await history.services.stations.remove_connector(SYSTEM, connectors[1].id)
    history.clock.now = at_31(20)
    groups = await history.services.analytics.fault_reports(
        history.viewer("admin"), Scope(cp_ids=("R1",)), at_31(13), at_31(20))
    assert [(g.connector_id, g.error_code, g.count, g.duration_seconds / H, g.open)
            for g in groups] == [(2, "GroundFailure", 1, 0.5, False)]
    store = history.services.ctx.store
    assert await store.count(d.ConnectorInterval, all_of(
        Eq("cp_id", "R1"), Eq("connector_id", 2), Eq("end", None))) == 0
    # So does removing the station: none of its connectors' states stays open.
    await history.services.stations.remove_station(SYSTEM, connectors[0].station_id)
    assert await store.count(d.ConnectorInterval, all_of(
        Eq("cp_id", "R1"), Eq("end", None))) == 0


def fault_rows(groups: list[Any]) -> list[tuple[Any, ...]]:
    return [(g.connector_id, g.error_code, g.count, g.first_seen, g.duration_seconds / H,
             g.offline_seconds / H, g.open) for g in groups]


async def test_a_charger_wide_fault_is_one_group_on_connector_0(history: History) -> None:
    """R1's charge point reports PowerMeterFailure on connector 0 at 15:30 and goes
    offline at 16:00. That is one group, connector 0's, as long and as open as the
    station reports it; its connectors, which reported nothing of it, get no group of it
    (they used to: count 0, open, their time growing, while reporting NoError)."""
    await two_plug_station(history)
    charging, analytics = history.services.charging, history.services.analytics
    admin, r1 = history.viewer("admin"), Scope(cp_ids=("R1",))
    history.clock.now = at_31(15, 10)  # connector 1's own fault, before the point's
    await charging.status_notification("R1", 1, "Faulted", "GroundFailure",
                                       timestamp=at_31(15, 10))
    history.clock.now = at_31(15, 30)
    await charging.status_notification("R1", 0, "Faulted", "PowerMeterFailure",
                                       timestamp=at_31(15, 30))
    history.clock.now = at_31(16)
    await charging.set_online("R1", False)
    history.clock.now = at_31(17)
    # The point's fault stays open while the station is away (its last report stands),
    # its offline hour counted and told apart. Connector 1 still reports its own fault;
    # its time is the 20 minutes before the point went down (then it was the point's).
    assert fault_rows(await analytics.fault_reports(admin, r1, at_31(13), at_31(17))) == [
        (0, "PowerMeterFailure", 1, at_31(15, 30), 1.5, 1.0, True),
        (1, "GroundFailure", 1, at_31(15, 10), 1 / 3, 0.0, True)]
    [station] = await history.services.ctx.store.find_all(d.Station, Eq("cp_id", "R1"))
    assert (station.status, station.error_code) == (d.ConnectorStatus.FAULTED,
                                                    "PowerMeterFailure")
    # Carried into a later window: count 0, its time in that window, still open.
    assert fault_rows(await analytics.fault_reports(admin, r1, at_31(16), at_31(17))) == [
        (0, "PowerMeterFailure", 0, at_31(15, 30), 1.0, 1.0, True)]
    # Back at 18:00, the charger clears both: the point's fault ended then.
    history.clock.now = at_31(18)
    await charging.set_online("R1", True)
    for c in (0, 1):
        await charging.status_notification("R1", c, "Available", "NoError",
                                           timestamp=at_31(18))
    history.clock.now = at_31(19)
    assert fault_rows(await analytics.fault_reports(admin, r1, at_31(13), at_31(19))) == [
        (0, "PowerMeterFailure", 1, at_31(15, 30), 2.5, 2.0, False),
        (1, "GroundFailure", 1, at_31(15, 10), 1 / 3, 0.0, False)]
    # Availability still counts the point's outage against every connector.
    rows = await analytics.availability(admin, r1, at_31(15), at_31(19), True)
    assert shares(rows, "first_seconds") == {("R1", 1): 1.167, ("R1", 2): 1.5}


async def test_state_history_from_before_the_point_state_counts_as_the_connectors(
        history: History) -> None:
    """An interval recorded before the charge point's state was kept beside it (SQLite
    migration 19; a MongoDB document without the keys) has none: which of them were the
    point's is not known, so it counts as the connector's own, as it always did."""
    station, _ = await two_plug_station(history)
    store = history.services.ctx.store
    await store.write([Insert(d.ConnectorInterval(
        station_id=station.id, cp_id="R1", connector_id=2,
        status=d.ConnectorStatus.FAULTED, error_code="HighTemperature", online=True,
        start=at_31(12), end=at_31(12, 30)))], [])
    groups = await history.services.analytics.fault_reports(
        history.viewer("admin"), Scope(cp_ids=("R1",)), at_31(12), at_31(13))
    assert fault_rows(groups) == [(2, "HighTemperature", 0, at_31(12), 0.5, 0.0, False)]


async def test_a_warning_on_connector_0_is_timed_like_any_fault(history: History) -> None:
    """An error code the point reports while Available (a warning: its plugs go on
    charging) is connector 0's group with its time, open while reported, and leaves the
    connectors' own groups and availability alone."""
    await two_plug_station(history)
    charging, analytics = history.services.charging, history.services.analytics
    admin, r1 = history.viewer("admin"), Scope(cp_ids=("R1",))
    history.clock.now = at_31(16)
    await charging.status_notification("R1", 0, "Available", "WeakSignal",
                                       timestamp=at_31(16))
    history.clock.now = at_31(17)
    assert fault_rows(await analytics.fault_reports(admin, r1, at_31(13), at_31(17))) == [
        (0, "WeakSignal", 1, at_31(16), 1.0, 0.0, True)]
    rows = await analytics.availability(admin, r1, at_31(16), at_31(17), True)
    assert shares(rows, "first_seconds") == {("R1", 1): 1.0, ("R1", 2): 1.0}


async def test_a_faulted_status_is_a_fault_whatever_its_error_code(history: History
                                                                   ) -> None:
    """QA ops s7: Faulted with errorCode NoError (the cause in vendorErrorCode and info
    only) was down for availability and in no fault report. It is the group of error
    code NoError, timed, open while reported and carried into a later window, on a
    connector as on the charge point; its events carry the charger's code and text."""
    await two_plug_station(history)
    charging, analytics = history.services.charging, history.services.analytics
    admin, r1 = history.viewer("admin"), Scope(cp_ids=("R1",))
    history.clock.now = at_31(15)
    await charging.status_notification("R1", 1, "Faulted", "NoError", timestamp=at_31(15),
                                       vendor_error_code="E-017", info="contactor welded")
    history.clock.now = at_31(15, 30)
    await charging.status_notification("R1", 0, "Faulted", "NoError",
                                       timestamp=at_31(15, 30))
    history.clock.now = at_31(16)
    assert fault_rows(await analytics.fault_reports(admin, r1, at_31(13), at_31(16))) == [
        (0, "NoError", 1, at_31(15, 30), 0.5, 0.0, True),
        (1, "NoError", 1, at_31(15), 0.5, 0.0, True)]  # then it was the point's
    history.clock.now = at_31(17)
    for c in (0, 1):
        await charging.status_notification("R1", c, "Available", "NoError",
                                           timestamp=at_31(17))
    history.clock.now = at_31(18)
    # Carried into a later window: the point's hour in it (connector 1 had none of its
    # own there: the point was down).
    assert fault_rows(await analytics.fault_reports(admin, r1, at_31(16), at_31(18))) == [
        (0, "NoError", 0, at_31(15, 30), 1.0, 0.0, False)]
    events = await history.services.ctx.store.find_all(
        d.StatusEvent, analytics.fault_events_filter(r1, at_31(13), at_31(18)))
    assert sorted((e.connector_id, e.status, e.vendor_error_code, e.info)
                  for e in events) == [
        (0, d.ConnectorStatus.FAULTED, None, None),
        (1, d.ConnectorStatus.FAULTED, "E-017", "contactor welded")]
    rows = await analytics.availability(admin, r1, at_31(15), at_31(17), True)
    assert shares(rows, "first_seconds") == {("R1", 1): 0.0, ("R1", 2): 0.5}


async def test_hourly_energy_across_a_half_hour_clock_change(history: History) -> None:
    # Lord Howe moves from +10:30 to +11:00 at 02:00 local on 2026-10-04 (15:30 UTC on
    # the 3rd). Readings at 15:10, 15:40 and 16:10 UTC and a stop at 16:20 fall into the
    # local hours 01:00, 02:30 (a half hour) and 03:00; the hours add up to the day.
    charging = history.services.charging
    october = datetime(2026, 10, 3, 14, 50, tzinfo=UTC)
    history.clock.now = october
    await history.services.stations.create_station(SYSTEM, cp_id="LH", name="LH",
                                                   connectors=[ConnectorSpec(1)])
    tx, _ = await charging.start_transaction("LH", 1, "TAG-driver1", 0, october)
    for minutes, wh in ((20, 500), (50, 1000), (80, 1500)):
        history.clock.now = october + timedelta(minutes=minutes)
        await charging.meter_values("LH", 1, tx, register(wh, history.clock.now))
    history.clock.now = october + timedelta(minutes=90)
    await charging.stop_transaction("LH", tx, 1900, history.clock.now)
    day = (datetime(2026, 10, 3, 13, 30, tzinfo=UTC), datetime(2026, 10, 4, 13, tzinfo=UTC))
    trend = history.services.analytics.energy_trend
    admin, lh = history.viewer("admin"), Scope(cp_ids=("LH",))
    [whole_day] = await trend(admin, lh, *day, Bucket.DAY, "Australia/Lord_Howe")
    hours = await trend(admin, lh, *day, Bucket.HOUR, "Australia/Lord_Howe")
    assert whole_day.energy_wh == sum(h.energy_wh for h in hours) == 1900
    tz = ZoneInfo("Australia/Lord_Howe")
    assert [(h.start.astimezone(tz).isoformat()[11:], h.energy_wh) for h in hours[:5]] == [
        ("00:00:00+10:30", 0), ("01:00:00+10:30", 500), ("02:30:00+11:00", 500),
        ("03:00:00+11:00", 900), ("04:00:00+11:00", 0)]
    # A day of 23½ hours: every local hour from 00 to 23, hour 02 the half.
    assert [h.start.astimezone(tz).hour for h in hours] == list(range(24))


async def test_shares_are_of_the_window_up_to_now(history: History) -> None:
    """"Today" asked at 15:00 is the hours so far: a connector charging all of them reads
    1.0, not the 0.2 of a day that has not happened (the window used to run to its end)."""
    await two_plug_station(history)
    history.clock.now = at_31(15)
    analytics, admin, r1 = history.services.analytics, history.viewer("admin"), \
        Scope(cp_ids=("R1",))
    rows = await analytics.utilization(admin, r1, at_31(14), at_31(19), True)
    assert figures(rows) == [(1, 1.0, 1.0, 1.0, 1.0), (2, 1.0, 1.0, 1.0, 1.0)]
    [station] = await analytics.availability(admin, r1, at_31(14), at_31(19), False)
    assert (station.window_seconds / H, station.share(station.first_seconds)) == (2.0, 1.0)
    # A window wholly ahead of now has nothing to share yet.
    [ahead] = await analytics.utilization(admin, r1, at_31(16), at_31(18), False)
    assert (ahead.window_seconds, ahead.share(ahead.first_seconds)) == (0.0, 0.0)


async def test_availability_tells_the_time_nothing_was_known(history: History) -> None:
    """R1 was added and came online at 13:00: of a window from 11:00 to 17:00 its
    connectors were available 4 of 6 hours, but their state was known only for those 4
    (it used to be indistinguishable from 2 hours down). Offline time is known time."""
    await two_plug_station(history)
    analytics, admin, r1 = history.services.analytics, history.viewer("admin"), \
        Scope(cp_ids=("R1",))
    history.clock.now = at_31(17)
    await history.services.charging.set_online("R1", False)
    history.clock.now = at_31(18)
    rows = await analytics.availability(admin, r1, at_31(11), at_31(18), True)
    assert [(r.connector_id, r.window_seconds / H, r.first_seconds / H, r.second_seconds / H)
            for r in rows] == [(1, 7.0, 4.0, 5.0), (2, 7.0, 4.0, 5.0)]
    [station] = await analytics.availability(admin, r1, at_31(11), at_31(18), False)
    assert (station.window_seconds / H, station.first_seconds / H,
            station.second_seconds / H) == (14.0, 8.0, 10.0)


async def test_a_station_handed_over_counts_for_its_new_company_from_the_handover(
        history: History) -> None:
    """R1 was A's when both plugs charged 14:00 → 15:00 and plug 1 was faulted
    15:30 → 15:45 (and reported it late for 13:30); handed to B at 16:00. B runs it from
    16:00 only: of 13:00 → 17:00 it reads none of A's occupancy, charging or fault, and
    the three hours before it ran the station are unknown to it, as if the station had
    joined its network then (it used to read A's drivers' hour of occupancy, A's
    charging and A's fault). An admin, and A's energy by its sessions' books, keep the
    whole history."""
    a, b = (history.users[who].company_id for who in ("op_a", "op_b"))
    station, _ = await two_plug_station(history, a)
    charging, analytics = history.services.charging, history.services.analytics
    history.clock.now = at_31(15, 30)
    await charging.status_notification("R1", 1, "Faulted", "GroundFailure",
                                       timestamp=at_31(13, 30))  # late: history only
    await charging.status_notification("R1", 1, "Faulted", "GroundFailure",
                                       timestamp=at_31(15, 30))
    history.clock.now = at_31(15, 45)
    await charging.status_notification("R1", 1, "Available", "NoError",
                                       timestamp=at_31(15, 45))
    history.clock.now = at_31(16)
    await history.services.stations.update_station(SYSTEM, station.id, company_id=b)
    history.clock.now = at_31(17)
    r1, window = Scope(cp_ids=("R1",)), (at_31(13), at_31(17))
    op_b, admin = history.viewer("op_b"), history.viewer("admin")
    assert figures(await analytics.utilization(op_b, r1, *window, True)) == [
        (1, 4.0, 0.0, 0.0, 0.0), (2, 4.0, 0.0, 0.0, 0.0)]
    assert [(r.connector_id, r.first_seconds / H, r.second_seconds / H) for r in
            await analytics.availability(op_b, r1, *window, True)] == [
        (1, 1.0, 1.0), (2, 1.0, 1.0)]
    assert await analytics.fault_reports(op_b, r1, *window) == []

    async def fault_events(who: str) -> list[datetime]:
        viewer = history.viewer(who)
        where = analytics.fault_events_filter(r1, *window)
        return sorted(e.at for e in await history.services.ctx.store.find_all(
            d.StatusEvent, all_of(Policy().scope(viewer, "status_event"), where)))

    assert await fault_events("op_b") == []
    assert await fault_events("admin") == [at_31(13, 30), at_31(15, 30)]
    # Per bucket too: the hours before the handover are empty, the one after is B's.
    hours = await analytics.availability(op_b, r1, *window, False, Bucket.HOUR)
    assert [r.first_seconds / H for r in hours] == [0.0, 0.0, 0.0, 2.0]
    # The whole history stays the station's for an admin.
    assert figures(await analytics.utilization(admin, r1, *window, True)) == [
        (1, 4.0, 1.0, 1.0, 0.25), (2, 4.0, 1.0, 1.0, 0.25)]
    assert [(g.connector_id, g.error_code, g.duration_seconds / H) for g in
            await analytics.fault_reports(admin, r1, *window)] == [
        (1, "GroundFailure", 0.25)]
    # And the sessions stay in A's books: A's energy is the two kWh it charged, and A
    # keeps its occupancy, charging and fault there up to the handover, as an admin
    # asking for A's figures reads them: of the three hours it ran the station (its
    # window; the hour after the handover is no row of A's, review r27-analytics4).
    op_a = history.viewer("op_a")
    trend = await analytics.energy_trend(op_a, r1, *window, Bucket.DAY)
    assert sum(x.energy_wh for x in trend) == 2000
    for viewer, scope in ((op_a, r1), (admin, Scope(cp_ids=("R1",), company_id=a))):
        assert figures(await analytics.utilization(viewer, scope, *window, True)) == [
            (1, 3.0, 1.0, 1.0, 1 / 3), (2, 3.0, 1.0, 1.0, 1 / 3)]
        hours = await analytics.utilization(viewer, scope, *window, False, Bucket.HOUR)
        assert [r.start for r in hours] == [at_31(13), at_31(14), at_31(15)]
        assert [(g.connector_id, g.error_code, g.count, g.open) for g in
                await analytics.fault_reports(viewer, scope, *window)] == [
            (1, "GroundFailure", 2, False)]
    assert await fault_events("op_a") == [at_31(13, 30), at_31(15, 30)]


async def _r9(h: History, offset: timedelta) -> tuple[str, str]:
    """R9 of company A, online from our 13:00, its charger's clock ``offset`` from ours;
    its id and company B's."""
    a, b = (h.users[who].company_id for who in ("op_a", "op_b"))
    h.clock.now = at_31(13)
    station, _ = await h.services.stations.create_station(
        SYSTEM, cp_id="R9", name="R9", connectors=[ConnectorSpec(1)], company_id=a)
    await h.services.charging.set_online("R9", True)
    await h.services.charging.status_notification("R9", 1, "Available", "NoError",
                                                  timestamp=h.clock.now + offset)
    return station.id, cast(str, b)


async def _report_r9(h: History, at: datetime, offset: timedelta, status: str,
                     code: str) -> None:
    h.clock.now = at
    await h.services.charging.status_notification("R9", 1, status, code,
                                                  timestamp=at + offset)


async def test_a_charger_behind_ours_books_its_fault_after_a_handover_to_the_new_company(
        history: History) -> None:
    """Charger 2 h behind. Handed to B at our 16:00; at our 16:30 (its 14:30) it reports
    GroundFailure, still going at our 17:00. The fault happened in B's books, and B
    reads it as an admin does (review r27: a cut at our 16:00 compared with the
    charger's stamps hid it: its report at 14:30, its time before 16:00)."""
    behind = -timedelta(hours=2)
    station_id, b = await _r9(history, behind)
    history.clock.now = at_31(16)
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    await _report_r9(history, at_31(16, 30), behind, "Faulted", "GroundFailure")
    history.clock.now = at_31(17)
    analytics, r9 = history.services.analytics, Scope(cp_ids=("R9",))
    window = (at_31(0), at_31(23))

    async def faults(who: str) -> list[tuple[Any, ...]]:
        return [(g.connector_id, g.error_code, g.count, g.open, g.duration_seconds / H)
                for g in await analytics.fault_reports(history.viewer(who), r9, *window)]

    assert await faults("admin") == [(1, "GroundFailure", 1, True, 0.5)]
    assert await faults("op_b") == [(1, "GroundFailure", 1, True, 0.5)]
    assert await faults("op_a") == []


async def test_a_charger_behind_ours_gives_the_new_company_the_time_it_ran_it(
        history: History) -> None:
    """Same charger, 2 h behind, online and Available all along: B has run it from our
    16:00 to 17:00, and its availability reads that hour known and available; A its
    three hours before (review r27: B read no known time at all)."""
    behind = -timedelta(hours=2)
    station_id, b = await _r9(history, behind)
    history.clock.now = at_31(16)
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    history.clock.now = at_31(17)
    for who, hours in (("op_b", 1.0), ("op_a", 3.0)):
        [row] = await history.services.analytics.availability(
            history.viewer(who), Scope(cp_ids=("R9",)), at_31(0), at_31(23), True)
        assert (round(row.first_seconds / H, 3), round(row.second_seconds / H, 3)) == (
            hours, hours), who


async def test_a_charger_ahead_of_ours_keeps_the_old_company_s_fault_from_the_new_one(
        history: History) -> None:
    """Charger 2 h ahead. At our 15:00 (its 17:00) A's plug faults, cleared at our 15:30
    (its 17:30); handed to B at our 16:00. The fault is A's: B's faultReports is empty,
    A's has it (review r27: B read it, its stamps after a cut at our 16:00)."""
    ahead = timedelta(hours=2)
    station_id, b = await _r9(history, ahead)
    await _report_r9(history, at_31(15), ahead, "Faulted", "GroundFailure")
    await _report_r9(history, at_31(15, 30), ahead, "Available", "NoError")
    history.clock.now = at_31(16)
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    history.clock.now = at_31(18)
    analytics, r9 = history.services.analytics, Scope(cp_ids=("R9",))
    window = (at_31(0), at_31(23, 59))
    assert await analytics.fault_reports(history.viewer("op_b"), r9, *window) == []
    assert [(g.error_code, g.count, g.duration_seconds / H) for g in
            await analytics.fault_reports(history.viewer("op_a"), r9, *window)] == [
        ("GroundFailure", 1, 0.5)]


async def test_a_station_handed_back_keeps_its_company_s_own_history(
        history: History) -> None:
    """R1 is A's; both plugs charge 14:00 -> 15:00 (A's drivers, A's books). At 16:00 an
    admin hands it to B by mistake and back to A at 16:05: A's utilization of its 14:00
    hour reads as before, as its energy does (review r27: only the latest handover was
    kept, and A's own hour read nothing)."""
    a, b = (history.users[who].company_id for who in ("op_a", "op_b"))
    station, _ = await two_plug_station(history, a)
    op_a, r1 = history.viewer("op_a"), Scope(cp_ids=("R1",))
    history.clock.now = at_31(16)
    before = figures(await history.services.analytics.utilization(
        op_a, r1, at_31(13), at_31(16), True))
    assert before == [(1, 3.0, 1.0, 1.0, 1 / 3), (2, 3.0, 1.0, 1.0, 1 / 3)]
    await history.services.stations.update_station(SYSTEM, station.id, company_id=b)
    history.clock.now = at_31(16, 5)
    await history.services.stations.update_station(SYSTEM, station.id, company_id=a)
    history.clock.now = at_31(17)
    after = figures(await history.services.analytics.utilization(
        op_a, r1, at_31(13), at_31(16), True))
    assert after == before


async def test_a_fault_carried_over_a_handover_is_the_new_company_s_from_the_handover(
        history: History) -> None:
    """A's plug faults at 15:30 (A's books) and is still faulted when B takes R9 at 16:00.
    B's group is carried in (count 0) and seen from 16:00, when it went into B's books
    (review r27: its first and last seen told B of A's report at 15:30); A's has its
    report and its half hour."""
    same = timedelta(0)
    station_id, b = await _r9(history, same)
    await _report_r9(history, at_31(15, 30), same, "Faulted", "GroundFailure")
    history.clock.now = at_31(16)
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    history.clock.now = at_31(17)
    analytics, r9 = history.services.analytics, Scope(cp_ids=("R9",))
    [group] = await analytics.fault_reports(
        history.viewer("op_b"), r9, at_31(13), at_31(17))
    assert (group.count, group.duration_seconds / H, group.first_seen, group.last_seen,
            group.open) == (0, 1.0, at_31(16), at_31(16), True)
    [group] = await analytics.fault_reports(
        history.viewer("op_a"), r9, at_31(13), at_31(17))
    assert (group.count, group.duration_seconds / H, group.first_seen,
            group.open) == (1, 0.5, at_31(15, 30), False)


# ------------------------------------------------- what races a handover (r27-analytics2)
async def test_a_disconnect_racing_its_charger_s_last_status_report_takes_it_offline(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """No handover: R9's charger sends a StatusNotification (Unavailable) and closes its
    socket; the report is written while the disconnect is between its read of the open
    state intervals and its write. The disconnect reads again and is recorded: a
    changed interval is no newer connection (R9 read online until its charger came
    back)."""
    station_id, _ = await _r9(history, timedelta(0))
    history.clock.now = at_31(16)
    real = connections.next_interval
    raced = False

    async def racing(*args: Any, **kw: Any) -> Any:
        nonlocal raced
        changes = await real(*args, **kw)
        if not raced:
            raced = True
            await history.services.charging.status_notification(
                "R9", 1, "Unavailable", "NoError", timestamp=at_31(16))
        return changes

    monkeypatch.setattr(connections, "next_interval", racing)
    assert await history.services.charging.disconnect("R9") == at_31(16)
    monkeypatch.setattr(connections, "next_interval", real)
    assert raced
    [station] = await history.services.ctx.store.find_all(
        d.Station, Eq("id", station_id), limit=1)
    assert station.online is False, "the disconnect was dropped: R9 reads online"
    [open_interval] = await history.services.ctx.store.find_all(
        d.ConnectorInterval, all_of(Eq("cp_id", "R9"), Eq("end", None)), limit=5)
    assert (open_interval.status, open_interval.online) == (
        d.ConnectorStatus.UNAVAILABLE, False)


async def test_a_disconnect_racing_a_handover_still_takes_the_station_offline(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """R9 (A's) is online. Its socket closes at 16:00 while an admin hands it to B: the
    handover's write lands between the disconnect's read and its write. The disconnect
    is still recorded: R9 is offline, and B's availability counts none of the
    charger's absence as online Available time."""
    station_id, b = await _r9(history, timedelta(0))
    history.clock.now = at_31(16)
    real = connections.next_interval
    handed = False

    async def racing(*args: Any, **kw: Any) -> Any:
        nonlocal handed
        changes = await real(*args, **kw)
        if not handed:
            handed = True
            await history.services.stations.update_station(SYSTEM, station_id,
                                                           company_id=b)
        return changes

    monkeypatch.setattr(connections, "next_interval", racing)
    await history.services.charging.disconnect("R9")
    monkeypatch.setattr(connections, "next_interval", real)
    assert handed
    [station] = await history.services.ctx.store.find_all(
        d.Station, Eq("id", station_id), limit=1)
    assert (station.company_id, station.online) == (b, False)
    history.clock.now = at_31(18)
    [row] = await history.services.analytics.availability(
        history.viewer("op_b"), Scope(cp_ids=("R9",)), at_31(0), at_31(23), True)
    assert row.first_seconds == 0  # offline from 16:00: none of it available


async def test_a_stop_racing_a_handover_still_leaves_its_connector_finishing(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """R9 charges from 14:00; its StopTransaction at 16:00 is written while an admin
    hands R9 to B, between the Finishing's read of the open interval and its write (the
    handover ends that interval). The Finishing is read again and written, in B's
    books: the connector's charging time ends with the session (it was left Charging,
    counted as charging until the charger's next report)."""
    station_id, b = await _r9(history, timedelta(0))
    charging = history.services.charging
    history.clock.now = at_31(14)
    tx, _ = await charging.start_transaction("R9", 1, "TAG-driver1", 0, at_31(14))
    await _report_r9(history, at_31(14), timedelta(0), "Charging", "NoError")
    real = charging_module.finishing
    handed = False

    async def racing(*args: Any, **kw: Any) -> Any:
        nonlocal handed
        changes = await real(*args, **kw)
        if not handed:
            handed = True
            await history.services.stations.update_station(SYSTEM, station_id,
                                                           company_id=b)
        return changes

    monkeypatch.setattr(charging_module, "finishing", racing)
    history.clock.now = at_31(16)
    await charging.stop_transaction("R9", tx, 1000, at_31(16))
    assert handed
    [open_interval] = await history.services.ctx.store.find_all(
        d.ConnectorInterval, all_of(Eq("cp_id", "R9"), Eq("end", None)), limit=5)
    assert (open_interval.status, open_interval.company_id) == (
        d.ConnectorStatus.FINISHING, b)
    [connector] = await history.services.ctx.store.find_all(
        d.Connector, Eq("station_id", station_id), limit=1)
    assert connector.status is d.ConnectorStatus.FINISHING


async def test_a_report_through_a_cache_not_told_of_a_handover_is_in_the_new_books(
        history: History) -> None:
    """Two instances: R9's charger reports GroundFailure at 16:30 to one whose cached R9
    has not heard of the handover to B at 16:00 (its announcement in flight). The
    report takes the books of the state interval it falls in (B's, as the handover
    rolled it over in the store), never the cached station's: A read B's fault report,
    and B's group counted none."""
    station_id, b = await _r9(history, timedelta(0))
    await _handed_over_behind_its_copy(history, station_id, b, at_31(16))
    await _report_r9(history, at_31(16, 30), timedelta(0), "Faulted", "GroundFailure")
    history.clock.now = at_31(17)
    analytics, r9 = history.services.analytics, Scope(cp_ids=("R9",))

    async def faults(who: str) -> list[tuple[Any, ...]]:
        return [(g.error_code, g.count, g.duration_seconds / H) for g in
                await analytics.fault_reports(history.viewer(who), r9, at_31(0), at_31(23))]

    assert await faults("op_a") == []
    assert await faults("op_b") == [("GroundFailure", 1, 0.5)]


async def test_a_fault_queued_through_an_outage_across_a_handover_is_with_its_time(
        history: History) -> None:
    """R9 (A's) goes offline at 15:00; A hands it to B at 16:00; at 17:00 it comes back and
    flushes the GroundFailure it queued at 15:30, then Available. A report takes the
    books of the interval its state is recorded in: the offline stretch of A's outage
    it splits from 15:30 (``intervals._offline_change``). Report and time in one
    company's books: A has the report with its half hour of fault; B has only the
    minute the fault went on once R9 was back in its books, carried in (count 0, seen
    from then), never a report of 15:30, before it had R9."""
    station_id, b = await _r9(history, timedelta(0))
    charging = history.services.charging
    history.clock.now = at_31(15)
    await charging.set_online("R9", False)
    history.clock.now = at_31(16)
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    history.clock.now = at_31(17)
    await charging.set_online("R9", True)
    await charging.status_notification("R9", 1, "Faulted", "GroundFailure",
                                       timestamp=at_31(15, 30))
    await _report_r9(history, at_31(17, 1), timedelta(0), "Available", "NoError")
    history.clock.now = at_31(18)
    analytics, r9 = history.services.analytics, Scope(cp_ids=("R9",))
    groups = {who: [(g.count, g.first_seen, round(g.duration_seconds / H, 3)) for g in
                    await analytics.fault_reports(history.viewer(who), r9, at_31(0),
                                                  at_31(23))]
              for who in ("op_a", "op_b")}
    assert groups["op_a"] == [(1, at_31(15, 30), 0.5)], groups
    assert groups["op_b"] == [(0, at_31(17), round(1 / 60, 3))], groups


async def test_a_point_fault_queued_through_an_outage_across_a_handover_is_with_its_time(
        history: History) -> None:
    """As above for connector 0: R9 (A's) offline at 15:00, handed to B at 16:00, back
    at 17:00 flushing the point's PowerSwitchFailure queued at 15:30, then Available.
    Its state is recorded in the offline stretch of A's outage it splits, so the report
    is A's with its half hour; B has only the minute the fault went on once R9 was back
    in its books, never a report of 15:30. The point's report is the station's own
    books as stored only when it is not queued into an outage."""
    station_id, b = await _r9(history, timedelta(0))
    charging = history.services.charging
    history.clock.now = at_31(15)
    await charging.set_online("R9", False)
    history.clock.now = at_31(16)
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    history.clock.now = at_31(17)
    await charging.set_online("R9", True)
    await charging.status_notification("R9", 0, "Faulted", "PowerSwitchFailure",
                                       timestamp=at_31(15, 30))
    history.clock.now = at_31(17, 1)
    await charging.status_notification("R9", 0, "Available", "NoError",
                                       timestamp=at_31(17, 1))
    history.clock.now = at_31(18)
    analytics, r9 = history.services.analytics, Scope(cp_ids=("R9",))
    groups = {who: [(g.connector_id, g.count, g.first_seen) for g in
                    await analytics.fault_reports(history.viewer(who), r9, at_31(0),
                                                  at_31(23))]
              for who in ("op_a", "op_b")}
    assert groups["op_a"] == [(0, 1, at_31(15, 30))], groups
    assert [g[:2] for g in groups["op_b"]] == [(0, 0)], groups


async def _faults_r9(h: History, who: str) -> list[tuple[Any, ...]]:
    return [(g.connector_id, g.error_code, g.count, round(g.duration_seconds / H, 2))
            for g in await h.services.analytics.fault_reports(
                h.viewer(who), Scope(cp_ids=("R9",)), at_31(0), at_31(23))]


async def test_a_new_plug_s_first_report_through_a_cache_not_told_of_a_handover_is_in_the_new_books(
        history: History) -> None:
    """As above, for a plug with no state history yet (one the charger reports first, or
    again after ``removeConnector``): no interval of it was rolled over by the handover,
    so its first one takes its station's books as stored, not as cached. A kept the
    report and its time, and every later interval of that plug copies its predecessor's
    books: the plug's history was A's for good (review r27-analytics3)."""
    station_id, b = await _r9(history, timedelta(0))
    charging = history.services.charging
    await _handed_over_behind_its_copy(history, station_id, b, at_31(16))
    history.clock.now = at_31(16, 30)
    await charging.status_notification("R9", 2, "Faulted", "GroundFailure",
                                       timestamp=at_31(16, 30))
    charging.cache.drop_station("R9")  # told now
    history.clock.now = at_31(17)
    assert await _faults_r9(history, "op_a") == []
    assert await _faults_r9(history, "op_b") == [(2, "GroundFailure", 1, 0.5)]


async def test_a_late_report_stamped_before_a_handover_stays_in_the_former_books(
        history: History) -> None:
    """R9 (A's) reports Available at 15:00; A hands it to B at 16:00; at 16:30 a
    GroundFailure the charger stamped 14:30 arrives late (older than the state it has:
    history only, it records no state). It is in the books of the interval its stamp
    falls in on the charger's timeline, A's: B reads no fault of before it had R9, and
    A keeps its own (review r27-analytics4: it took the open interval's books, B's)."""
    station_id, b = await _r9(history, timedelta(0))
    charging = history.services.charging
    history.clock.now = at_31(15)
    await charging.status_notification("R9", 1, "Available", "NoError",
                                       timestamp=at_31(15))
    history.clock.now = at_31(16)
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    history.clock.now = at_31(16, 30)
    await charging.status_notification("R9", 1, "Faulted", "GroundFailure",
                                       timestamp=at_31(14, 30))
    history.clock.now = at_31(17)
    assert await _faults_r9(history, "op_b") == []
    assert [g[:3] for g in await _faults_r9(history, "op_a")] == [(1, "GroundFailure", 1)]


async def test_a_new_plug_s_first_report_racing_a_handover_is_in_the_new_books(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two instances: one handles plug 2's first report (no open interval: it reads R9's
    books as stored, A's), the other commits the handover to B before that report's
    write. The handover rolls over only open intervals (plug 2 has none yet), so the
    write is guarded on the station's books as read (``still_in_books``): it fails, and
    the report, taken again, books plug 2's first interval (and so every later one) to
    B (review r27-analytics4: A's for good)."""
    station_id, b = await _r9(history, timedelta(0))
    charging = history.services.charging
    real = intervals.GuardedBooks.books
    raced: list[bool] = []

    async def books(self: Any) -> Any:
        found = await real(self)
        if not raced:  # the other instance's handover lands between read and write
            raced.append(True)
            await history.services.stations.update_station(SYSTEM, station_id,
                                                           company_id=b)
        return found

    monkeypatch.setattr(intervals.GuardedBooks, "books", books)
    history.clock.now = at_31(16)
    await charging.status_notification("R9", 2, "Faulted", "GroundFailure",
                                       timestamp=at_31(16))
    assert raced
    history.clock.now = at_31(16, 30)
    await charging.status_notification("R9", 2, "Available", "NoError",
                                       timestamp=at_31(16, 30))  # B's station now
    history.clock.now = at_31(17)
    assert await _faults_r9(history, "op_a") == []
    assert await _faults_r9(history, "op_b") == [(2, "GroundFailure", 1, 0.5)]
    rows = await history.services.analytics.availability(
        history.viewer("op_b"), Scope(cp_ids=("R9",)), at_31(16), at_31(17), True)
    assert {r.connector_id: r.second_seconds / H for r in rows}.get(2) == 1.0


def _handover_at_books(h: History, monkeypatch: pytest.MonkeyPatch, station_id: str,
                       to: str) -> list[bool]:
    """The other instance's handover to ``to`` lands between the station's books being
    read for a plug's first interval (``GuardedBooks.books``) and the write; returns the
    flag that says it did."""
    real = intervals.GuardedBooks.books
    raced: list[bool] = []

    async def books(self: Any) -> Any:
        found = await real(self)
        if not raced:
            raced.append(True)
            await h.services.stations.update_station(SYSTEM, station_id, company_id=to)
        return found

    monkeypatch.setattr(intervals.GuardedBooks, "books", books)
    return raced


async def _state_books(h: History, cp_id: str) -> set[tuple[str | None, str | None]]:
    store = h.services.ctx.store
    return {(r.company_id, r.station_owner_id) for r in await store.find_all(
        d.ConnectorInterval, Eq("cp_id", cp_id), limit=100)} | {
        (r.company_id, r.station_owner_id) for r in await store.find_all(
            d.ConnectionEvent, Eq("cp_id", cp_id), limit=100)}


async def test_a_connect_opening_a_plug_s_first_interval_racing_a_handover_is_in_the_new_books(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """R8 (A's) was never connected: no state interval yet. Its charger connects on one
    instance while the other commits the handover to B between the connect's read of
    R8's books and its write. The handover rolls over only open intervals (none), so the
    connect's write is guarded on the station's books as read (``still_in_books``), as
    a status report's first interval is: it is read again and its connection and
    intervals are B's (review r27-analytics4 left it: A's for good, every later
    interval of the plug copying its predecessor's books)."""
    a, b = (history.users[who].company_id for who in ("op_a", "op_b"))
    history.clock.now = at_31(13)
    station, _ = await history.services.stations.create_station(
        SYSTEM, cp_id="R8", name="R8", connectors=[ConnectorSpec(1)], company_id=a)
    raced = _handover_at_books(history, monkeypatch, station.id, cast(str, b))
    await history.services.charging.set_online("R8", True)
    assert raced
    assert await _state_books(history, "R8") == {(b, None)}


async def test_a_connect_and_a_disconnect_hold_their_books_in_the_station_s_own_write(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connect or disconnect writes once with no guard beside its station's update: the
    books it read are a condition of that update (``patch_in_books``), which a handover
    meanwhile fails (the races above), not a guard read of the same row (session 29:
    each was one read more in every connect and disconnect's write on MongoDB, one
    query more in SQLite's)."""
    a = history.users["op_a"].company_id
    history.clock.now = at_31(13)
    await history.services.stations.create_station(
        SYSTEM, cp_id="R8", name="R8", connectors=[ConnectorSpec(1)], company_id=a)
    calls = _store_calls(history.services.ctx.store, monkeypatch)
    for online in (True, False, True):
        calls.clear()
        history.clock.now += timedelta(minutes=10)
        assert await history.services.charging.set_online("R8", online) is not None
        assert sorted(calls) == sorted(["find_one Station", "find_all Connector",
                                        "find_one ConnectorInterval", "write"]), calls
    assert await _state_books(history, "R8") == {(a, None)}


async def test_a_disconnect_opening_a_plug_s_first_interval_racing_a_handover_is_in_the_new_books(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """As above for a disconnect: R8 online with no plug, plug 1 added (no interval
    yet); the charger's disconnect opens plug 1's first interval while the handover to
    B lands between its read of the books and its write: taken again, B's."""
    a, b = (history.users[who].company_id for who in ("op_a", "op_b"))
    history.clock.now = at_31(13)
    station, _ = await history.services.stations.create_station(
        SYSTEM, cp_id="R8", name="R8", connectors=[], company_id=a)
    await history.services.charging.set_online("R8", True)
    await history.services.stations.add_connector(SYSTEM, station.id, ConnectorSpec(1))
    history.clock.now = at_31(14)
    raced = _handover_at_books(history, monkeypatch, station.id, cast(str, b))
    await history.services.charging.set_online("R8", False)
    assert raced
    store = history.services.ctx.store
    [plug] = await store.find_all(d.ConnectorInterval, Eq("cp_id", "R8"), limit=10)
    assert (plug.company_id, plug.station_owner_id, plug.online) == (b, None, False)
    [event] = await store.find_all(d.ConnectionEvent, all_of(
        Eq("cp_id", "R8"), Eq("online", False)), limit=10)
    assert event.company_id == b


async def test_a_stop_opening_a_plug_s_first_interval_racing_a_handover_is_in_the_new_books(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop's Finishing on a plug with no open interval (its history from before
    state history was kept) opens the plug's first one: in R9's books as stored, and
    guarded on them (``GuardedBooks.guard``). A handover to B between that read and the
    write fails it; read again, the Finishing is B's (it stayed A's for good)."""
    station_id, b = await _r9(history, timedelta(0))
    charging, store = history.services.charging, history.services.ctx.store
    tx = await _charging_without_history(history, at_31(14))
    raced = _handover_at_books(history, monkeypatch, station_id, b)
    history.clock.now = at_31(16)
    await charging.stop_transaction("R9", tx, 1000, at_31(16))
    assert raced
    [finishing] = await store.find_all(d.ConnectorInterval, Eq("cp_id", "R9"), limit=10)
    assert (finishing.status, finishing.company_id) == (d.ConnectorStatus.FINISHING, b)


def _first_interval_in_handover(h: History, monkeypatch: pytest.MonkeyPatch,
                                during: Callable[[], Awaitable[Any]]) -> list[bool]:
    """The other order: the other instance's write opening a plug's first interval
    (``during``) lands after the handover read the station's open intervals
    (``intervals.handed_over``) and before the handover's write; returns the flag
    that says it did."""
    real = stations_module.handed_over
    raced: list[bool] = []

    async def handed_over(*args: Any, **kwargs: Any) -> Any:
        found = await real(*args, **kwargs)
        if not raced:
            raced.append(True)
            await during()
        return found

    monkeypatch.setattr(stations_module, "handed_over", handed_over)
    return raced


async def test_a_stop_s_first_interval_landing_inside_a_handover_is_in_the_new_books(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop's Finishing opens plug 1's first interval (none open) after the handover to
    B read R9's open intervals and before its write: the stop's write passes its guard
    (R9 still A's), and the handover, which rolls over what it read, is guarded on no
    open interval left in A's books (``intervals.left_in_books``): it fails, runs
    again, and rolls the Finishing over to B (review r28-leftan: A's for good)."""
    station_id, b = await _r9(history, timedelta(0))
    charging, store = history.services.charging, history.services.ctx.store
    tx = await _charging_without_history(history, at_31(14))
    history.clock.now = at_31(16)
    raced = _first_interval_in_handover(history, monkeypatch, lambda: charging.stop_transaction(
        "R9", tx, 1000, at_31(16)))
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    assert raced
    [station] = await store.find_all(d.Station, Eq("id", station_id), limit=1)
    assert station.company_id == b
    open_ = [i for i in await store.find_all(d.ConnectorInterval, Eq("cp_id", "R9"),
                                              limit=10) if i.end is None]
    assert [(i.status, i.company_id) for i in open_] == [(d.ConnectorStatus.FINISHING, b)]


async def test_a_first_report_landing_inside_a_handover_is_in_the_new_books(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plug 2, added to R9 while online (no interval yet), reports Available while the
    handover to B is between its read of the open intervals and its write: both of
    R9's plugs go on in B's books."""
    station_id, b = await _r9(history, timedelta(0))
    charging, store = history.services.charging, history.services.ctx.store
    await history.services.stations.add_connector(SYSTEM, station_id, ConnectorSpec(2))
    history.clock.now = at_31(16)
    raced = _first_interval_in_handover(history, monkeypatch, lambda: charging.status_notification(
        "R9", 2, "Available", "NoError", timestamp=at_31(16)))
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    assert raced
    open_ = [i for i in await store.find_all(d.ConnectorInterval, Eq("cp_id", "R9"),
                                              limit=10) if i.end is None]
    assert {(i.connector_id, i.company_id) for i in open_} == {(1, b), (2, b)}


async def test_a_connect_s_first_interval_landing_inside_a_handover_is_in_the_new_books(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """R8 (A's) never connected; its connect lands inside the handover to B (after its
    read of the open intervals, none): its intervals are B's, or A's and closed."""
    a, b = (history.users[who].company_id for who in ("op_a", "op_b"))
    history.clock.now = at_31(13)
    station, _ = await history.services.stations.create_station(
        SYSTEM, cp_id="R8", name="R8", connectors=[ConnectorSpec(1)], company_id=a)
    store = history.services.ctx.store
    raced = _first_interval_in_handover(history, monkeypatch, lambda: history.services.charging
                                        .set_online("R8", True))
    await history.services.stations.update_station(SYSTEM, station.id, company_id=b)
    assert raced
    rows = await store.find_all(d.ConnectorInterval, Eq("cp_id", "R8"), limit=10)
    assert {(i.company_id, i.end is None) for i in rows} <= {(b, True), (a, False)}, rows


async def test_a_connector_0_report_is_in_its_station_s_own_books_not_its_first_plug_s(
        history: History) -> None:
    """A report of connector 0 is the charge point's, the station's own: it goes in the
    station's books as stored (B's, R9 handed over), not in those of whichever plug's
    interval the loop read first. Here plug 1's open interval was left in A's books (an
    older instance's connect racing the handover, before connects were guarded): the
    point's Faulted was A's report, of a station B runs (B read no fault group)."""
    station_id, b = await _r9(history, timedelta(0))
    store, charging = history.services.ctx.store, history.services.charging
    history.clock.now = at_31(16)
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    a = history.users["op_a"].company_id
    [current] = await store.find_all(d.ConnectorInterval, all_of(
        Eq("cp_id", "R9"), Eq("end", None)), limit=5)
    await store.write([patch(current, SYSTEM, company_id=a)], [])  # the stale chain
    charging.cache.drop_station("R9")
    history.clock.now = at_31(16, 30)
    await charging.status_notification("R9", 0, "Faulted", "PowerSwitchFailure",
                                       timestamp=at_31(16, 30))
    [event] = await store.find_all(d.StatusEvent, all_of(
        Eq("cp_id", "R9"), Eq("connector_id", 0)), limit=5)
    assert (event.company_id, event.station_owner_id) == (b, None)


async def test_a_report_in_flight_at_a_handover_is_in_the_books_its_state_is_recorded_in(
        history: History) -> None:
    """R9 online, clocks alike. The charger reports GroundFailure stamped 15:59:50; the
    frame is handled at 16:00:05, just after the handover to B cut R9's history at the
    charger's 16:00. The fault's state cannot start before the open interval (B's, from
    16:00), so it is recorded in B's books, and the report goes with it: B has the
    report and its hour; A neither (review r27-analytics3: booked by its stamp, A read
    a report with no time and B an hour of fault never reported to it)."""
    station_id, b = await _r9(history, timedelta(0))
    history.clock.now = at_31(16)
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    history.clock.now = at_31(16) + timedelta(seconds=5)
    await history.services.charging.status_notification(
        "R9", 1, "Faulted", "GroundFailure", timestamp=at_31(16) - timedelta(seconds=10))
    history.clock.now = at_31(17)
    assert await _faults_r9(history, "op_a") == []
    assert await _faults_r9(history, "op_b") == [(1, "GroundFailure", 1, 1.0)]


def _store_calls(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the calling task asks the store from now on, one entry per call: each read
    as "find_one Kind", each write as "write" and the kind of each of its guards ("guard
    Kind"). A read a store makes inside its own call (a find_one's find_all, MongoDB's
    guard check in a write) is none of the caller's; nor is one of another task (a
    background job an earlier message started, reading meanwhile)."""
    calls: list[str] = []
    caller = asyncio.current_task()
    inside: list[str] = []
    for name in ("find_one", "find_all", "find_page", "count", "find_grouped", "aggregate",
                 "write"):
        real = getattr(store, name)

        async def counted(*args: Any, _real: Any = real, _name: str = name, **kw: Any
                          ) -> Any:
            if asyncio.current_task() is not caller:
                return await _real(*args, **kw)
            if not inside:
                if _name == "write":
                    guards = args[2] if len(args) > 2 else kw.get("guards", ())
                    calls.extend(["write", *(f"guard {g.kind.__name__}" for g in guards)])
                else:
                    calls.append(f"{_name} {getattr(args[0], '__name__', args[0])}")
            inside.append(_name)
            try:
                return await _real(*args, **kw)
            finally:
                inside.pop()

        monkeypatch.setattr(store, name, counted)
    return calls


async def test_a_status_report_reads_no_more_than_its_connector_and_open_interval(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path: a StatusNotification of a known plug, its station cached, reads the
    store twice (its connector, its open state interval), a change or a repeat alike:
    its books come from the interval it reads anyway (review r27-analytics3: two more
    reads booked it by its stamp). A late one (history only) reads the interval its
    stamp falls in instead, whose books it takes (review r27-analytics4)."""
    await _r9(history, timedelta(0))
    store = history.services.ctx.store
    reads = _store_calls(store, monkeypatch)
    # A change, a repeat, and one older than the state (history only: the open one's).
    for minute, status in ((2, "Unavailable"), (3, "Unavailable"), (1, "Faulted")):
        reads.clear()
        history.clock.now = at_31(16, 3)
        await history.services.charging.status_notification(
            "R9", 1, status, "NoError", timestamp=at_31(16, minute))
        interval = "find_all" if minute == 1 else "find_one"  # late: the one at its stamp
        assert sorted(reads) == sorted(["find_one Connector", f"{interval} ConnectorInterval",
                                        "write"]), (minute, reads)
    events = await store.find_all(d.StatusEvent, Eq("cp_id", "R9"), limit=10)
    assert {e.company_id for e in events} == {history.users["op_a"].company_id}


async def test_a_connector_0_report_reads_no_station_and_stays_guarded_on_its_books(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """The charge point's own report, its station cached: it reads its plugs and each
    one's open interval, not the station again (one read more on every such report,
    session 29): the books of the station it has serve, as its write is guarded on
    them (``still_in_books``), a change or a repeat alike. A copy not told of a
    handover to B fails that guard, and the report, taken again from the store, is B's."""
    station_id, b = await _r9(history, timedelta(0))
    store, charging = history.services.ctx.store, history.services.charging
    calls = _store_calls(store, monkeypatch)
    for minute, status in ((2, "Unavailable"), (3, "Unavailable")):
        calls.clear()
        history.clock.now = at_31(16, minute)
        await charging.status_notification("R9", 0, status, "NoError",
                                           timestamp=at_31(16, minute))
        assert sorted(calls) == sorted(["find_all Connector", "find_one ConnectorInterval",
                                        "write", "guard Station"]), (minute, calls)
    await _handed_over_behind_its_copy(history, station_id, b, at_31(16, 4))
    history.clock.now = at_31(16, 5)
    await charging.status_notification("R9", 0, "Faulted", "PowerSwitchFailure",
                                       timestamp=at_31(16, 5))
    [event] = await store.find_all(d.StatusEvent, all_of(
        Eq("cp_id", "R9"), Eq("connector_id", 0), Eq("status", d.ConnectorStatus.FAULTED)),
        limit=5)
    assert (event.company_id, event.station_owner_id) == (b, None)
    [point] = await store.find_all(d.Station, Eq("id", station_id), limit=1)
    assert point.status is d.ConnectorStatus.FAULTED


async def _handed_over_behind_its_copy(h: History, station_id: str, company_id: str,
                                      at: datetime) -> d.Station:
    """R9 handed over to ``company_id`` at ``at``, the charging service left holding its
    copy from before (another instance's, not told of the handover): that copy."""
    [before] = await h.services.ctx.store.find_all(d.Station, Eq("id", station_id), limit=1)
    h.clock.now = at
    await h.services.stations.update_station(SYSTEM, station_id, company_id=company_id)
    h.services.charging.cache.remember(before)
    return before


async def _cached_copy(h: History, station_id: str) -> d.Station:
    """R9 as stored now, remembered as the charging service's cached copy."""
    [station] = await h.services.ctx.store.find_all(d.Station, Eq("id", station_id),
                                                    limit=1)
    h.services.charging.cache.remember(station)
    return station


async def test_a_plug_s_first_report_reads_no_station_and_stays_guarded_on_its_books(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plug 2, added while R9 is online (no state interval yet), reports with R9 cached:
    it reads its connector and finds no open interval, not the station again (session
    29: read for its books on every such report): the books of the station it has
    serve, as its write is guarded on them (``still_in_books``). Plug 3's first report,
    on a copy not told of a handover to B, fails that guard and, taken again from the
    store, opens plug 3's history in B's books."""
    station_id, b = await _r9(history, timedelta(0))
    store, charging = history.services.ctx.store, history.services.charging
    for plug in (2, 3):
        await history.services.stations.add_connector(SYSTEM, station_id,
                                                      ConnectorSpec(plug))
    before = await _cached_copy(history, station_id)
    calls = _store_calls(store, monkeypatch)
    history.clock.now = at_31(16, 2)
    await charging.status_notification("R9", 2, "Unavailable", "NoError",
                                       timestamp=at_31(16, 2))
    assert sorted(calls) == sorted(["find_one Connector", "find_one ConnectorInterval",
                                    "write", "guard Station"]), calls
    history.clock.now = at_31(16, 4)
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    charging.cache.remember(before)  # the other instance's copy, read before the handover
    history.clock.now = at_31(16, 5)
    await charging.status_notification("R9", 3, "Faulted", "GroundFailure",
                                       timestamp=at_31(16, 5))
    plug_3 = all_of(Eq("cp_id", "R9"), Eq("connector_id", 3))
    [first] = await store.find_all(d.ConnectorInterval, plug_3, limit=5)
    [event] = await store.find_all(d.StatusEvent, plug_3, limit=5)
    assert (first.company_id, first.station_owner_id, event.company_id) == (b, None, b)


async def test_a_plug_we_did_not_know_is_written_on_one_guard_of_its_station(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plug 2, never registered, reports: its record is written only while R9 is there
    and its first interval only while R9 is in the books it took, one guard of the
    station holding both (the books' names it), not two reads of it on MongoDB."""
    station_id, _ = await _r9(history, timedelta(0))
    store = history.services.ctx.store
    await _cached_copy(history, station_id)
    calls = _store_calls(store, monkeypatch)
    history.clock.now = at_31(16, 2)
    await history.services.charging.status_notification("R9", 2, "Unavailable", "NoError",
                                                        timestamp=at_31(16, 2))
    assert calls.count("guard Station") == 1, calls
    [plug] = await store.find_all(d.Connector, all_of(
        Eq("station_id", station_id), Eq("connector_id", 2)), limit=5)
    [first] = await store.find_all(d.ConnectorInterval, all_of(
        Eq("cp_id", "R9"), Eq("connector_id", 2)), limit=5)
    assert (plug.status, first.company_id) == (
        d.ConnectorStatus.UNAVAILABLE, history.users["op_a"].company_id)


async def _charging_without_history(h: History, at: datetime) -> int:
    """A transaction on R9's plug 1 from ``at``, reported Charging, and the plug's state
    history then deleted (as kept before there was one): its stop's Finishing opens the
    plug's first interval. Its transaction id."""
    store = h.services.ctx.store
    h.clock.now = at
    tx, _ = await h.services.charging.start_transaction("R9", 1, "TAG-driver1", 0, at)
    await _report_r9(h, at, timedelta(0), "Charging", "NoError")
    await store.write([Delete(i) for i in await store.find_all(
        d.ConnectorInterval, Eq("cp_id", "R9"), limit=10)], [])
    return tx


async def test_a_stop_s_finishing_reads_no_station_and_stays_guarded_on_its_books(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop's Finishing opening plug 1's first interval, R9 cached, reads no station
    for its books (session 29: one read more): those of the station the stop has, its
    write guarded on them (``GuardedBooks.guard``)."""
    station_id, _ = await _r9(history, timedelta(0))
    store = history.services.ctx.store
    tx = await _charging_without_history(history, at_31(14))
    await _cached_copy(history, station_id)
    calls = _store_calls(store, monkeypatch)
    history.clock.now = at_31(16)
    await history.services.charging.stop_transaction("R9", tx, 1000, at_31(16))
    # The Finishing's own: its connector, no open session on it, no open interval.
    assert calls[-5:] == ["find_one Connector", "find_one Session",
                          "find_one ConnectorInterval", "write", "guard Station"], calls
    assert "find_one Station" not in calls, calls
    [finishing] = await store.find_all(d.ConnectorInterval, Eq("cp_id", "R9"), limit=10)
    assert (finishing.status, finishing.company_id) == (
        d.ConnectorStatus.FINISHING, history.users["op_a"].company_id)


async def test_a_stop_on_a_copy_not_told_of_a_handover_opens_its_finishing_in_the_new_books(
        history: History) -> None:
    """R9 handed to B while its session runs; the instance taking the stop has a copy
    cached before that. The Finishing it opens (plug 1's first interval) takes that
    copy's books, A's, and its write, guarded on them, fails: read again, it is B's."""
    station_id, b = await _r9(history, timedelta(0))
    store = history.services.ctx.store
    tx = await _charging_without_history(history, at_31(14))
    await _handed_over_behind_its_copy(history, station_id, b, at_31(15))
    history.clock.now = at_31(16)
    await history.services.charging.stop_transaction("R9", tx, 1000, at_31(16))
    [finishing] = await store.find_all(d.ConnectorInterval, Eq("cp_id", "R9"), limit=10)
    assert (finishing.status, finishing.company_id) == (d.ConnectorStatus.FINISHING, b)


async def test_the_former_company_keeps_its_figures_after_the_new_one_removes_the_station(
        history: History) -> None:
    """R9 is A's from 13:00, online and Available; handed to B at 16:00, which removes it
    at 17:00. A keeps its figures of the time it ran R9, as it keeps its sessions there:
    its rows come from the state history in its books, not from the connectors the
    removal deleted."""
    station_id, b = await _r9(history, timedelta(0))
    history.clock.now = at_31(16)
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    history.clock.now = at_31(17)
    analytics = history.services.analytics

    async def a_rows() -> list[tuple[Any, ...]]:
        return [(row.cp_id, row.connector_id, row.second_seconds / H)
                for row in await analytics.availability(
                    history.viewer("op_a"), Scope(), at_31(13), at_31(16), True)
                if row.cp_id == "R9"]

    assert await a_rows() == [("R9", 1, 3.0)]
    await history.services.stations.remove_station(SYSTEM, station_id)
    assert await a_rows() == [("R9", 1, 3.0)]


async def test_a_plug_removed_while_handed_away_keeps_its_rows_when_the_station_comes_back(
        history: History) -> None:
    """R1 (A's, two plugs charging 14:00 -> 15:00) is handed to B at 16:00; B removes plug
    2 at 16:30 and hands R1 back at 17:00. A runs R1 again, and its rows of 13:00 -> 16:00
    still have plug 2's hour of charging: rows of a station run now are its connectors
    and the connectors with history in the viewer's books in the window (review
    r27-analytics3: they were the current connectors only, and plug 2's figures of A's
    first period vanished)."""
    a, b = (history.users[who].company_id for who in ("op_a", "op_b"))
    station, connectors = await two_plug_station(history, a)
    stations = history.services.stations
    history.clock.now = at_31(16)
    await stations.update_station(SYSTEM, station.id, company_id=b)
    history.clock.now = at_31(16, 30)
    await stations.remove_connector(SYSTEM, connectors[1].id)
    history.clock.now = at_31(17)
    await stations.update_station(SYSTEM, station.id, company_id=a)
    history.clock.now = at_31(18)
    r1 = Scope(cp_ids=("R1",))
    assert figures(await history.services.analytics.utilization(
        history.viewer("op_a"), r1, at_31(13), at_31(16), True)) == [
        (1, 3.0, 1.0, 1.0, 1 / 3), (2, 3.0, 1.0, 1.0, 1 / 3)]


async def test_no_row_of_a_station_handed_away_before_the_window(history: History) -> None:
    """A handed R9 to B at 16:00: A's rows of a window after that have none of R9 (zeros
    read as measured), those of a window before it have R9's."""
    station_id, b = await _r9(history, timedelta(0))
    history.clock.now = at_31(16)
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    history.clock.now = at_31(20)
    analytics, op_a = history.services.analytics, history.viewer("op_a")
    for lo, hi, rows in ((at_31(17), at_31(19), []), (at_31(13), at_31(19), ["R9"])):
        for figures_of in (analytics.availability, analytics.utilization):
            assert [row.cp_id for row in await figures_of(op_a, Scope(), lo, hi, False)
                    if row.cp_id == "R9"] == rows


async def test_connection_events_are_in_the_books_of_their_time(history: History) -> None:
    """R9 connects under A at 13:00, is handed to B at 16:00 and disconnects at 17:00:
    the connect is in A's books, the disconnect in B's (``Station.connectionHistory``
    reads an operator's own)."""
    station_id, b = await _r9(history, timedelta(0))
    history.clock.now = at_31(16)
    await history.services.stations.update_station(SYSTEM, station_id, company_id=b)
    history.clock.now = at_31(17)
    await history.services.charging.disconnect("R9")
    events = await history.services.ctx.store.find_all(
        d.ConnectionEvent, Eq("station_id", station_id), limit=10)
    a = history.users["op_a"].company_id
    assert sorted((e.at, e.online, e.company_id) for e in events) == [
        (at_31(13), True, a), (at_31(17), False, b)]
