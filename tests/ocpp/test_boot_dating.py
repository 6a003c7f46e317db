"""Which boot a BootNotification is (``ChargerClocks.boot_at``), as review r27-smart3
found it: the first on a connection was dated when that connection opened. A charger
that connected without booting (a reconnect after a network drop or the central
system's restart: OCPP 1.6 chargers do not boot then) and later restarts its software on
the same connection had its boot dated hours back: a session started on that
connection, lost with the restart, was never closed as lost."""

from __future__ import annotations

from datetime import UTC, datetime

from domain import entities as d
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_lost_sessions import start


async def test_a_session_started_before_a_restart_on_a_connection_without_boot_is_closed(
        central: Central) -> None:
    charging = central.services.charging
    charging.reboot_checks.grace_s = 0.0
    now = datetime.now(UTC)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
    # Reconnected after a network drop: no boot (the charger did not restart).
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.status(1, "Available")
        tx = await start(cp, 1000, now)
        await cp.status(1, "Charging")
        # Its software restarts, the connection stays: it boots and reports the plug
        # free, its transaction lost (no StopTransaction).
        await cp.boot()
        await cp.status(1, "Available")
        await charging.reboot_checks.done()
        lost = await central.session(tx)
        assert lost is not None and lost.state is d.SessionState.COMPLETED, (
            "the session lost at the restart stays open, holding the card")


async def test_a_stuck_clock_start_after_a_restart_on_a_connection_without_boot_is_new(
        central: Central) -> None:
    """The "since boot" rule of stuck stamps (``_StartIdentity.since_boot``): a charger
    whose clock reads the epoch at every start, its meter from 0 per transaction,
    restarts on a connection it had not booted on; the driver taps again. Its old
    session counts as recorded since this boot (dated at the connection's opening), and
    the new start is taken for a resend of it: no new session."""
    from ocpp.v16 import call
    epoch = "1970-01-01T00:00:00Z"
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        begin = call.StartTransaction(connector_id=1, id_tag="TAG-OK", meter_start=0,
                                      timestamp=epoch)
        first = (await cp.call(begin)).transaction_id
        await cp.boot()  # restarted, connection kept; its transaction lost
        second = (await cp.call(begin)).transaction_id
        assert second != first, "the start after the restart was taken for a resend"
