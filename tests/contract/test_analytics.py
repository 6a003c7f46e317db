"""Analytics over a scripted history, on every backend, compared with figures worked out
by hand. The history crosses midnight and the night Berlin moves to summer time
(2026-03-29, 01:00 UTC), has a fault that closes and one that stays open, and a station
that goes offline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from domain import entities as d
from domain.policy import SYSTEM, Policy, Viewer
from domain.ports import Store
from domain.services import ConnectorSpec, ServiceContext, Services
from domain.services.analytics import Scope
from domain.services.charging import MeterReading, SampledValue
from domain.timebuckets import Bucket
from tests.helpers import FastHasher

H = 3600.0
WINDOW_FROM = datetime(2026, 3, 27, 23, 0, tzinfo=UTC)  # 2026-03-28 00:00 Berlin
WINDOW_TO = datetime(2026, 3, 30, 22, 0, tzinfo=UTC)  # 2026-03-31 00:00 Berlin (71 h)


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = utc(28, 0)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class History:
    services: Services
    clock: Clock
    users: dict[str, d.User]
    stations: dict[str, d.Station]

    def viewer(self, name: str) -> Viewer:
        return Viewer.of(self.users[name])


def register(wh: int, at: datetime) -> list[MeterReading]:
    return [MeterReading(at, (SampledValue(str(wh), "Energy.Active.Import.Register", "Wh"),))]


@pytest.fixture
async def history(store: Store) -> History:
    clock = Clock()
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                       clock=clock))
    acc, charging = services.accounts, services.charging
    a = await acc.create_company(SYSTEM, name="A")
    b = await acc.create_company(SYSTEM, name="B")
    users = {}
    for name, role, company in (("admin", d.Role.ADMIN, None), ("op_a", d.Role.OPERATOR, a),
                                ("op_b", d.Role.OPERATOR, b), ("driver1", d.Role.DRIVER, None),
                                ("driver2", d.Role.DRIVER, None)):
        users[name] = await acc.create_user(SYSTEM, email=f"{name}@x.de", name=name,
                                            password="password-1", role=role,
                                            company_id=company.id if company else None)
    for driver in ("driver1", "driver2"):
        await services.fleet.issue_id_tag(Viewer.of(users[driver]), tag=f"TAG-{driver}")
    stations = {}
    for cp_id, company, connectors in (("S1", a, 2), ("S2", b, 1)):
        stations[cp_id], _ = await services.stations.create_station(
            SYSTEM, cp_id=cp_id, name=cp_id, company_id=company.id,
            connectors=[ConnectorSpec(i) for i in range(1, connectors + 1)])
    await services.tariffs.set_tariff(SYSTEM, company_id=a.id, price_per_kwh=Decimal("0.30"),
                                      currency="EUR", valid_from=utc(1, 0))

    async def at(moment: datetime) -> None:
        clock.now = moment

    # Both stations come online at 22:00 UTC on the 28th (23:00 Berlin).
    await at(utc(28, 22))
    for cp_id, connectors in (("S1", (1, 2)), ("S2", (1,))):
        await charging.set_online(cp_id, True)
        for c in connectors:
            await charging.status_notification(cp_id, c, "Available", "NoError",
                                               timestamp=utc(28, 22))
    # Session A, S1 c1, driver1: 22:30 → 00:30 UTC, 1000 → 8000 Wh.
    tx_a, _ = await charging.start_transaction("S1", 1, "TAG-driver1", 1000, utc(28, 22, 30))
    await charging.status_notification("S1", 1, "Charging", "NoError", timestamp=utc(28, 22, 30))
    await charging.meter_values("S1", 1, tx_a, register(3000, utc(28, 22, 45)))
    await charging.meter_values("S1", 1, tx_a, register(7000, utc(28, 23, 15)))
    await charging.stop_transaction("S1", tx_a, 8000, utc(29, 0, 30))
    await charging.status_notification("S1", 1, "Available", "NoError", timestamp=utc(29, 0, 30))
    # Session B, S1 c2, driver2: 10:00 → 12:00 UTC on the 29th, 0 → 22000 Wh.
    tx_b, _ = await charging.start_transaction("S1", 2, "TAG-driver2", 0, utc(29, 10))
    await charging.status_notification("S1", 2, "Charging", "NoError", timestamp=utc(29, 10))
    await charging.meter_values("S1", 2, tx_b, register(11000, utc(29, 11)))
    await charging.stop_transaction("S1", tx_b, 22000, utc(29, 12))
    await charging.status_notification("S1", 2, "Available", "NoError", timestamp=utc(29, 12))
    # A ground fault on S1 c2 for two hours.
    await charging.status_notification("S1", 2, "Faulted", "GroundFailure",
                                       timestamp=utc(29, 14))
    await charging.status_notification("S1", 2, "Available", "NoError", timestamp=utc(29, 16))
    # S1 drops offline at midnight UTC on the 30th and stays away.
    await at(utc(30, 0))
    await charging.set_online("S1", False)
    # Session C, S2 c1, driver1: 08:00 → 09:00 UTC on the 30th, no meter values, 5000 Wh.
    tx_c, _ = await charging.start_transaction("S2", 1, "TAG-driver1", 0, utc(30, 8))
    await charging.stop_transaction("S2", tx_c, 5000, utc(30, 9))
    # An over-current fault on S2 from 20:00 UTC that never clears.
    await charging.status_notification("S2", 1, "Faulted", "OverCurrentFailure",
                                       timestamp=utc(30, 20))
    await at(utc(31, 12))  # analytics run the next day
    return History(services, clock, users, stations)


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
    # Drivers see the public connectors, but no operator's state history.
    driver_rows = await history.services.analytics.availability(
        history.viewer("driver1"), Scope(), WINDOW_FROM, WINDOW_TO, by_connector=True)
    assert shares(driver_rows, "first_seconds") == {("S1", 1): 0.0, ("S1", 2): 0.0,
                                                    ("S2", 1): 0.0}
    op_b = await history.services.analytics.availability(
        history.viewer("op_b"), Scope(), WINDOW_FROM, WINDOW_TO, by_connector=False)
    assert shares(op_b, "first_seconds") == {("S2", None): 46.0}


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


async def test_overview(history: History) -> None:
    overview = await history.services.analytics.overview(history.viewer("admin"), Scope(),
                                                         "Europe/Berlin")
    assert (overview.stations_online, overview.stations_offline) == (1, 1)
    assert overview.connectors_by_status == {"AVAILABLE": 2, "FAULTED": 1}
    assert overview.active_sessions == 0
    assert overview.energy_today_wh == 0 and overview.revenue_today == {}
    history.clock.now = utc(29, 20)  # "today" is now the 29th in Berlin
    overview = await history.services.analytics.overview(history.viewer("op_a"), Scope(),
                                                         "Europe/Berlin")
    assert overview.energy_today_wh == 27000
    assert overview.revenue_today == {"EUR": 870}
