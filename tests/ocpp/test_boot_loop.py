"""A session lost in a reboot, its charger booting again before the grace was over (QA
s33): it ended at the first boot after it was recorded, whichever boot's check closes it,
and a boot within the grace put the check back no further (a charger booting again and
again faster than the grace kept the session open for good, its card held everywhere).
End to end: the ``ocpp`` package as the charger, on SQLite and MongoDB; the grace held
open by the test (``RebootChecks.sleep``) and let go when it chooses."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from ocpp.v16 import call

from domain import entities as d
from domain.query import Eq
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.conftest import central_on_each_store as central
from tests.ocpp.test_lost_sessions import meter, stamp, start

__all__ = ["central"]  # the fixture, on each store


async def booted_at(central: Central) -> datetime:
    station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    assert station is not None and station.booted_at is not None
    return station.booted_at


async def test_a_session_lost_in_a_boot_loop_ends_at_the_first_boot(central: Central
                                                                     ) -> None:
    checks = central.services.charging.reboot_checks
    over = asyncio.Event()
    waits: list[float] = []

    async def grace(delay: float) -> None:
        waits.append(delay)
        await over.wait()

    checks.sleep = grace
    now = datetime.now(UTC)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        tx = await start(cp, 1000, now)  # its clock is ours
        await meter(cp, tx, 3000, now)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:  # rebooted
        await cp.boot()
        first = await booted_at(central)
        await cp.status(1, "Available")
        await cp.status(2, "Available")
        # Started after the first reboot, on the other plug: lost in the second.
        later = await cp.call(call.StartTransaction(
            connector_id=2, id_tag="TAG-OTHER", meter_start=500,
            timestamp=stamp(datetime.now(UTC))))
        assert later.id_tag_info["status"] == "Accepted"
        later_tx = int(later.transaction_id)
    armed = dict(checks.pending)
    assert {key: booted for key, (booted, _) in armed.items()} == {
        ("CP-1", 1): first, ("CP-1", 2): first}
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:  # again
        await cp.boot()
        second = await booted_at(central)
        assert second > first
        await cp.status(1, "Available")
        await cp.status(2, "Available")
        # The second boot put no check back: the first boot's are still the ones due.
        assert checks.pending == armed
        lost = await central.session(tx)
        assert lost is not None and lost.state is d.SessionState.ACTIVE  # within the grace
        assert lost.first_boot_at == first

        over.set()  # the grace is over
        await checks.done()
        lost = await central.session(tx)
        assert lost is not None and (lost.state, lost.stop_reason, lost.closed_without_stop
                                     ) == (d.SessionState.COMPLETED, "Other", True)
        # At the first boot after it was recorded, on its own timeline, not the second.
        assert lost.end_time == lost.start_time + (first - lost.created_at)
        newer = await central.session(later_tx)
        assert newer is not None and newer.state is d.SessionState.COMPLETED, (
            "the session lost in the second boot stays open")
        assert newer.end_time == newer.start_time + (second - newer.created_at)
        assert await cp.authorize("TAG-OK") == "Accepted"  # the card is free again
    # One wait per plug and boot: the second boot's checks followed the first's.
    assert len(waits) == 4


async def test_a_session_metered_after_a_boot_ends_at_the_boot_that_lost_it(
        central: Central) -> None:
    """A charger that still metered its transaction after a boot (a periodic
    BootNotification, a controller restart) had it then: its first boot is the next one,
    the one that lost it."""
    checks = central.services.charging.reboot_checks
    over = asyncio.Event()

    async def grace(delay: float) -> None:
        await over.wait()

    checks.sleep = grace
    now = datetime.now(UTC)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        tx = await start(cp, 1000, now)
        await cp.boot()  # kept its transaction
        first = await booted_at(central)
        await meter(cp, tx, 2000, now)  # named on its arrival, after the boot
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()  # lost it
        second = await booted_at(central)
        await cp.status(1, "Available")
        kept = await central.session(tx)
        assert kept is not None and kept.first_boot_at == second > first
        over.set()
        await checks.done()
    lost = await central.session(tx)
    assert lost is not None and lost.state is d.SessionState.COMPLETED
    assert lost.end_time == lost.start_time + (second - lost.created_at)
