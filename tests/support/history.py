"""The scripted charging history the analytics suites compare against figures worked out
by hand. It crosses midnight and the night Berlin moves to summer time (2026-03-29, 01:00
UTC), has a fault that closes and one that stays open, and a station that goes offline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from domain import entities as d
from domain.policy import SYSTEM, Policy, Viewer
from domain.ports import Store
from domain.services import ConnectorSpec, ServiceContext, Services
from domain.services.metering import MeterReading, SampledValue
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


async def build_history(store: Store) -> History:
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
    for cp_id, connector_ids in (("S1", (1, 2)), ("S2", (1,))):
        await charging.set_online(cp_id, True)
        for c in connector_ids:
            await charging.status_notification(cp_id, c, "Available", "NoError",
                                               timestamp=utc(28, 22))
    # The clock moves with the history, as it would in a live run: each message arrives
    # when its timestamp says (so the chargers' clocks agree with ours).
    # Session A, S1 c1, driver1: 22:30 → 00:30 UTC, 1000 → 8000 Wh.
    await at(utc(28, 22, 30))
    tx_a, _ = await charging.start_transaction("S1", 1, "TAG-driver1", 1000, utc(28, 22, 30))
    await charging.status_notification("S1", 1, "Charging", "NoError", timestamp=utc(28, 22, 30))
    await at(utc(28, 22, 45))
    await charging.meter_values("S1", 1, tx_a, register(3000, utc(28, 22, 45)))
    await at(utc(28, 23, 15))
    await charging.meter_values("S1", 1, tx_a, register(7000, utc(28, 23, 15)))
    await at(utc(29, 0, 30))
    await charging.stop_transaction("S1", tx_a, 8000, utc(29, 0, 30))
    await charging.status_notification("S1", 1, "Available", "NoError", timestamp=utc(29, 0, 30))
    # Session B, S1 c2, driver2: 10:00 → 12:00 UTC on the 29th, 0 → 22000 Wh.
    await at(utc(29, 10))
    tx_b, _ = await charging.start_transaction("S1", 2, "TAG-driver2", 0, utc(29, 10))
    await charging.status_notification("S1", 2, "Charging", "NoError", timestamp=utc(29, 10))
    await at(utc(29, 11))
    await charging.meter_values("S1", 2, tx_b, register(11000, utc(29, 11)))
    await at(utc(29, 12))
    await charging.stop_transaction("S1", tx_b, 22000, utc(29, 12))
    await charging.status_notification("S1", 2, "Available", "NoError", timestamp=utc(29, 12))
    # A ground fault on S1 c2 for two hours.
    await at(utc(29, 14))
    await charging.status_notification("S1", 2, "Faulted", "GroundFailure",
                                       timestamp=utc(29, 14), vendor_error_code="RCD-12")
    await at(utc(29, 16))
    await charging.status_notification("S1", 2, "Available", "NoError", timestamp=utc(29, 16))
    # S1 drops offline at midnight UTC on the 30th and stays away.
    await at(utc(30, 0))
    await charging.set_online("S1", False)
    # Session C, S2 c1, driver1: 08:00 → 09:00 UTC on the 30th, no meter values, 5000 Wh.
    await at(utc(30, 8))
    tx_c, _ = await charging.start_transaction("S2", 1, "TAG-driver1", 0, utc(30, 8))
    await at(utc(30, 9))
    await charging.stop_transaction("S2", tx_c, 5000, utc(30, 9))
    # An over-current fault on S2 from 20:00 UTC that never clears.
    await at(utc(30, 20))
    await charging.status_notification("S2", 1, "Faulted", "OverCurrentFailure",
                                       timestamp=utc(30, 20))
    await at(utc(31, 12))  # analytics run the next day
    return History(services, clock, users, stations)


