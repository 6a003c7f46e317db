"""Sessions open in a restored database (``chargegraph restore``), end to end: a real OCPP
charger over a websocket to a central system on an SQLite file, the file put back from a
backup taken while the charger was charging.

Restore QA s27: the backup brought back as ACTIVE every session open when it was taken,
though their chargers had ended them since (their StopTransactions went to the database
replaced). No StopTransaction ever came again, and an Available report changed nothing:
the session stayed open for ever, its driver's card ConcurrentTx on every charger."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ocpp.v16 import call

from domain import entities as d
from domain.policy import SYSTEM
from domain.query import Eq, all_of
from ocpp_bridge.simulator import connected
from store.sqlite.backup import backup, restore
from store.sqlite.migrations import MIGRATIONS
from tests.ocpp.conftest import STATION_PASSWORD, seed, start_central
from tests.ocpp.test_lost_sessions import meter, stamp, start, stopping
from tests.support.schema_at import roll_back


async def test_a_session_open_at_the_backup_is_closed_once_its_connector_reports_free(
        tmp_path: Path) -> None:
    database, copy = tmp_path / "central.db", tmp_path / "backup.db"
    first = await start_central(database)
    await seed(first)
    now = datetime.now(UTC)
    async with connected(first.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        tx = await start(cp, 1000, now - timedelta(minutes=30))
        last_read = now - timedelta(minutes=20)
        await meter(cp, tx, 4000, last_read)
        await cp.status(1, "Charging")
    await stopping(first)
    backup(database, copy)
    # What the charger did next (its stop, recorded in the database replaced) is lost.
    restore(copy, database)

    second = await start_central(database)
    second.services.charging.restore_checks.grace_s = 0.0
    try:
        kept = await second.session(tx)
        assert kept is not None and kept.state is d.SessionState.ACTIVE
        assert kept.open_at_restore is not None  # marked: its charger may have ended it
        async with connected(second.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.status(1, "Available")  # no transaction on it any more
            await second.services.charging.restore_checks.done()
            ended = await second.session(tx)
            assert ended is not None
            assert (ended.state, ended.stop_reason, ended.closed_without_stop,
                    ended.energy_wh) == (d.SessionState.COMPLETED, "Other", True, 3000)
            # Ended where it was last known to charge, not at the restore: the hours
            # between are nobody's (a per-minute price would bill them).
            assert ended.end_time == last_read.replace(microsecond=last_read.microsecond
                                                       // 1000 * 1000)
        async with connected(second.url, "CP-OPEN") as elsewhere:
            assert await elsewhere.authorize("TAG-OK") == "Accepted"
    finally:
        await stopping(second)


async def test_a_session_its_charger_still_meters_after_the_restore_stays_open(
        tmp_path: Path) -> None:
    database, copy = tmp_path / "central.db", tmp_path / "backup.db"
    first = await start_central(database)
    await seed(first)
    now = datetime.now(UTC)
    async with connected(first.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        tx = await start(cp, 1000, now - timedelta(minutes=30))
        answer = await cp.call(call.StartTransaction(
            connector_id=2, id_tag="TAG-OTHER", meter_start=500,
            timestamp=stamp(now - timedelta(minutes=25))))
        other = int(answer.transaction_id)
    await stopping(first)
    backup(database, copy)
    restore(copy, database)

    second = await start_central(database)
    second.services.charging.restore_checks.grace_s = 0.0
    try:
        async with connected(second.url, "CP-1", password=STATION_PASSWORD) as cp:
            # It still charges: its meter values name it after the restore.
            await meter(cp, tx, 2000, datetime.now(UTC))
            await cp.status(1, "Available")  # a report the meter values outweigh
            await cp.status(2, "Available")
            await second.services.charging.restore_checks.done()
            still = await second.session(tx)
            assert still is not None and still.state is d.SessionState.ACTIVE
            ended = await second.session(other)
            assert ended is not None and ended.state is d.SessionState.COMPLETED
    finally:
        await stopping(second)


async def test_a_backup_of_the_previous_schema_is_migrated_and_its_open_sessions_marked(
        tmp_path: Path) -> None:
    """A backup the version before this one made (schema 76, no column to mark): the
    restore migrates it first, so its open sessions are marked as any."""
    database, copy = tmp_path / "central.db", tmp_path / "backup.db"
    first = await start_central(database)
    await seed(first)
    async with connected(first.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        tx = await start(cp, 1000, datetime.now(UTC))
    await stopping(first)
    backup(database, copy)
    roll_back(copy, 76)

    report = restore(copy, database)

    assert (report.schema_version, report.migrated_to) == (76, MIGRATIONS[-1][0])
    second = await start_central(database)
    try:
        kept = await second.session(tx)
        assert kept is not None and kept.open_at_restore is not None
    finally:
        await stopping(second)


async def test_a_newer_start_ends_a_session_open_at_the_restore_at_its_last_reading(
        tmp_path: Path) -> None:
    """Closed by the next start on its connector, days after the restore perhaps, a
    session the restore brought back ran to that start: its per-minute price and idle
    fee billed the whole time nobody charged (restore QA s27)."""
    database, copy = tmp_path / "central.db", tmp_path / "backup.db"
    first = await start_central(database)
    await seed(first)
    now = datetime.now(UTC)
    async with connected(first.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        tx = await start(cp, 1000, now - timedelta(hours=3))
        last_read = now - timedelta(hours=2, minutes=30)
        await meter(cp, tx, 9000, last_read)
    await stopping(first)
    backup(database, copy)
    restore(copy, database)

    second = await start_central(database)
    try:
        async with connected(second.url, "CP-1", password=STATION_PASSWORD) as cp:
            answer = await cp.call(call.StartTransaction(
                connector_id=1, id_tag="TAG-OTHER", meter_start=20_000, timestamp=stamp(now)))
            assert answer.id_tag_info["status"] == "Accepted"
            ended = await second.session(tx)
            assert ended is not None and ended.state is d.SessionState.COMPLETED
            assert ended.end_time is not None
            assert abs(ended.end_time - last_read) < timedelta(seconds=1)
    finally:
        await stopping(second)


async def test_a_restored_session_closed_by_its_chargers_reboot_check_ends_at_its_last_reading(
        tmp_path: Path) -> None:
    """The charger ended the session after the backup; the restore brings it back open.
    The charger then reboots (BootNotification) and reports Available: the restore's
    check and the reboot's are both armed by that report. README: such a session ends
    "at its last meter reading (not at the newer start: the time between was billed by a
    per-minute price)". The reboot's check runs first and closes it at the boot, hours
    after its last reading: the hours between billed."""
    database, copy = tmp_path / "central.db", tmp_path / "backup.db"
    first = await start_central(database)
    await seed(first)
    now = datetime.now(UTC)
    async with connected(first.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        tx = await start(cp, 1000, now - timedelta(hours=3))
        last_read = now - timedelta(hours=2, minutes=30)
        await meter(cp, tx, 4000, last_read)
        await cp.status(1, "Charging")
    await stopping(first)
    backup(database, copy)
    # Recorded hours ago as its start says (the backup is that old): our clock moved on.
    shift = int(timedelta(hours=3).total_seconds() * 1_000_000)
    with contextlib.closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute('UPDATE "session" SET "created_at" = "created_at" - ?, '
                     '"updated_at" = "updated_at" - ?', (shift, shift))
    restore(copy, database)

    second = await start_central(database)
    second.services.charging.restore_checks.grace_s = 0.0
    second.services.charging.reboot_checks.grace_s = 0.0
    try:
        async with connected(second.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()  # it rebooted while the central was down for the restore
            await cp.status(1, "Available")
            await second.services.charging.reboot_checks.done()
            await second.services.charging.restore_checks.done()
            ended = await second.session(tx)
            assert ended is not None and ended.state is d.SessionState.COMPLETED
            assert ended.end_time is not None
            assert abs(ended.end_time - last_read) < timedelta(seconds=1), (
                ended.end_time, last_read)
    finally:
        await stopping(second)


async def test_a_restart_within_the_grace_after_the_free_report_still_closes_the_restored_session(
        tmp_path: Path) -> None:
    """The charger reports its connector Available after the restore; the service is
    restarted before the 2-minute grace is over (the check was pending in memory). The
    charger connects again without a reboot and, as ``_resume_reboot_checks`` itself
    says, "will not report the connector again": the reboot's check is armed again on
    connect, the restore's is not. The session the restore brought back stays open for
    ever (its card ConcurrentTx), the very symptom the change set out to end."""
    database, copy = tmp_path / "central.db", tmp_path / "backup.db"
    first = await start_central(database)
    await seed(first)
    now = datetime.now(UTC)
    async with connected(first.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        tx = await start(cp, 1000, now - timedelta(minutes=30))
        await meter(cp, tx, 4000, now - timedelta(minutes=20))
        await cp.status(1, "Charging")
    await stopping(first)
    backup(database, copy)
    restore(copy, database)

    second = await start_central(database)  # grace as shipped: 2 minutes
    async with connected(second.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.status(1, "Available")
        assert second.services.charging.restore_checks.pending  # armed, in memory
    await stopping(second)  # restarted within the grace (a deploy, a crash)

    third = await start_central(database)
    third.services.charging.restore_checks.grace_s = 0.0
    third.services.charging.reboot_checks.grace_s = 0.0
    # Not asked for its status (or it ignores TriggerMessage): what is stored arms it.
    third.services.charging.on_restored_connect = None
    try:
        async with connected(third.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.heartbeat()  # connected again; its connector already said Available
            await third.services.charging.reboot_checks.done()
            await third.services.charging.restore_checks.done()
            kept = await third.session(tx)
            assert kept is not None
            assert kept.state is d.SessionState.COMPLETED, "restored session left open for ever"
    finally:
        await stopping(third)


async def _restored_open_session(tmp_path: Path, last_read_ago: timedelta) -> tuple[
        Path, int, datetime]:
    """A database restored from a backup taken while CP-1 charged transaction ``tx``
    (last read ``last_read_ago``): the database, ``tx`` and its last reading's time."""
    database, copy = tmp_path / "central.db", tmp_path / "backup.db"
    first = await start_central(database)
    await seed(first)
    now = datetime.now(UTC)
    async with connected(first.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        tx = await start(cp, 1000, now - last_read_ago - timedelta(minutes=10))
        last_read = now - last_read_ago
        await meter(cp, tx, 4000, last_read)
        await cp.status(1, "Charging")
    await stopping(first)
    backup(database, copy)
    restore(copy, database)
    return database, tx, last_read


async def test_an_operators_end_of_a_restored_session_ends_it_at_its_last_reading(
        tmp_path: Path) -> None:
    """``endSession`` without an endTime closes a session the restore brought back, not
    heard of since, where every other close without its stop does: at its last reading,
    not now (hours of a per-minute price after its charger ended it)."""
    database, tx, last_read = await _restored_open_session(tmp_path, timedelta(hours=2))
    second = await start_central(database)
    try:
        session = await second.session(tx)
        assert session is not None and session.open_at_restore is not None
        ended = await second.services.charging.end_session(SYSTEM, session.id)
        assert ended.state is d.SessionState.COMPLETED
        assert ended.end_time is not None
        assert abs(ended.end_time - last_read) < timedelta(seconds=1), (
            ended.end_time, last_read)
    finally:
        await stopping(second)


def _counting_session_reads(central: Any, *, fail: bool = False) -> list[int]:
    """Counts (or, ``fail``, refuses) the store's reads of sessions from now on."""
    store = central.services.charging.store
    reads: list[int] = []
    original = store.find_all

    async def find_all(kind: Any, *args: Any, **kwargs: Any) -> Any:
        if kind is d.Session:
            reads.append(1)
            if fail:
                raise OSError("disk I/O error")
        return await original(kind, *args, **kwargs)

    store.find_all = find_all
    return reads


async def test_a_free_report_reads_no_session_on_a_database_never_restored(
        tmp_path: Path) -> None:
    """Available and Preparing reports are the hottest path there is: whether a session
    a restore brought back is open on the connector is known in memory (loaded at
    start), not read from the store on every report."""
    central = await start_central(tmp_path / "central.db")
    await seed(central)
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            reads = _counting_session_reads(central)
            for status in ("Available", "Preparing", "Available"):
                await cp.status(1, status)
            assert not reads
            assert not central.services.charging.restore_checks.pending
    finally:
        await stopping(central)


async def test_a_failing_session_read_does_not_fail_a_free_report_after_a_restore(
        tmp_path: Path) -> None:
    """The report is written and answered whatever the restore's check meets: a store
    read failing there is logged, and the next report closes the session."""
    database, tx, _ = await _restored_open_session(tmp_path, timedelta(minutes=20))
    second = await start_central(database)
    second.services.charging.restore_checks.grace_s = 0.0
    second.services.charging.on_restored_connect = None  # it reports when told here
    try:
        async with connected(second.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.heartbeat()
            reads = _counting_session_reads(second, fail=True)
            # Answered, not a CallError (raised here: not suppressed as ``status`` does).
            await cp.call(call.StatusNotification(
                connector_id=1, error_code="NoError", status="Available",
                timestamp=stamp(datetime.now(UTC))), suppress=False)
            await second.services.charging.restore_checks.done()
            assert reads  # the check read, after the report, and failed
            station = await second.services.charging.station("CP-1")
            assert station is not None
            [plug] = await second.store.find_all(d.Connector, all_of(
                Eq("station_id", station.id), Eq("connector_id", 1)))
            assert plug.status is d.ConnectorStatus.AVAILABLE
            del second.services.charging.store.find_all  # reads work again
            kept = await second.session(tx)
            assert kept is not None and kept.state is d.SessionState.ACTIVE
            await cp.status(1, "Preparing")
            await second.services.charging.restore_checks.done()
            ended = await second.session(tx)
            assert ended is not None and ended.state is d.SessionState.COMPLETED
    finally:
        await stopping(second)


async def test_a_charger_connecting_with_a_restored_session_is_asked_for_its_status(
        tmp_path: Path) -> None:
    """A charger connecting again reports nothing by itself (OCPP 1.6), and what is
    stored of its connector is the backup's Charging. Asked for its status
    (TriggerMessage StatusNotification), its answer (Available) closes the session at its
    last reading; a charger without such sessions is not asked."""
    database, tx, last_read = await _restored_open_session(tmp_path, timedelta(minutes=20))
    second = await start_central(database)
    second.services.charging.restore_checks.grace_s = 0.0
    try:
        async with connected(second.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.heartbeat()
            await second.services.charging.asking.settled()
            assert ("TriggerMessage", {"requested_message": "StatusNotification",
                                       "connector_id": None}) in cp.received
            ended = None
            for _ in range(50):
                await second.services.charging.restore_checks.done()
                ended = await second.session(tx)
                assert ended is not None
                if ended.state is d.SessionState.COMPLETED:
                    break
                await asyncio.sleep(0.05)
            assert ended is not None and ended.state is d.SessionState.COMPLETED
            assert ended.end_time is not None
            assert abs(ended.end_time - last_read) < timedelta(seconds=1)
        async with connected(second.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.heartbeat()
            await second.services.charging.asking.settled()
            assert not [m for m in cp.received if m[0] == "TriggerMessage"]
    finally:
        await stopping(second)
