"""Idle fees: the time a session's connector sits occupied but not charging because the
car is done (SuspendedEV, and Finishing while the transaction is open), beyond a grace,
priced per minute and capped, in the stored cost, the payment and the receipt's lines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.errors import ValidationError
from domain.policy import SYSTEM
from domain.pricing import cost_breakdown, idle_fee
from domain.query import Eq
from domain.services.intervals import idle_within
from tests.domain.test_charging_telemetry import CP, World, store_of, world_on

START = datetime(2026, 1, 1, 22, 0, tzinfo=UTC)


def _tariff(**idle: object) -> d.Tariff:
    return d.Tariff(company_id="c" * 24, price_per_kwh=Decimal("0.30"), currency="EUR",
                    **idle)  # type: ignore[arg-type]


def _interval(status: d.ConnectorStatus, start_min: int, end_min: int | None,
              online: bool = True) -> d.ConnectorInterval:
    return d.ConnectorInterval(
        station_id="s" * 24, cp_id=CP, connector_id=1, status=status, online=online,
        start=START + timedelta(minutes=start_min),
        end=None if end_min is None else START + timedelta(minutes=end_min))


def test_idle_is_suspended_ev_and_finishing_online_within_the_session() -> None:
    history = [
        _interval(d.ConnectorStatus.PREPARING, -5, 0),
        _interval(d.ConnectorStatus.CHARGING, 0, 20),
        _interval(d.ConnectorStatus.SUSPENDED_EVSE, 20, 30),  # throttled: never billed
        _interval(d.ConnectorStatus.SUSPENDED_EV, 30, 40),
        _interval(d.ConnectorStatus.SUSPENDED_EV, 40, 50, online=False),  # nobody knows
        _interval(d.ConnectorStatus.SUSPENDED_EV, 50, 70),
        _interval(d.ConnectorStatus.FINISHING, 70, None),  # open: until the session's end
    ]
    # Session from 0 to 80: 10 + 20 + 10 minutes idle.
    assert idle_within(history, START, START + timedelta(minutes=80)) == timedelta(minutes=40)
    # Finishing after the transaction ended (the stop came at 75) is not the session's.
    assert idle_within(history, START, START + timedelta(minutes=75)) == timedelta(minutes=35)
    # Idle before the session started is not its either.
    assert idle_within(history, START + timedelta(minutes=15),
                       START + timedelta(minutes=60)) == timedelta(minutes=20)


def test_a_car_that_has_not_charged_yet_is_not_idle() -> None:
    """QA s25: a car plugged in at 22:00 waits for its departure timer (SuspendedEV: the
    charger offers energy, the car takes none), charges from 22:30, is full at 23:10 and
    unplugged at 23:20. It was done for 10 minutes, and was billed idle for 40. A
    session that never charged was never done."""
    history = [
        _interval(d.ConnectorStatus.SUSPENDED_EV, 0, 30),
        _interval(d.ConnectorStatus.CHARGING, 30, 70),
        _interval(d.ConnectorStatus.SUSPENDED_EV, 70, None),
    ]
    end = START + timedelta(minutes=80)
    assert idle_within(history, START, end) == timedelta(minutes=10)
    assert idle_within(history[:1], START, START + timedelta(minutes=30)) == timedelta(0)
    # A car charging already when the session's start was stamped counts from the start.
    assert idle_within(history[1:], START + timedelta(minutes=40), end) == timedelta(
        minutes=10)


def test_idle_fee_after_the_grace_and_up_to_the_cap() -> None:
    tariff = _tariff(idle_price_per_minute=Decimal("0.10"), idle_grace_minutes=15)
    assert idle_fee(tariff, timedelta(minutes=10)) == 0
    assert idle_fee(tariff, timedelta(minutes=15)) == 0
    assert idle_fee(tariff, timedelta(minutes=45, seconds=30)) == Decimal("3.05")
    capped = _tariff(idle_price_per_minute=Decimal("0.10"), idle_grace_minutes=15,
                     idle_fee_cap=Decimal("2.00"))
    assert idle_fee(capped, timedelta(hours=5)) == Decimal("2.00")
    assert not _tariff().bills_idle and not _tariff(
        idle_price_per_minute=Decimal(1), idle_fee_cap=Decimal(0)).bills_idle


def test_the_idle_line_adds_up_with_the_others_to_the_billed_total() -> None:
    tariff = _tariff(idle_price_per_minute=Decimal("0.0333"), idle_grace_minutes=5,
                     price_per_minute=Decimal("0.005"), session_fee=Decimal("0.333"),
                     tax_rate=Decimal("0.19"))
    for idle_s in (0, 299, 301, 1234, 7777):
        b = cost_breakdown(tariff, 12_345, START, START + timedelta(minutes=97),
                           timedelta(seconds=idle_s))
        assert b.energy + b.time + b.fee + b.idle == b.net
        assert b.net + b.tax == b.gross
        exact = idle_fee(tariff, timedelta(seconds=idle_s)) * 100
        assert abs(b.idle - exact) < 1
    # No idle time, no idle line: what a tariff without idle fees bills.
    plain = cost_breakdown(tariff, 12_345, START, START + timedelta(minutes=97))
    assert plain.idle == 0


@pytest.fixture(params=["sqlite", "mongo"])
async def idle_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    async with world_on(store_of(request.param, tmp_path / "idle.db")) as built:
        yield built


async def _price_station(world: World, **prices: object) -> None:
    station = await world.store.find_one(d.Station, Eq("cp_id", CP))
    assert station is not None
    await world.services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.30",
        valid_from=utcnow() - timedelta(days=1), **prices)  # type: ignore[arg-type]


async def _charge_until_the_car_is_done(world: World, t: datetime) -> int:
    """A session from ``t``: charging, throttled by the charger 10 minutes (not billed),
    charging, then SuspendedEV from 60 minutes in and Finishing from 100, stopped at 105
    (10 kWh), unplugged at 110: 45 minutes idle while the transaction was open."""
    charging = world.services.charging
    await charging.connect(CP)

    async def status(status: str, minutes: int) -> None:
        await charging.status_notification(CP, 1, status, "NoError",
                                           timestamp=t + timedelta(minutes=minutes))
    await status("Preparing", 0)
    tx, _ = await charging.start_transaction(CP, 1, "TAG-1", 1000, t)
    for name, minutes in (("Charging", 1), ("SuspendedEVSE", 20), ("Charging", 30),
                          ("SuspendedEV", 60), ("Finishing", 100)):
        await status(name, minutes)
    await charging.stop_transaction(CP, tx, 11_000, t + timedelta(minutes=105))
    await status("Available", 110)
    return tx


async def test_a_stop_bills_the_idle_time_beyond_the_grace(idle_world: World) -> None:
    await _price_station(idle_world, idle_price_per_minute="0.10", idle_grace_minutes=10)
    t = utcnow().replace(microsecond=0) - timedelta(hours=3)
    tx = await _charge_until_the_car_is_done(idle_world, t)
    session = await idle_world.session(tx)
    # 10 kWh × 0.30 = 3.00; (45 − 10) min × 0.10 = 3.50.
    assert session.idle_seconds == 45 * 60
    assert session.cost_minor == 650
    payment = await idle_world.store.find_one(d.Payment, Eq("session_id", session.id))
    assert payment is not None and payment.amount_minor == 650


async def test_the_idle_fee_stops_at_its_cap(idle_world: World) -> None:
    await _price_station(idle_world, idle_price_per_minute="0.10", idle_grace_minutes=10,
                         idle_fee_cap="2.00")
    tx = await _charge_until_the_car_is_done(
        idle_world, utcnow().replace(microsecond=0) - timedelta(hours=3))
    assert (await idle_world.session(tx)).cost_minor == 500


async def test_a_tariff_without_idle_fees_measures_nothing(idle_world: World) -> None:
    await _price_station(idle_world)
    tx = await _charge_until_the_car_is_done(
        idle_world, utcnow().replace(microsecond=0) - timedelta(hours=3))
    session = await idle_world.session(tx)
    assert (session.idle_seconds, session.cost_minor) == (None, 300)


@pytest.mark.parametrize(("field", "prices"), [
    ("idlePricePerMinute", {"idle_price_per_minute": "-0.10"}),
    ("idleGraceMinutes", {"idle_grace_minutes": -1}),
    ("idleGraceMinutes", {"idle_grace_minutes": 24 * 60 + 1}),
    ("idleFeeCap", {"idle_fee_cap": "-1"}),
])
async def test_idle_prices_are_checked(idle_world: World, field: str,
                                       prices: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as caught:
        await _price_station(idle_world, **prices)
    assert (caught.value.field, caught.value.code) == (field, "OUT_OF_RANGE")
