"""``store.sqlite.backup``: a consistent copy of a database the store is writing to."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from domain.entities import AuditAction
from domain.ports import Insert
from store.sqlite import SqliteStore
from store.sqlite.backup import RESTORE_GAP, BackupError, BackupReport, backup, restore
from store.sqlite.migrations import MIGRATIONS
from tests.contract.factories import audit, company


def counts(path: Path) -> tuple[int, int]:
    """(companies, audit entries) in the file at ``path``, read as a restore would."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return (conn.execute('SELECT COUNT(*) FROM "company"').fetchone()[0],
                conn.execute('SELECT COUNT(*) FROM "audit_entry"').fetchone()[0])


async def test_a_backup_during_writes_is_whole_and_holds_what_is_still_in_the_wal(
        tmp_path: Path) -> None:
    """Writes go on while three backups are taken. Each write is a company with its audit
    entry in one transaction: a copy holding one without the other would be torn. Every
    write acknowledged before a backup began is in it, though none has been checkpointed
    into the database file yet: a plain copy of that file (what QA's `cp` got) has none."""
    live = tmp_path / "live.db"
    store = SqliteStore(str(live))
    await store.start()
    assert store._writer is not None
    store._writer.checkpoint_bytes = 1 << 40  # everything stays in the WAL
    acknowledged = 0
    stop, under_way = asyncio.Event(), asyncio.Event()

    async def keep_writing() -> None:
        nonlocal acknowledged
        while not stop.is_set():
            made = company(name=f"Written {acknowledged}")
            await store.write([Insert(made)], [audit(made, "system",
                                                     action=AuditAction.CREATE)])
            acknowledged += 1
            if acknowledged == 100:
                under_way.set()
            await store.next_sequence("tx")
            await asyncio.sleep(0)

    writing = asyncio.create_task(keep_writing())
    try:
        await under_way.wait()
        taken = []
        for n in range(3):
            before = acknowledged
            report = await asyncio.to_thread(backup, live, tmp_path / f"copy{n}.db")
            taken.append((before, acknowledged, report))
        plain = tmp_path / "plain.db"
        shutil.copyfile(live, plain)
    finally:
        stop.set()
        await writing
        await store.close()

    check_copies(tmp_path, taken, plain)


def check_copies(tmp_path: Path, taken: list[tuple[int, int, BackupReport]],
                 plain: Path) -> None:
    # Nothing but the copies: no temporary file or WAL of a copy left behind.
    assert sorted(p.name for p in tmp_path.iterdir() if "copy" in p.name) == [
        "copy0.db", "copy1.db", "copy2.db"]
    for before, after, report in taken:
        companies, entries = counts(report.target)
        assert companies == entries  # whole transactions only
        assert before <= companies <= after
        assert report.schema_version == MIGRATIONS[-1][0]
        assert report.size == report.target.stat().st_size
        assert stat.S_IMODE(report.target.stat().st_mode) == 0o600  # password hashes
    assert taken[-1][0] > taken[0][0]  # the writes went on during the backups
    assert counts(plain) == (0, 0)


@pytest.fixture
async def database(tmp_path: Path) -> Path:
    path = tmp_path / "live.db"
    store = SqliteStore(str(path))
    await store.start()
    made = company(name="Kept")
    await store.write([Insert(made)], [audit(made, "system")])
    await store.close()
    return path


def test_an_existing_file_is_overwritten_only_when_asked(database: Path,
                                                          tmp_path: Path) -> None:
    target = tmp_path / "backup.db"
    target.write_text("an older backup")
    with pytest.raises(BackupError, match="exists: pass --force to overwrite it"):
        backup(database, target)
    assert target.read_text() == "an older backup"
    backup(database, target, overwrite=True)
    assert counts(target) == (1, 1)


def test_the_database_itself_is_never_the_target(database: Path) -> None:
    with pytest.raises(BackupError, match="is the database itself"):
        backup(database, database, overwrite=True)
    assert counts(database) == (1, 1)


def test_no_database_is_created_where_there_was_none(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="there is no database at"):
        backup(tmp_path / "missing.db", tmp_path / "backup.db")
    assert os.listdir(tmp_path) == []


def test_a_file_that_is_no_chargegraph_database_leaves_no_copy(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (a)")
    with pytest.raises(BackupError, match="not a ChargeGraph database"):
        backup(other, tmp_path / "backup.db")
    assert sorted(os.listdir(tmp_path)) == ["other.db"]


def test_a_missing_folder_is_named(database: Path, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="does not exist"):
        backup(database, tmp_path / "nowhere" / "backup.db")


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
async def test_the_databases_own_side_files_are_never_the_target(
        tmp_path: Path, suffix: str) -> None:
    """``--force`` on ``live.db-wal`` put a copy in place of the live WAL: the commits
    still in it were gone after the next crash. Whether the file exists at that moment
    or not (a copy named ``-journal`` would be rolled back into the database)."""
    live = tmp_path / "live.db"
    store = SqliteStore(str(live))
    await store.start()
    assert store._writer is not None
    store._writer.checkpoint_bytes = 1 << 40  # the commit stays in the WAL
    try:
        made = company(name="In the WAL")
        await store.write([Insert(made)], [audit(made, "system")])
        side = tmp_path / f"live.db{suffix}"
        before = side.read_bytes() if side.exists() else None
        with pytest.raises(BackupError, match=f"is the database's {suffix[1:]} file"):
            backup(live, side, overwrite=True)
        assert (side.read_bytes() if side.exists() else None) == before
        # Named through a link to the folder, and by a link to the database.
        (tmp_path / "link").symlink_to(tmp_path)
        (tmp_path / "alias.db").symlink_to(live)
        for other in (tmp_path / "link" / f"live.db{suffix}", tmp_path / f"alias.db{suffix}"):
            with pytest.raises(BackupError, match=f"is the database's {suffix[1:]} file"):
                backup(tmp_path / "alias.db", other, overwrite=True)
    finally:
        await store.close()
    assert counts(live) == (1, 1)


def test_a_full_disk_leaves_neither_the_copy_nor_its_journal(database: Path,
                                                               tmp_path: Path) -> None:
    """In a process whose files may not grow past 1 MB, as on a full disk: SQLite's
    rollback journal of the copy (``.backup.db.….part-journal``) was left behind. The
    database outgrows SQLite's page cache (2 MB), so the copy spills pages to its file
    mid-way, with the journal already written."""
    import resource
    import signal
    import subprocess
    import sys

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.execute("CREATE TABLE padding (x)")
        conn.executemany("INSERT INTO padding VALUES (?)", [("y" * 1000,)] * 3000)
    target = tmp_path / "out" / "backup.db"
    target.parent.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from store.sqlite.backup import backup; "
         "backup(sys.argv[1], sys.argv[2])", str(database), str(target)],
        preexec_fn=small_disk, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 1
    assert "BackupError: cannot back up" in done.stderr
    assert os.listdir(target.parent) == []


async def test_a_restore_puts_the_backup_back_and_draws_no_number_again(
        database: Path, tmp_path: Path) -> None:
    """Ops QA s23: restored, the counters were the backup's, and the transaction ids of
    sessions started after it (which chargers still hold and stop) were given again."""
    store = SqliteStore(str(database))
    await store.start()
    before = [await store.next_sequence("transaction") for _ in range(3)]
    reservation = await store.next_sequence("reservation")
    await store.close()
    backup(database, tmp_path / "copy.db")
    store = SqliteStore(str(database))
    await store.start()
    after_backup = await store.next_sequence("transaction")  # a charger holds it
    await store.write([Insert(company(name="Lost"))], [])
    await store.close()

    report = restore(tmp_path / "copy.db", database)

    # Past the database it replaced, which drew one since the backup (ops QA s25).
    assert report.sequences["transaction"] == after_backup + RESTORE_GAP + 1
    assert after_backup == before[-1] + 1
    store = SqliteStore(str(database))
    await store.start()
    try:
        drawn = await store.next_sequence("transaction")
        assert drawn == report.sequences["transaction"] > after_backup
        assert await store.next_sequence("reservation") == reservation + RESTORE_GAP + 1
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(database)) as conn:
        assert conn.execute('SELECT "name" FROM "company"').fetchall() == [("Kept",)]


async def test_a_restore_is_refused_while_the_service_runs(database: Path,
                                                           tmp_path: Path) -> None:
    backup(database, tmp_path / "copy.db")
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        far = 10**18  # a lease that expires in the far future: an instance runs
        conn.execute('INSERT INTO "instance_lease" VALUES (?, 0, 0, ?, ?, ?, 0, ?)',
                     ("i1", "system", "system", "host", far))
    with pytest.raises(BackupError, match="an instance of the service runs"):
        restore(tmp_path / "copy.db", database)
    assert [name for name in os.listdir(tmp_path) if ".part" in name] == []


def test_a_backup_of_a_newer_schema_is_refused_before_the_database_is_touched(
        database: Path, tmp_path: Path) -> None:
    """Ops QA s25: a backup a newer ChargeGraph made (after an upgrade, restored with the
    old build once the upgrade was rolled back) was put in place of the database, which
    was gone; the service then refused to start on it ("written by a newer ChargeGraph"),
    leaving neither database to run."""
    backup(database, tmp_path / "copy.db")
    newest = MIGRATIONS[-1][0]
    with contextlib.closing(sqlite3.connect(tmp_path / "copy.db")) as conn, conn:
        conn.execute('INSERT INTO "schema_version" VALUES (?, 0)', (newest + 1,))
    before = database.read_bytes()

    with pytest.raises(BackupError, match=f"schema version {newest + 1}, written by a "
                                          f"newer ChargeGraph .*knows up to {newest}"):
        restore(tmp_path / "copy.db", database)

    assert database.read_bytes() == before
    assert [name for name in os.listdir(tmp_path) if ".part" in name] == []


async def test_a_restore_is_refused_while_a_process_without_a_lease_has_it_open(
        database: Path, tmp_path: Path) -> None:
    """Ops QA s25: an instance serving only GraphQL (``CHARGEGRAPH_OCPP_ENABLED=false``)
    holds no lease, so the restore went ahead under it: the database was replaced while
    it ran, and it refused every write until restarted."""
    backup(database, tmp_path / "copy.db")
    store = SqliteStore(str(database))
    await store.start()
    try:
        with pytest.raises(BackupError, match="open in another process"):
            restore(tmp_path / "copy.db", database)
        assert await store.health() is None  # still its own file
    finally:
        await store.close()
    assert [name for name in os.listdir(tmp_path) if ".part" in name] == []
    restore(tmp_path / "copy.db", database)  # stopped, it goes ahead


async def test_a_restore_moves_numbers_never_drawn_before_the_backup_too(
        database: Path, tmp_path: Path) -> None:
    """Ops QA s25: a number first drawn after the backup (the network's first
    reservation) had no counter in it to move, and was drawn again from 1 after the
    restore: a charger still holding that reservation had it replaced by a new one."""
    backup(database, tmp_path / "copy.db")
    store = SqliteStore(str(database))
    await store.start()
    after_backup = await store.next_sequence("reservation")  # a charger holds it
    await store.close()

    report = restore(tmp_path / "copy.db", database)

    store = SqliteStore(str(database))
    await store.start()
    try:
        drawn = await store.next_sequence("reservation")
        assert drawn == report.sequences["reservation"] > after_backup
        assert await store.next_sequence("connection") > RESTORE_GAP
    finally:
        await store.close()


async def test_a_second_restore_of_the_same_backup_draws_no_number_the_first_gave(
        database: Path, tmp_path: Path) -> None:
    """Ops QA s25: each restore moved the counters a million past the backup's, not past
    the database it replaced: restoring the same backup again (a first restore retried,
    or an older backup after a newer one) gave again the transaction ids drawn since the
    first, which chargers still held."""
    backup(database, tmp_path / "copy.db")
    restore(tmp_path / "copy.db", database)
    store = SqliteStore(str(database))
    await store.start()
    since_first = [await store.next_sequence(name) for name in ("transaction", "reservation")]
    await store.close()

    report = restore(tmp_path / "copy.db", database)

    assert report.sequences["transaction"] > since_first[0] + RESTORE_GAP - 1
    assert report.sequences["reservation"] > since_first[1] + RESTORE_GAP - 1


async def test_a_restore_over_a_database_that_cannot_be_read_moves_the_backups_numbers(
        tmp_path: Path) -> None:
    """A corrupt database, the usual reason to restore, has no counters to read: the
    backup's are moved ahead as ever."""
    store = SqliteStore(str(tmp_path / "source.db"))
    await store.start()
    drawn = await store.next_sequence("transaction")
    await store.close()
    backup(tmp_path / "source.db", tmp_path / "copy.db")
    broken = tmp_path / "live.db"
    broken.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)

    report = restore(tmp_path / "copy.db", broken)

    assert report.sequences["transaction"] == drawn + RESTORE_GAP + 1
