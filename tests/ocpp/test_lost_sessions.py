"""Sessions the central system closed without their StopTransaction, end to end: a real
OCPP charger (the ``ocpp`` package's client) over a websocket to a central system on an
SQLite file, restarted on that file where the QA restarted the server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ocpp.v16 import call

from domain import entities as d
from domain.query import Eq
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central


def stamp(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def meter(cp: SimulatedChargePoint, transaction_id: int | None, wh: int,
                at: datetime, *, connector: int = 1) -> None:
    """A register reading; ``transaction_id`` ``None``: of the connector (clock-aligned)."""
    await cp.call(call.MeterValues(connector_id=connector, transaction_id=transaction_id,
                                   meter_value=[{"timestamp": stamp(at), "sampledValue": [
                                       {"value": str(wh), "unit": "Wh",
                                        "measurand": "Energy.Active.Import.Register"}]}]))


async def start(cp: SimulatedChargePoint, meter_start: int, at: datetime, *,
                connector: int = 1) -> int:
    answer = await cp.call(call.StartTransaction(connector_id=connector, id_tag="TAG-OK",
                                                 meter_start=meter_start,
                                                 timestamp=stamp(at)))
    assert answer.id_tag_info["status"] == "Accepted"
    return int(answer.transaction_id)


async def stopping(central: Central) -> None:
    """Stops the central system as a SIGTERM does: its pending reboot checks dropped
    (``chargegraph.app._settle``), the OCPP server and the store closed."""
    central.services.charging.reboot_checks.stop()
    central.services.charging.restore_checks.stop()
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


async def payment_of(central: Central, session: d.Session) -> d.Payment:
    payment = await central.store.find_one(d.Payment, Eq("session_id", session.id))
    assert payment is not None
    return payment


async def test_a_stop_replayed_after_the_next_start_corrects_the_session(
        central: Central) -> None:
    """The QA's t3: the charger replays its queue out of order, the next transaction's
    StartTransaction before the previous one's StopTransaction. That start closed the
    previous session as lost (2 kWh as metered, ending at the new start); its real stop
    (19 kWh, ended an hour before) was acknowledged and thrown away."""
    now = datetime.now(UTC)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        older = await start(cp, 1000, now - timedelta(hours=4))
        await meter(cp, older, 3000, now - timedelta(hours=3))
        newer = await start(cp, 20_000, now - timedelta(hours=1))
        lost = await central.session(older)
        assert lost is not None and (lost.stop_reason, lost.meter_stop_wh) == ("Other", None)
        assert (await payment_of(central, lost)).amount_minor == 80  # 2 kWh at 0.40

        answer = await cp.call(call.StopTransaction(
            meter_stop=20_000, timestamp=stamp(now - timedelta(hours=2)),
            transaction_id=older, reason="EVDisconnected", id_tag="TAG-OK"))
        assert answer.id_tag_info["status"] == "Accepted"

        stopped = await central.session(older)
        assert stopped is not None
        assert (stopped.stop_reason, stopped.meter_stop_wh, stopped.energy_wh,
                stopped.cost_minor) == ("EVDisconnected", 20_000, 19_000, 760)
        assert stopped.end_time is not None \
            and abs(stopped.end_time - (now - timedelta(hours=2))) < timedelta(seconds=1)
        payment = await payment_of(central, stopped)
        assert (payment.status, payment.amount_minor) == (d.PaymentStatus.PENDING, 760)
        running = await central.session(newer)
        assert running is not None and running.state is d.SessionState.ACTIVE


async def added_wh(central: Central, session: d.Session) -> int:
    """What the session's stored samples add up to (its increments)."""
    samples = await central.store.find_all(d.MeterSample, Eq("session_id", session.id))
    return sum(s.delta_wh or 0 for s in samples)


async def test_a_newer_start_below_the_lost_sessions_readings_ends_it_there(
        central: Central) -> None:
    """QA s21: a transaction's stop was lost; the next one began at 3 kWh on the
    register, but its StartTransaction waited in the charger's queue behind a
    clock-aligned reading of the connector (5 kWh), which metered the older session.
    That start closed the older billed to 5 kWh and the newer from 3 kWh: 2 kWh twice.
    A register only grows: the older ends at the newer's meterStart, its increments
    taken back above it as a stop's are, flagged for review."""
    now = datetime.now(UTC)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        older = await start(cp, 1000, now - timedelta(hours=2), connector=2)
        await meter(cp, older, 2500, now - timedelta(minutes=90), connector=2)
        await meter(cp, None, 5000, now - timedelta(minutes=50), connector=2)
        newer = await start(cp, 3000, now - timedelta(hours=1), connector=2)
        lost = await central.session(older)
        assert lost is not None
        assert (lost.state, lost.stop_reason, lost.meter_stop_wh, lost.energy_wh,
                lost.cost_minor, lost.meter_anomaly) == (
            d.SessionState.COMPLETED, "Other", None, 2000, 80,
            d.MeterAnomaly.NEXT_START_BELOW_READINGS)
        assert await added_wh(central, lost) == 2000  # its increments add up to the bill
        assert (await payment_of(central, lost)).amount_minor == 80  # 2 kWh at 0.40
        await cp.call(call.StopTransaction(meter_stop=6000, transaction_id=newer,
                                           timestamp=stamp(now - timedelta(minutes=10))))
        stopped = await central.session(newer)
        assert stopped is not None and (stopped.energy_wh, stopped.meter_anomaly) == (
            3000, None)  # the register moved 5 kWh (1 to 6), billed 5 kWh in all

        # Its own StopTransaction, should it come after all, decides as any late stop
        # does: the flag is no rollover or reset its meterStop is counted across.
        await cp.call(call.StopTransaction(meter_stop=5000, transaction_id=older,
                                           timestamp=stamp(now - timedelta(minutes=55))))
    corrected = await central.session(older)
    assert corrected is not None
    assert (corrected.meter_stop_wh, corrected.energy_wh, corrected.meter_anomaly) == (
        5000, 4000, d.MeterAnomaly.NEXT_START_BELOW_READINGS)
    assert await added_wh(central, corrected) == 4000


@pytest.mark.parametrize(("older_start", "reading", "newer_start"), [
    (0, 4000, 0),  # a meter counting each transaction from 0
    (0, 4000, 300),  # ... from near 0 (within 10 % of the older's readings)
    (0, 4000, 1500),  # ... whose next start read some energy before the transaction
    (300, 4000, 1500),  # ... and its first too (review s21): below a reading of its own
    (500_000, 505_000, 0),  # a charger's register, then a per-transaction meter
    (500_000, 505_000, 499_000),  # below the older's own start: a register gone back
])
async def test_a_newer_start_on_another_meter_scale_leaves_the_lost_session_as_metered(
        central: Central, older_start: int, reading: int, newer_start: int) -> None:
    """A newer meterStart at or near 0, or below the older's own meterStart, is no
    reading of the register the older session was metered on: cutting the older at it
    would bill it nothing. It is billed as metered, as before, and not flagged."""
    now = datetime.now(UTC)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        older = await start(cp, older_start, now - timedelta(hours=2))
        await meter(cp, older, reading, now - timedelta(minutes=90))
        await start(cp, newer_start, now - timedelta(hours=1))
    lost = await central.session(older)
    assert lost is not None
    assert (lost.state, lost.energy_wh, lost.cost_minor, lost.meter_anomaly) == (
        d.SessionState.COMPLETED, reading - older_start,
        round((reading - older_start) * 0.04), None)


async def test_a_stop_after_the_reboot_grace_corrects_the_session_closed_as_lost(
        central: Central) -> None:
    """The QA's t16: after a power loss the charger booted, reported Available, and its
    queued StopTransaction (meterStop 40 kWh, PowerLoss) came after the grace: the
    session stayed at the 1 kWh metered before the reboot."""
    charging = central.services.charging
    charging.reboot_checks.grace_s = 0.0
    now = datetime.now(UTC)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        tx = await start(cp, 1000, now - timedelta(minutes=30))
        await meter(cp, tx, 2000, now - timedelta(minutes=20))
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:  # rebooted
        await cp.boot()
        await cp.status(1, "Available")
        await charging.reboot_checks.done()
        lost = await central.session(tx)
        assert lost is not None and (lost.state, lost.energy_wh, lost.meter_stop_wh) == (
            d.SessionState.COMPLETED, 1000, None)

        await cp.call(call.StopTransaction(
            meter_stop=40_000, timestamp=stamp(now - timedelta(minutes=10)),
            transaction_id=tx, reason="PowerLoss"))

    stopped = await central.session(tx)
    assert stopped is not None
    assert (stopped.stop_reason, stopped.meter_stop_wh, stopped.energy_wh,
            stopped.cost_minor) == ("PowerLoss", 40_000, 39_000, 1560)
    assert (await payment_of(central, stopped)).amount_minor == 1560


async def test_a_failing_re_arm_of_reboot_checks_does_not_refuse_the_charger(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review (s17): the re-arm runs after the connection is recorded; a read failing
    there closed the socket (1013) and recorded the charger offline again."""
    from domain.errors import StoreUnavailable

    async def failing(station: object) -> None:
        raise StoreUnavailable("a blip", reason="busy")

    monkeypatch.setattr(central.services.charging, "_resume_reboot_checks", failing)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        assert station is not None and station.online
