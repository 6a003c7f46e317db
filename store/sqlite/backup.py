"""A consistent copy of a live SQLite database (``chargegraph backup``), and putting one
back (``chargegraph restore``).

Copying ``chargegraph.db`` with ``cp`` while the service runs misses every commit still in
``chargegraph.db-wal`` (the writer checkpoints only every 4 MiB of WAL), and a copy taken
during a checkpoint may be torn. SQLite's online backup API reads the database as one
read transaction: the WAL's committed frames included, nothing half-committed, and the
service's writes go on meanwhile (under WAL a reader blocks no writer).

The copy is written to a private temporary file beside the target and renamed into place
once complete and checked, so a backup interrupted half-way never leaves a file that looks
like one. It is created 0600: it holds password hashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sqlite3
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from store.sqlite.migrations import MIGRATIONS

#: How long the copy waits for a lock (a recovery or an exclusive lock elsewhere): the
#: service's own busy timeout.
BUSY_TIMEOUT_MS = 5000


#: The files SQLite keeps beside a database, named after it.
SIDE_FILES = ("-wal", "-shm", "-journal")


#: How far a restore moves every number the store draws (transaction ids, reservation
#: ids, connection numbers) past where the backup left them: chargers keep the
#: transactions started after the backup was taken, and a restored counter handed their
#: ids to new ones (ops QA s23: a charger's StopTransaction of its transaction, started
#: after the backup, was then taken for nobody's, and the number given again). A million
#: is more than any network starts between two backups; OCPP's ids are 32-bit, so two
#: thousand restores fit.
RESTORE_GAP = 1_000_000

#: Every number the store draws (``Store.next_sequence``), with the column that holds
#: those drawn, if any. A restore moves each ahead, also one the backup holds no counter
#: of yet (ops QA s25: drawn first after the backup, such as a network's first
#: reservation, it started again from 1 after the restore, while chargers held it).
SEQUENCES: dict[str, tuple[str, str] | None] = {
    "transaction": ("session", "transaction_id"),
    "reservation": ("reservation", "reservation_id"),
    "connection": None,
}


class BackupError(Exception):
    """The backup could not be made; the message says why. Nothing was left behind."""


@dataclass(frozen=True, slots=True)
class BackupReport:
    target: Path
    size: int
    schema_version: int


def backup(source: str | Path, target: str | Path, *, overwrite: bool = False
           ) -> BackupReport:
    """Copies the database at ``source`` to ``target``, consistently, also while other
    connections (the service) write to it. An existing ``target`` is refused unless
    ``overwrite``; the source itself never is."""
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise BackupError(f"there is no database at {source}")
    _check_target(source, target, overwrite=overwrite)
    temporary = _temporary(target, "the backup")
    try:
        _copy(source, temporary)
        version = _checked_version(source, temporary)
        with _writing(target, "the backup"):
            sync_file(temporary)
            os.replace(temporary, target)
    except BaseException:
        # The copy's own journal too: a write that failed half-way (a full disk) leaves
        # SQLite's rollback journal beside it, which nobody would ever clean up.
        for leftover in (temporary, *(temporary + suffix for suffix in SIDE_FILES)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)
        raise
    _sync_folder(target.parent)
    return BackupReport(target=target, size=target.stat().st_size, schema_version=version)


def _temporary(target: Path, what: str) -> str:
    """A new private file beside ``target``, to write ``what`` into before it is renamed
    into place."""
    with _writing(target, what):
        descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.",
                                                 suffix=".part", dir=target.parent)
    os.close(descriptor)
    return temporary


@contextlib.contextmanager
def _writing(target: Path, what: str) -> Iterator[None]:
    """A file ``target``'s folder refuses (this user may not write it, a read-only
    mount, a full disk) is one line of the command, not a traceback (restore QA s27:
    a backup into another user's backup mount ended in tempfile's PermissionError)."""
    try:
        yield
    except OSError as error:
        raise BackupError(f"cannot write {what} in {target.parent}: "
                          f"{error.strerror or error}") from error


def _check_target(source: Path, target: Path, *, overwrite: bool) -> None:
    if not target.parent.is_dir():
        raise BackupError(f"the folder {target.parent} does not exist")
    if target.is_dir():
        raise BackupError(f"{target} is a folder: name the backup file")
    # Also when they do not exist (yet): a copy written as the database's WAL, rollback
    # journal or shared-memory index is replayed into, or corrupts, the database at its
    # next opening, and --force put it in place of the live WAL (the commits in it lost
    # at the next crash).
    for suffix in SIDE_FILES:
        # SQLite names them after the database's real path (a symbolic link resolved).
        if any(_same_path(target, database.with_name(database.name + suffix))
               for database in (source, source.resolve())):
            raise BackupError(f"{target} is the database's {suffix[1:]} file: name another "
                              "file")
    if not target.exists():
        return
    if target.samefile(source):
        # --force would put a copy in place of the live file the service writes to.
        raise BackupError(f"{target} is the database itself: name another file")
    if not overwrite:
        raise BackupError(f"{target} exists: pass --force to overwrite it")


def _same_path(target: Path, other: Path) -> bool:
    """``target`` names ``other``: the same path once resolved, or (both existing) the
    same file under another name."""
    if target.resolve() == other.resolve():
        return True
    with contextlib.suppress(OSError):
        return target.samefile(other)
    return False


def _copy(source: Path, temporary: str, *, doing: str = "back up") -> None:
    # mode=rw: never creates a database where there was none (a plain connect would), and
    # the last connection to close cleans up the WAL files as usual.
    uri = f"file:{quote(str(source.resolve()))}?mode=rw"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as origin, \
                contextlib.closing(sqlite3.connect(temporary)) as copy:
            origin.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # pages=-1: the whole database in one step, so in one read transaction of the
            # origin; stepping page by page would restart whenever the service commits.
            origin.backup(copy, pages=-1)
    except sqlite3.Error as error:
        # ``doing``: what was asked, in the message (a restore said "cannot back up" of
        # the backup it could not read).
        raise BackupError(f"cannot {doing} {source}: {error}") from error


def _checked_version(source: Path, temporary: str) -> int:
    """The copy's schema version, after SQLite's quick check of its pages: a backup that
    cannot be read back is refused now, not found out at the restore."""
    try:
        with contextlib.closing(sqlite3.connect(temporary)) as copy:
            problems = copy.execute("PRAGMA quick_check").fetchall()
            if problems != [("ok",)]:
                raise BackupError(f"the copy of {source} fails SQLite's check: "
                                  f"{'; '.join(str(row[0]) for row in problems[:3])}")
            row = copy.execute('SELECT MAX("version") FROM "schema_version"').fetchone()
    except sqlite3.Error as error:
        raise BackupError(f"{source} is not a ChargeGraph database: {error}") from error
    if row is None or row[0] is None:
        raise BackupError(f"{source} is not a ChargeGraph database: no schema version")
    return int(row[0])


def sync_file(path: str) -> None:
    """Makes what was written to ``path`` durable (the backup's copy, a built demo
    database before it is linked into place)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_folder(folder: Path) -> None:
    """Makes the rename durable (a power cut right after would otherwise lose it)."""
    with contextlib.suppress(OSError):  # some filesystems cannot open a folder
        sync_file(str(folder))


@dataclass(frozen=True, slots=True)
class RestoreReport:
    database: Path
    schema_version: int
    #: Each sequence's next number after the restore, by name.
    sequences: dict[str, int]
    #: What the operator must still see to (the restored file left root's), one line each.
    warnings: tuple[str, ...] = ()
    #: The schema the restored database has: this build's, a backup of an older one
    #: migrated by the restore.
    migrated_to: int = 0


def restore(backup_file: str | Path, database: str | Path) -> RestoreReport:
    """Puts the backup ``backup_file`` in place of ``database``: checked, its sequences
    moved ``RESTORE_GAP`` ahead, given the replaced file's mode and owner (where there is
    none yet, mode 0600 and the owner and group of its folder), the database's
    stale WAL, shared-memory and rollback journal files removed (replayed into the
    restored file they would corrupt it), then renamed into place. A symbolic link
    ``database`` is followed: the file it names is replaced, the link kept.
    Refused while an instance of the service holds a lease on ``database`` or another
    process has it open (it runs: stop every instance first), when this user cannot tell
    (it may not read or write the database: run it as the service's user, or as root),
    for a backup of a schema newer than this build's, which it could not start on, and
    when the restored file could not be given the replaced one's owner (or its folder's).
    The file replaced is gone: back it up first if unsure."""
    backup_file = Path(backup_file)
    # SQLite names the side files after the real path, and a rename over the link would
    # replace the link itself, leaving the file it names (the service's, elsewhere) stale.
    database = Path(database).resolve()
    if not backup_file.is_file():
        raise BackupError(f"there is no backup at {backup_file}")
    if not database.parent.is_dir():
        raise BackupError(f"the folder {database.parent} does not exist")
    if database.exists() and database.samefile(backup_file):
        raise BackupError(f"{backup_file} is the database itself")
    replaced = database.stat() if database.exists() else None
    if replaced is not None:
        refuse_inaccessible(database, "restore")
        refuse_running(database, "restore")
    temporary = _temporary(database, "the restored database")
    try:
        _copy(backup_file, temporary, doing="restore from")
        version = _checked_version(backup_file, temporary)
        _refuse_newer(version)
        _migrate(temporary)
        drawn = _drawn(database) if replaced is not None else {}
        sequences = _moved_sequences(temporary, drawn)
        _mark_open_sessions(temporary)
        _expire_leases(temporary)
        if replaced is not None:
            _keep_mode_and_owner(temporary, database, replaced)
            warnings: tuple[str, ...] = ()
        else:
            warnings = _give_the_folders_owner(temporary, database)
        with _writing(database, "the restored database"):
            sync_file(temporary)
        if replaced is not None:
            # Last, just before the file is replaced: an instance serving GraphQL only
            # holds no lease (ops QA s25: the restore went ahead under it).
            refuse_open(database, "restore")
        with _writing(database, "the restored database"):
            for suffix in SIDE_FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f"{database}{suffix}")
            os.replace(temporary, database)
    except BaseException:
        for leftover in (temporary, *(temporary + suffix for suffix in SIDE_FILES)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)
        raise
    _sync_folder(database.parent)
    return RestoreReport(database=database, schema_version=version, sequences=sequences,
                         warnings=warnings, migrated_to=MIGRATIONS[-1][0])


def _migrate(temporary: str) -> None:
    """Brings the copy to this build's schema, as the service's start would: what the
    restore writes into it next (``_mark_open_sessions``) is of this schema, and a
    migration that fails stops the restore with the database still in place. In a
    thread of its own: the store is asynchronous, and the restore may be called from a
    running event loop."""
    from store.sqlite.store import SqliteStore

    async def run() -> None:
        store = SqliteStore(temporary)
        await store.start()
        await store.close()

    try:
        with ThreadPoolExecutor(1) as worker:
            worker.submit(asyncio.run, run()).result()
    except sqlite3.Error as error:
        raise BackupError(f"cannot migrate the backup to this version's schema: "
                          f"{error}") from error


def _mark_open_sessions(temporary: str) -> None:
    """Marks every session open in the copy as open at this restore
    (``Session.open_at_restore``): its charger may well have ended it since the backup
    was taken, and that StopTransaction went to the database replaced (restore QA s27:
    it stayed open for ever, its driver's card ConcurrentTx on every charger). The
    service closes it as lost once its connector is reported free, unless its charger
    names it in a MeterValues first (it still charges)."""
    now_us = int(time.time() * 1_000_000)
    with contextlib.closing(sqlite3.connect(temporary)) as copy, copy:
        copy.execute('UPDATE "session" SET "open_at_restore" = ? WHERE "state" = ?',
                     (now_us, "ACTIVE"))


def _expire_leases(temporary: str) -> None:
    """Ends every instance lease the copy holds: none of those instances runs on the
    restored file (``refuse_running`` checked the one replaced). A backup taken while the
    service ran holds its live lease (restore QA s27: a second restore was then refused,
    "an instance of the service runs", though none did, and a starting instance took the
    phantom for one holding chargers and deliveries); expired, the first instance to
    start sweeps what it held (its stations recorded offline, its deliveries taken)."""
    now_us = int(time.time() * 1_000_000)
    with contextlib.closing(sqlite3.connect(temporary)) as copy, copy:
        copy.execute('UPDATE "instance_lease" SET "expires_at" = ? WHERE "expires_at" > ?',
                     (now_us, now_us))


def _keep_mode_and_owner(temporary: str, database: Path, replaced: os.stat_result) -> None:
    """Gives the restored file the replaced one's mode and owner (review s25: restored by
    `sudo chargegraph restore`, the database was root's own 0600 temporary, and the
    service, running as its own user, could not open it). Refused, before the database is
    touched, when this user may not give it that owner: run it as root or as the owner."""
    _give(temporary, database, stat.S_IMODE(replaced.st_mode), replaced.st_uid,
          replaced.st_gid, whose="its")


def _give(temporary: str, database: Path, mode: int, uid: int, gid: int, *,
          whose: str) -> None:
    os.chmod(temporary, mode)
    mine = os.stat(temporary)
    if (mine.st_uid, mine.st_gid) == (uid, gid):
        return
    try:
        os.chown(temporary, uid, gid)
    except PermissionError as error:
        raise BackupError(
            f"cannot give the restored {database} {whose} owner (uid {uid}, gid {gid}) "
            "as this user: the service could not open it; run the restore as root or as "
            "that user") from error
    # chown clears the set-id bits (not used here, but the mode is the one given)
    os.chmod(temporary, mode)


def _give_the_folders_owner(temporary: str, database: Path) -> tuple[str, ...]:
    """Where no database is replaced (a new volume after a disk loss), gives the restored
    file mode 0600 and the owner and group of the folder it goes into: the service's
    data folder is its user's (review r-ops2: `sudo chargegraph restore` onto a fresh
    volume left root's own 0600 temporary, which the service could not open). Refused
    when this user may not give it that owner, as for a replaced one. A folder of root's
    tells nothing of the service's user: the file stays the restorer's, with a warning
    that the service's user must own it (unless the service runs as that user)."""
    folder = database.parent.stat()
    if folder.st_uid != 0:
        _give(temporary, database, 0o600, folder.st_uid, folder.st_gid,
              whose="its folder's")
        return ()
    os.chmod(temporary, 0o600)
    me = "root's" if os.geteuid() == 0 else f"uid {os.geteuid()}'s"
    return (f"{database.parent} is root's, so the restored {database} is {me} (mode 0600): "
            "the service's user must own the file, and the folder (SQLite writes its "
            f"side files there), e.g. `chown chargegraph: {database.parent} {database}` "
            "in the image, or the service cannot open it",)


def refuse_running(database: Path, then: str) -> None:
    """A live instance lease (renewed every few seconds while an instance runs) means
    the service is up: it would go on writing to the file replaced (or removed) under
    it. ``then``: what to do once every instance is stopped. Refused too when the lease
    cannot be read for another reason than a damaged file or none there
    (``_unreadable``)."""
    if not database.exists():
        return  # none yet: nothing runs on it
    # mode=rw (never creating one): read-only, a crashed writer's hot journal cannot be
    # rolled back and every read fails (SQLITE_READONLY_ROLLBACK), which proves nothing.
    uri = f"file:{quote(str(database.resolve()))}?mode=rw"
    now_us = int(time.time() * 1_000_000)
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as current:
            current.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            row = current.execute('SELECT MAX("expires_at") FROM "instance_lease" WHERE '
                                  '"expires_at" > ?', (now_us,)).fetchone()
    except sqlite3.Error as error:
        _unreadable(database, error, then, schema_errors=True)
        return  # damaged, or not a ChargeGraph database: nothing runs on it
    if row and row[0] is not None:
        # An instance killed (kill -9, a crash) leaves its lease live until it expires:
        # said so, with when (review r26-onboard: "runs ... stop every instance", though
        # none ran, sent people looking for a process that was gone).
        left = max(1, math.ceil((row[0] - now_us) / 1_000_000))
        try:
            until = f"until {datetime.fromtimestamp(row[0] / 1_000_000, UTC):%H:%M:%S} UTC, "
        except (OverflowError, ValueError, OSError):  # past any calendar: no time to say
            until = ""
        raise BackupError(
            f"an instance of the service runs on {database} (its lease is live {until}"
            f"in {left} s): stop every instance, then {then}; if none runs (one was killed "
            "or crashed), its lease is stale: try again once it lapses")


#: SQLite's primary result codes that prove a file is no (readable) database: what a
#: restore or a reset is for. Any other error (no permission, SQLITE_CANTOPEN, a read-only
#: file, SQLITE_IOERR_LOCK on a -shm another process holds) proves nothing about the
#: database, only that this user cannot look at it.
DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def _unreadable(database: Path, error: sqlite3.Error, then: str, *,
                schema_errors: bool = False) -> None:
    """Returns when ``error`` proves ``database`` damaged (or, ``schema_errors``, not a
    ChargeGraph database: SQLITE_ERROR's "no such table"); raises otherwise. Review s26:
    each check took any error for a damaged file, so an operator who may not read or
    write the database (a restore without sudo, a database 0600 as the service makes it)
    passed them all under a running instance, and the file was replaced or deleted."""
    code = getattr(error, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    if primary in DAMAGED or (schema_errors and primary == sqlite3.SQLITE_ERROR):
        return
    raise _cannot_tell(database, error, then) from error


def _cannot_tell(database: Path, error: object, then: str) -> BackupError:
    return BackupError(
        f"cannot tell whether {database} is open in another process or an instance of "
        f"the service runs on it ({error}): if this user may not read or write it, run "
        f"the {then} as the service's user (or as root)")


def refuse_inaccessible(database: Path, then: str) -> None:
    """Refuses, before anything is touched, a database this user may not read and write:
    whether another process has it open cannot be told without writing to it
    (``refuse_open``), nor its lease read without reading it (review s25)."""
    if database.exists() and not os.access(database, os.R_OK | os.W_OK):
        raise _cannot_tell(database, "this user may not read and write it", then)


def _refuse_newer(version: int) -> None:
    """A backup a newer ChargeGraph migrated would replace the database with one this
    build refuses to start on (ops QA s25: both were then lost to it)."""
    known = MIGRATIONS[-1][0]
    if version > known:
        raise BackupError(f"the backup has schema version {version}, written by a newer "
                          f"ChargeGraph (this one knows up to {known}): restore it with "
                          "that version")


def refuse_open(database: Path, then: str) -> None:
    """Refuses a SQLite database another process has open: a process that holds no lease
    (an instance serving GraphQL only, a demo still seeding) would go on with the file
    replaced or removed under it. Leaving WAL mode needs the only connection; out of
    WAL mode is harmless here (the service's start sets it again). Refused too when that
    cannot be told for another reason than a damaged file (``_unreadable``)."""
    if not _sqlite_file(database, then):
        return  # not a database (or none): nothing has it open as one
    try:
        with contextlib.closing(sqlite3.connect(database, timeout=0)) as conn:
            mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()
    except sqlite3.Error as error:
        if getattr(error, "sqlite_errorcode", None) not in (sqlite3.SQLITE_BUSY,
                                                            sqlite3.SQLITE_LOCKED):
            _unreadable(database, error, then)
            return  # damaged ("file is not a database"): what a restore is for
        mode = None  # locked by a writer
    if not mode or str(mode[0]).lower() != "delete":
        raise BackupError(f"{database} is open in another process (an instance serving "
                          f"GraphQL only, a demo still seeding?): stop it, then {then}")


def _sqlite_file(path: Path, then: str) -> bool:
    """Whether ``path`` is a SQLite database file: only such is opened to check whether it
    is in use (SQLite discards the side files of anything else it opens). One this user
    may not read is refused: it may well be one (``_unreadable``)."""
    try:
        with path.open("rb") as file:
            return file.read(16) == b"SQLite format 3\x00"
    except (FileNotFoundError, IsADirectoryError):
        return False
    except OSError as error:
        raise _cannot_tell(path, error, then) from error


def _drawn(database: Path) -> dict[str, int]:
    """The numbers the database being replaced has drawn, by sequence: past the backup's
    when it was restored from it before (ops QA s25: a second restore of one backup gave
    again the ids drawn since the first). Nothing when it is damaged or holds none; any
    other error (this user may not read it) refuses the restore (``_unreadable``).
    mode=rw as in ``refuse_running``."""
    uri = f"file:{quote(str(database.resolve()))}?mode=rw"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as current:
            current.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            rows = current.execute('SELECT "name", "value" FROM "sequence"').fetchall()
    except sqlite3.Error as error:
        _unreadable(database, error, "restore", schema_errors=True)
        return {}  # damaged, or not a ChargeGraph database
    return {str(name): int(value) for name, value in rows}


def _moved_sequences(temporary: str, drawn: Mapping[str, int]) -> dict[str, int]:
    """Moves every sequence of the copy ``RESTORE_GAP`` ahead, each also past the
    highest number of it the copy holds and past what the replaced database ``drawn``,
    and those it has no counter of yet from 0; returns each one's next number."""
    with contextlib.closing(sqlite3.connect(temporary)) as copy:
        with copy:
            copy.execute('UPDATE "sequence" SET "value" = "value" + ?', (RESTORE_GAP,))
            for name in {**dict.fromkeys(SEQUENCES), **dict.fromkeys(drawn)}:
                held = SEQUENCES.get(name)
                highest = "0" if held is None else \
                    f'(SELECT COALESCE(MAX("{held[1]}"), 0) FROM "{held[0]}")'
                copy.execute(
                    f'INSERT INTO "sequence" ("name", "value") VALUES (?, MAX({highest}, ?) '
                    '+ ?) ON CONFLICT ("name") DO UPDATE SET "value" = MAX("value", '
                    '"excluded"."value")', (name, drawn.get(name, 0), RESTORE_GAP))
        rows = copy.execute('SELECT "name", "value" FROM "sequence"').fetchall()
    return {str(name): int(value) + 1 for name, value in rows}
