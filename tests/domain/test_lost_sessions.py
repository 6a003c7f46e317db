"""Sessions the CSMS closed without their StopTransaction: lost with a reboot across a
restart of the service, and corrected by the stop that comes after all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from domain import entities as d
from domain.policy import Policy
from domain.services import ServiceContext, Services
from domain.services.charging import ChargingService
from store.sqlite import SqliteStore
from tests.domain.test_charging_telemetry import (
    CP,
    T0,
    World,
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

