"""A MeterValues carrying more sampled values than any charger sends is refused before it
is read further (``frames.bound``): the 36,600 of a 4 MiB frame held the event loop, every
charger's and request's, 0.5 s when valid, and over a minute when its readings were late
(session 29; ``ChargingService._late_shares`` read every sample for each late one)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from ocpp.exceptions import OCPPError
from ocpp.v16 import call

from domain import entities as d
from domain.query import ALL, Eq
from domain.services import charging
from domain.services.metering import samples_of
from ocpp_bridge import frames
from ocpp_bridge.frames import MAX_SAMPLED_VALUES, FrameError
from ocpp_bridge.server import MAX_MESSAGE
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.ocpp.test_meter_anomalies import Charger, iso
from tests.ocpp.test_protocol import exchange, raw


def _readings(count: int, per: int = 5, value: Any = "1") -> list[dict[str, Any]]:
    return [{"timestamp": f"2026-01-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:"
                          f"{i % 60:02d}Z",
             "sampledValue": [{"value": value, "unit": "Wh",
                               "measurand": "Energy.Active.Import.Register"}] * per}
            for i in range(count)]


def test_the_bound_counts_every_reading_s_sampled_values() -> None:
    readings = _readings(MAX_SAMPLED_VALUES // 5)
    frames.bound("MeterValues", {"connectorId": 1, "meterValue": readings}, "u")  # taken
    beyond = {"connectorId": 1, "meterValue": [*readings, {
        "timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": "1"}]}]}
    with pytest.raises(FrameError) as refused:
        frames.bound("MeterValues", beyond, "u")
    assert refused.value.code == frames.OCCURENCE_CONSTRAINT_VIOLATION
    assert refused.value.unique_id == "u"
    assert f"more than {MAX_SAMPLED_VALUES} sampled values" in refused.value.description
    # A reading without sampled values counts as one: they cost a step each too.
    empty = {"meterValue": [{"timestamp": "2026-01-01T00:00:00Z"}] * (MAX_SAMPLED_VALUES + 1)}
    with pytest.raises(FrameError):
        frames.bound("MeterValues", empty, "u")
    # Shapes the schema refuses are left to it, and other actions are not counted.
    frames.bound("MeterValues", {"meterValue": "many"}, "u")
    frames.bound("StopTransaction", {"transactionData": _readings(MAX_SAMPLED_VALUES)}, "u")


def test_the_bound_is_the_one_given_and_counting_stops_past_it() -> None:
    """``CHARGEGRAPH_OCPP_MAX_SAMPLED_VALUES`` reaches ``bound`` as its limit; counting
    stops once past it (review r29: counted whole for the log, two million empty readings
    held the loop longer than their parse)."""
    backlog = {"connectorId": 1, "meterValue": _readings(2 * MAX_SAMPLED_VALUES // 5)}
    frames.bound("MeterValues", backlog, "u", 2 * MAX_SAMPLED_VALUES)  # taken
    with pytest.raises(frames.TooManySampledValues) as refused:
        frames.bound("MeterValues", backlog, "u", 2 * MAX_SAMPLED_VALUES - 1)
    assert refused.value.limit == 2 * MAX_SAMPLED_VALUES - 1

    class Counted(list[Any]):
        """Readings that count how many were looked at."""
        looked = 0

        def __iter__(self) -> Any:
            for reading in super().__iter__():
                Counted.looked += 1
                yield reading

    many = Counted([{}] * (10 * MAX_SAMPLED_VALUES))
    with pytest.raises(frames.TooManySampledValues):
        frames.bound("MeterValues", {"meterValue": many}, "u")
    assert Counted.looked == MAX_SAMPLED_VALUES + 1
    assert f"more than {2 * MAX_SAMPLED_VALUES - 1} sampled values" \
        in refused.value.description


async def test_a_raised_bound_takes_a_backlog_and_a_refusal_names_what_to_raise(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A charger flushing a backlog of 300 readings of five measurands (1,500 values, over
    the default bound) into one MeterValues, on a server whose bound is raised to 2,000:
    taken, every reading stored. One of 2,005 is refused (OccurenceConstraintViolation),
    nothing of it stored, with a WARNING naming the charger, the count and the setting,
    once on the connection (the charger retries it)."""
    central = await start_central(tmp_path / "bound.db", max_sampled_values=2000)
    try:
        await seed(central)
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            charger = Charger(cp)
            await charger.start(0)

            def backlog(readings: int) -> call.MeterValues:
                return call.MeterValues(connector_id=1, transaction_id=charger.tx,
                                        meter_value=[{
                    "timestamp": iso(charger.at + timedelta(seconds=k)),
                    "sampledValue": [
                        {"value": str(k)},
                        {"value": "7000", "measurand": "Power.Active.Import", "unit": "W"},
                        {"value": "230", "measurand": "Voltage", "unit": "V"},
                        {"value": "30", "measurand": "Current.Import", "unit": "A"},
                        {"value": "20", "measurand": "Temperature", "unit": "Celsius"}]}
                    for k in range(1, readings + 1)])

            assert MAX_SAMPLED_VALUES < 300 * 5
            await cp.call(backlog(300), suppress=False)
            energy = Eq("measurand", "Energy.Active.Import.Register")
            stored = await central.store.count(d.MeterSample, energy)
            assert stored == 300
            with caplog.at_level(logging.WARNING, logger="chargegraph.ocpp"):
                for _ in range(2):
                    with pytest.raises(OCPPError) as refused:
                        await cp.call(backlog(401), suppress=False)
                    assert refused.value.code == frames.OCCURENCE_CONSTRAINT_VIOLATION
            assert await central.store.count(d.MeterSample, energy) == stored
        told = [(r.levelno, r.getMessage()) for r in caplog.records
                if r.name == "chargegraph.ocpp" and "sampled values" in r.getMessage()]
        assert told == [(logging.WARNING, "CP-1: sends a MeterValues of more than 2000 "
                         "sampled values (CHARGEGRAPH_OCPP_MAX_SAMPLED_VALUES): "
                         "refused; not logged again on this connection")]
    finally:
        await stop_central(central)


async def test_a_huge_meter_values_is_refused_and_the_connection_and_others_served(
        central: Central) -> None:
    """A 4 MiB MeterValues of 36,000 sampled values, each a JSON number to be mended (the
    slowest there was): answered with OccurenceConstraintViolation under its own id,
    nothing of it stored, the charger's connection up (its next, normal MeterValues
    taken), and another charger's heartbeat, sent after it, answered."""
    big = await raw(central, "CP-1")
    other = await raw(central, "CP-OPEN", None)
    try:
        per = len(orjson.dumps(_readings(1, value=1.5)[0])) + 1
        frame = orjson.dumps([2, "huge", "MeterValues", {
            "connectorId": 1,
            "meterValue": _readings((MAX_MESSAGE - 4096) // per, value=1.5)}]).decode()
        assert MAX_MESSAGE // 2 < len(frame) < MAX_MESSAGE
        await big.send(frame)
        assert (await exchange(other, '[2, "hb", "Heartbeat", {}]'))[0] == 3
        answer = json.loads(await asyncio.wait_for(big.recv(), 30))
        assert answer[:3] == [4, "huge", frames.OCCURENCE_CONSTRAINT_VIOLATION]
        assert await central.store.count(d.MeterSample, ALL) == 0
        normal = await exchange(big, json.dumps([2, "mv", "MeterValues", {
            "connectorId": 1, "meterValue": _readings(1, per=1)}]))
        assert normal == [3, "mv", {}]
        assert await central.store.count(d.MeterSample, ALL) == 1
    finally:
        await big.close()
        await other.close()


class _Counted(list):  # type: ignore[type-arg]
    """A frame's samples, counting the times they are read through."""

    reads = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        _Counted.reads += 1
        return super().__iter__()


async def test_many_late_readings_in_one_frame_read_its_samples_a_few_times(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each late reading looked for the frame's first sample with an increment after it
    by reading all the frame's samples: a frame of 36,600 samples, thousands of them
    late, held the event loop for a minute (session 29). Now they are read a few times
    whatever the number of late readings, and each still takes its share: 100 readings
    flushed after the live one at +200 min each take the 100 Wh counted up to them."""
    monkeypatch.setattr(charging, "samples_of",
                        lambda *args: _Counted(samples_of(*args)))
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        start = charger.at = charger.at - timedelta(hours=4)
        await charger.start(0)
        await charger.reading(20_000, at=start + timedelta(minutes=200))
        _Counted.reads = 0
        await cp.call(call.MeterValues(connector_id=1, transaction_id=charger.tx,
                                       meter_value=[{
            "timestamp": iso(start + timedelta(minutes=k)),
            "sampledValue": [{"value": str(100 * k)}]} for k in range(1, 101)]))
        assert _Counted.reads < 10, _Counted.reads
    kept = await central.store.find_all(d.MeterSample, Eq("transaction_id", charger.tx))
    shares = {round((s.at - start).total_seconds() / 60): s.delta_wh for s in kept}
    assert shares == {**{k: 100 for k in range(1, 101)}, 200: 10_000}
