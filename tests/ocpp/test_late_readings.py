"""Meter values that arrive out of order, through a real websocket with the ``ocpp``
package's client as the charge point: a charger flushing queued readings after a
reconnect while live ones flow. A late reading takes its share of the energy from the
sample stamped after it that was credited with it, so energy lands in the hour it was
delivered in and the session's increments still add up to its energy (QA: a late
reading added 0, the live one before it had it all)."""

from __future__ import annotations

from datetime import timedelta

from ocpp.v16 import call

from domain import entities as d
from domain.policy import SYSTEM
from domain.query import Eq
from domain.services.base import patch
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_meter_anomalies import Charger, billed, iso


async def increments(central: Central, tx: int) -> dict[int, int | None]:
    """The session's energy register increments by minute after its start."""
    session = await central.session(tx)
    assert session is not None
    kept = await central.store.find_all(d.MeterSample, Eq("transaction_id", tx))
    return {int((s.at - session.start_time).total_seconds() // 60): s.delta_wh
            for s in kept if s.measurand == "Energy.Active.Import.Register"}


async def test_a_late_reading_takes_its_share_from_the_reading_after_it(
        central: Central) -> None:
    """QA S2: 3500 Wh at +40 min sent first, then the queued 1500 Wh at +5 min (twice:
    resent after a reconnect), then the stop at 4000. 1.0 kWh was delivered by +5 min,
    2.0 more by +40, 0.5 by the stop; the total stays 3.5."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        start = charger.at - timedelta(minutes=50)
        charger.at = start
        await charger.start(500)
        await charger.reading(500, at=start)  # the start's own reading: adds nothing
        await charger.reading(3_500, at=start + timedelta(minutes=40))
        await charger.reading(1_500, at=start + timedelta(minutes=5))  # late
        await charger.reading(1_500, at=start + timedelta(minutes=5))  # resent
        live = await central.session(charger.tx)
        assert live is not None and live.energy_wh == 3_000
        charger.at = start + timedelta(minutes=49)
        await charger.stop(4_000)
    session = await billed(central, charger.tx)
    assert session.energy_wh == 3_500
    assert await increments(central, charger.tx) == {0: 0, 5: 1_000, 40: 2_000, 50: 500}


async def test_late_readings_of_a_stop_take_their_share_and_it_trims_after(
        central: Central) -> None:
    """The stop's transactionData holding the reading the charger never sent live
    (stamped between two stored ones): it takes its share of the stored one after it.
    Its meterStop below that stored reading takes the excess back from the newest
    increment, as it did, the late reading's share kept."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        start = charger.at - timedelta(minutes=50)
        charger.at = start
        await charger.start(500)
        await charger.reading(3_500, at=start + timedelta(minutes=40))
        end = start + timedelta(minutes=50)
        await cp.call(call.StopTransaction(
            meter_stop=2_800, timestamp=iso(end), transaction_id=charger.tx,
            transaction_data=[
                {"timestamp": iso(start + timedelta(minutes=5)),
                 "sampledValue": [{"value": "1500", "context": "Sample.Periodic"}]},
                {"timestamp": iso(start + timedelta(minutes=40)),
                 "sampledValue": [{"value": "3500"}]}]))
    session = await billed(central, charger.tx)
    assert session.energy_wh == 2_300
    assert session.meter_anomaly is d.MeterAnomaly.STOP_BELOW_READINGS
    steps = await increments(central, charger.tx)
    assert steps == {5: 1_000, 40: 1_300}, steps


async def test_a_late_reading_stored_without_its_share_takes_it_when_resent(
        central: Central) -> None:
    """A late reading stored adding nothing (before this rule, or while the sample after
    it was not stored yet) is given its share when its frame comes again: its stored
    sample is updated, not left at 0 while the sample after it gives the share up."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        start = charger.at - timedelta(minutes=50)
        charger.at = start
        await charger.start(500)
        await charger.reading(3_500, at=start + timedelta(minutes=40))
        await charger.reading(1_500, at=start + timedelta(minutes=5))
        kept = await central.store.find_all(d.MeterSample, Eq("transaction_id", charger.tx))
        # As stored before: the late reading added 0, the one after it had it all.
        await central.store.write([
            patch(s, SYSTEM, delta_wh=0 if s.value == 1_500 else 3_000) for s in kept], [])
        await charger.reading(1_500, at=start + timedelta(minutes=5))  # resent
        live = await central.session(charger.tx)
        assert live is not None and live.energy_wh == 3_000
        assert await increments(central, charger.tx) == {5: 1_000, 40: 2_000}
        await charger.stop(4_000)
    session = await billed(central, charger.tx)
    assert session.energy_wh == 3_500
