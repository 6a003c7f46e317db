"""Sampled values a charger gets wrong, through a real websocket with the ``ocpp``
package's client as the charge point: a stop whose transactionData holds a value no meter
writes still ends its session, and a reading stamped beyond belief is placed at its
arrival (QA s17, chaos)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from ocpp.exceptions import OCPPError
from ocpp.v16 import call

from domain import entities as d
from domain.query import Eq
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_meter_anomalies import Charger, billed, iso


async def test_a_stop_with_an_unreadable_sampled_value_still_ends_its_session(
        central: Central) -> None:
    """A temperature of "NaN" in the stop's transactionData refused the whole
    StopTransaction: the session stayed ACTIVE and its driver's card blocked once the
    charger gave up retrying. The stop is kept, the readable values with it."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start(1_000)
        await charger.reading(2_000)
        end = charger.at + timedelta(minutes=1)
        await cp.call(call.StopTransaction(
            meter_stop=3_000, timestamp=iso(end), transaction_id=charger.tx,
            reason="EVDisconnected", transaction_data=[{"timestamp": iso(end), "sampledValue": [
                {"value": "3000", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": "NaN", "measurand": "Temperature", "unit": "Celsius"},
                {"value": "1e13", "measurand": "Power.Active.Import", "unit": "W"}]}]))
    session = await billed(central, charger.tx)
    assert session.energy_wh == 2_000
    kept = await central.store.find_all(d.MeterSample, Eq("transaction_id", charger.tx))
    assert {s.measurand for s in kept if s.at == end} == {"Energy.Active.Import.Register"}


async def test_a_meter_values_frame_is_kept_without_its_unreadable_values(
        central: Central, caplog: pytest.LogCaptureFixture) -> None:
    """One temperature of "NaN" beside the energy register refused the whole MeterValues
    frame, and the register's reading was lost (QA s20). The unreadable value is left
    out, logged once per charger and reason (a probe reading "NaN" every ten seconds
    says so once); a frame of which nothing is readable is still refused."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start(100_000)

        async def frame(*values: dict) -> None:
            charger.at += timedelta(minutes=1)
            await cp.call(call.MeterValues(
                connector_id=1, transaction_id=charger.tx,
                meter_value=[{"timestamp": iso(charger.at), "sampledValue": list(values)}]),
                suppress=False)

        nan = {"value": "NaN", "measurand": "Temperature", "unit": "Celsius"}
        with caplog.at_level(logging.WARNING, logger="chargegraph.charging"):
            await frame({"value": "100500"}, nan)
            await frame({"value": "100600"}, nan)  # the same reason: no second line
            await frame({"value": "100700"}, {"value": "3_1", "measurand": "Temperature"})
            with pytest.raises(OCPPError) as refused:
                await frame({"value": "100_800"})
        assert refused.value.code == "PropertyConstraintViolation"
        assert "must be a plain decimal number" in refused.value.description
        live = await central.session(charger.tx)
        assert live is not None and live.energy_wh == 700
        await charger.stop(101_000)
    kept = await central.store.find_all(d.MeterSample, Eq("transaction_id", charger.tx))
    assert sorted(s.value for s in kept if s.measurand == "Energy.Active.Import.Register"
                  ) == [100_500, 100_600, 100_700, 101_000]
    assert not [s for s in kept if s.measurand == "Temperature"]
    told = [r.getMessage() for r in caplog.records if r.name == "chargegraph.charging"
            and "MeterValues" in r.getMessage()]
    assert len(told) == 2, told
    assert "must be a finite number" in told[0] and "plain decimal" in told[1], told
    assert (await billed(central, charger.tx)).energy_wh == 1_000


async def test_a_value_padded_with_blanks_is_read_as_its_number(central: Central) -> None:
    """QA: a lone sampled value " 12" (firmware padding a number to a width) refused the
    whole MeterValues frame as no plain decimal, while "abc" was taken as text. It is the
    number the blanks surround."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start(100_000)
        charger.at += timedelta(minutes=1)
        await cp.call(call.MeterValues(
            connector_id=1, transaction_id=charger.tx, meter_value=[{
                "timestamp": iso(charger.at), "sampledValue": [{"value": " 100500\t"}]}]),
            suppress=False)
        live = await central.session(charger.tx)
        assert live is not None and live.energy_wh == 500
        await charger.stop(101_000)
    kept = await central.store.find_all(d.MeterSample, Eq("transaction_id", charger.tx))
    assert 100_500 in {s.value for s in kept}


async def test_a_reading_stamped_beyond_belief_is_placed_at_its_arrival(
        central: Central) -> None:
    """One reading stamped 2099 between two sane ones was stored in 2099: that day's
    trends got its energy, and its time of day priced it."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start(1_000)
        await charger.reading(4_000)
        before = datetime.now(UTC)
        await charger.reading(5_000, at=datetime(2099, 6, 1, tzinfo=UTC))
        after = datetime.now(UTC)
        await charger.reading(6_000)
        await charger.stop(7_000)
    session = await billed(central, charger.tx)
    assert session.energy_wh == 6_000
    kept = await central.store.find_all(d.MeterSample, Eq("transaction_id", charger.tx))
    assert max(s.at for s in kept) < datetime(2099, 1, 1, tzinfo=UTC)
    [glitch] = [s for s in kept if s.value == 5_000]
    assert before - timedelta(seconds=1) <= glitch.at <= after + timedelta(seconds=1)
    assert glitch.delta_wh == 1_000  # still counted, at its arrival


async def test_a_reading_beyond_belief_neither_sets_the_clock_nor_doubles_when_resent(
        central: Central) -> None:
    """Review (s17): placed at its arrival, a 2099 reading made our clock the charger's
    (one two hours behind then had its later stamps ignored as old), and a resent frame
    wrote it again under a new id (its samples and signed evidence twice)."""
    behind = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    glitch = datetime(2099, 6, 1, tzinfo=UTC)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        answer = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=1_000, timestamp=iso(behind)))
        tx = answer.transaction_id
        frame = call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[{
            "timestamp": iso(glitch), "sampledValue": [
                {"value": "2000"},
                {"value": "OCMF|{}|{}", "format": "SignedData"}]}])
        await cp.call(frame)
        await cp.call(frame)  # resent: its answer was lost
        clock = central.services.charging.clocks.charger_now("CP-1")
    assert clock < datetime.now(UTC) - timedelta(hours=1), clock
    samples = await central.store.find_all(d.MeterSample, Eq("transaction_id", tx))
    assert [s.value for s in samples] == [2_000]
    signed = await central.store.find_all(d.SignedMeterValue, Eq("transaction_id", tx))
    assert len(signed) == 1 and signed[0].at == glitch  # evidence as sent


async def test_energy_stamped_before_its_session_began_stays_in_the_session(
        central: Central) -> None:
    """A charger whose clock was reset mid-session (1970) sent a reading and its stop
    stamped 1970: their energy went into 1970's trends while the session showed today
    (QA s18). Every sample of a session is placed at or after its start."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start(1_000)
        await charger.reading(1_600)
        await charger.reading(2_000, at=datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC))
        await cp.call(call.StopTransaction(meter_stop=2_500, timestamp="1970-01-01T00:01:00Z",
                                           transaction_id=charger.tx))
    session = await billed(central, charger.tx)
    assert session.energy_wh == 1_500
    kept = await central.store.find_all(d.MeterSample, Eq("transaction_id", charger.tx))
    assert min(s.at for s in kept) >= session.start_time
    assert sum(s.delta_wh or 0 for s in kept) == 1_500
