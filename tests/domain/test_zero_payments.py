"""A session that costs nothing has no payment to collect: none is opened for one free
from the start, and the PENDING (or FAILED) payment of one a late StopTransaction
corrects down to nothing is VOIDED, unless a capture got there first (on both stores).
Every change a correction makes to a payment (a void, a reprice) is announced once,
after its commit, as settlements are; money collected is never rewritten."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.errors import Conflict
from domain.events import PaymentChanged
from domain.policy import SYSTEM, Viewer
from domain.query import Eq, all_of
from domain.services.base import patch
from tests.domain.test_charging_telemetry import (
    ADMIN,
    CP,
    T0,
    World,
    register,
    store_of,
    world_on,
)


@pytest.fixture(params=["sqlite", "mongo"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    async with world_on(store_of(request.param, tmp_path / "zero.db")) as built:
        station = await built.store.find_one(d.Station, Eq("cp_id", CP))
        assert station is not None
        await built.services.tariffs.set_tariff(
            SYSTEM, station_id=station.id, currency="EUR", valid_from=T0 - timedelta(days=1),
            price_per_kwh=Decimal("0.40"))
        yield built


async def _payments(world: World, session: d.Session) -> list[d.Payment]:
    return await world.store.find_all(d.Payment, Eq("session_id", session.id))


async def _ended_by_an_operator(world: World, connector: int = 1) -> tuple[int, d.Payment]:
    """A session metered to 1 kWh, ended by an operator (its stop did not come): 40
    cents PENDING."""
    charging = world.services.charging
    tx, _ = await charging.start_transaction(CP, connector, "TAG-1", 5000, T0)
    await charging.meter_values(CP, connector, tx, register(6000, 600))
    await charging.end_session(ADMIN, (await world.session(tx)).id)
    [payment] = await _payments(world, await world.session(tx))
    assert (payment.status, payment.amount_minor) == (d.PaymentStatus.PENDING, 40)
    return tx, payment


async def test_a_session_free_from_the_start_opens_no_payment(world: World) -> None:
    charging = world.services.charging
    tx, _ = await charging.start_transaction(CP, 1, "TAG-1", 5000, T0)
    await charging.stop_transaction(CP, tx, 5000, T0 + timedelta(minutes=5))
    session = await world.session(tx)
    assert (session.state, session.cost_minor) == (d.SessionState.COMPLETED, 0)
    assert await _payments(world, session) == []


async def test_a_late_stop_correcting_the_cost_to_nothing_voids_the_payment(
        world: World) -> None:
    """The billing lead's case: the stop says the charger delivered nothing (meterStop =
    meterStart), and its payment stayed PENDING at 0 for ever."""
    tx, before = await _ended_by_an_operator(world)
    await world.services.charging.stop_transaction(CP, tx, 5000, T0 + timedelta(minutes=20))
    session = await world.session(tx)
    assert (session.energy_wh, session.cost_minor) == (0, 0)
    [payment] = await _payments(world, session)
    assert (payment.id, payment.status, payment.amount_minor) == (
        before.id, d.PaymentStatus.VOIDED, 0)
    # Audited under the charger, as the correction of the session is.
    [entry] = await world.store.find_all(d.AuditEntry, all_of(
        Eq("entity_id", payment.id), Eq("action", d.AuditAction.UPDATE)))
    assert entry.actor == f"ocpp:{CP}" and entry.after is not None
    assert entry.after["status"] == "VOIDED"
    # Nothing is left to collect, and nobody can collect it.
    for settle in (world.services.payments.capture, world.services.payments.fail):
        with pytest.raises(Conflict) as refused:
            await settle(ADMIN, payment.id)
        assert (refused.value.field, refused.value.code) == ("id", "INVALID_STATE")


async def test_a_late_stop_to_a_positive_cost_keeps_the_payment_pending(
        world: World) -> None:
    tx, _ = await _ended_by_an_operator(world)
    await world.services.charging.stop_transaction(CP, tx, 7000, T0 + timedelta(minutes=20))
    [payment] = await _payments(world, await world.session(tx))
    assert (payment.status, payment.amount_minor) == (d.PaymentStatus.PENDING, 80)


def capture_before_the_correction(world: World, payment: d.Payment) -> list[d.Payment]:
    """Has an operator capture ``payment`` just before the charging service commits the
    first write that changes a payment (a correction's reprice or void), as two instances
    racing would. Returns where the captured payment is put once captured."""
    charging = world.services.charging
    commit = charging.commit
    raced: list[d.Payment] = []

    async def captured_first(viewer: Any, changes: Any, *args: Any, **kw: Any) -> None:
        if not raced and any(isinstance(c.record, d.Payment) for c, _ in changes):
            raced.append(await world.services.payments.capture(ADMIN, payment.id))
        await commit(viewer, changes, *args, **kw)

    charging.commit = captured_first  # type: ignore[method-assign]
    return raced


async def test_a_capture_racing_the_void_keeps_its_money(world: World) -> None:
    """The correction reads the payment PENDING; an operator captures it before the
    correction is written. The void is guarded by the status it read: it loses, the
    stop is retried, and the session is corrected with the captured payment kept (an
    operator settles the difference)."""
    tx, payment = await _ended_by_an_operator(world)
    raced = capture_before_the_correction(world, payment)
    await world.services.charging.stop_transaction(CP, tx, 5000, T0 + timedelta(minutes=20))
    assert raced, "the correction wrote no payment change to race"
    session = await world.session(tx)
    assert (session.energy_wh, session.cost_minor) == (0, 0)
    [kept] = await _payments(world, session)
    assert (kept.status, kept.amount_minor, kept.updated_at) == (
        d.PaymentStatus.CAPTURED, 40, raced[0].updated_at)


async def test_a_pending_payment_of_nothing_from_before_is_voided_by_its_correction(
        world: World) -> None:
    """A PENDING 0 written before zero payments were voided: the late stop that
    confirms the cost of nothing voids it too, instead of finding nothing changed."""
    tx, payment = await _ended_by_an_operator(world)
    await world.store.write([patch(payment, SYSTEM, amount_minor=0)], [])
    await world.services.charging.stop_transaction(CP, tx, 5000, T0 + timedelta(minutes=20))
    [voided] = await _payments(world, await world.session(tx))
    assert (voided.status, voided.amount_minor) == (d.PaymentStatus.VOIDED, 0)


Announced = list[tuple[PaymentChanged, d.Payment]]


def announced(world: World) -> Announced:
    """Every ``PaymentChanged`` the charging and payment services publish from now on,
    each with the payment as the store held it then: an event goes out after its
    commit, so the store already holds what it tells."""
    seen: Announced = []
    for service in (world.services.charging, world.services.payments):
        publish = service.publish

        async def recorded(event: Any, publish: Any = publish) -> None:
            if isinstance(event, PaymentChanged):
                [stored] = await world.store.get_many(d.Payment, [event.payment_record_id])
                assert stored is not None
                seen.append((event, stored))
            await publish(event)

        service.publish = recorded  # type: ignore[method-assign]
    return seen


def told(seen: Announced) -> list[tuple[str | None, str, int]]:
    """What each event told: its change, status and amount."""
    return [(e.change, e.status, e.amount_minor) for e, _ in seen]


async def _late_stop(world: World, tx: int, meter_stop: int) -> d.Payment:
    await world.services.charging.stop_transaction(CP, tx, meter_stop,
                                                   T0 + timedelta(minutes=20))
    [payment] = await _payments(world, await world.session(tx))
    return payment


async def test_a_void_is_announced_once_after_its_commit(world: World) -> None:
    """A payments integration must stop collecting it, and a receipt being shown must
    drop it: the void is an event like a capture, seen by whoever sees the payment."""
    tx, before = await _ended_by_an_operator(world)
    seen = announced(world)
    voided = await _late_stop(world, tx, 5000)
    assert told(seen) == [("VOIDED", "VOIDED", 0)]
    [(event, stored)] = seen
    assert (stored.status, stored.amount_minor) == (d.PaymentStatus.VOIDED, 0)
    assert (event.payment_record_id, event.session_record_id, event.user_id,
            event.currency, event.books_company_id, event.books_station_owner_id) == (
        voided.id, voided.session_id, before.user_id, "EUR", before.company_id,
        before.station_owner_id)
    policy = world.services.policy
    assert before.user_id is not None
    assert policy.sees_event(Viewer(user_id=before.user_id, role=d.Role.DRIVER), event)
    assert not policy.sees_event(Viewer(user_id="someone", role=d.Role.DRIVER), event)
    assert not policy.sees_event(Viewer(user_id="op", role=d.Role.OPERATOR,
                                        company_id="another"), event)


async def test_a_reprice_is_announced_once_and_a_correction_to_the_same_price_not(
        world: World) -> None:
    tx, _ = await _ended_by_an_operator(world)
    seen = announced(world)
    repriced = await _late_stop(world, tx, 7000)
    assert (repriced.status, repriced.amount_minor) == (d.PaymentStatus.PENDING, 80)
    assert told(seen) == [("REPRICED", "PENDING", 80)]
    assert seen[0][1].amount_minor == 80  # committed when told

    other, _ = await _ended_by_an_operator(world, connector=2)
    seen.clear()
    await _late_stop(world, other, 6000)  # what was metered: the same 40 cents
    assert seen == []


async def test_a_failed_payment_corrected_to_nothing_is_voided(world: World) -> None:
    """Nothing is owed: a FAILED payment must not stay billed at its old amount (reports
    count FAILED as billed) nor be retried for money the driver does not owe."""
    tx, payment = await _ended_by_an_operator(world)
    await world.services.payments.fail(ADMIN, payment.id)
    seen = announced(world)
    voided = await _late_stop(world, tx, 5000)
    assert (voided.status, voided.amount_minor) == (d.PaymentStatus.VOIDED, 0)
    assert told(seen) == [("VOIDED", "VOIDED", 0)]
    with pytest.raises(Conflict) as refused:
        await world.services.payments.capture(ADMIN, payment.id)
    assert (refused.value.field, refused.value.code) == ("id", "INVALID_STATE")


async def test_a_failed_payment_corrected_is_repriced_and_its_retry_collects_that(
        world: World) -> None:
    """No money moved on a FAILED payment: like a PENDING one it asks the corrected
    price, keeps its status, and the next try captures the new amount."""
    tx, payment = await _ended_by_an_operator(world)
    await world.services.payments.fail(ADMIN, payment.id)
    seen = announced(world)
    repriced = await _late_stop(world, tx, 7000)
    assert (repriced.status, repriced.amount_minor) == (d.PaymentStatus.FAILED, 80)
    assert told(seen) == [("REPRICED", "FAILED", 80)]
    captured = await world.services.payments.capture(ADMIN, payment.id)
    assert (captured.status, captured.amount_minor) == (d.PaymentStatus.CAPTURED, 80)


async def test_a_capture_retry_racing_the_void_of_a_failed_payment_keeps_its_money(
        world: World) -> None:
    """The void of a FAILED payment is guarded by the status it read, as a PENDING
    one's: a retried capture that commits first wins, the stop is retried and keeps it,
    and only the capture is announced."""
    tx, payment = await _ended_by_an_operator(world)
    await world.services.payments.fail(ADMIN, payment.id)
    raced = capture_before_the_correction(world, payment)
    seen = announced(world)
    kept = await _late_stop(world, tx, 5000)
    assert raced, "the correction wrote no payment change to race"
    assert (kept.status, kept.amount_minor) == (d.PaymentStatus.CAPTURED, 40)
    assert told(seen) == [("CAPTURED", "CAPTURED", 40)]


class IdempotentProvider:
    """A provider keeping the port's promise: asked again for one payment and step, it
    moves no money twice and answers with the first capture. Records what it took."""

    name = "acquirer"

    def __init__(self) -> None:
        self.collected: dict[str, int] = {}

    async def capture(self, payment: d.Payment) -> str:
        self.collected.setdefault(payment.id, payment.amount_minor)
        return f"cap-{payment.id}"

    async def refund(self, payment: d.Payment, amount_minor: int, key: str) -> str:
        return f"ref-{key}"


@pytest.mark.parametrize(("stop_wh", "corrected"), [
    (7000, (d.PaymentStatus.PENDING, 80)), (5000, (d.PaymentStatus.VOIDED, 0))])
async def test_a_capture_a_correction_overtook_records_what_was_collected(
        world: World, stop_wh: int, corrected: tuple[d.PaymentStatus, int]) -> None:
    """The provider collects what the payment asked when it was read (40 cents); a late
    stop reprices it to 80, or voids it, before the capture is written. Refused, the
    capture left the 40 collected with no trace (VOIDED, or PENDING at 80 that a retry,
    answered with the first capture by the provider, recorded CAPTURED at 80): review
    s19. The payment says what moved: CAPTURED at 40; the session's corrected cost
    beside it shows what an operator settles."""
    tx, payment = await _ended_by_an_operator(world)
    payments = world.services.payments
    acquirer = IdempotentProvider()

    class CorrectedMeanwhile(IdempotentProvider):
        async def capture(self, read: d.Payment) -> str:
            reference = await acquirer.capture(read)
            await _late_stop(world, tx, stop_wh)
            return reference

    payments.provider = CorrectedMeanwhile()
    seen = announced(world)
    captured = await payments.capture(ADMIN, payment.id)
    assert acquirer.collected == {payment.id: 40}
    assert (captured.status, captured.amount_minor, captured.provider_ref) == (
        d.PaymentStatus.CAPTURED, 40, f"cap-{payment.id}")
    [stored] = await _payments(world, await world.session(tx))
    assert stored == captured
    change = "VOIDED" if corrected[0] is d.PaymentStatus.VOIDED else "REPRICED"
    assert told(seen) == [(change, *corrected), ("CAPTURED", "CAPTURED", 40)]


async def test_a_capture_a_fail_overtook_records_what_was_collected(world: World) -> None:
    """The provider collects the 40 cents; before the capture is written, another
    operator (or a payments integration) marks the payment FAILED. Refused as "settled
    meanwhile", the capture left the 40 collected while the payment read FAILED, with
    no reference of the capture anywhere: the driver is dunned for money taken. A
    failed payment may be captured anyway, and money moved: it is CAPTURED at what was
    collected, after the fail, and both are announced."""
    tx, payment = await _ended_by_an_operator(world)
    payments = world.services.payments
    acquirer = IdempotentProvider()

    class FailedMeanwhile(IdempotentProvider):
        async def capture(self, read: d.Payment) -> str:
            reference = await acquirer.capture(read)
            await payments.fail(ADMIN, read.id)
            return reference

    payments.provider = FailedMeanwhile()
    seen = announced(world)
    captured = await payments.capture(ADMIN, payment.id)
    assert acquirer.collected == {payment.id: 40}
    assert (captured.status, captured.amount_minor, captured.provider_ref) == (
        d.PaymentStatus.CAPTURED, 40, f"cap-{payment.id}")
    [stored] = await _payments(world, await world.session(tx))
    assert stored == captured
    assert told(seen) == [("FAILED", "FAILED", 40), ("CAPTURED", "CAPTURED", 40)]
    # Audited as any capture: FAILED before, CAPTURED after, under who captured it.
    entries = await world.store.find_all(d.AuditEntry, all_of(
        Eq("entity_id", payment.id), Eq("action", d.AuditAction.UPDATE)))
    last = max(entries, key=lambda e: e.at)
    assert last.before is not None and last.after is not None
    assert (last.before["status"], last.after["status"]) == ("FAILED", "CAPTURED")


async def test_a_capture_another_capture_overtook_is_told(world: World) -> None:
    """Two captures racing: the provider collects once (its idempotency), one capture
    records it and the other is told, as before."""
    _, payment = await _ended_by_an_operator(world)
    payments = world.services.payments
    acquirer = IdempotentProvider()

    class CapturedMeanwhile(IdempotentProvider):
        async def capture(self, read: d.Payment) -> str:
            reference = await acquirer.capture(read)
            payments.provider = acquirer
            await payments.capture(ADMIN, read.id)
            return reference

    payments.provider = CapturedMeanwhile()
    with pytest.raises(Conflict) as told_so:
        await payments.capture(ADMIN, payment.id)
    assert told_so.value.code == "INVALID_STATE"
    assert acquirer.collected == {payment.id: 40}


async def test_a_captured_payment_corrected_down_keeps_what_was_collected(
        world: World) -> None:
    """Money moved: the correction does not rewrite it, announces nothing about the
    payment and refunds nothing by itself. The session's cost says what the energy cost,
    the payment what was collected; an operator refunds the difference."""
    tx, payment = await _ended_by_an_operator(world)
    await world.services.payments.capture(ADMIN, payment.id)
    seen = announced(world)
    kept = await _late_stop(world, tx, 5000)
    assert (kept.status, kept.amount_minor, kept.refunded_minor) == (
        d.PaymentStatus.CAPTURED, 40, 0)
    assert (await world.session(tx)).cost_minor == 0
    assert seen == []
    refunded = await world.services.payments.refund(ADMIN, payment.id, Decimal("0.40"))
    assert refunded.status is d.PaymentStatus.REFUNDED
    assert told(seen) == [("REFUNDED", "REFUNDED", 40)]
