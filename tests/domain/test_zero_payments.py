"""A session that costs nothing has no payment to collect: none is opened for one free
from the start, and the PENDING payment of one a late StopTransaction corrects down to
nothing is VOIDED, unless a capture got there first (on both stores)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.errors import Conflict
from domain.policy import SYSTEM
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


async def _ended_by_an_operator(world: World) -> tuple[int, d.Payment]:
    """A session metered to 1 kWh, ended by an operator (its stop did not come): 40
    cents PENDING."""
    charging = world.services.charging
    tx, _ = await charging.start_transaction(CP, 1, "TAG-1", 5000, T0)
    await charging.meter_values(CP, 1, tx, register(6000, 600))
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


async def test_a_capture_racing_the_void_keeps_its_money(world: World) -> None:
    """The correction reads the payment PENDING; an operator captures it before the
    correction is written. The void is guarded by the status it read: it loses, the
    stop is retried, and the session is corrected with the captured payment kept (an
    operator settles the difference)."""
    tx, payment = await _ended_by_an_operator(world)
    charging = world.services.charging
    commit = charging.commit
    raced: list[d.Payment] = []

    async def captured_first(viewer: Any, changes: Any, *args: Any, **kw: Any) -> None:
        if not raced and any(isinstance(c.record, d.Payment) for c, _ in changes):
            raced.append(await world.services.payments.capture(ADMIN, payment.id))
        await commit(viewer, changes, *args, **kw)

    charging.commit = captured_first  # type: ignore[method-assign]
    await charging.stop_transaction(CP, tx, 5000, T0 + timedelta(minutes=20))
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
