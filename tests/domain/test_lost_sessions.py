"""Sessions the CSMS closed without their StopTransaction: lost with a reboot across a
restart of the service, and corrected by the stop that comes after all."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.policy import SYSTEM, Policy
from domain.query import Eq
from domain.services import ServiceContext, Services
from domain.services.charging import ChargingService
from store.sqlite import SqliteStore
from tests.domain.test_charging_telemetry import (
    ADMIN,
    CP,
    T0,
    World,
    added_wh,
    booted_later,
    register,
    world_on,
)
from tests.helpers import FastHasher


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with world_on(SqliteStore(str(tmp_path / "lost.db"))) as built:
        yield built


def restarted(world: World, grace_s: float) -> ChargingService:
    """The charging service of a new process on the same store (the old one's pending
    checks are gone with it)."""
    world.services.charging.reboot_checks.stop()
    charging = Services(ServiceContext(store=world.store, policy=Policy(),
                                       hasher=FastHasher())).charging
    charging.reboot_checks.grace_s = grace_s
    return charging


async def test_a_restart_within_the_grace_closes_the_lost_session_on_reconnect(
        world: World) -> None:
    """The QA's t4: the charger rebooted and reported Available, the service restarted
    within the grace, and the charger, connected again, only sends Heartbeats (OCPP 1.6
    chargers report no status on a new connection). The session stayed ACTIVE for ever,
    its driver's card ConcurrentTx everywhere."""
    charging = world.services.charging
    charging.reboot_checks.grace_s = 30.0  # the process stops before it is over
    lost, _ = await charging.start_transaction(CP, 1, "TAG-1", 1000, T0)
    await charging.meter_values(CP, 1, lost, register(3000, 600))
    await booted_later(charging)
    await charging.status_notification(CP, 1, "Available", "NoError")
    fresh = restarted(world, grace_s=0.0)  # the grace is over by the time it connects
    await fresh.connect(CP)
    await fresh.reboot_checks.done()
    ended = await world.session(lost)
    assert (ended.state, ended.stop_reason, ended.energy_wh) == (
        d.SessionState.COMPLETED, "Other", 2000)
    assert (await fresh.authorize(CP, "TAG-1")).status == "Accepted"


async def test_a_restart_gives_the_stop_what_is_left_of_its_grace(world: World) -> None:
    charging = world.services.charging
    charging.reboot_checks.grace_s = 30.0
    lost, _ = await charging.start_transaction(CP, 1, "TAG-1", 0, T0)
    await booted_later(charging)
    await charging.status_notification(CP, 1, "Available", "NoError")
    fresh = restarted(world, grace_s=30.0)
    await fresh.connect(CP)
    assert (CP, 1) in fresh.reboot_checks.pending  # armed, not run: the stop may come
    await fresh.stop_transaction(CP, lost, 4000, T0 + timedelta(minutes=20),
                                 reason="PowerLoss")
    assert (await world.session(lost)).stop_reason == "PowerLoss"
    fresh.reboot_checks.stop()


async def test_a_connection_arms_no_check_for_an_available_report_before_the_boot(
        world: World) -> None:
    """Available before the reboot (while the session ran) says nothing of the
    transaction; only a report after the boot does."""
    charging = world.services.charging
    open_, _ = await charging.start_transaction(CP, 1, "TAG-1", 0, T0)
    await charging.status_notification(CP, 1, "Available", "NoError")
    await booted_later(charging)
    await charging.status_notification(CP, 2, "Available", "NoError")  # another plug
    fresh = restarted(world, grace_s=0.0)
    await fresh.connect(CP)
    assert not fresh.reboot_checks.pending
    assert (await world.session(open_)).state is d.SessionState.ACTIVE


async def _priced(world: World) -> None:
    station = await world.store.find_one(d.Station, Eq("cp_id", CP))
    assert station is not None
    await world.services.tariffs.set_tariff(SYSTEM, station_id=station.id, currency="EUR",
                                            valid_from=T0 - timedelta(days=1),
                                            price_per_kwh=Decimal("0.40"))


async def _payment(world: World, session: d.Session) -> d.Payment:
    payment = await world.store.find_one(d.Payment, Eq("session_id", session.id))
    assert payment is not None
    return payment


async def test_a_stop_after_a_newer_start_corrects_the_session_that_start_closed(
        world: World) -> None:
    """The QA's t3: the charger replays the next StartTransaction before the stop of the
    transaction before it. That start closed the older session as lost (2 kWh as
    metered, ending at the new start); its real stop (19 kWh) was answered and thrown
    away: 17 kWh never billed."""
    await _priced(world)
    charging = world.services.charging
    older, _ = await charging.start_transaction(CP, 1, "TAG-1", 1000, T0 - timedelta(hours=3))
    await charging.meter_values(CP, 1, older, register(3000, -9000))
    newer, _ = await charging.start_transaction(CP, 1, "TAG-1", 20_000, T0)
    lost = await world.session(older)
    assert (lost.stop_reason, lost.energy_wh, lost.meter_stop_wh) == ("Other", 2000, None)
    assert (await _payment(world, lost)).amount_minor == 80

    await charging.stop_transaction(CP, older, 20_000, T0 - timedelta(hours=1))

    stopped = await world.session(older)
    assert (stopped.state, stopped.stop_reason, stopped.meter_stop_wh, stopped.energy_wh,
            stopped.end_time, stopped.cost_minor) == (
        d.SessionState.COMPLETED, "Local", 20_000, 19_000, T0 - timedelta(hours=1), 760)
    payment = await _payment(world, stopped)
    assert (payment.status, payment.amount_minor) == (d.PaymentStatus.PENDING, 760)
    assert await added_wh(world, older) == 19_000  # its samples add up to the bill
    # Audited under the charger, before and after.
    entries = await world.store.find_all(d.AuditEntry, Eq("entity_id", stopped.id))
    corrected = [e for e in entries if e.before and e.before.get("stop_reason") == "Other"]
    assert len(corrected) == 1 and corrected[0].actor == f"ocpp:{CP}"
    assert corrected[0].after is not None and corrected[0].after["meter_stop_wh"] == 20_000
    assert corrected[0].before is not None and corrected[0].before["energy_wh"] == 2000
    assert (await world.session(newer)).state is d.SessionState.ACTIVE
    # Sent again, the stop changes nothing more.
    await charging.stop_transaction(CP, older, 25_000, T0 - timedelta(minutes=50))
    assert (await world.session(older)).energy_wh == 19_000


async def closed_as_lost(world: World) -> int:
    """A transaction metered to 1 kWh whose charger booted again and reported its plug
    Available, closed as lost by the reboot's check (no grace); its transactionId."""
    charging = world.services.charging
    charging.reboot_checks.grace_s = 0.0
    tx, _ = await charging.start_transaction(CP, 1, "TAG-1", 1000, T0)
    await charging.meter_values(CP, 1, tx, register(2000, 600))
    await booted_later(charging)
    await charging.status_notification(CP, 1, "Available", "NoError")
    await charging.reboot_checks.done()
    return int(tx)


async def test_a_stop_after_the_reboot_grace_corrects_the_session_closed_as_lost(
        world: World) -> None:
    """The QA's t16: the stop queued through a power loss came after the grace."""
    charging = world.services.charging
    tx = await closed_as_lost(world)
    assert (await world.session(tx)).energy_wh == 1000
    await world.events_until(lambda e: e.change == "ENDED")

    await charging.stop_transaction(CP, tx, 40_000, T0 + timedelta(minutes=30),
                                    reason="PowerLoss")

    stopped = await world.session(tx)
    assert (stopped.stop_reason, stopped.meter_stop_wh, stopped.energy_wh,
            stopped.end_time) == ("PowerLoss", 40_000, 39_000, T0 + timedelta(minutes=30))
    # Announced ended again, with what it now is (a webhook bills from it).
    [event] = await world.events_until(lambda e: e.change == "ENDED")
    assert (event.change, event.energy_wh) == ("ENDED", 39_000)


async def test_a_stop_that_cannot_be_believed_corrects_only_what_it_can(
        world: World) -> None:
    charging = world.services.charging
    older, _ = await charging.start_transaction(CP, 1, "TAG-1", 1000, T0)
    await charging.meter_values(CP, 1, older, register(3000, 600))
    await charging.start_transaction(CP, 1, "TAG-1", 3000, T0 + timedelta(minutes=30))
    await charging.stop_transaction(CP, older, 500, T0 + timedelta(minutes=20))  # < start
    stopped = await world.session(older)
    assert (stopped.energy_wh, stopped.meter_stop_wh, stopped.meter_anomaly) == (
        2000, 500, d.MeterAnomaly.IMPLAUSIBLE_STOP)


async def test_a_stop_after_an_operators_end_session_corrects_it(world: World) -> None:
    """endSession stands in for a stop the operator believed would never come; when it
    comes, its meterStop is what the charger metered and signed."""
    await _priced(world)
    charging = world.services.charging
    tx, _ = await charging.start_transaction(CP, 1, "TAG-1", 0, T0)
    await charging.meter_values(CP, 1, tx, register(1000, 600))
    ended = await charging.end_session(ADMIN, (await world.session(tx)).id)
    assert (ended.energy_wh, ended.cost_minor) == (1000, 40)
    assert (ended.stop_reason, ended.closed_without_stop) == ("Other", True)
    *_, first = await world.events_until(lambda e: e.change == "ENDED")
    await charging.stop_transaction(CP, tx, 5000, T0 + timedelta(minutes=20),
                                    reason="Local")
    stopped = await world.session(tx)
    assert (stopped.energy_wh, stopped.cost_minor) == (5000, 200)
    assert (stopped.stop_reason, stopped.closed_without_stop) == ("Local", False)
    assert (await _payment(world, stopped)).amount_minor == 200
    # Announced as README and the schema say (QA s32): a second ENDED of the session,
    # with the charger's figures.
    [again] = await world.events_until(lambda e: e.change == "ENDED")
    assert (first.energy_wh, again.energy_wh) == (1000, 5000)
    assert again.session_id == first.session_id == stopped.id


async def test_end_session_without_an_end_time_ends_now_after_a_boot_the_session_survived(
        world: World) -> None:
    """Its charger rebooted and kept the transaction (reported it Charging): the boot
    marked it (``Session.first_boot_at``), and endSession's default, documented as now,
    ended it at that boot, the ten minutes since unbilled (review r33)."""
    charging = world.services.charging
    charging.reboot_checks.grace_s = 30.0
    tx, _ = await charging.start_transaction(CP, 1, "TAG-1", 0, T0)
    await booted_later(charging)
    await charging.status_notification(CP, 1, "Charging", "NoError")
    assert (await world.session(tx)).first_boot_at is not None
    later = datetime.now(UTC) + timedelta(minutes=10)
    charging.ctx.clock = lambda: later
    ended = await charging.end_session(ADMIN, (await world.session(tx)).id)
    assert ended.end_time is not None
    assert ended.end_time - ended.start_time >= timedelta(minutes=10)
    charging.reboot_checks.stop()


async def test_a_boot_whose_sessions_cannot_be_marked_is_answered_all_the_same(
        world: World, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The boot is recorded before the sessions open across it are marked
    (``Session.first_boot_at``): a failing mark errored the BootNotification, and the
    charger's retry was recorded as a later boot (review r33). Logged, as other
    telemetry writes are."""
    from domain.services.charging import BootInfo

    charging = world.services.charging
    charging.reboot_checks.grace_s = 30.0
    tx, _ = await charging.start_transaction(CP, 1, "TAG-1", 0, T0)
    write = world.store.write

    async def failing(changes: Any, *args: Any, **kwargs: Any) -> None:
        if any("first_boot_at" in (getattr(c, "fields", None) or ()) for c in changes):
            raise OSError("disk I/O error")
        await write(changes, *args, **kwargs)
    monkeypatch.setattr(world.store, "write", failing)
    await asyncio.sleep(0.002)  # the boot after the session was recorded (our clock)
    with caplog.at_level(logging.WARNING, "chargegraph.charging"):
        answer = await charging.boot(CP, BootInfo(vendor="V", model="M"))
    assert answer.status is d.Registration.ACCEPTED
    assert "marking the sessions open across its boot failed" in caplog.text
    station = await world.store.find_one(d.Station, Eq("cp_id", CP))
    assert station is not None and station.booted_at is not None
    assert (await world.session(tx)).first_boot_at is None
    charging.reboot_checks.stop()


async def test_a_payment_already_captured_keeps_its_money(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    await _priced(world)
    charging = world.services.charging
    older, _ = await charging.start_transaction(CP, 1, "TAG-1", 0, T0)
    await charging.meter_values(CP, 1, older, register(1000, 600))
    await charging.start_transaction(CP, 1, "TAG-1", 9000, T0 + timedelta(minutes=30))
    lost = await world.session(older)
    captured = await world.services.payments.capture(ADMIN, (await _payment(world, lost)).id)
    with caplog.at_level(logging.WARNING, "chargegraph.charging"):
        await charging.stop_transaction(CP, older, 9000, T0 + timedelta(minutes=20))
    stopped = await world.session(older)
    assert (stopped.energy_wh, stopped.cost_minor) == (9000, 360)
    payment = await _payment(world, stopped)
    assert (payment.status, payment.amount_minor, payment.updated_at) == (
        d.PaymentStatus.CAPTURED, 40, captured.updated_at)
    assert "settle the difference" in caplog.text


async def _booted(world: World) -> datetime:
    """The charger's latest boot, as its station records it."""
    station = await world.store.find_one(d.Station, Eq("cp_id", CP))
    assert station is not None and station.booted_at is not None
    return station.booted_at


async def test_a_transaction_still_metered_after_a_boot_is_not_lost(world: World) -> None:
    """QA (s20): a BootNotification without a reboot (a periodic one), the connector
    reported Available, and MeterValues naming the transaction kept coming: two minutes
    later the session was closed as lost (reason Other, energy frozen, the card free
    elsewhere). A frame naming it after the boot says the charger still has it."""
    charging = world.services.charging
    charging.reboot_checks.grace_s = 30.0  # the check is run below, as its grace ends
    tx, _ = await charging.start_transaction(CP, 1, "TAG-1", 7_000_000, T0)
    await charging.meter_values(CP, 1, tx, register(7_000_100, 600))
    await booted_later(charging)
    await charging.status_notification(CP, 1, "Available", "NoError")  # stale, repeated
    await charging.meter_values(CP, 1, tx, register(7_000_150, 3600))
    await charging.meter_values(CP, 1, tx, register(7_000_200, 3615))
    await charging.reboot_checks.close_lost(CP, 1, await _booted(world))  # the grace is over
    charging.reboot_checks.stop()
    session = await world.session(tx)
    assert (session.state, session.energy_wh) == (d.SessionState.ACTIVE, 200)
    assert (await charging.authorize_start(CP, "TAG-1")).status == "ConcurrentTx"
    await charging.meter_values(CP, 1, tx, register(7_000_300, 3630))
    await charging.stop_transaction(CP, tx, 7_000_400, T0 + timedelta(seconds=3645))
    stopped = await world.session(tx)
    assert (stopped.energy_wh, stopped.stop_reason) == (400, "Local")


async def test_a_frame_naming_the_transaction_while_the_check_closes_it_keeps_it_open(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame committed between the check's read and its close: the close is written
    only onto the session as read, so it reads again and finds it named since the boot."""
    charging = world.services.charging
    charging.reboot_checks.grace_s = 30.0
    tx, _ = await charging.start_transaction(CP, 1, "TAG-1", 1000, T0)
    await booted_later(charging)
    await charging.status_notification(CP, 1, "Available", "NoError")
    close = charging._close

    async def named_meanwhile(*args: object, **kwargs: object) -> object:
        closing = await close(*args, **kwargs)  # type: ignore[arg-type]
        await charging.meter_values(CP, 1, tx, register(1500, 3600))
        return closing

    monkeypatch.setattr(charging, "_close", named_meanwhile)
    await charging.reboot_checks.close_lost(CP, 1, await _booted(world))
    charging.reboot_checks.stop()
    assert (await world.session(tx)).state is d.SessionState.ACTIVE


async def test_meter_values_of_a_transaction_closed_as_lost_are_kept_and_logged(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Its charger named it only after the grace (meter values every five minutes): it
    was closed as lost. Its frames are kept as its history, adding nothing, and logged
    once for an operator, not dropped silently; its stop corrects the close."""
    charging = world.services.charging
    tx = await closed_as_lost(world)
    assert (await world.session(tx)).state is d.SessionState.COMPLETED
    with caplog.at_level(logging.WARNING, "chargegraph.charging"):
        await charging.meter_values(CP, 1, tx, register(2500, 3600))
        await charging.meter_values(CP, 1, tx, register(3000, 3900))
    [warned] = [r for r in caplog.records if "still metered" in r.getMessage()]
    assert f"transaction {tx}" in warned.getMessage()
    values = {s.value for s in await world.store.find_all(
        d.MeterSample, Eq("transaction_id", tx))}
    assert values == {2000.0, 2500.0, 3000.0}
    await charging.stop_transaction(CP, tx, 3500, T0 + timedelta(seconds=4000))
    assert (await world.session(tx)).energy_wh == 2500
