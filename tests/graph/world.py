"""A small two-company world built through the domain services, for graph tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM, Viewer
from domain.ports import Insert
from domain.services import ConnectorSpec, Services
from domain.services.charging import books_of

PASSWORD = "correct horse battery"


@dataclass
class World:
    users: dict[str, d.User] = field(default_factory=dict)
    companies: dict[str, d.Company] = field(default_factory=dict)
    stations: dict[str, d.Station] = field(default_factory=dict)
    connectors: dict[str, list[d.Connector]] = field(default_factory=dict)
    vehicles: dict[str, d.Vehicle] = field(default_factory=dict)
    tags: dict[str, d.IdTag] = field(default_factory=dict)
    sessions: dict[str, d.Session] = field(default_factory=dict)
    payments: dict[str, d.Payment] = field(default_factory=dict)

    def viewer(self, name: str) -> Viewer:
        return Viewer.of(self.users[name])


async def build_world(services: Services, stations_per_company: int = 2) -> World:
    w = World()
    acc = services.accounts
    w.companies["a"] = await acc.create_company(SYSTEM, name="Alpha Charging")
    w.companies["b"] = await acc.create_company(SYSTEM, name="Beta Power")
    people = [
        ("admin", d.Role.ADMIN, None),
        ("op_a", d.Role.OPERATOR, "a"),
        ("op_a2", d.Role.OPERATOR, "a"),
        ("op_b", d.Role.OPERATOR, "b"),
        ("driver1", d.Role.DRIVER, None),
        ("driver2", d.Role.DRIVER, None),
        ("driver_a", d.Role.DRIVER, "a"),
    ]
    for name, role, company in people:
        w.users[name] = await acc.create_user(
            SYSTEM, email=f"{name}@example.com", password=PASSWORD, name=name.title(),
            role=role, company_id=w.companies[company].id if company else None,
        )
    for company in ("a", "b"):
        for i in range(stations_per_company):
            cp_id = f"{company.upper()}-{i + 1:03d}"
            station, connectors = await services.stations.create_station(
                SYSTEM, cp_id=cp_id, name=f"{company.upper()} Station {i + 1}",
                company_id=w.companies[company].id, owner_id=w.users[f"op_{company}"].id,
                lat=52.5 + i / 100, lon=13.4 + i / 100, address=f"Street {i + 1}, Berlin",
                connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 150.0),
                            ConnectorSpec(2, d.ConnectorType.TYPE2, 22.0)],
                password="station-secret-1",
            )
            w.stations[cp_id] = station
            w.connectors[cp_id] = connectors
    for driver, plate in (("driver1", "B-DR 1"), ("driver2", "B-DR 2"), ("driver_a", "B-DA 1")):
        viewer = w.viewer(driver)
        w.vehicles[driver] = await services.fleet.add_vehicle(
            viewer, license_plate=plate, make="VW", model="ID.3", battery_kwh=58)
        w.tags[driver] = await services.fleet.issue_id_tag(
            viewer, tag=f"TAG-{driver}", vehicle_id=w.vehicles[driver].id)
    # driver1 charges at A-001 (active) and B-001 (completed); driver2 at A-002 (completed).
    await _session(services, w, "s1", "driver1", "A-001", 1, active=True)
    await _session(services, w, "s2", "driver1", "B-001", 2, active=False)
    await _session(services, w, "s3", "driver2", "A-002", 1, active=False)
    return w


async def _session(services: Services, w: World, key: str, driver: str, cp_id: str,
                   connector_id: int, *, active: bool) -> None:
    station = w.stations[cp_id]
    start = utcnow() - timedelta(hours=2)
    company_id, station_owner_id = books_of(station)  # as the charging service sets them
    session = d.Session(
        transaction_id=await services.ctx.store.next_sequence("transaction"),
        station_id=station.id, cp_id=cp_id, connector_id=connector_id,
        id_tag=w.tags[driver].tag, user_id=w.users[driver].id,
        vehicle_id=w.vehicles[driver].id, start_time=start, meter_start_wh=1000,
        energy_wh=5000 if active else 12000,
        state=d.SessionState.ACTIVE if active else d.SessionState.COMPLETED,
        end_time=None if active else start + timedelta(hours=1),
        meter_stop_wh=None if active else 13000,
        created_by=f"ocpp:{cp_id}", updated_by=f"ocpp:{cp_id}",
        # Recorded when its charger started it: a session recorded now but started two
        # hours ago is billed from its receipt (``Session.billed_end``).
        created_at=start, updated_at=start,
        company_id=company_id, station_owner_id=station_owner_id,
    )
    changes = [Insert(session)]
    if not active:
        payment = d.Payment(session_id=session.id, station_id=station.id,
                            user_id=session.user_id, amount_minor=420, currency="EUR",
                            company_id=company_id, station_owner_id=station_owner_id)
        w.payments[key] = payment
        changes.append(Insert(payment))
    await services.ctx.store.write(changes, [])
    w.sessions[key] = session
