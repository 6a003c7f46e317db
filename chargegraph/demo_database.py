"""Which database `chargegraph demo` may seed, decided before any store opens it.

Review r26-onboard2: the demo started the store (which makes, migrates and reconciles the
database) and only then read its mark, so a database it refused had been migrated first
(a deployment's, by a newer ChargeGraph: its service then stopped on a newer schema), and a
demo killed between the store's start and the mark left a file it refused for ever. Here
the decision is taken by reading without writing:

* SQLite: a file that is there is read through a plain read-only connection (no
  migration): marked as the demo's, it is used; otherwise refused untouched. A file that is
  not there is built beside it (``.NAME.demo-build-TOKEN``: migrated, then marked) and
  linked into place only if nothing took the name meanwhile, so a demo killed while it
  builds leaves no database (its build, stale once its lock is free, is removed by the next
  demo) and two demos at once never overwrite one another. The build's lock is ``flock``
  where there is ``fcntl`` (POSIX); elsewhere (Windows) the lock file holds its demo's
  process id, and is stale once that process is gone (review r26-onboard3: importing
  ``fcntl`` stopped every demo on Windows).
* MongoDB: read with a plain client: marked, it is used; a database without collections
  gets the mark as its very first write, then the store starts; any other is refused
  untouched.

Marked or not, a database an instance of the service leases (a live ``instance_lease``,
read the same way as the mark: SQLite ``mode=ro``, MongoDB a plain read) is refused
before anything opens it, a complete demo database as well (review r26-onboard3).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from chargegraph.demo import (
    DEMO_MADE,
    DEMO_SEEDED,
    another_demo,
    demo_emails,
    in_use,
    not_the_demos,
)
from chargegraph.errors import ConfigError
from chargegraph.startup import starting
from chargegraph.stores import (
    check_database_url,
    database_location,
    refuse_reset_early,
    sqlite_path,
    started_store,
    store_label,
)
from store.sqlite.backup import sync_file

BUILD = ".demo-build-"
SIDE_FILES = ("-wal", "-shm", "-journal")
COUNTERS = "_counters"  # MongoDB's named counters (``store.mongo.store.COUNTERS``)
LEASES = "instance_lease"  # MongoDB's instance leases (``InstanceLease.kind``)
USERS = "user"  # MongoDB's accounts (``User.kind``)


#: Where the refusal sends the demo: SQLite's file (relative to where it runs) and
#: MongoDB's database, and the names used when the refused database is that one.
OWN_SQLITE = ("demo.db", "demo-2.db")
OWN_MONGO = ("chargegraph-demo", "chargegraph-demo-2")


def own_database(database_url: str) -> str:
    """How the demo runs on a database of its own, for this store: never the database
    ``database_url`` names (review r26-onboard3: refusing demo.db, the advice was to run on
    demo.db, a loop). When that database is at the demo's own name (an older demo's,
    made before the mark, or by a release whose killed demo left it unmarked), it also
    says that it can be deleted; never for any other name (it may be a deployment's)."""
    path = sqlite_path(database_url)
    if path is not None:
        mine = path.resolve() == Path(OWN_SQLITE[0]).resolve()
        command = f"CHARGEGRAPH_DATABASE_URL=sqlite:///{OWN_SQLITE[mine]} chargegraph demo"
        if not mine:
            return command
        return (f"{command}; or, if {OWN_SQLITE[0]} is an older demo's database, delete it "
                "(by hand, with its -wal and -shm, or with `chargegraph demo --reset` as "
                "you just ran the demo, which deletes that file and starts afresh)")
    parts = urlsplit(database_url)
    hosts = parts.netloc.rpartition("@")[2]
    mine = parts.path.lstrip("/") == OWN_MONGO[0]
    other = urlunsplit((parts.scheme, hosts, f"/{OWN_MONGO[mine]}", "", ""))
    command = f"CHARGEGRAPH_DATABASE_URL={other} chargegraph demo"
    if not mine:
        return command
    return (f"{command}; or, if {OWN_MONGO[0]} is an older demo's database, drop it by hand "
            f"(mongosh: use {OWN_MONGO[0]}, then db.dropDatabase(); --reset drops only a "
            "database that carries the demo's mark) and start the demo again")


def charger_state_file(database_url: str) -> Path:
    """Where the demo's simulated chargers keep what they were told across a restart
    (``simulator_state.ChargerStates``): beside a SQLite database (``demo.db`` →
    ``demo.db.chargers.json``), in the working directory for a MongoDB one, named after
    it. A restart of the demo on the same database finds its chargers as they were left:
    the server's record of them stays true."""
    path = sqlite_path(database_url)
    if path is not None:
        return path.with_name(f"{path.name}.chargers.json")
    name = urlsplit(database_url).path.lstrip("/") or "chargegraph"  # the store's default
    return Path(f"{name}.chargers.json")


async def prepare_demo_database(database_url: str) -> None:
    """Makes the demo's database if there is none (SQLite: built and marked, then put in
    place; MongoDB: marked first), or checks that the one there carries the demo's mark;
    ``ConfigError`` otherwise, before anything opens, migrates or writes to it."""
    database, own, path = _located(database_url)
    if path is not None:
        with starting(store_label(database_url)):  # an unwritable folder: one line
            await _prepare_sqlite(path.resolve(), database, own)
        return
    async with _mongo_db(database_url) as db:
        await admit_mongo_database(db, database, own)


async def refuse_early(database_url: str, *, reset: bool = False) -> None:
    """``ConfigError`` for a database the demo would refuse (``prepare_demo_database``),
    by reads alone, before the command writes anything: the app it builds first keeps
    its JWT secret beside the database (ops QA s32: a refused database was "left
    untouched", a ``.chargegraph/jwt_secret`` made beside it). A database the demo may
    use, or none, passes; ``prepare_demo_database`` decides again when it opens it.
    ``reset`` (``demo --reset``): the reset's refusals instead, those that read alone
    (review r32-e: skipped for it, a deployment's MongoDB database was refused after
    the secret was written): a MongoDB database the demo did not mark or one in use
    (``_droppable``), a SQLite one in use (``refuse_reset_early``)."""
    database, own, path = _located(database_url)
    if path is not None:
        path = path.resolve()
        if reset:
            refuse_reset_early(path)
        elif path.exists():
            _admitted(path, database, own)
        return
    async with _mongo_db(database_url) as db:
        await (_droppable if reset else _mongo_marked)(db, database, own)


def _located(database_url: str) -> tuple[str, str, Path | None]:
    """A checked URL's database name, the name the demo's mark must carry, and its
    SQLite file (None on MongoDB)."""
    check_database_url(database_url)
    return (database_location(database_url), own_database(database_url),
            sqlite_path(database_url))


@contextlib.asynccontextmanager
async def _mongo_db(database_url: str) -> AsyncIterator[Any]:
    """The MongoDB database the URL names, on a plain client (nothing started: no
    indexes, no migrations), closed after; a failure to reach it said in one line."""
    from store.mongo import MongoStore

    with starting(store_label(database_url)):
        store = MongoStore.connect(database_url)
        try:
            yield store.db
        finally:
            await store.close()


# ---------------------------------------------------------------------------- SQLite
async def _prepare_sqlite(path: Path, database: str, own: str) -> None:
    if _found(path, database, own):
        return  # the demo's: the store migrates it as usual
    token = uuid.uuid4().hex[:12]
    built = path.with_name(f".{path.name}{BUILD}{token}")
    lock = _locked(built.with_name(built.name + ".lock"))
    try:
        async with started_store(f"sqlite:///{built}") as store:
            await store.next_sequence(DEMO_MADE)
        _place(built, path, database)
    finally:
        _remove(built)
        _release(Path(lock.name), lock)


def _found(path: Path, database: str, own: str) -> bool:
    """Whether the demo's database is there (marked, no instance running on it);
    ``ConfigError`` for another one, one an instance leases, or one another demo is
    building; False when there is none (its folder is made)."""
    _remove_stale_builds(path, database)
    if path.exists():
        _admitted(path, database, own)
        return True
    path.parent.mkdir(parents=True, exist_ok=True)  # zero setup: make the folder
    return False


def _admitted(path: Path, database: str, own: str) -> None:
    """``ConfigError`` unless the SQLite file there is the demo's and no instance runs on
    it. Reads only."""
    if sqlite_marked(path, database, own) <= 0:
        raise not_the_demos(database, own)
    if sqlite_leased(path, database, own):
        raise in_use(database, own)


def _place(built: Path, path: Path, database: str) -> None:
    """The built database under its name, only if nothing took the name meanwhile (a
    demo started at the same time): never one replaced."""
    _checkpoint(built)
    try:
        os.link(built, path)
    except FileExistsError:
        raise another_demo(database) from None
    except OSError:  # a file system without hard links: the next best
        if path.exists():
            raise another_demo(database) from None
        os.replace(built, path)


def sqlite_marked(path: Path, database: str, own: str = "") -> int:
    """The demo's mark in a SQLite file (0: none), read through a read-only connection
    that migrates nothing; a file that is no ChargeGraph database has none. A file it
    cannot read (no permission, a crashed writer's journal) is refused: no proof either
    way."""
    row = _read_only(path, database, own, 'SELECT "value" FROM "sequence" WHERE "name" = ?',
                     (DEMO_MADE,))
    return int(row[0]) if row and row[0] is not None else 0


def sqlite_leased(path: Path, database: str, own: str = "") -> bool:
    """Whether an instance of the service holds a live lease on a SQLite file, read as
    the mark is (read-only: nothing migrated); a file without the table has none."""
    now_us = int(time.time() * 1_000_000)
    row = _read_only(path, database, own, 'SELECT MAX("expires_at") FROM "instance_lease" '
                     'WHERE "expires_at" > ?', (now_us,))
    return bool(row and row[0] is not None)


def _read_only(path: Path, database: str, own: str, query: str,
               parameters: tuple[Any, ...]) -> Any:
    """One row read through a read-only connection (None: no such table, or no database
    at all); ``ConfigError`` when the file cannot be read."""
    uri = f"file:{quote(str(path))}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            return db.execute(query, parameters).fetchone()
    except sqlite3.DatabaseError as error:
        name = getattr(error, "sqlite_errorname", "")
        if name == "SQLITE_NOTADB" or (name == "SQLITE_ERROR" and "no such table" in str(error)):
            return None
        raise ConfigError(f"cannot tell whether the demo may use {database} ({error}): it "
                          "is left as it is; run the demo on a database of its own: "
                          f"{own or own_database('sqlite:///' + str(path))}") from None


def _fcntl() -> Any:
    """``fcntl`` where Python has it (POSIX), else None (Windows)."""
    try:
        import fcntl
    except ImportError:
        return None
    return fcntl


def _locked(lock_path: Path) -> Any:
    """The build's lock file, created (``O_CREAT|O_EXCL``) and held while the demo
    builds: free, it tells the next demo that the build's demo is gone (killed), not
    building. Held by ``flock`` where there is ``fcntl``; elsewhere the file holds this
    process's id (``_held``)."""
    handle = open(lock_path, "x")  # noqa: SIM115 - held until the build ends
    try:
        fcntl = _fcntl()
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            handle.write(str(os.getpid()))
            handle.flush()
    except BaseException:
        handle.close()
        raise
    return handle


#: Without ``fcntl``: a build lock this old is stale whatever process holds its id now
#: (an id reused after the build's demo was killed). A build takes seconds.
STALE_AFTER = 600


def _held(handle: Any) -> bool:
    """Whether the build whose lock file ``handle`` reads still runs: its ``flock`` is
    taken; without ``fcntl``, the process whose id it holds is alive and the file is
    younger than ``STALE_AFTER`` (one without an id yet is being written: alive)."""
    fcntl = _fcntl()
    if fcntl is not None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False
    if time.time() - os.fstat(handle.fileno()).st_mtime >= STALE_AFTER:
        return False
    text = handle.read().strip()
    return not text.isdigit() or _alive(int(text))


def _release(lock_path: Path, handle: Any) -> None:
    """Removes a build's lock file and closes it: removed while held under ``flock`` (no
    other demo locks a file about to go), closed first elsewhere (Windows removes no
    open file)."""
    if _fcntl() is None:
        handle.close()
    with contextlib.suppress(FileNotFoundError):
        os.remove(lock_path)
    handle.close()


def _alive(pid: int) -> bool:
    """Whether a process of that id runs (Windows: ``OpenProcess``, since ``os.kill``
    there would end it)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # pragma: no cover - Windows only
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        process = kernel32.OpenProcess(0x1000 | 0x00100000, False, pid)  # query, synchronize
        if not process:
            return False
        try:
            return bool(kernel32.WaitForSingleObject(process, 0) == 0x102)  # WAIT_TIMEOUT
        finally:
            kernel32.CloseHandle(process)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _remove_stale_builds(path: Path, database: str) -> None:
    """Removes what a demo killed while it built left (its lock is free); a build whose
    demo still runs is ``another_demo`` when the database is not there yet."""
    if not path.parent.is_dir():
        return
    for lock_path in path.parent.glob(f".{path.name}{BUILD}*.lock"):
        try:
            handle = open(lock_path)  # noqa: SIM115
        except FileNotFoundError:
            continue  # its build just ended
        with handle:
            if _held(handle):
                if not path.exists():
                    raise another_demo(database)
                continue
            _remove(lock_path.with_name(lock_path.name.removesuffix(".lock")))
            _release(lock_path, handle)


def _checkpoint(built: Path) -> None:
    """Everything in the built file itself, none in its -wal, before it is linked."""
    with contextlib.closing(sqlite3.connect(built)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    sync_file(str(built))


def _remove(built: Path) -> None:
    for candidate in (built, *(built.with_name(built.name + s) for s in SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            os.remove(candidate)


# ---------------------------------------------------------------------------- MongoDB
async def admit_mongo_database(db: Any, database: str, own: str) -> None:
    """A MongoDB database the demo marked is used; one without collections is marked
    (its very first write: a second demo at the same time is refused); any other is
    refused untouched, and so is one an instance of the service leases (a plain read, as
    the mark's). ``db``: the database through a plain client, not started."""
    if await _mongo_marked(db, database, own):
        return
    from pymongo import ReturnDocument

    doc = await db[COUNTERS].find_one_and_update(
        {"_id": DEMO_MADE}, {"$inc": {"value": 1}}, upsert=True,
        return_document=ReturnDocument.AFTER)
    if int(doc["value"]) != 1:
        raise another_demo(database)


async def _mongo_marked(db: Any, database: str, own: str) -> bool:
    """Whether the database carries the demo's mark (False: it has no collections, the
    demo may make it); ``ConfigError`` for one the demo may not use. Reads only."""
    if await db[COUNTERS].find_one({"_id": DEMO_MADE}) is not None:
        if await mongo_leased(db):
            raise in_use(database, own)
        if await db[COUNTERS].find_one({"_id": DEMO_SEEDED}) is None \
                and await db[USERS].find_one({"email": {"$nin": demo_emails()}}) is not None:
            # The mark is written before the store starts: a start that then failed left
            # an empty database marked, which a service may since have been started on
            # (review r26-onboard3). A seed never completed holds only the demo's logins
            # (it serves nothing before it completes): anyone else's account is a
            # service's, and the demo's public admin is not added to it.
            raise not_the_demos(database, own)
        return True
    if await db.list_collection_names():
        raise not_the_demos(database, own)
    return False


async def mongo_leased(db: Any) -> bool:
    """Whether an instance of the service holds a live lease on the database (a plain
    read through a client that started nothing)."""
    return bool(await db[LEASES].count_documents({"expires_at": {"$gte": datetime.now(UTC)}},
                                                 limit=1))


async def drop_demo_mongo_database(db: Any, database: str, own: str) -> bool:
    """``demo --reset`` on MongoDB: drops a database that carries the demo's mark (whether
    it dropped one); refuses one without it (a deployment's: never dropped on a flag) and
    one an instance of the service runs on (a live lease)."""
    if not await _droppable(db, database, own):
        return False
    await db.client.drop_database(db.name)
    return True


async def _droppable(db: Any, database: str, own: str) -> bool:
    """Whether ``drop_demo_mongo_database`` has a database to drop (False: nothing there),
    or its refusal. Reads only."""
    if not await db.list_collection_names():
        return False  # nothing there: nothing to drop
    if await db[COUNTERS].find_one({"_id": DEMO_MADE}) is None:
        raise ConfigError(f"--reset: {database} was not made by the demo (it has no demo "
                          f"mark), so it is not dropped; run the demo on a database of its "
                          f"own: {own}")
    if await mongo_leased(db):
        raise ConfigError(f"--reset: {database} is in use by a running instance of the "
                          "service: stop it first")
    return True


async def reset_demo_mongo_database(database_url: str) -> bool:
    """``drop_demo_mongo_database`` for the database a MongoDB URL names."""
    database, own, _ = _located(database_url)
    async with _mongo_db(database_url) as db:
        return await drop_demo_mongo_database(db, database, own)
