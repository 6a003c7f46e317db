"""The SQLite store's one write connection, driven from the event loop.

Write transactions run **inline on the event loop thread** when the database's write lock
is free, which is nearly always: under WAL with ``synchronous = NORMAL`` a commit appends
to the WAL without an fsync, so a group-committed batch of a few hundred rows takes about
a millisecond. Running them on a worker thread instead (as aiosqlite does) looked cheaper
but was not: the sqlite3 module releases the GIL around every row it steps, and a busy
event loop thread then holds the worker at each re-acquisition for up to the interpreter's
switch interval (5 ms) — a 300-row batch could take a second, which was the OCPP
benchmark's p99 (``python -m bench.ocpp_throughput``).

The two things that can take long are kept off the loop:

* **another process holding the write lock** (a CLI command next to the server): the
  inline attempt fails at once (busy timeout 0) and the transaction is retried on a
  worker thread that waits up to ``busy_timeout`` for the lock;
* **checkpoints** (copying the WAL back into the database, with the fsyncs): automatic
  checkpoints are off on this connection; when the WAL grows past ``checkpoint_bytes``
  a PASSIVE checkpoint runs on a worker thread with its own connection, concurrently with
  further writes (that is what PASSIVE means).

A **scrub** (``scrub``, after an erasure) leaves no old version of any page in the files:
a PASSIVE checkpoint copies only the newest version of each page back and leaves the
older ones in the WAL file until later commits happen to overwrite them, so an erased
person's name and email stayed readable in the ``-wal`` file (2 MiB of old page images)
until the service stopped, for a file copy or a volume snapshot to pick up (QA s24). It
is recorded as owed in the database first (``owe_scrub``), then performed on the
checkpoint thread: a PASSIVE checkpoint copies the WAL beside the writes, a TRUNCATE
checkpoint that waits for no one cuts the emptied file, and the record is deleted. While
a reader of an older snapshot keeps it from cutting the file it is tried again in the
background (``SCRUB_RETRY_S``), and the record makes every instance's writer on the file
perform it (at its start and as it commits), also once the instance that owed it has
stopped (review r2). Freed content within the database file is zeroed as it is freed
(``SECURE_DELETE``).

A database that cannot write now (disk full, an I/O error, a read-only file) fails the
write with the domain's ``StoreUnavailable`` rather than a bare ``sqlite3`` error, and so
does a database file deleted or replaced under the running service: SQLite keeps writing
into the open (unlinked) file in WAL mode, and all of it would be gone at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from domain.errors import StoreBusy, StoreUnavailable

log = logging.getLogger("chargegraph.store.sqlite")

T = TypeVar("T")

#: SQLite's own default: an automatic checkpoint after 1,000 pages of 4 KiB.
CHECKPOINT_BYTES = 4 * 1024 * 1024
#: A WAL file larger than this is cut to nothing by the checkpoint thread once a
#: checkpoint has emptied it. SQLite reuses the file from its start but never shrinks
#: it: one burst (a bulk import, a backlog of chargers reconnecting) left a WAL of
#: hundreds of MiB on disk for good. Four checkpoints' worth, so the steady state never
#: truncates and grows again.
WAL_KEPT_BYTES = 4 * CHECKPOINT_BYTES
#: How long writes must pause before a WAL file left large is cut (``_trim_when_idle``).
TRIM_WHEN_IDLE_S = 2.0
#: How often a commit looks at the WAL's size (a stat per commit would be wasted work).
_SIZE_CHECK_INTERVAL_S = 0.1
#: The least time between two log lines saying the database refuses writes.
REFUSAL_LOG_INTERVAL_S = 60.0
#: What SQLite does with the bytes of content deleted or overwritten: ON writes zeros
#: over them, in the b-tree pages and in pages going to the freelist. Not the build's
#: default, which may be off (an erased person's name would stay in the pages' free
#: space), nor FAST, which leaves freelist pages as they were (SQLite's "forensic
#: traces"). Its cost is the zeros of freed pages written: nothing for the hot path,
#: which inserts and updates in place (``python -m bench.store_inserts``, QA s24).
SECURE_DELETE = "ON"
#: The pauses between the tries of a scrub that other connections' readers kept from
#: finishing (``Writer.scrub``); the last repeats until one finishes.
SCRUB_RETRY_S: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def owe_scrub(conn: sqlite3.Connection) -> None:
    """Records in the database that a scrub is owed (``Writer.scrub``), as one statement
    in its own transaction, after the writes whose old page images it is to cut: the
    ``scrub_owed`` row (migration 53), its ``seq`` a new random number. Kept only in the
    memory of the instance that owed it, a scrub a reader blocked was dropped when that
    instance stopped while another had the file open (a rolling restart), and the
    erased person stayed in the -wal file (review r2). Random, not counted: a count
    started again at 1 once the row was deleted, and an instance ending an older scrub
    deleted the new one it could not tell from the one it read (review r5)."""
    conn.execute('INSERT INTO "scrub_owed" ("id", "seq") VALUES (1, ?) '
                 'ON CONFLICT ("id") DO UPDATE SET "seq" = "excluded"."seq"',
                 (secrets.randbits(62) + 1,))


def _copy_then_cut(checkpointer: sqlite3.Connection) -> bool:
    """A PASSIVE checkpoint, copying the WAL into the database beside the writes, then,
    only if it copied every frame, a TRUNCATE one cutting the emptied file: it takes the
    write lock for that moment alone, and waits for no one (busy timeout 0). Whether the
    WAL was cut (not when a reader of an older snapshot still needs frames)."""
    busy, frames, copied = checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if busy or frames != copied:
        return False
    checkpointer.execute("PRAGMA busy_timeout = 0")
    busy, _, _ = checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy


def owed_scrub(conn: sqlite3.Connection) -> int | None:
    """The ``seq`` of the scrub owed, or None when none is."""
    rows = conn.execute('SELECT "seq" FROM "scrub_owed"').fetchall()
    return int(rows[0][0]) if rows else None


#: SQLite's primary result codes for "the database cannot write now": the request was
#: fine, the disk or the file is not (extended codes such as SQLITE_IOERR_WRITE or
#: SQLITE_READONLY_DBMOVED share their primary code's low byte).
_CANNOT_WRITE = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY})

#: (st_dev, st_ino): which file a path leads to.
FileIdentity = tuple[int, int]


def cannot_write(error: sqlite3.DatabaseError) -> StoreUnavailable | None:
    """The user-visible error for a write the database refused for want of disk, an I/O
    error or a read-only file; None for anything else (a bug, a corrupt page)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _CANNOT_WRITE:
        return None
    reason = str(error).strip() or type(error).__name__
    return StoreUnavailable(f"the store cannot write now ({reason}): nothing was written; "
                            "try again later", reason=reason)


def file_identity(path: str) -> FileIdentity | None:
    """The file at ``path`` now, or None when nothing is there."""
    try:
        status = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return status.st_dev, status.st_ino


#: Where the wal-index (the ``-shm`` file, SQLite's documented layout, native byte order)
#: keeps the page size (u16, 1 for 65536), the frames in the WAL since it last started
#: (``mxFrame``, u32) and those a checkpoint has copied into the database (``nBackfill``).
_SHM_PAGE_SIZE, _SHM_MAX_FRAME, _SHM_BACKFILL = 14, 16, 96
_WAL_FRAME_HEADER = 24


class WalIndex:
    """Reads the wal-index (the ``-shm`` file) through one descriptor kept open until
    ``close``, which the writer calls after its connections closed.

    Never a descriptor opened and closed per read: closing any descriptor of a file drops
    every POSIX lock the process holds on it (fcntl semantics), also SQLite's shared lock
    on the ``-shm`` that tells other processes the database is in use. Another process
    opening the database then took itself for its only user and rebuilt the wal-index
    under this one's memory map: the server died of SIGBUS mid-write when ``chargegraph
    backup`` or an ``sqlite3`` shell opened the file (QA s22)."""

    def __init__(self, path: str) -> None:
        self.path = path + "-shm"
        self._fd: int | None = None

    def pending_bytes(self) -> int | None:
        """Bytes of WAL frames not yet checkpointed into the database; ``None`` when the
        wal-index cannot be read. Not the WAL file's size: SQLite reuses the file from
        its start after a checkpoint and never shrinks it by itself, so a file once past
        the threshold had a checkpoint (two fsyncs) run after nearly every commit, ten a
        second under load (QA s19, soak)."""
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            header = os.pread(self._fd, _SHM_BACKFILL + 4, 0)
        except OSError:
            return None
        if len(header) < _SHM_BACKFILL + 4:
            return None
        page = int.from_bytes(header[_SHM_PAGE_SIZE:_SHM_PAGE_SIZE + 2], sys.byteorder)
        frames = int.from_bytes(header[_SHM_MAX_FRAME:_SHM_MAX_FRAME + 4], sys.byteorder)
        copied = int.from_bytes(header[_SHM_BACKFILL:_SHM_BACKFILL + 4], sys.byteorder)
        page = 65536 if page == 1 else page
        return max(frames - copied, 0) * (page + _WAL_FRAME_HEADER)

    def close(self) -> None:
        """Only once this process's connections to the database are closed."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def wal_size(path: str) -> int:
    try:
        return os.stat(path + "-wal").st_size
    except OSError:
        return 0


def is_busy(error: sqlite3.OperationalError) -> bool:
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY \
        or "database is locked" in str(error)


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (every transaction here is an explicit BEGIN);
    usable from the worker threads too, since the store never uses it concurrently."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        # NORMAL under WAL: a commit is durable once the WAL is synced at checkpoint;
        # a power cut may lose the last commits but never corrupts the database.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA secure_delete = {SECURE_DELETE}")
    except BaseException:
        conn.close()
        raise
    return conn


#: The files SQLite keeps a WAL database in, by suffix, and what people call them.
_FILES = (("", "database file"), ("-wal", "database's -wal file"),
          ("-shm", "database's -shm file"))


class Writer:
    """Runs whole write transactions (functions of the connection that BEGIN, COMMIT and
    roll back on error) one at a time; the caller serializes them (the store's lock)."""

    def __init__(self, path: str, *, busy_timeout: float,
                 checkpoint_bytes: int = CHECKPOINT_BYTES) -> None:
        self.path = path
        self.busy_timeout_ms = int(busy_timeout * 1000)
        self.checkpoint_bytes = checkpoint_bytes
        self.conn: sqlite3.Connection | None = None
        self._checkpointer: sqlite3.Connection | None = None
        #: The checkpoint (or scrub) running on a worker thread: one at a time.
        self._checkpoint: asyncio.Future[Any] | None = None
        #: The next try of a scrub readers kept from finishing, and how many failed.
        self._scrub_retry: asyncio.TimerHandle | None = None
        self._scrub_failures = 0
        self._next_size_check = 0.0
        self._last_commit = 0.0
        #: The idle check that cuts a WAL file left large (``_trim_when_idle``).
        self._trim: asyncio.TimerHandle | None = None
        #: Why the last write transaction failed, if the database itself refused it.
        self.failing: sqlite3.DatabaseError | None = None
        #: The files the connection opened, by suffix (the database, its ``-wal`` and
        #: ``-shm``): the paths must still lead to them.
        self._identities: dict[str, FileIdentity] = {}
        #: How many WAL frames wait for a checkpoint (``_after_commit``).
        self._wal_index = WalIndex(path)
        self._next_refusal_log = 0.0
        self._refusal_told = False
        self._moved_told = False

    def open(self, functions: Sequence[tuple[str, int, Callable[..., Any]]] = ()) -> None:
        """``functions``: SQL functions (name, arity, function) the transactions use."""
        conn = connect(self.path)  # opens the file: what is at the path now is ours
        for name, arity, function in functions:
            conn.create_function(name, arity, function, deterministic=True)
        self._identities = {}
        self.moved()  # takes the identities of the files there now
        conn.execute("PRAGMA busy_timeout = 0")  # inline attempts never wait on the loop
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints run off the loop
        # No journal_size_limit here: this connection would cut the WAL file in the
        # commit that starts it again, on the event loop, and grow it again write by
        # write; the truncation held the loop up to 200 ms (p99 at 2,000 MeterValues/s
        # from 10 to 200 ms in a third of the runs, session 19). ``_run_checkpoint``
        # shrinks the file instead, on its worker thread.
        self.conn = conn

    async def run(self, transaction: Callable[[sqlite3.Connection], T]) -> T:
        moved = self.moved()
        if moved is not None:
            raise StoreUnavailable(f"the store cannot write now ({moved}): nothing was "
                                   "written", reason=moved)
        try:
            result = await self._run(transaction)
        except sqlite3.IntegrityError:
            raise  # a unique rule said no: the request's problem, not the database's
        except sqlite3.DatabaseError as error:
            # Disk full, an I/O error, a corrupt page: /healthz says so until a write
            # goes through again, and the log says it once (not once per request).
            now = time.monotonic()
            if now >= self._next_refusal_log:
                # Once a minute at most while it lasts: a disk that is nearly full lets
                # a small write through now and then, and every one would start the tale
                # again (and one that stays full must still be said, not only the first
                # minute).
                self._next_refusal_log = now + REFUSAL_LOG_INTERVAL_S
                self._refusal_told = True
                log.error("the database refuses writes: %s (health checks fail until a "
                          "write goes through again)", error)
            self.failing = error
            unavailable = cannot_write(error)
            if unavailable is not None:
                raise unavailable from error
            raise
        if self.failing is not None:
            if self._refusal_told:  # one recovery line per refusal line
                log.warning("the database takes writes again")
                self._refusal_told = False
            self.failing = None
        return result

    def moved(self) -> str | None:
        """Why the database's path, or its ``-wal`` or ``-shm`` file's, no longer leads
        to the file this connection writes (deleted, or another file put there), else
        None. Under WAL, SQLite does not look: it would go on acknowledging writes into a
        file nobody can open again. A deleted ``-wal`` lost every write after it (QA
        s21): this connection appended to the unlinked file, readers opened a new empty
        one, and a restart lost them all. A stat per file and write transaction costs
        about a microsecond each. A ``-wal`` or ``-shm`` not there when the connection
        opened is taken as SQLite makes it."""
        change = None
        for suffix, kind in _FILES:
            now = file_identity(self.path + suffix)
            known = self._identities.get(suffix)
            if known is None:
                if now is not None:
                    self._identities[suffix] = now
            elif now != known and change is None:
                change = f"the {kind} was " \
                    f"{'deleted' if now is None else 'replaced'} while the service ran"
        if change is None:
            if self._moved_told:
                log.warning("the database file %s is back: writes go through again",
                            self.path)
                self._moved_told = False
            return None
        reason = change
        if not self._moved_told:
            self._moved_told = True
            # The data is not lost yet: this process still holds the file open.
            log.error("%s (%s): every write is refused from now on. Until this process "
                      "(pid %d) stops, the old file and its -wal can still be copied "
                      "back from /proc/%d/fd (see \"Backup and restore\" in "
                      "docs/architecture.md); otherwise restore a backup. Started again "
                      "now, the service would use whatever is at that path",
                      reason, self.path, os.getpid(), os.getpid())
        return reason

    def problem(self) -> str | None:
        """What keeps the database from taking writes, as far as the writer knows."""
        moved = self.moved()
        if moved is not None:
            return f"{moved}: writes are refused"
        if self.failing is not None:
            return f"the last write failed: {self.failing}"
        return None

    async def _run(self, transaction: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._open_conn()
        try:
            result = transaction(conn)
        except sqlite3.OperationalError as error:
            if not is_busy(error):
                raise
            # Another process writes: wait for the lock on a worker thread. The inline
            # attempt rolled back, so running the whole transaction again is safe.
            try:
                result = await asyncio.to_thread(self._waiting, conn, transaction)
            except sqlite3.OperationalError as still:
                if not is_busy(still):
                    raise
                raise StoreBusy("the database is busy (another process holds it): "
                                "nothing was written; try again") from still
        self._after_commit()
        return result

    def _waiting(self, conn: sqlite3.Connection,
                 transaction: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        try:
            return transaction(conn)
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    # ------------------------------------------------------------- checkpoints
    def _after_commit(self) -> None:
        now = time.monotonic()
        self._last_commit = now
        if now < self._next_size_check or (self._checkpoint is not None
                                           and not self._checkpoint.done()):
            return
        self._next_size_check = now + _SIZE_CHECK_INTERVAL_S
        pending = self._wal_index.pending_bytes()
        if pending is None:  # no wal-index to read: the file's size, as a last resort
            pending = wal_size(self.path)
        loop = asyncio.get_running_loop()
        # A scrub owed (by this instance or another) copies the WAL too.
        if not self.scrub_if_owed() and pending >= self.checkpoint_bytes:
            self._checkpoint = loop.run_in_executor(None, self._run_checkpoint)
        if self._trim is None and wal_size(self.path) > WAL_KEPT_BYTES:
            self._trim = loop.call_later(TRIM_WHEN_IDLE_S, self._trim_when_idle)

    def _trim_when_idle(self) -> None:
        """Cuts a WAL file left large by a burst, once writes have paused for
        ``TRIM_WHEN_IDLE_S``: not while they go on, where each cut took the write lock
        and the file grew again write by write (p99 at 2,000 MeterValues/s from ~10 to
        ~26 ms)."""
        self._trim = None
        if self.conn is None:
            return
        loop = asyncio.get_running_loop()
        idle = time.monotonic() - self._last_commit
        if idle < TRIM_WHEN_IDLE_S or not (self._checkpoint is None
                                           or self._checkpoint.done()):
            self._trim = loop.call_later(max(TRIM_WHEN_IDLE_S - idle, 0.1),
                                         self._trim_when_idle)
            return
        self._checkpoint = loop.run_in_executor(None, self._run_checkpoint, True)

    def _run_checkpoint(self, trim: bool = False) -> None:
        """A PASSIVE checkpoint; ``trim``: and, if it copied all of the WAL into the
        database, cut the WAL file to nothing (TRUNCATE takes the write lock for the
        moment it truncates and waits for no one: a writer holding it makes it fail, and
        a commit arriving meanwhile waits on a worker thread, see ``run``)."""
        try:
            if self._checkpointer is None:
                self._checkpointer = connect(self.path)
            checkpointer = self._checkpointer
            if trim:
                _copy_then_cut(checkpointer)
            else:
                checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as error:
            # Busy (another checkpoint) or transient: the next commit tries again. A disk
            # that cannot take writes is already said once by ``run`` and /healthz: no
            # traceback per commit while it lasts.
            if isinstance(error, sqlite3.DatabaseError) and cannot_write(error) is not None:
                log.debug("WAL checkpoint failed: %s", error)
            else:
                log.warning("WAL checkpoint failed", exc_info=True)

    # ------------------------------------------------------------- scrubs
    async def scrub(self) -> bool:
        """Performs the scrub owed (``owe_scrub``, which the caller commits first),
        leaving no old version of any page in the database's files: every frame of the
        WAL copied into the database and the ``-wal`` file cut (to hold the record's
        deletion alone), on the worker thread after any checkpoint running there
        (``_run_scrub``). True once done (here,
        or by another instance's writer since the record was written); False when another
        connection's read of an older snapshot (or another process's write) kept it from
        finishing: it is then tried again in the background (``SCRUB_RETRY_S``) until
        it finishes or the writer closes, and after that by any instance's writer that
        finds it owed. The event loop never waits on it; a commit meanwhile waits on a
        worker thread only for the moment the file is cut (as for ``_trim_when_idle``)."""
        while self._checkpoint is not None and not self._checkpoint.done():
            await asyncio.shield(self._checkpoint)
        # After the wait: a try that just failed asked for a retry; this one replaces it.
        if self._scrub_retry is not None:
            self._scrub_retry.cancel()
            self._scrub_retry = None
        self._scrub_failures = 0
        if self.conn is None:
            return False
        return bool(await asyncio.shield(self._start_scrub()))

    def scrub_if_owed(self) -> bool:
        """Starts the scrub the database records as owed (by this instance, or by one
        that stopped before it could finish), unless a checkpoint runs or a retry is due
        already; whether it started one. At the start and after commits (at most every
        ``_SIZE_CHECK_INTERVAL_S``): one read of a one-row table."""
        if self.conn is None or self._scrub_retry is not None or (
                self._checkpoint is not None and not self._checkpoint.done()):
            return False
        try:
            if owed_scrub(self.conn) is None:
                return False
        except sqlite3.Error:
            log.debug("reading whether a scrub is owed failed", exc_info=True)
            return False
        self._start_scrub()
        return True

    def _start_scrub(self) -> asyncio.Future[bool]:
        scrub = asyncio.get_running_loop().run_in_executor(None, self._run_scrub)
        self._checkpoint = scrub
        scrub.add_done_callback(self._scrub_done)
        return scrub

    def _scrub_done(self, scrub: asyncio.Future[bool]) -> None:
        if scrub.cancelled() or self.conn is None:
            return
        if scrub.exception() is None and scrub.result():
            if self._scrub_failures >= len(SCRUB_RETRY_S):
                log.warning("the database's old page images are scrubbed at last")
            self._scrub_failures = 0
            return
        if self._scrub_retry is not None:
            self._scrub_retry.cancel()
        pause = SCRUB_RETRY_S[min(self._scrub_failures, len(SCRUB_RETRY_S) - 1)]
        self._scrub_failures += 1
        if self._scrub_failures == len(SCRUB_RETRY_S):
            # Erased data stays in the -wal file meanwhile: someone should look.
            log.warning("the database's -wal file still holds old page images (erased "
                        "data) after %d tries: a connection keeps a read transaction "
                        "open (an sqlite3 shell, a backup?); trying again every %gs",
                        self._scrub_failures, pause)
        self._scrub_retry = asyncio.get_running_loop().call_later(pause, self._retry_scrub)

    def _retry_scrub(self) -> None:
        self._scrub_retry = None
        if self.conn is None:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            # A checkpoint of the writes' own: this try waits its turn.
            self._scrub_retry = asyncio.get_running_loop().call_later(
                0.1, self._retry_scrub)
            return
        self._start_scrub()

    def _run_scrub(self) -> bool:
        """The scrub owed, if one still is; whether the one owed as it began is done (an
        erasure that raised the record meanwhile asks for its own). Two steps, as
        ``_run_checkpoint`` trims: a PASSIVE checkpoint copies the WAL into the database
        beside the writes, and only once it copied every frame a TRUNCATE checkpoint
        takes the write lock, for the moment it cuts the emptied file. A TRUNCATE alone
        copied the whole WAL holding the write lock: every commit waited for the copy
        and its fsync (0.5 s for a WAL of 167 MiB, StoreBusy past a busy timeout of
        0.2 s; review r2). The TRUNCATE waits for no one (busy timeout 0: waiting, it
        would hold the write lock, and every commit with it, for a reader). Then the
        record is deleted, unless an erasure raised it meanwhile (its writes may have
        come after the copy)."""
        try:
            if self._checkpointer is None:
                self._checkpointer = connect(self.path)
            checkpointer = self._checkpointer
            checkpointer.execute("PRAGMA busy_timeout = 0")
            owed = owed_scrub(checkpointer)
            if owed is None:
                return True  # done by another instance's writer, or never owed
            if not _copy_then_cut(checkpointer):
                return False  # a reader of an older snapshot still needs frames
            # A write of its own: it waits for the write lock as commits do (off the loop).
            checkpointer.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            checkpointer.execute('DELETE FROM "scrub_owed" WHERE "seq" = ?', (owed,))
        except sqlite3.Error as error:
            if isinstance(error, sqlite3.DatabaseError) and cannot_write(error) is not None:
                log.debug("scrubbing the WAL failed: %s", error)
            elif not (isinstance(error, sqlite3.OperationalError) and is_busy(error)):
                log.warning("scrubbing the WAL failed", exc_info=True)
            return False
        return True

    # ------------------------------------------------------------- lifecycle
    def _open_conn(self) -> sqlite3.Connection:
        if self.conn is None:
            raise RuntimeError("SqliteStore is not started")
        return self.conn

    async def close(self) -> None:
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        if self._checkpoint is not None:
            await asyncio.shield(self._checkpoint)
        if self._scrub_retry is not None:
            # (Also one the scrub just awaited asked for.) The scrub stays owed in the
            # database (``owe_scrub``): another instance's writer on the file performs
            # it, or the next start. Not "SQLite cuts the WAL as the last connection
            # closes": with another instance running, this one is not the last (review
            # r2).
            self._scrub_retry.cancel()
            self._scrub_retry = None
        conn, checkpointer = self.conn, self._checkpointer
        self.conn = self._checkpointer = None
        if checkpointer is not None:
            checkpointer.close()
        if conn is not None:
            try:
                # Refreshes the planner's statistics where they are stale (SQLite's
                # advice for long-lived connections at close); cheap when nothing changed.
                conn.execute("PRAGMA optimize")
            finally:
                conn.close()
        # After the connections: its descriptor's close drops this process's locks on
        # the -shm file (``WalIndex``).
        self._wal_index.close()
