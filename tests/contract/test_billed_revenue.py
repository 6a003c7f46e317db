"""Revenue is what was billed, booked when it was billed, on every backend (QA s18,
billing2): the payments' amounts (a PENDING or FAILED one repriced by a correction, a
VOIDED one nothing, CAPTURED and REFUNDED ones what was asked) by the day each payment was
opened, not the sessions' cost by when they ended. A late StopTransaction rewrites the
session's cost and end after the money moved; net (billed less refunded) then still
matches what was collected, and a period already reported keeps its revenue.

Over ``tests/support/late_stops.py``: a 4 kWh session on CP-LATE (company A) ended by
A's operator at 11:00 on 2025-07-01, 2.00 EUR."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from domain import entities as d
from domain.errors import Conflict
from domain.ports import Store
from domain.services.analytics import GroupBy, Scope
from domain.timebuckets import Bucket
from tests.support.late_stops import JULY_1, ROLES, LateStops, build_late_stops

#: Who sees the session's money: its books (A) and its driver; B and another driver not.
SEES = {"admin": True, "op_a": True, "op_b": False, "driver": True, "driver2": False}


def at(hour: int, minute: int = 0) -> datetime:
    return JULY_1 + timedelta(hours=hour, minutes=minute)


@pytest.fixture
async def late(store: Store) -> LateStops:
    return await build_late_stops(store)


async def day(h: LateStops, who: str, scope: Scope | None = None
              ) -> tuple[int, int, int]:
    """(gross, refunds, net) of 2025-07-01 (UTC) in EUR as ``who`` sees it."""
    [bucket] = await h.services.analytics.energy_trend(
        h.viewer(who), scope or Scope(), JULY_1, JULY_1 + timedelta(days=1), Bucket.DAY,
        "UTC", "EUR")
    return bucket.revenue_minor, bucket.refunds_minor, bucket.net_minor


async def cash(h: LateStops, tx: int) -> int:
    """What the driver's payment collected and kept: captured less refunded."""
    payment = await h.payment(tx)
    collected = payment.status in (d.PaymentStatus.CAPTURED, d.PaymentStatus.REFUNDED)
    return (payment.amount_minor if collected else 0) - payment.refunded_minor


async def figures(h: LateStops) -> dict[str, tuple[int, int, int]]:
    return {who: await day(h, who) for who in ROLES}


def seen(gross: int, refunds: int) -> dict[str, tuple[int, int, int]]:
    """The day's figures per role: the session's for those who see it, else nothing."""
    return {who: (gross, refunds, gross - refunds) if SEES[who] else (0, 0, 0)
            for who in ROLES}


async def test_captured_corrected_to_nothing_and_refunded_nets_zero(late: LateStops) -> None:
    """QA's first scenario: net read -2.00 while the cash was 0.00."""
    tx, payment = await late.ended_by_the_operator(at(10), at(11))
    late.clock.now = at(11, 5)
    await late.services.payments.capture(late.viewer("op_a"), payment.id)
    session = await late.late_stop(tx, 50000, at(10, 30), at(11, 10))
    assert (session.cost_minor, session.end_time) == (0, at(10, 30))
    late.clock.now = at(11, 20)
    await late.services.payments.refund(late.viewer("op_a"), payment.id, Decimal("2.00"))
    assert await figures(late) == seen(200, 200)
    assert await cash(late, tx) == 0 == (await day(late, "admin"))[2]


async def test_captured_and_corrected_to_nothing_keeps_what_was_billed(
        late: LateStops) -> None:
    tx, payment = await late.ended_by_the_operator(at(10), at(11))
    await late.services.payments.capture(late.viewer("admin"), payment.id)
    await late.late_stop(tx, 50000, at(10, 30), at(11, 10))
    assert await figures(late) == seen(200, 0)
    assert await cash(late, tx) == 200


async def test_captured_then_corrected_up_stays_what_was_billed(late: LateStops) -> None:
    """The session now costs 3.00, but 2.00 was asked and collected: the extra can never
    be collected, and revenue is not what nobody billed."""
    tx, payment = await late.ended_by_the_operator(at(10), at(11))
    await late.services.payments.capture(late.viewer("op_a"), payment.id)
    session = await late.late_stop(tx, 56000, at(10, 45), at(11, 10))
    assert session.cost_minor == 300
    assert await figures(late) == seen(200, 0)


async def test_captured_corrected_down_and_the_difference_refunded_reconciles(
        late: LateStops) -> None:
    """Corrected to 2 kWh (1.00 EUR) and 1.00 paid back: net 1.00, what was kept (it
    read 0: the correction counted twice)."""
    tx, payment = await late.ended_by_the_operator(at(10), at(11))
    await late.services.payments.capture(late.viewer("op_a"), payment.id)
    assert (await late.late_stop(tx, 52000, at(10, 30), at(11, 10))).cost_minor == 100
    late.clock.now = at(12)
    await late.services.payments.refund(late.viewer("op_a"), payment.id, Decimal("1.00"))
    assert await figures(late) == seen(200, 100)
    assert await cash(late, tx) == 100


async def test_failed_corrected_to_nothing_is_voided_and_bills_nothing(
        late: LateStops) -> None:
    """Nothing was collected and nothing is owed: VOIDED, as a PENDING one is. It used
    to stay FAILED at 2.00, billed, and a later try collected 2.00 for nothing."""
    tx, payment = await late.ended_by_the_operator(at(10), at(11))
    await late.services.payments.fail(late.viewer("op_a"), payment.id)
    assert await figures(late) == seen(200, 0)  # billed, not collected (yet)
    await late.late_stop(tx, 50000, at(10, 30), at(11, 10))
    voided = await late.payment(tx)
    assert (voided.status, voided.amount_minor) == (d.PaymentStatus.VOIDED, 0)
    assert await figures(late) == seen(0, 0)
    with pytest.raises(Conflict):
        await late.services.payments.capture(late.viewer("op_a"), payment.id)
    assert await cash(late, tx) == 0


async def test_a_failed_payment_follows_its_correction(late: LateStops) -> None:
    """Nothing was collected: like a PENDING one it is repriced (still FAILED), and
    revenue with it; the next try collects the corrected amount."""
    tx, payment = await late.ended_by_the_operator(at(10), at(11))
    await late.services.payments.fail(late.viewer("op_a"), payment.id)
    await late.late_stop(tx, 56000, at(10, 45), at(11, 10))
    repriced = await late.payment(tx)
    assert (repriced.status, repriced.amount_minor) == (d.PaymentStatus.FAILED, 300)
    assert await figures(late) == seen(300, 0)
    await late.services.payments.capture(late.viewer("op_a"), payment.id)
    assert await cash(late, tx) == 300


async def test_a_pending_payment_follows_its_correction(late: LateStops) -> None:
    """No money moved yet: the payment is repriced, and revenue with it; corrected to
    nothing, it is VOIDED and bills nothing."""
    up, _ = await late.ended_by_the_operator(at(10), at(11))
    await late.late_stop(up, 56000, at(10, 45), at(11, 10))
    assert (await late.payment(up)).amount_minor == 300
    assert await figures(late) == seen(300, 0)
    nothing, _ = await late.ended_by_the_operator(at(13), at(14))
    await late.late_stop(nothing, 50000, at(13, 30), at(14, 10))
    assert (await late.payment(nothing)).status is d.PaymentStatus.VOIDED
    assert await figures(late) == seen(300, 0)


async def test_a_late_stop_across_a_month_boundary_stays_in_the_billed_month(
        late: LateStops) -> None:
    """Ended (and billed) at 01:00 on 1 June; the stop stamped 23:30 on 31 May moves the
    session's end into May, not the June revenue already reported."""
    may_31 = datetime(2025, 5, 31, 23, tzinfo=UTC)
    june_1 = datetime(2025, 6, 1, tzinfo=UTC)
    tx, payment = await late.ended_by_the_operator(may_31, june_1 + timedelta(hours=1))
    await late.services.payments.capture(late.viewer("op_a"), payment.id)
    session = await late.late_stop(tx, 54000, may_31 + timedelta(minutes=30),
                                   june_1 + timedelta(hours=1, minutes=10))
    assert session.end_time is not None and session.end_time < june_1
    for who in ROLES:
        months = await late.services.analytics.energy_trend(
            late.viewer(who), Scope(), datetime(2025, 5, 1, tzinfo=UTC), JULY_1,
            Bucket.MONTH)
        assert [(b.start, b.revenue_minor) for b in months] == [
            (datetime(2025, 5, 1, tzinfo=UTC), 0), (june_1, 200 if SEES[who] else 0)], who
        days = await late.services.analytics.energy_trend(
            late.viewer(who), Scope(), june_1 - timedelta(days=1), june_1 + timedelta(days=1),
            Bucket.DAY)
        assert [b.revenue_minor for b in days] == [0, 200 if SEES[who] else 0], who


async def test_revenue_is_grouped_by_the_payment_s_station_and_connector(
        late: LateStops) -> None:
    tx, payment = await late.ended_by_the_operator(at(10), at(11))
    await late.services.payments.capture(late.viewer("op_a"), payment.id)
    await late.late_stop(tx, 50000, at(10, 30), at(11, 10))
    late.clock.now = at(12)
    await late.services.payments.refund(late.viewer("op_a"), payment.id, Decimal("0.50"))
    station = late.stations["CP-LATE"].id
    for group_by, connector in ((GroupBy.STATION, None), (GroupBy.CONNECTOR, 1)):
        for who in ROLES:
            rows = await late.services.analytics.energy_trend(
                late.viewer(who), Scope(), JULY_1, JULY_1 + timedelta(days=1), Bucket.DAY,
                group_by=group_by)
            assert [(r.station_id, r.cp_id, r.connector_id, r.revenue_minor,
                     r.refunds_minor, r.net_minor) for r in rows] == (
                [(station, "CP-LATE", connector, 200, 50, 150)] if SEES[who] else []), who


async def test_revenue_answers_the_filters_refunds_answer(late: LateStops) -> None:
    tx, payment = await late.ended_by_the_operator(at(10), at(11))
    await late.services.payments.capture(late.viewer("op_a"), payment.id)
    await late.late_stop(tx, 50000, at(10, 30), at(11, 10))
    users, a = late.users, late.users["op_a"].company_id
    assert await day(late, "admin", Scope(vehicle_id=late.vehicle.id)) == (200, 0, 200)
    assert await day(late, "driver", Scope(vehicle_id=late.vehicle.id)) == (200, 0, 200)
    assert await day(late, "admin", Scope(user_id=users["driver"].id)) == (200, 0, 200)
    assert await day(late, "admin", Scope(user_id=users["driver2"].id)) == (0, 0, 0)
    assert await day(late, "admin", Scope(cp_ids=("CP-LATE",))) == (200, 0, 200)
    assert await day(late, "op_a", Scope(cp_ids=("CP-B",))) == (0, 0, 0)
    assert await day(late, "admin", Scope(company_id=a)) == (200, 0, 200)
    assert await day(late, "admin", Scope(company_id=users["op_b"].company_id)) == (0, 0, 0)
    # A driver learns from no revenue who runs a station (a company filter is hidden).
    assert await day(late, "driver", Scope(company_id=a)) == (0, 0, 0)
    # Another currency: none of it.
    [usd] = await late.services.analytics.energy_trend(
        late.viewer("admin"), Scope(), JULY_1, JULY_1 + timedelta(days=1), Bucket.DAY,
        currency="USD")
    assert (usd.revenue_minor, usd.currency) == (0, "USD")


@pytest.mark.parametrize("who", ROLES)
async def test_the_overview_books_today_what_was_billed_today(late: LateStops,
                                                              who: str) -> None:
    tx, payment = await late.ended_by_the_operator(at(10), at(11))
    await late.services.payments.capture(late.viewer("op_a"), payment.id)
    await late.late_stop(tx, 50000, at(10, 30), at(11, 10))
    late.clock.now = at(11, 20)
    await late.services.payments.refund(late.viewer("op_a"), payment.id)
    today = await late.services.analytics.overview(late.viewer(who), Scope())
    expected = {"EUR": 200} if SEES[who] else {}
    assert (today.revenue_today, today.refunds_today) == (expected, expected)
    assert today.net_revenue_today == {c: 0 for c in expected}
    # The next day bills nothing more, whatever was corrected.
    late.clock.now = at(30)
    assert (await late.services.analytics.overview(late.viewer(who), Scope())
            ).revenue_today == {}


async def test_a_payment_carries_its_session_s_plug_and_car(late: LateStops) -> None:
    _, payment = await late.ended_by_the_operator(at(10), at(11))
    assert (payment.cp_id, payment.connector_id, payment.vehicle_id, payment.created_at) == (
        "CP-LATE", 1, late.vehicle.id, at(11))
