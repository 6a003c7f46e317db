"""``endSession`` on one instance while another holds the charger and caches its
session: the charger's next meter values must not undo the end."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM, Policy
from domain.query import Eq
from domain.services import ConnectorSpec, ServiceContext, Services
from domain.services.metering import MeterReading, SampledValue
from store.sqlite import SqliteStore
from tests.helpers import FastHasher


def register(wh: int) -> list[MeterReading]:
    return [MeterReading(utcnow(), (SampledValue(str(wh), unit="Wh"),
                                    SampledValue("11000", "Power.Active.Import", "W")))]


async def test_a_charger_on_another_instance_does_not_revive_an_ended_session(
        tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    stores = [SqliteStore(path), SqliteStore(path)]
    for store in stores:
        await store.start()
    holder, other = (Services(ServiceContext(store=s, policy=Policy(), hasher=FastHasher()))
                     for s in stores)
    try:
        await holder.stations.create_station(
            SYSTEM, cp_id="CP-1", name="One",
            connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 150)])
        charging = holder.charging
        tx, _ = await charging.start_transaction("CP-1", 1, "TAG", 1_000,
                                                 utcnow() - timedelta(hours=1))
        await charging.meter_values("CP-1", 1, tx, register(6_000))  # cached from here on
        session = await stores[1].find_one(d.Session, Eq("transaction_id", tx))
        assert session is not None and session.energy_wh == 5_000
        ended = await other.charging.end_session(SYSTEM, session.id)
        assert ended.state is d.SessionState.COMPLETED and ended.energy_wh == 5_000

        await charging.meter_values("CP-1", 1, tx, register(9_000))  # from its cached copy
        after = await stores[0].find_one(d.Session, Eq("transaction_id", tx))
        assert after is not None and after.state is d.SessionState.COMPLETED
        assert (after.energy_wh, after.power_w) == (5_000, None)
        assert after.cost_minor == ended.cost_minor
    finally:
        for store in stores:
            await store.close()
