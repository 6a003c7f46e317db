"""Billing QA's late stops (QA s18, billing2): a charger goes silent mid-session, an
operator ends the session, its payment is settled, and then the charger's
StopTransaction arrives and corrects the session's cost and end. Revenue is what the
payment billed, on the day it was opened; the corrected session no longer decides it.

Station CP-LATE of company A (two connectors, 0.50 EUR/kWh), driver ``driver`` with
card TAG-D2 on their car; company B runs CP-B. A session meters 4 kWh (50000 → 54000 Wh)
in its first half hour and is ended by A's operator half an hour later: 2.00 EUR."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from domain import entities as d
from domain.policy import SYSTEM, Policy, Viewer
from domain.ports import Store
from domain.query import Eq
from domain.services import ConnectorSpec, ServiceContext, Services
from tests.helpers import FastHasher
from tests.support.history import Clock, register

CP = "CP-LATE"
#: The day the QA scenario ran (UTC).
JULY_1 = datetime(2025, 7, 1, tzinfo=UTC)
ROLES = ("admin", "op_a", "op_b", "driver", "driver2")


@dataclass
class LateStops:
    services: Services
    clock: Clock
    users: dict[str, d.User]
    stations: dict[str, d.Station]
    vehicle: d.Vehicle

    def viewer(self, name: str) -> Viewer:
        return Viewer.of(self.users[name])

    async def ended_by_the_operator(self, start: datetime, end: datetime
                                    ) -> tuple[int, d.Payment]:
        """A session on CP-LATE c1 from ``start`` metering 4 kWh in half an hour, then
        silent; A's operator ends it at ``end`` (our clock): 2.00 EUR PENDING."""
        charging = self.services.charging
        self.clock.now = start
        tx, _ = await charging.start_transaction(CP, 1, "TAG-D2", 50000, start)
        for minutes, wh in ((15, 52000), (30, 54000)):
            self.clock.now = start + timedelta(minutes=minutes)
            await charging.meter_values(CP, 1, tx, register(wh, self.clock.now))
        self.clock.now = end
        session = await self.session(tx)
        await charging.end_session(self.viewer("op_a"), session.id)
        payment = await self.payment(tx)
        assert (payment.status, payment.amount_minor) == (d.PaymentStatus.PENDING, 200)
        return tx, payment

    async def late_stop(self, tx: int, meter_stop: int, stamped: datetime,
                        arrives: datetime) -> d.Session:
        """The charger's StopTransaction, stamped ``stamped``, arriving at ``arrives``."""
        self.clock.now = arrives
        await self.services.charging.stop_transaction(CP, tx, meter_stop, stamped)
        return await self.session(tx)

    async def session(self, tx: int) -> d.Session:
        found = await self.services.payments.store.find_one(
            d.Session, Eq("transaction_id", tx))
        assert found is not None
        return found

    async def payment(self, tx: int) -> d.Payment:
        session = await self.session(tx)
        found = await self.services.payments.store.find_one(
            d.Payment, Eq("session_id", session.id))
        assert found is not None
        return found


async def build_late_stops(store: Store) -> LateStops:
    clock = Clock()
    clock.now = JULY_1 - timedelta(days=60)
    services = Services(ServiceContext(store=store, policy=Policy(), clock=clock,
                                       hasher=FastHasher()))
    acc = services.accounts
    a = await acc.create_company(SYSTEM, name="A")
    b = await acc.create_company(SYSTEM, name="B")
    users = {}
    for name, role, company in (("admin", d.Role.ADMIN, None), ("op_a", d.Role.OPERATOR, a),
                                ("op_b", d.Role.OPERATOR, b), ("driver", d.Role.DRIVER, None),
                                ("driver2", d.Role.DRIVER, None)):
        users[name] = await acc.create_user(SYSTEM, email=f"{name}@x.de", name=name,
                                            password="password-1", role=role,
                                            company_id=company.id if company else None)
    car = await services.fleet.add_vehicle(Viewer.of(users["driver"]), license_plate="B-LT 1")
    await services.fleet.issue_id_tag(Viewer.of(users["driver"]), tag="TAG-D2",
                                      vehicle_id=car.id)
    await services.fleet.issue_id_tag(Viewer.of(users["driver2"]), tag="TAG-OTHER")
    stations = {}
    for cp_id, company in ((CP, a), ("CP-B", b)):
        stations[cp_id], _ = await services.stations.create_station(
            SYSTEM, cp_id=cp_id, name=cp_id, company_id=company.id,
            connectors=[ConnectorSpec(1), ConnectorSpec(2)])
    await services.tariffs.set_tariff(SYSTEM, company_id=a.id, price_per_kwh=Decimal("0.50"),
                                      currency="EUR", valid_from=clock.now)
    return LateStops(services, clock, users, stations, car)

