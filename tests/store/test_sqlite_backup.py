"""``store.sqlite.backup``: a consistent copy of a database the store is writing to."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
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
        conn.execute('INSERT INTO "instance_lease" VALUES (?, 0, 0, ?, ?, ?, 0, ?, 1)',
                     ("i1", "system", "system", "host", far))
    with pytest.raises(BackupError, match="an instance of the service runs"):
        restore(tmp_path / "copy.db", database)
    assert [name for name in os.listdir(tmp_path) if ".part" in name] == []


def test_a_restore_from_a_file_that_is_no_database_says_restore(database: Path,
                                                                  tmp_path: Path) -> None:
    """QA s26: `chargegraph restore junk.db` said "cannot back up junk.db: file is not a
    database", as if the command had been a backup."""
    junk = tmp_path / "junk.db"
    junk.write_text("not a database\n" * 100)
    before = database.read_bytes()
    with pytest.raises(BackupError, match=rf"^cannot restore from {junk}: file is not a "
                                          "database$"):
        restore(junk, database)
    assert database.read_bytes() == before


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


NOBODY = 65534  # the user the checks below run as: not the database's owner
as_another_user = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root to run the restore as another user")


def run_as_nobody(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})


@pytest.fixture
async def shared_folder(database: Path) -> AsyncIterator[Path]:
    """A data folder anyone may write in (outside pytest's tmp_path, which only its
    owner may enter), holding a database and a backup of it anyone may read."""
    folder = Path(tempfile.mkdtemp(prefix="chargegraph-backup-"))
    try:
        os.chmod(folder, 0o777)
        shutil.copy(database, folder / "chargegraph.db")
        os.chmod(folder / "chargegraph.db", 0o600)  # as the service creates it
        backup(database, folder / "copy.db")
        os.chmod(folder / "copy.db", 0o644)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def restore_as_nobody(folder: Path) -> subprocess.CompletedProcess[str]:
    return run_as_nobody("from store.sqlite.backup import restore; "
                         f"restore({str(folder / 'copy.db')!r}, "
                         f"{str(folder / 'chargegraph.db')!r})")


async def test_a_restore_keeps_the_replaced_databases_mode_and_owner(
        database: Path, tmp_path: Path) -> None:
    """Review s26: the service runs as its own user, the operator runs `sudo chargegraph
    restore`; the restored file was the restorer's 0600 temporary, root's own, and the
    service could not open it."""
    backup(database, tmp_path / "copy.db")
    if os.geteuid() == 0:
        os.chown(database, NOBODY, NOBODY)  # the service's user
    os.chmod(database, 0o640)

    restore(tmp_path / "copy.db", database)

    after = os.stat(database)
    if os.geteuid() == 0:
        assert (after.st_uid, after.st_gid) == (NOBODY, NOBODY)
    assert stat.S_IMODE(after.st_mode) == 0o640


@as_another_user
async def test_a_root_restore_onto_a_fresh_volume_gives_the_file_to_the_folders_owner(
        database: Path) -> None:
    """Review r-ops2: README says run the restore "as the service's user ... or as root";
    restored where there is no database yet (a new volume after a disk loss, the data
    folder the service user's), the file was root's own 0600 temporary and the service,
    running as its own user, could not open it. It is given the folder's owner and group,
    mode 0600."""
    folder = Path(tempfile.mkdtemp(prefix="chargegraph-fresh-"))
    try:
        os.chown(folder, NOBODY, NOBODY)  # the service's data folder, e.g. /data
        os.chmod(folder, 0o755)
        backup(database, folder / "copy.db")
        os.chmod(folder / "copy.db", 0o644)

        report = restore(folder / "copy.db", folder / "chargegraph.db")  # as root

        after = os.stat(folder / "chargegraph.db")
        assert (after.st_uid, after.st_gid) == (NOBODY, NOBODY)
        assert stat.S_IMODE(after.st_mode) == 0o600
        assert report.warnings == ()
        run = run_as_nobody("import sqlite3; c = sqlite3.connect("
                            f"{str(folder / 'chargegraph.db')!r}); "
                            "print(c.execute('SELECT COUNT(*) FROM company').fetchone())")
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "(1,)"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@as_another_user
async def test_a_restore_onto_a_fresh_volume_that_cannot_give_it_the_folders_owner_is_refused(
        shared_folder: Path) -> None:
    """As where a database is replaced: a user who may write in the service's folder
    but not give the file its owner is refused, leaving nothing behind."""
    os.remove(shared_folder / "chargegraph.db")
    os.chown(shared_folder, 4242, 4242)  # the service's user; the folder stays 0777

    run = restore_as_nobody(shared_folder)

    assert run.returncode != 0
    assert "cannot give the restored" in run.stderr and "its folder's owner" in run.stderr
    assert [name for name in os.listdir(shared_folder)
            if name.startswith(("chargegraph.db", ".chargegraph.db"))] == []


async def test_a_restore_onto_a_fresh_volume_of_roots_warns_that_the_service_must_own_it(
        database: Path, tmp_path: Path) -> None:
    """Where no database is replaced and the folder is root's, nothing tells the
    service's user: the file is 0600 and its restorer's, and the output says so."""
    backup(database, tmp_path / "copy.db")
    fresh = tmp_path / "fresh"
    fresh.mkdir()

    report = restore(tmp_path / "copy.db", fresh / "chargegraph.db")

    after = os.stat(fresh / "chargegraph.db")
    assert stat.S_IMODE(after.st_mode) == 0o600
    assert after.st_uid == os.geteuid()
    if fresh.stat().st_uid == 0:
        [warning] = report.warnings
        assert "the service's user must own" in warning and str(fresh) in warning
    else:
        assert report.warnings == ()


@as_another_user
async def test_a_restore_that_cannot_give_the_database_its_owner_is_refused(
        shared_folder: Path) -> None:
    """An operator without sudo may replace the file in the shared folder, but not give
    the copy the service user's ownership: the service could not open it. Refused
    before the database is touched."""
    database = shared_folder / "chargegraph.db"
    os.chmod(database, 0o666)  # the operator may read and write it, not chown it
    before = database.read_bytes()

    run = restore_as_nobody(shared_folder)

    assert run.returncode != 0
    assert "cannot give the restored" in run.stderr, run.stderr
    assert "run the restore as root" in run.stderr
    assert database.read_bytes() == before and database.stat().st_uid == 0
    assert [name for name in os.listdir(shared_folder) if ".part" in name] == []


@as_another_user
async def test_a_restore_by_a_user_who_cannot_write_the_database_is_refused_while_it_is_open(
        shared_folder: Path) -> None:
    """Review s26: an operator who may write the data folder but not the database (the
    service user's, 0644) restored while an instance serving GraphQL only had it open.
    ``refuse_open``'s PRAGMA failed with SQLITE_IOERR_LOCK, taken for a damaged file, and
    the database was replaced under the instance. Any error that proves no damage
    refuses, naming the user to run it as."""
    database = shared_folder / "chargegraph.db"
    os.chmod(database, 0o644)
    store = SqliteStore(str(database))  # the GraphQL-only instance (root here)
    await store.start()
    try:
        inode = database.stat().st_ino

        run = restore_as_nobody(shared_folder)

        assert run.returncode != 0, "restored under an open database"
        assert "open in another process" in run.stderr, run.stderr
        assert "run the restore as the service's user" in run.stderr
        assert database.stat().st_ino == inode
        assert await store.health() is None
    finally:
        await store.close()


@as_another_user
async def test_a_restore_by_a_user_who_cannot_read_the_database_is_refused_under_a_live_lease(
        shared_folder: Path) -> None:
    """Review s26: the database 0600 (as the service makes it), an instance with OCPP
    running: ``refuse_running`` took "unable to open database file" for "not a ChargeGraph
    database", ``refuse_open`` and ``_drawn`` read nothing either, and the running
    instance's database was replaced under it."""
    database = shared_folder / "chargegraph.db"
    store = SqliteStore(str(database))
    await store.start()
    try:
        with contextlib.closing(sqlite3.connect(database)) as conn, conn:
            far = 10**18  # a lease that expires in the far future: an instance runs
            conn.execute('INSERT INTO "instance_lease" VALUES (?, 0, 0, ?, ?, ?, 0, ?, 1)',
                         ("i1", "system", "system", "host", far))
        inode = database.stat().st_ino

        run = restore_as_nobody(shared_folder)

        assert run.returncode != 0, "restored under a live lease"
        assert "an instance of the service runs" in run.stderr, run.stderr
        assert "run the restore as the service's user" in run.stderr
        assert database.stat().st_ino == inode
    finally:
        await store.close()


async def test_a_restore_over_a_symbolic_link_replaces_the_file_it_names(
        database: Path, tmp_path: Path) -> None:
    """The database reached through a link (a volume mounted elsewhere): the rename
    replaced the link with the restored file, and the stale WAL, next to the real file
    where SQLite names it, was left to be replayed into the service's own file. A stale
    rollback journal is removed too."""
    backup(database, tmp_path / "copy.db")
    link = tmp_path / "link.db"
    link.symlink_to(database)
    stale = [database.with_name(database.name + suffix)
             for suffix in ("-wal", "-shm", "-journal")]
    for side in stale:
        side.write_bytes(b"")  # left by a crash; SQLite itself rolls back only a hot one

    report = restore(tmp_path / "copy.db", link)

    assert link.is_symlink() and link.resolve() == database
    assert report.database == database
    assert [side for side in stale if side.exists()] == []
    assert counts(database) == (1, 1)


def test_a_restore_where_the_database_is_gone_removes_what_it_left_beside_it(
        database: Path, tmp_path: Path) -> None:
    """A database deleted without its side files (the checks have nothing to open): a
    stale WAL or rollback journal left there would be replayed into the restored file."""
    backup(database, tmp_path / "copy.db")
    gone = tmp_path / "gone.db"
    stale = [gone.with_name(gone.name + suffix) for suffix in ("-wal", "-shm", "-journal")]
    for side in stale:
        side.write_bytes(b"stale")

    restore(tmp_path / "copy.db", gone)

    assert [side for side in stale if side.exists()] == []
    assert counts(gone) == (1, 1)


async def test_a_restore_brings_back_no_live_lease_of_the_instance_the_backup_ran_under(
        database: Path, tmp_path: Path) -> None:
    """Restore QA s27: a backup taken while the service ran holds that instance's live
    lease. Restored once the instance had stopped, the lease came back live with it: a
    second restore (the right backup after a wrong one) was refused ("an instance of the
    service runs") for as long as the lease, no instance running, and a starting
    instance took that phantom for one serving the chargers and deliveries it held.
    Expired in the restored file: the first instance to start sweeps what it held."""
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        far = 10**18  # live when the backup is taken: the service runs
        conn.execute('INSERT INTO "instance_lease" VALUES (?, 0, 0, ?, ?, ?, 0, ?, 1)',
                     ("gone", "system", "system", "host", far))
    backup(database, tmp_path / "copy.db")
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.execute('DELETE FROM "instance_lease"')  # the instance stopped

    restore(tmp_path / "copy.db", database)
    with contextlib.closing(sqlite3.connect(database)) as conn:
        (expires,) = conn.execute('SELECT "expires_at" FROM "instance_lease" WHERE "id" = ?',
                                  ("gone",)).fetchone()
    assert expires < far
    restore(tmp_path / "copy.db", database)  # not refused: no instance runs
