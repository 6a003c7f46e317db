"""A charger that meters by ``Energy.Active.Import.Interval`` (no register) meters live
energy and the hours it was delivered in; an unbelievable ``Transaction.Begin`` reading
of a stop sits at its session's start; an energy reading sent without a unit reads Wh
(QA s32). The metering rules alone, then through the charging service on both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.query import Eq
from domain.services.analytics import Scope
from domain.services.metering import (
    ENERGY_INTERVAL,
    ENERGY_REGISTER,
    MAX_BELIEVABLE_KW,
    MeterReading,
    RegisterCount,
    SampledValue,
    believed,
    meters_intervals,
    samples_of,
)
from domain.timebuckets import Bucket
from tests.domain.test_charging_telemetry import ADMIN, CP, T0, World, store_of, world_on

START = datetime(2026, 12, 5, 16, tzinfo=UTC)
STATION = d.Station(cp_id=CP, name=CP)


def active(meter_start: int = 0, **kw: Any) -> d.Session:
    return d.Session(station_id=STATION.id, cp_id=CP, connector_id=1, transaction_id=1,
                     id_tag="TAG", start_time=START, meter_start_wh=meter_start,
                     state=d.SessionState.ACTIVE, **kw)


def reading(minutes: int, *values: SampledValue) -> MeterReading:
    return MeterReading(START + timedelta(minutes=minutes), values)


def interval(wh: str, context: str | None = None, phase: str | None = None,
             unit: str | None = "Wh") -> SampledValue:
    return SampledValue(wh, ENERGY_INTERVAL, unit, phase, context)


def deltas(session: d.Session, *readings: MeterReading) -> tuple[list[int | None], int]:
    """The increments of ``readings``' samples, and the count's highest after them."""
    count = RegisterCount(session, MAX_BELIEVABLE_KW)
    samples = samples_of(STATION, 1, 1, session, list(readings), count)
    return [s.delta_wh for s in samples], count.high


def test_interval_readings_without_a_register_add_to_the_session() -> None:
    # Periodic (or no context: OCPP's default) intervals, a total or its lines' sum.
    assert deltas(active(1000), reading(15, interval("2500", "Sample.Periodic")),
                  reading(30, interval("2.5", unit="kWh"))) == ([2500, 2500], 6000)
    assert deltas(active(), reading(15, interval("800", phase="L1"),
                                    interval("900", phase="L2-N"),
                                    interval("5000", phase="L1-L2"))) \
        == ([None, 1700, None], 1700)


def test_a_register_beside_an_interval_is_what_counts() -> None:
    """A reading with both is one energy read twice: the register wins."""
    assert deltas(active(1000), reading(15, interval("2500"),
                                        SampledValue("3500", ENERGY_REGISTER, "Wh"))) \
        == ([None, 2500], 3500)


def test_clock_aligned_triggered_and_repeated_intervals_add_nothing() -> None:
    """Clock-aligned intervals beside periodic ones cover the same energy; an interval
    at or before the reading that last moved the count is one counted already (a
    resent frame, a stop's transactionData repeating the live readings)."""
    assert deltas(active(), reading(15, interval("2500", "Sample.Clock")),
                  reading(16, interval("2500", "Trigger"))) == ([None, None], 0)
    counted = active(energy_wh=2500, meter_at=START + timedelta(minutes=15))
    assert deltas(counted, reading(15, interval("2500")),
                  reading(10, interval("2500"))) == ([None, None], 2500)


def test_only_intervals_that_count_ask_whether_a_register_moved_the_count() -> None:
    """The frame's read of its session's samples (``_register_moved``) is for the
    intervals ``samples_of`` counts alone: not a clock-aligned or triggered one, an
    inlet's, or a phase-to-phase line's."""
    assert meters_intervals([reading(15, interval("2500", "Sample.Periodic"))])
    assert meters_intervals([reading(15, interval("800", phase="L1"))])
    assert not meters_intervals([
        reading(15, interval("2500", "Sample.Clock"), interval("2500", "Trigger")),
        reading(16, SampledValue("2500", ENERGY_INTERVAL, "Wh", location="Inlet"),
                interval("5000", phase="L1-L2"))])


def test_an_interval_no_meter_could_show_adds_nothing() -> None:
    assert deltas(active(), reading(1, interval("9000000"))) == ([None], 0)


def test_an_energy_reading_without_a_unit_reads_wh_power_none() -> None:
    """OCPP 1.6: a sampled value's unit defaults to Wh for an energy measurand."""
    samples = samples_of(STATION, 1, 1, active(), [reading(
        1, SampledValue("10"), interval("5", unit=None),
        SampledValue("7", "Power.Active.Import"))])
    assert [s.unit for s in samples] == ["Wh", "Wh", None]


def test_an_unbelievable_transaction_begin_reading_is_placed_at_the_start() -> None:
    """A clock never set: the others at their arrival, as before."""
    epoch, now = datetime(1970, 1, 1, tzinfo=UTC), START + timedelta(hours=1)
    begin = MeterReading(epoch, (SampledValue("0", context="Transaction.Begin"),))
    end = MeterReading(epoch, (SampledValue("4000", context="Transaction.End"),))
    placed = believed([begin, end], lambda at: at.year > 2000, now, START)
    assert [(r.timestamp, r.reported) for r in placed] == [(START, epoch), (now, epoch)]
    unknown = believed([begin], lambda at: at.year > 2000, now)  # no session known
    assert [r.timestamp for r in unknown] == [now]


def interval_frame(seconds: int, wh: int, context: str = "Sample.Periodic"
                   ) -> list[MeterReading]:
    return [MeterReading(T0 + timedelta(seconds=seconds), (
        SampledValue(str(wh), ENERGY_INTERVAL, "Wh", context=context),
        SampledValue("10", "Power.Active.Import", "kW")))]


async def metered_by_interval(world: World, meter_start: int, quarters: int
                              ) -> tuple[int, datetime]:
    """A session started two hours before ``T0``'s hour, metered ``quarters`` periodic
    2,500 Wh intervals a quarter of an hour apart: its transaction and start."""
    hour = T0.replace(minute=0, second=0) - timedelta(hours=2)
    tx, _ = await world.services.charging.start_transaction(CP, 1, "TAG-1", meter_start,
                                                            hour)
    for quarter in range(1, quarters + 1):
        await world.services.charging.meter_values(CP, 1, tx, [r._replace(
            timestamp=hour + timedelta(minutes=15 * quarter))
            for r in interval_frame(0, 2500)])
    return tx, hour


async def energy_by_hour(world: World, start: datetime) -> list[int]:
    trend = await world.services.analytics.energy_trend(
        ADMIN, Scope(cp_ids=(CP,)), start, start + timedelta(hours=2), Bucket.HOUR)
    return [b.energy_wh for b in trend]


@pytest.mark.parametrize("kind", ["sqlite", "mongo"])
async def test_a_charger_metering_by_interval_meters_live_and_by_the_hour(
        kind: str, tmp_path: Path) -> None:
    """QA s32: 2 h at 10 kW in eight 2.5 kWh intervals showed 0 kWh until the stop, and
    the trend put all 20 kWh in the stop's hour."""
    async with world_on(store_of(kind, tmp_path / "t.db")) as world:
        charging = world.services.charging
        tx, hour = await metered_by_interval(world, 0, 8)
        # Resent, and a clock-aligned interval of the same energy: nothing more.
        await charging.meter_values(CP, 1, tx, [r._replace(
            timestamp=hour + timedelta(hours=2)) for r in interval_frame(0, 2500)])
        await charging.meter_values(CP, 1, tx, [r._replace(
            timestamp=hour + timedelta(hours=2)) for r in interval_frame(
                0, 10_000, "Sample.Clock")])
        live = await world.session(tx)
        assert (live.energy_wh, live.power_w) == (20_000, 10_000)
        # A sample at 17:00 sharp counts in the hour it ends (``sampled_in``).
        assert await energy_by_hour(world, hour) == [10_000, 10_000]
        await charging.stop_transaction(CP, tx, 20_000, hour + timedelta(hours=2))
        billed = await world.session(tx)
        assert (billed.energy_wh, billed.meter_anomaly) == (20_000, None)
        samples = await world.store.find_all(d.MeterSample, Eq("transaction_id", tx))
        assert sum(s.delta_wh or 0 for s in samples) == 20_000
        assert await energy_by_hour(world, hour) == [10_000, 10_000]


@pytest.mark.parametrize("kind", ["sqlite", "mongo"])
async def test_a_clock_never_set_stop_with_its_begin_reading_is_no_reset(
        kind: str, tmp_path: Path) -> None:
    """QA s32: the stop's Transaction.Begin reading (0 Wh, 1970) was dated at the stop's
    arrival, after the live 3000 Wh: read 3000 → 0 → 4000, flagged RESET."""
    async with world_on(store_of(kind, tmp_path / "t.db")) as world:
        charging = world.services.charging
        epoch = datetime(1970, 1, 1, 0, 5, tzinfo=UTC)
        tx, _ = await charging.start_transaction(CP, 1, "TAG-1", 0, epoch)
        for minute in (1, 2, 3):
            await charging.meter_values(CP, 1, tx, [MeterReading(
                epoch + timedelta(minutes=minute),
                (SampledValue(str(1000 * minute), ENERGY_REGISTER, "Wh"),))])
        await charging.stop_transaction(CP, tx, 4000, epoch + timedelta(minutes=5),
                                        readings=[
            MeterReading(epoch, (SampledValue("0", ENERGY_REGISTER, "Wh",
                                              context="Transaction.Begin"),)),
            MeterReading(epoch + timedelta(minutes=5), (SampledValue(
                "4000", ENERGY_REGISTER, "Wh", context="Transaction.End"),))])
        billed = await world.session(tx)
        assert (billed.energy_wh, billed.meter_anomaly) == (4000, None)
        samples = await world.store.find_all(d.MeterSample, Eq("transaction_id", tx))
        registers = [s.value for s in sorted(samples, key=lambda s: (s.at, s.value))]
        assert registers == sorted(registers)  # 0, 1000, …, 4000: no drop
        [begin] = [s for s in samples if s.context == "Transaction.Begin"]
        assert begin.at == billed.start_time


def register_frame(at: datetime, wh: int) -> list[MeterReading]:
    return [MeterReading(at, (SampledValue(str(wh), ENERGY_REGISTER, "Wh"),))]


@pytest.mark.parametrize("kind", ["sqlite", "mongo"])
async def test_intervals_count_no_more_once_a_register_moved_the_count(
        kind: str, tmp_path: Path) -> None:
    """Review r32-a: a register in one frame and the periodic interval a second later in
    another counted the same energy twice: live 22,500 Wh where the meter read 20,000,
    the stop billing 20,000 flagged STOP_BELOW_READINGS."""
    async with world_on(store_of(kind, tmp_path / "t.db")) as world:
        charging = world.services.charging
        tx, hour = await metered_by_interval(world, 0, 7)
        end = hour + timedelta(hours=2)
        await charging.meter_values(CP, 1, tx, register_frame(end, 20_000))
        await charging.meter_values(CP, 1, tx, [r._replace(
            timestamp=end + timedelta(seconds=1)) for r in interval_frame(0, 2500)])
        # A later interval too, in a frame of its own: the register counts from here.
        await charging.meter_values(CP, 1, tx, [r._replace(
            timestamp=end + timedelta(minutes=15)) for r in interval_frame(0, 2500)])
        assert (await world.session(tx)).energy_wh == 20_000
        await charging.meter_values(CP, 1, tx, register_frame(
            end + timedelta(minutes=16), 22_500))
        assert (await world.session(tx)).energy_wh == 22_500
        await charging.stop_transaction(CP, tx, 22_500, end + timedelta(minutes=16))
        billed = await world.session(tx)
        assert (billed.energy_wh, billed.meter_anomaly) == (22_500, None)


@pytest.mark.parametrize("kind", ["sqlite", "mongo"])
@pytest.mark.parametrize(("meter_start", "meter_stop", "energy", "flag"), [
    (0, 0, 20_000, None),  # a meterStop that did not move: the intervals' sum
    (5_000, 5_000, 20_000, None),
    (5_000, 25_000, 20_000, None),
    (5_000, 18_000, 13_000, d.MeterAnomaly.STOP_BELOW_READINGS),  # moved: it bills
    (5_000, 30_000, 25_000, None),
    # Below meterStart: the intervals' sum, flagged (review r32-d: README said it billed
    # meterStop - meterStart).
    (5_000, 0, 20_000, d.MeterAnomaly.RESET),
    (5_000, 4_000, 20_000, d.MeterAnomaly.IMPLAUSIBLE_STOP),
])
async def test_a_session_counted_by_intervals_alone_is_billed_by_the_stop_that_moved(
        kind: str, tmp_path: Path, meter_start: int, meter_stop: int, energy: int,
        flag: d.MeterAnomaly | None) -> None:
    """Review r32-a: a charger metering by interval alone often sends meterStop equal to
    meterStart. 0/0 billed the intervals' 20,000 Wh flagged RESET, 5,000/5,000 flagged
    IMPLAUSIBLE_STOP: the count the intervals made is no register for the stop to fall
    below. A meterStop that moved above meterStart bills what it says, flagged when below
    the intervals; one below meterStart bills the intervals, flagged."""
    async with world_on(store_of(kind, tmp_path / "t.db")) as world:
        charging = world.services.charging
        tx, hour = await metered_by_interval(world, meter_start, 8)
        assert (await world.session(tx)).energy_wh == 20_000
        await charging.stop_transaction(CP, tx, meter_stop, hour + timedelta(hours=2))
        billed = await world.session(tx)
        assert (billed.energy_wh, billed.meter_anomaly) == (energy, flag)
        samples = await world.store.find_all(d.MeterSample, Eq("transaction_id", tx))
        assert sum(s.delta_wh or 0 for s in samples) == energy
