"""Time-of-day energy prices: bands in the tariff's time zone, energy attributed to them
from the session's register readings (interpolated across a band's edge), energy without
readings at the price in force at the start, and the lines still adding up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.errors import ValidationError, each
from domain.policy import SYSTEM
from domain.pricing import cost_breakdown
from domain.query import Eq
from domain.services.metering import MeterReading, SampledValue
from domain.tariff_bands import BandInput, attributed_wh, checked_bands, session_split
from tests.domain.test_charging_telemetry import CP, World, store_of, world_on

BERLIN = "Europe/Berlin"
#: A Monday, 21:30 in Berlin (CET, +01:00).
MONDAY_2130 = datetime(2026, 1, 5, 20, 30, tzinfo=UTC)


def _tariff(bands: list[BandInput], time_zone: str = BERLIN) -> d.Tariff:
    stored, zone = checked_bands(bands, time_zone)
    return d.Tariff(company_id="c" * 24, price_per_kwh=Decimal("0.30"), currency="EUR",
                    energy_bands=stored, time_zone=zone)


PEAK = BandInput(days=["MON", "TUE", "WED", "THU", "FRI"], start="07:00", end="22:00",
                 price_per_kwh="0.50")


def _at(minutes: int) -> datetime:
    return MONDAY_2130 + timedelta(minutes=minutes)


def test_energy_is_split_at_the_band_edge_in_local_time() -> None:
    tariff = _tariff([PEAK])
    # 1000 Wh by 21:45 (peak), 2000 Wh from 21:45 to 22:15 (half before 22:00, half
    # after), 500 Wh by 22:30 (off-peak); 500 Wh no reading accounts for: at the price
    # in force at the start, the peak.
    readings = [(_at(45), 2000), (_at(15), 1000), (_at(60), 500)]  # any order
    assert attributed_wh(tariff, _at(0), 4000, readings) == [2500, 1500]
    b = cost_breakdown(tariff, 4000, _at(0), _at(60), band_wh=[2500, 1500])
    assert b.energy == 125 + 45  # 2.5 kWh × 0.50 + 1.5 kWh × 0.30
    # Without readings all of it is at the start's price; in UTC the same instants are
    # 20:30-21:30, all peak.
    assert attributed_wh(tariff, _at(0), 4000, []) == [4000, 0]
    assert attributed_wh(_tariff([PEAK], "UTC"), _at(0), 4000, readings) == [4000, 0]


def test_weekends_and_uncovered_hours_are_at_the_base_price() -> None:
    saturday = MONDAY_2130 - timedelta(days=2)
    assert attributed_wh(_tariff([PEAK]), saturday, 900,
                         [(saturday + timedelta(minutes=10), 900)]) == [0, 900]


def test_a_reading_stamped_far_ahead_is_no_reason_to_walk_centuries() -> None:
    """One MeterValues stamped 2199 made the split enumerate every local day up to it
    (seconds of the event loop at every estimate and close). Past ``until`` it accounts
    for nothing; without ``until``, a span of more than a month is not split."""
    tariff = _tariff([PEAK])
    glitch = datetime(2199, 12, 31, tzinfo=UTC)
    readings = [(_at(15), 1000), (glitch, 500)]
    # 1000 Wh read at peak; the glitch's 500 at the start's price (peak) as unread.
    assert attributed_wh(tariff, _at(0), 1500, readings, until=_at(30)) == [1500, 0]
    assert attributed_wh(tariff, _at(0), 1500, readings) == [1500, 0]
    night = _at(60)  # 22:30: off-peak
    assert attributed_wh(tariff, night, 800, [(night + timedelta(minutes=5), 800),
                                              (glitch, 1)]) == [0, 800]


def test_a_clock_behind_ours_is_split_on_ours_by_the_lag_its_start_showed() -> None:
    """Its readings are placed on our clock by the lag its start showed (its receipt less
    its stamp): a clock never set that runs on from 1970, or one minutes behind (QA s11:
    all of its energy was at the price in force when its start came). Within the span
    billed: a reading past its end by less than ``BILLED_TIME_TOLERANCE`` counts at the
    end; one stamped by a clock that jumped since (set right, reset to 1970) lands
    further out, cannot be placed, and is at the price in force when the start came."""
    tariff = _tariff([PEAK])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    never_set = d.Session(transaction_id=1, station_id="s" * 24, cp_id=CP, connector_id=1,
                          id_tag="T", start_time=epoch, meter_start_wh=0,
                          start_clock_behind=True, created_at=_at(0))
    minute = timedelta(minutes=1)
    readings = [(epoch + 15 * minute, 1000),  # 21:45 Berlin: peak
                (epoch + 45 * minute, 2000),  # 21:45-22:15: half of it peak
                (epoch + 61 * minute, 500),  # a minute past the end: at it, off-peak
                (_at(50), 400)]  # set right by NTP: at the receipt's price, peak
    assert session_split(tariff, never_set, 3900, readings, epoch + 60 * minute) == [
        2400, 1500]
    behind = d.Session(transaction_id=2, station_id="s" * 24, cp_id=CP, connector_id=1,
                       id_tag="T", start_time=_at(-3), meter_start_wh=0,
                       start_clock_behind=True, created_at=_at(0))
    readings = [(_at(12), 1000), (_at(42), 1000),
                (epoch + 5 * minute, 600)]  # reset to 1970: at the receipt's price
    assert session_split(tariff, behind, 2600, readings, _at(57)) == [2100, 500]
    # Shown live, not known at its start: the same (a close keeps the flag).
    live = d.Session(transaction_id=3, station_id="s" * 24, cp_id=CP, connector_id=1,
                     id_tag="T", start_time=_at(-3), meter_start_wh=0, created_at=_at(0),
                     meter_at=_at(42), updated_at=_at(45))
    assert live.clock_behind
    assert session_split(tariff, live, 2000, readings[:2], _at(57)) == [1500, 500]
    # A clock not behind is split by its stamps, three minutes earlier: more of it peak.
    behind.start_clock_behind = False
    assert session_split(tariff, behind, 2000, readings[:2], _at(57)) == [1600, 400]


def test_readings_of_one_instant_spread_over_the_time_before_it() -> None:
    """QA (s17): a clock-aligned and a periodic reading at the same second (or the
    stop's repeat of the last register) gave a 0-Wh twin that sorted first; the real
    increment was then priced at its instant, in the band just begun, not over the
    interval before it. 2000 Wh from 21:45 to 22:15: half before the edge, half after."""
    tariff = _tariff([PEAK])
    alone = [(_at(15), 1000), (_at(45), 2000)]
    with_twin = [(_at(15), 1000), (_at(45), 0), (_at(45), 2000)]
    assert attributed_wh(tariff, _at(0), 3000, alone) == [2000, 1000]
    assert attributed_wh(tariff, _at(0), 3000, with_twin) == [2000, 1000]


def test_more_read_than_billed_is_scaled_to_the_billed_energy() -> None:
    tariff = _tariff([PEAK])
    split = attributed_wh(tariff, _at(0), 1000, [(_at(15), 1000), (_at(45), 1000)])
    assert split == [750, 250] and sum(split) == 1000


def test_lines_add_up_with_bands() -> None:
    night = BandInput(days=["MON"], start="22:00", end="24:00", price_per_kwh="0.123457")
    tariff = _tariff([PEAK, night])
    tariff.tax_rate = Decimal("0.19")
    tariff.price_per_minute = Decimal("0.0101")
    for energy in (1, 333, 4567, 12_345):
        split = attributed_wh(tariff, _at(0), energy, [(_at(20), energy // 3),
                                                       (_at(50), energy // 2)])
        assert sum(split) == energy
        b = cost_breakdown(tariff, energy, _at(0), _at(61), band_wh=split)
        assert b.energy + b.time + b.fee + b.idle == b.net and b.net + b.tax == b.gross
    # A split of another version's bands counts as none: all at the start's price.
    assert cost_breakdown(tariff, 1000, _at(0), _at(0), band_wh=[1, 2]).energy == 50


@pytest.mark.parametrize(("bands", "zone", "field", "code"), [
    ([BandInput(["MON"], "07:00", "09:00", "-0.1")], BERLIN, "energyBands.0.pricePerKwh",
     "OUT_OF_RANGE"),
    ([BandInput(["MON", "FUNDAY"], "07:00", "09:00", "1")], BERLIN, "energyBands.0.days",
     "INVALID"),
    ([BandInput([], "07:00", "09:00", "1")], BERLIN, "energyBands.0.days", "REQUIRED"),
    ([BandInput(["MON"], "7am", "09:00", "1")], BERLIN, "energyBands.0.start", "INVALID"),
    ([BandInput(["MON"], "07:00", "24:30", "1")], BERLIN, "energyBands.0.end", "INVALID"),
    ([BandInput(["MON"], "22:00", "06:00", "1")], BERLIN, "energyBands.0.end",
     "OUT_OF_RANGE"),
    ([PEAK], None, "timeZone", "REQUIRED"),
    ([PEAK], "Mars/Olympus", "timeZone", "INVALID"),
])
def test_bands_are_checked(bands: list[BandInput], zone: str | None, field: str,
                           code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        checked_bands(bands, zone)
    assert (caught.value.field, caught.value.code) == (field, code)


def told(bands: list[BandInput], zone: str | None) -> list[tuple[str | None, str, str]]:
    """Every error ``checked_bands`` reports: field, code and message, in order."""
    with pytest.raises(ValidationError) as caught:
        checked_bands(bands, zone)
    return [(e.field, e.code, e.message) for e in each(caught.value)]


def test_overlapping_bands_name_each_other() -> None:
    assert told([PEAK, BandInput(["sunday", "Fri"], "21:00", "23:00", "1")], BERLIN) == [
        ("energyBands.0", "OVERLAP", "overlaps band 1 on FRI"),
        ("energyBands.1", "OVERLAP", "overlaps band 0 on FRI")]


def test_every_bad_band_and_field_is_reported_at_once_in_input_order() -> None:
    """As every other field of a mutation's input is (``validation.Checks``): a form
    with three bad bands learns all three, not the first one per submission."""
    bands = [BandInput(["MON", "XYZ"], "7am", "06:00", "-1"),
             PEAK,
             BandInput(["SAT"], "10:00", "09:00", "0.2"),
             BandInput(["MON"], "21:00", "23:00", "0.3"),
             BandInput([], "24:00", "25:00", "0.1"),
             BandInput(["TUE"], "06:00", "08:00", "0.3")]
    assert [(field, code) for field, code, _ in told(bands, None)] == [
        ("timeZone", "REQUIRED"),
        ("energyBands.0.days", "INVALID"),
        ("energyBands.0.start", "INVALID"),
        ("energyBands.0.pricePerKwh", "OUT_OF_RANGE"),
        ("energyBands.1", "OVERLAP"),
        ("energyBands.2.end", "OUT_OF_RANGE"),
        ("energyBands.3", "OVERLAP"),
        ("energyBands.4.days", "REQUIRED"),
        ("energyBands.4.start", "OUT_OF_RANGE"),
        ("energyBands.4.end", "INVALID"),
        ("energyBands.5", "OVERLAP")]
    messages = {field: message for field, _, message in told(bands, BERLIN)}
    assert messages["energyBands.1"] == "overlaps band 3 on MON and band 5 on TUE"
    assert messages["energyBands.3"] == "overlaps band 1 on MON"


def test_adjacent_bands_and_long_day_names_are_fine() -> None:
    stored, zone = checked_bands([PEAK, BandInput(["monday", "Sun"], "22:00", "24:00",
                                                  "0.2")], BERLIN)
    assert stored[1] == {"days": ["MON", "SUN"], "start": "22:00", "end": "24:00",
                         "price_per_kwh": "0.2"}
    assert zone == BERLIN


@pytest.fixture(params=["sqlite", "mongo"])
async def band_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    async with world_on(store_of(request.param, tmp_path / "bands.db")) as built:
        yield built


def _register(wh: int, at: datetime) -> list[MeterReading]:
    return [MeterReading(at, (SampledValue(str(wh), "Energy.Active.Import.Register", "Wh"),))]


async def test_a_stop_prices_energy_by_the_bands_it_was_metered_in(band_world: World
                                                                    ) -> None:
    """A band from a whole hour (UTC) on: 2 kWh metered before it, 2 kWh in it (one of
    them interpolated across its start), billed at each price."""
    edge = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    end = "24:00" if edge.hour == 23 else f"{edge.hour + 1:02d}:00"
    station = await band_world.store.find_one(d.Station, Eq("cp_id", CP))
    assert station is not None
    await band_world.services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.30",
        valid_from=edge - timedelta(days=1), time_zone="UTC",
        energy_bands=[BandInput(list(("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")),
                                f"{edge.hour:02d}:00", end, "0.50")])
    charging = band_world.services.charging
    tx, _ = await charging.start_transaction(CP, 1, "TAG-1", 10_000,
                                             edge - timedelta(minutes=30))
    await charging.meter_values(CP, 1, tx, _register(11_000, edge - timedelta(minutes=15)))
    await charging.meter_values(CP, 1, tx, _register(13_000, edge + timedelta(minutes=15)))
    await charging.stop_transaction(CP, tx, 14_000, edge + timedelta(minutes=30))
    session = await band_world.session(tx)
    assert session.band_energy_wh == [2000, 2000]
    assert session.cost_minor == 160  # 2 kWh × 0.50 + 2 kWh × 0.30
    payment = await band_world.store.find_one(d.Payment, Eq("session_id", session.id))
    assert payment is not None and payment.amount_minor == 160


async def test_a_tariff_without_bands_reads_no_samples(band_world: World,
                                                       monkeypatch: Any) -> None:
    station = await band_world.store.find_one(d.Station, Eq("cp_id", CP))
    assert station is not None
    await band_world.services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.30",
        valid_from=utcnow() - timedelta(days=1))
    charging = band_world.services.charging
    start = utcnow() - timedelta(hours=1)
    tx, _ = await charging.start_transaction(CP, 1, "TAG-1", 0, start)
    await charging.meter_values(CP, 1, tx, _register(1000, start + timedelta(minutes=10)))
    reads: list[str] = []
    find_all = band_world.store.find_all

    async def counted(kind: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(kind.kind)
        return await find_all(kind, *args, **kwargs)
    monkeypatch.setattr(band_world.store, "find_all", counted)
    await charging.stop_transaction(CP, tx, 2000, start + timedelta(minutes=20))
    session = await band_world.session(tx)
    assert (session.band_energy_wh, session.cost_minor) == (None, 60)
    assert "meter_sample" not in reads


def test_bands_follow_the_local_clock_over_daylight_saving_changes() -> None:
    # 29 March 2026, Berlin: 02:00 CET is 03:00 CEST (01:00 UTC). 00:30-01:30 UTC is
    # 01:30-02:00 then 03:00-03:30 local: half of it in a 03:00-04:00 band.
    spring = _tariff([BandInput(["SUN"], "03:00", "04:00", "0.5")])
    start = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert attributed_wh(spring, start, 1000, [(start + timedelta(hours=1), 1000)]) == [
        500, 500]
    # 25 October 2026: 03:00 CEST is 02:00 CET again (01:00 UTC), and 02:00-02:30 local
    # comes twice (00:00-00:30 and 01:00-01:30 UTC): an hour of the two from 23:30 UTC.
    autumn = _tariff([BandInput(["SUN"], "02:00", "02:30", "0.5")])
    start = datetime(2026, 10, 24, 23, 30, tzinfo=UTC)
    assert attributed_wh(autumn, start, 1200, [(start + timedelta(hours=2), 1200)]) == [
        600, 600]
