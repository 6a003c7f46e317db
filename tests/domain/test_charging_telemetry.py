"""Meter telemetry of a session, through the charging service over a real SQLite file and
the in-process event bus: energy only grows and is the sum of its increments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain import entities as d
from domain.policy import SYSTEM, Policy, Viewer
from domain.query import Eq
from domain.services import ConnectorSpec, ServiceContext, Services
from domain.services.analytics import Scope
from domain.services.charging import MeterReading, SampledValue
from domain.timebuckets import Bucket
from pubsub.memory import EventStream, MemoryEventBus
from store.sqlite import SqliteStore
from tests.helpers import FastHasher

CP = "CP-T"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@dataclass
class World:
    services: Services
    store: SqliteStore
    events: EventStream

    async def session(self, transaction_id: int) -> d.Session:
        found = await self.store.find_one(d.Session, Eq("transaction_id", transaction_id))
        assert found is not None
        return found


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = SqliteStore(str(tmp_path / "telemetry.db"))
    await store.start()
    bus = MemoryEventBus()
    await bus.start()
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                       bus=bus))
    driver = await services.accounts.create_user(
        SYSTEM, email="driver@example.com", password="password-123", name="driver",
        role=d.Role.DRIVER)
    await services.fleet.issue_id_tag(Viewer.of(driver), tag="TAG-1")
    await services.stations.create_station(SYSTEM, cp_id=CP, name=CP,
                                           connectors=[ConnectorSpec(1), ConnectorSpec(2)])
    events = bus.subscribe(["session"])
    try:
        yield World(services, store, events)
    finally:
        await bus.close()
        await store.close()


def register(wh: int, seconds: int) -> list[MeterReading]:
    return [MeterReading(T0 + timedelta(seconds=seconds),
                         (SampledValue(str(wh), "Energy.Active.Import.Register", "Wh"),))]


def power(kw: float, seconds: int) -> list[MeterReading]:
    return [MeterReading(T0 + timedelta(seconds=seconds),
                         (SampledValue(str(kw), "Power.Active.Import", "kW"),))]


async def added_wh(world: World, transaction_id: int) -> int:
    samples = await world.store.find_all(d.MeterSample, Eq("transaction_id", transaction_id))
    return sum(s.delta_wh or 0 for s in samples)


async def test_readings_late_or_lower_never_lower_energy_and_increments_add_up(
        world: World) -> None:
    charging = world.services.charging
    # A frame of the charger's queue arrives after a newer one.
    first, _ = await charging.start_transaction(CP, 1, "TAG-1", 1000, T0)
    live = []
    for wh, seconds in ((3000, 60), (2000, 30), (4000, 90)):
        await charging.meter_values(CP, 1, first, register(wh, seconds))
        live.append((await world.session(first)).energy_wh)
    assert live == [2000, 2000, 3000]
    await charging.stop_transaction(CP, first, 4000, T0 + timedelta(seconds=120))
    # A register that goes back within a frame, and a meterStop below its highest reading.
    second, _ = await charging.start_transaction(CP, 2, "TAG-1", 0, T0)
    await charging.meter_values(CP, 2, second, [*register(1000, 10), *register(800, 20)])
    assert (await world.session(second)).energy_wh == 1000
    await charging.stop_transaction(CP, second, 900, T0 + timedelta(seconds=30))

    sessions = [await world.session(first), await world.session(second)]
    assert [s.energy_wh for s in sessions] == [3000, 1000]
    for session in sessions:
        assert await added_wh(world, session.transaction_id) == session.energy_wh
    trend = await world.services.analytics.energy_trend(
        Viewer(user_id="admin", role=d.Role.ADMIN), Scope(cp_ids=(CP,)),
        T0 - timedelta(days=1), T0 + timedelta(days=1), Bucket.DAY)
    assert sum(b.energy_wh for b in trend) == 4000
