"""Sessions open in a restored database (``chargegraph restore``), end to end: a real OCPP
charger over a websocket to a central system on an SQLite file, the file put back from a
backup taken while the charger was charging.

Restore QA s27: the backup brought back as ACTIVE every session open when it was taken,
though their chargers had ended them since (their StopTransactions went to the database
replaced). No StopTransaction ever came again, and an Available report changed nothing:
the session stayed open for ever, its driver's card ConcurrentTx on every charger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ocpp.v16 import call

from domain import entities as d
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
