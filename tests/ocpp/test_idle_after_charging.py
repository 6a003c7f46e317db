"""Idle fees start once the car has charged (QA s25). A car that waits for its departure
timer reports SuspendedEV from the plug-in (OCPP 1.6: the charger offers energy, the
car takes none); it is not done, and was billed idle for the wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ocpp.v16 import call

from domain.policy import SYSTEM
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central

SESSIONS = "{ sessions(first: 5) { nodes { transactionId costBreakdown { idle gross } } } }"


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def test_a_car_waiting_for_its_timer_is_billed_only_once_done(central: Central) -> None:
    """Plugged in 20 minutes ago: waits 5 minutes (SuspendedEV), charges 10, is full
    (SuspendedEV) for the 3 minutes before its stop. At 1.00 per idle minute that is
    3.00 (it was billed 8.00)."""
    await central.services.tariffs.set_tariff(
        SYSTEM, station_id=central.stations["CP-1"].id, price_per_kwh=Decimal(0),
        idle_price_per_minute=Decimal(1), currency="EUR",
        valid_from=datetime.now(UTC) - timedelta(days=1))
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.call(call.BootNotification(charge_point_vendor="V", charge_point_model="M"))

        async def status(name: str, minute: int) -> None:
            await cp.call(call.StatusNotification(
                connector_id=1, error_code="NoError", status=name,
                timestamp=iso(t0 + timedelta(minutes=minute))))
        await status("Preparing", -1)
        tx = (await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=0,
            timestamp=iso(t0)))).transaction_id
        await status("SuspendedEV", 0)  # the car's departure timer
        await status("Charging", 5)
        await status("SuspendedEV", 15)  # full
        await cp.call(call.StopTransaction(meter_stop=5000, transaction_id=tx,
                                           timestamp=iso(t0 + timedelta(minutes=18))))
    data = await central.gql(SESSIONS, as_user="driver")
    [bill] = [s["costBreakdown"] for s in data["sessions"]["nodes"]
              if s["transactionId"] == tx]
    assert bill == {"idle": "3.00", "gross": "3.00"}
