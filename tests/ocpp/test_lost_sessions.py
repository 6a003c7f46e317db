"""Sessions the central system closed without their StopTransaction, end to end: a real
OCPP charger (the ``ocpp`` package's client) over a websocket to a central system on an
SQLite file, restarted on that file where the QA restarted the server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ocpp.v16 import call

from domain import entities as d
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central


def stamp(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def meter(cp: SimulatedChargePoint, transaction_id: int, wh: int, at: datetime
                ) -> None:
    await cp.call(call.MeterValues(connector_id=1, transaction_id=transaction_id,
                                   meter_value=[{"timestamp": stamp(at), "sampledValue": [
                                       {"value": str(wh), "unit": "Wh",
                                        "measurand": "Energy.Active.Import.Register"}]}]))


async def start(cp: SimulatedChargePoint, meter_start: int, at: datetime) -> int:
    answer = await cp.call(call.StartTransaction(connector_id=1, id_tag="TAG-OK",
                                                 meter_start=meter_start,
                                                 timestamp=stamp(at)))
    assert answer.id_tag_info["status"] == "Accepted"
    return int(answer.transaction_id)


async def stopping(central: Central) -> None:
    """Stops the central system as a SIGTERM does: its pending reboot checks dropped
    (``chargegraph.app._settle``), the OCPP server and the store closed."""
    central.services.charging.reboot_checks.stop()
    await stop_central(central)


async def test_a_restart_within_the_reboot_grace_still_frees_the_card(tmp_path: Path
                                                                      ) -> None:
    """The QA's t4: the charger rebooted mid-transaction (no StopTransaction), reported
    the connector Available, and the server restarted within the grace. The charger,
    connected again, sent only Heartbeats: the session stayed ACTIVE for ever and the
    card was ConcurrentTx on every charger."""
    first = await start_central(tmp_path / "central.db")
    await seed(first)
    first.services.charging.reboot_checks.grace_s = 60.0  # the restart comes first
    now = datetime.now(UTC)
    async with connected(first.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        tx = await start(cp, 1000, now - timedelta(minutes=10))
        await meter(cp, tx, 3000, now - timedelta(minutes=5))
    async with connected(first.url, "CP-1", password=STATION_PASSWORD) as cp:  # rebooted
        await cp.boot()
        await cp.status(1, "Available")
    await stopping(first)

    second = await start_central(tmp_path / "central.db")
    second.services.charging.reboot_checks.grace_s = 0.0  # over by now
    try:
        async with connected(second.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.heartbeat()
            await second.services.charging.reboot_checks.done()
            ended = await second.session(tx)
            assert ended is not None
            assert (ended.state, ended.stop_reason, ended.energy_wh) == (
                d.SessionState.COMPLETED, "Other", 2000)
            assert await cp.authorize("TAG-OK") == "Accepted"
        async with connected(second.url, "CP-OPEN") as elsewhere:
            assert await elsewhere.authorize("TAG-OK") == "Accepted"
    finally:
        await stopping(second)
