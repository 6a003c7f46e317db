"""Time-of-day prices for a charger whose clock is behind ours: its readings are placed on
our clock by the lag its start showed, so its energy is split by when it really flowed,
by its bill and its running estimate alike (QA s11: 3 minutes behind, every Wh was priced
at the band its start came in). Readings a clock that jumped since the start stamped
cannot be placed: their energy is at the price in force when the start came."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from ocpp.v16 import call

from domain.policy import SYSTEM
from domain.tariff_bands import BandInput
from graph.context import GraphContext
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.helpers import MovedClock
from tests.ocpp.conftest import STATION_PASSWORD, Central

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ESTIMATE = "{ sessions(first: 5) { nodes { transactionId estimatedCost { amountMinor } } } }"
ALL_DAYS = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _minute(at: datetime) -> str:
    return f"{at.hour:02d}:{at.minute:02d}"


async def _band_tariff(central: Central, edge: datetime) -> None:
    """0.20/kWh, 0.10/min, and 0.60/kWh every day in the half hour (UTC) up to ``edge``
    (a whole minute): the QA tariff, its band ending where the test needs it."""
    start = max(edge - timedelta(minutes=30), edge.replace(hour=0, minute=0))
    end = "24:00" if (edge.hour, edge.minute) == (0, 0) else _minute(edge)
    await central.services.tariffs.set_tariff(
        SYSTEM, station_id=central.stations["CP-1"].id, price_per_kwh=Decimal("0.20"),
        price_per_minute=Decimal("0.10"), currency="EUR", time_zone="UTC",
        valid_from=datetime.now(UTC) - timedelta(days=1),
        energy_bands=[BandInput(ALL_DAYS, _minute(start), end, "0.60")])


def _edge_after(at: datetime) -> datetime:
    """The first whole minute at least five minutes after ``at``."""
    return (at + timedelta(minutes=6)).replace(second=0, microsecond=0)


async def _estimate(central: Central, tx: int) -> int:
    data = await central.gql(ESTIMATE, as_user="admin")
    [cents] = [s["estimatedCost"]["amountMinor"] for s in data["sessions"]["nodes"]
               if s["transactionId"] == tx]
    return int(cents)


async def _register(cp: SimulatedChargePoint, tx: int, at: datetime, wh: int) -> None:
    await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[
        {"timestamp": iso(at), "sampledValue": [
            {"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]))


@pytest.fixture
def moved(central: Central, monkeypatch: pytest.MonkeyPatch) -> MovedClock:
    ctx = central.services.ctx
    # Update stamps and GraphQL's "now" (an estimate's end) on the service's clock too, as
    # they are when it is the real one.
    monkeypatch.setattr("domain.services.base.utcnow", lambda: ctx.clock())
    build = GraphContext.build

    def on_services_clock(cls: type[GraphContext], *args: Any, **kwargs: Any
                          ) -> GraphContext:
        context = build(*args, **kwargs)
        context.now = ctx.clock()
        return context
    monkeypatch.setattr(GraphContext, "build", classmethod(on_services_clock))
    return MovedClock(ctx)


@pytest.mark.parametrize(("behind", "known"), [("3 minutes", "at its start"),
                                               ("3 minutes", "by its readings"),
                                               ("1970", "at its start")])
async def test_a_clock_behind_is_split_by_when_its_energy_flowed(
        central: Central, moved: MovedClock, behind: str, known: str) -> None:
    """QA s11: the charger starts a minute before a band ends (on our clock), sends 250 Wh
    every 30 s, stops after 5 minutes. By real time 0.5 kWh at 0.60 and 2 kWh at 0.20,
    plus 5 minutes at 0.10: 1.20 (it was billed 2.00, all at the band). Three minutes
    behind: known at its start when its connection opened before its stamp, else from
    its readings 30 s later. A clock never set (1970) is known at its start (the
    station's record), and its steady run from 1970 is placed alike (all its energy was
    at the receipt's band before); its stamps being no time, its session and readings
    are dated on their arrival (QA s26)."""
    with moved as clock:
        t0 = clock.t0
        edge = _edge_after(t0)
        await _band_tariff(central, edge)
        began = edge - timedelta(minutes=1)  # on our clock
        lag = timedelta(minutes=3) if behind == "3 minutes" else began - EPOCH

        def ours(seconds: int) -> datetime:
            clock.at((began - t0).total_seconds() + seconds)
            return began + timedelta(seconds=seconds)

        if known == "by its readings":  # connected after its clock read the start
            ours(0)
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.call(call.Heartbeat())
            tx = (await cp.call(call.StartTransaction(
                connector_id=1, id_tag="TAG-OK", meter_start=0,
                timestamp=iso(ours(0) - lag)))).transaction_id
            estimates = []
            for k in range(1, 11):
                await _register(cp, tx, ours(30 * k) - lag, 250 * k)
                if k in (2, 6, 10):
                    estimates.append(await _estimate(central, tx))
            await cp.call(call.StopTransaction(meter_stop=2_500, transaction_id=tx,
                                               timestamp=iso(ours(300) - lag)))
    session = await central.session(tx)
    assert session is not None and session.start_clock_behind
    if behind == "1970":  # no time at all: dated on its arrival, its stamp kept (QA s26)
        assert session.start_time == pytest.approx(began, abs=timedelta(seconds=1))
        assert session.reported_start == began - lag
    else:
        assert session.start_time == began - lag  # the charger's, as it sent it
    assert session.band_energy_wh is not None
    assert session.band_energy_wh == pytest.approx([500, 2000], abs=10)
    assert session.cost_minor == 120
    # 1 min and 0.5 kWh at 0.60; 3 min and 1 kWh more at 0.20; the bill (in the QA run
    # 40, 120, 200: "all at the start's band" once the lag showed).
    assert estimates == pytest.approx([40, 80, 120], abs=1)


async def test_readings_after_a_clock_jump_mid_session_are_at_the_receipts_price(
        central: Central, moved: MovedClock) -> None:
    """A charger 4 minutes behind (known at its start) set right by NTP mid-session: its
    readings before the jump are placed by the start's lag (the first in the band, the
    second after it); those after it land past the span billed, where nothing says when
    their energy flowed, and are at the price in force when the start came (the band),
    as all of its energy was before. The time billed is what our clock saw."""
    with moved as clock:
        t0 = clock.t0
        edge = _edge_after(t0)
        await _band_tariff(central, edge)
        began = edge - timedelta(seconds=30)
        lag = timedelta(minutes=4)

        def ours(seconds: int) -> datetime:
            clock.at((began - t0).total_seconds() + seconds)
            return began + timedelta(seconds=seconds)

        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.call(call.Heartbeat())
            tx = (await cp.call(call.StartTransaction(
                connector_id=1, id_tag="TAG-OK", meter_start=0,
                timestamp=iso(ours(0) - lag)))).transaction_id
            await _register(cp, tx, ours(30) - lag, 250)  # up to the edge: the band
            await _register(cp, tx, ours(60) - lag, 500)  # after it: the base price
            await _register(cp, tx, ours(90), 750)  # NTP set the clock right
            await _register(cp, tx, ours(120), 1_000)
            estimate = await _estimate(central, tx)
            await cp.call(call.StopTransaction(meter_stop=1_000, transaction_id=tx,
                                               timestamp=iso(ours(120))))
    session = await central.session(tx)
    assert session is not None and session.start_clock_behind
    assert session.end_time is not None
    assert session.end_time - session.start_time == pytest.approx(
        timedelta(minutes=2), abs=timedelta(seconds=2))
    assert session.band_energy_wh is not None
    assert session.band_energy_wh == pytest.approx([750, 250], abs=10)
    # 0.75 kWh at 0.60, 0.25 kWh at 0.20, 2 minutes at 0.10.
    assert session.cost_minor == 45 + 5 + 20
    assert estimate == pytest.approx(70, abs=1)


async def _power_frame(cp: SimulatedChargePoint, tx: int, at: datetime, wh: int, w: int) -> None:
    await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[
        {"timestamp": iso(at), "sampledValue": [
            {"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": str(w), "measurand": "Power.Active.Import", "unit": "W"}]}]))


async def test_a_lag_shown_live_outlasts_a_car_full_before_the_stop(
        central: Central, moved: MovedClock) -> None:
    """A charger 3 minutes behind ours, its lag shown by its live readings (not known at its
    start), and a car full for the last minute: the last frames carry its power (0 W) but no
    new register count. The lag is still known at the stop (``Session.clock_behind`` reads
    every reading's time), so the bill splits the bands on our clock as every estimate did
    (review s24: read from the register's time alone, the lag was lost and all of it priced
    at the band its start came in).

    Expected (our clock): 500 Wh before the band edge at 0.60, 1500 Wh after at 0.20,
    5 minutes at 0.10: 30 + 30 + 50 = 110. By the charger's stamps (3 min early) all 2000 Wh
    is in the band: 120 + 50 = 170."""
    with moved as clock:
        t0 = clock.t0
        edge = _edge_after(t0)
        await _band_tariff(central, edge)
        began = edge - timedelta(minutes=1)
        lag = timedelta(minutes=3)

        def ours(seconds: int) -> datetime:
            clock.at((began - t0).total_seconds() + seconds)
            return began + timedelta(seconds=seconds)

        ours(0)  # connected after its clock read the start: lag shown by readings
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.call(call.Heartbeat())
            tx = (await cp.call(call.StartTransaction(
                connector_id=1, id_tag="TAG-OK", meter_start=0,
                timestamp=iso(ours(0) - lag)))).transaction_id
            estimates = {}
            for k in range(1, 11):
                full = k > 8  # the car is full: the register stays, power drops to 0
                await _power_frame(cp, tx, ours(30 * k) - lag, 250 * min(k, 8),
                             0 if full else 30_000)
                if k in (8, 10):
                    session = await central.session(tx)
                    assert session is not None
                    estimates[k] = (session.clock_behind, await _estimate(central, tx))
            await cp.call(call.StopTransaction(meter_stop=2_000, transaction_id=tx,
                                               timestamp=iso(ours(300) - lag)))
    session = await central.session(tx)
    assert session is not None
    assert (estimates, session.start_clock_behind, session.band_energy_wh,
            session.cost_minor) == ({8: (True, 100), 10: (True, 110)}, True, [500, 1500],
                                    110)
