"""Choosing the store backend from the database URL."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from chargegraph.errors import ConfigError
from chargegraph.startup import starting
from domain.ports import Store

if TYPE_CHECKING:
    from store.sqlite.backup import BackupReport, RestoreReport

SQLITE = "sqlite:///"
MONGO = ("mongodb://", "mongodb+srv://")
USAGE = "use sqlite:///relative.db, sqlite:////absolute.db or mongodb://host:27017/db"


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL (``sqlite:///x.db`` is relative to the working directory,
    ``sqlite:////x.db`` absolute); ``None`` for other backends."""
    if not database_url.startswith(SQLITE):
        return None
    path = database_url.removeprefix(SQLITE)
    if not path:
        raise ConfigError(f"the SQLite URL names no file: {USAGE}")
    if path == ":memory:":
        # The store opens several connections, and each would see a database of its own.
        raise ConfigError(f"an in-memory SQLite database cannot be served: name a file, "
                          f"{USAGE}")
    return Path(path)


def check_database_url(database_url: str) -> None:
    """Fails on a URL no backend understands, or one its backend cannot read (a MongoDB
    URL whose port is no number, a malformed host or option), before anything is started:
    QA s26 had PyMongo's ValueError end `serve` with a lifespan traceback (exit 3)."""
    if sqlite_path(database_url) is not None:
        return
    if not database_url.startswith(MONGO):
        raise ConfigError(f"unsupported database URL {database_url!r}: {USAGE}")
    import warnings

    from pymongo.errors import PyMongoError
    from pymongo.uri_parser_shared import _validate_uri

    from pubsub.redis import redacted

    # PyMongo's own check of a URL, the part of parse_uri before a mongodb+srv:// URL's
    # DNS lookup (which is the start's business): each scheme by its own rules (review
    # r26-onboard: read as mongodb://, a valid SRV URL's srvServiceName or srvMaxHosts
    # was refused, and every command stopped). Unknown options only warn, as the client
    # does when it is made: that warning is the one shown.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _validate_uri(database_url, warn=True)
    except (ValueError, PyMongoError) as error:
        try:
            shown = f" {redacted(database_url)!r}"
        except ValueError:  # not even a URL to take the password out of: not shown
            shown = ""
        raise ConfigError(f"CHARGEGRAPH_DATABASE_URL{shown}: {error}") from None


def make_database_folder(database_url: str, *, or_leave_it: bool = False) -> None:
    """Makes a SQLite URL's missing folder, with a warning. Zero setup: the folder is made
    (the default file's, the working directory, always exists). Said, since a typo in the
    URL's folder served a new, empty database, named only by the ready line (QA s31).
    Made before anything else makes it (the JWT secret's state folder is beside the
    database by default: made first, it hid the warning, QA s31). ``or_leave_it``: one
    that cannot be made is left to the store's start, whose failure names the store
    (``cannot start the store at …``, review s31: a traceback here)."""
    path = sqlite_path(database_url)
    if path is None or path.parent.exists():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        if or_leave_it:
            return
        raise
    logging.getLogger("chargegraph").warning(
        "created the folder %s for a new SQLite database: if you meant an existing one, "
        "check CHARGEGRAPH_DATABASE_URL", path.parent.resolve())


def open_store(database_url: str) -> Store:
    """The store for the URL, not yet started (``await store.start()``)."""
    check_database_url(database_url)
    path = sqlite_path(database_url)
    if path is not None:
        from store.sqlite import SqliteStore

        make_database_folder(database_url)
        return SqliteStore(str(path))
    from store.mongo import MongoStore

    return MongoStore.connect(database_url)  # type: ignore[no-any-return]


def database_location(database_url: str) -> str:
    """Which database a URL names, for a person checking it is the one they meant: a
    SQLite file by its absolute path (``sqlite:///chargegraph.db`` is relative to the
    working directory, so a command run from another folder opens, or makes, another
    database), a MongoDB URL without its user, password and options (an option may hold
    a secret, such as a TLS key's password)."""
    path = sqlite_path(database_url)
    if path is not None:
        return f"SQLite {path.resolve()}"
    parts = urlsplit(database_url)
    hosts = parts.netloc.rpartition("@")[2]
    return f"MongoDB {urlunsplit((parts.scheme, hosts, parts.path, '', ''))}"


def new_database(database_url: str) -> bool:
    """Whether a SQLite URL names a file that does not exist yet (the store's start will
    make it): said where the database is named, so that a mistyped or relative URL
    shows. A MongoDB database is never called new."""
    path = sqlite_path(database_url)
    return path is not None and not path.exists()


def store_label(database_url: str) -> str:
    """How start-up lines name the store: ``the store at <url without its password>``."""
    from pubsub.redis import redacted

    return f"the store at {redacted(database_url)}"


@contextlib.asynccontextmanager
async def started_store(database_url: str) -> AsyncIterator[Store]:
    """The started store, closed on exit, for commands that use it without the app's
    lifespan (create-user, demo's seeding). A store that cannot be opened (an unwritable
    folder, a corrupt file, MongoDB not answering) is ``StartupFailed``, worded as `serve`
    words it."""
    check_database_url(database_url)  # first: naming a malformed URL would fail too
    with starting(store_label(database_url)):
        store = open_store(database_url)
        try:
            await store.start()
        except BaseException:
            # Its client (MongoDB's connection pool and monitor tasks) would be left
            # running for a store nobody can use.
            await store.close()
            raise
    try:
        yield store
    finally:
        await store.close()


def remove_sqlite_database(database_url: str) -> list[Path]:
    """Deletes a SQLite database with its side files (WAL, shared memory, a stale rollback
    journal); returns what was removed. Refuses a database an instance of the service
    runs on (its lease is live) or another process has open, one this user cannot tell
    that of (it may not read and write it: ``backup.refuse_inaccessible``), and other
    backends (`demo --reset` on MongoDB drops only a database the demo marked:
    ``demo_database.drop_demo_mongo_database``). A symbolic link is followed: the file it
    names goes, the link stays."""
    path = sqlite_path(database_url)
    if path is None:
        raise ConfigError("--reset works on SQLite databases only; drop the MongoDB "
                          "database yourself to start over")
    # A symbolic link is followed, as restore does: SQLite names the side files after the
    # real path, and unlinking the link left the database it names (review r-ops2). The
    # link is kept: the next start creates the new database where it points.
    path = path.resolve()
    from store.sqlite.backup import SIDE_FILES, BackupError, refuse_open

    # Not under a running instance (QA s24: a second `demo --reset` deleted the first
    # demo's database, which then refused every write, and only after that found its
    # ports taken), nor under a process that holds no lease yet (review s24: a reset
    # during a demo's seeding deleted its database), nor when this user cannot tell
    # (review s25: an error that is no proof of a damaged file, such as SQLITE_IOERR_LOCK
    # for a user who may not write the -shm of a database in use, let it through).
    # A stale rollback journal too: SQLite would replay it into the next database made here.
    # Listed before the checks: their own open of the database may already take a side
    # file away (SQLite drops an unusable -wal as it closes), and it is still one removed.
    found = [candidate for candidate in
             (path, *(path.with_name(path.name + s) for s in SIDE_FILES))
             if candidate.exists()]
    refuse_reset_early(path)
    try:
        refuse_open(path, "reset")
    except BackupError as exc:
        raise ConfigError(f"--reset: {exc}") from exc
    removed = []
    for candidate in found:
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    for candidate in (path, *(path.with_name(path.name + s) for s in SIDE_FILES)):
        if candidate not in found and candidate.exists():  # made by the checks' open
            candidate.unlink()
    return removed


def refuse_reset_early(path: Path) -> None:
    """``remove_sqlite_database``'s refusals that read alone (a database this user may not
    read and write, one a running instance leases), so ``demo --reset`` says them before
    anything is written (``demo_database.refuse_early``); whether another process has it
    open is told by changing its journal mode, when the reset runs."""
    from store.sqlite.backup import BackupError, refuse_inaccessible, refuse_running

    try:
        refuse_inaccessible(path, "reset")
        refuse_running(path, "reset")
    except BackupError as exc:
        raise ConfigError(f"--reset: {exc}") from exc


def backup_sqlite_database(database_url: str, target: Path, *, overwrite: bool
                           ) -> BackupReport:
    """A consistent copy of the SQLite database, also while the service writes to it
    (``store.sqlite.backup``). MongoDB has its own tools for that."""
    path = sqlite_path(database_url)
    if path is None:
        raise ConfigError("backup copies SQLite databases; for MongoDB use mongodump "
                          "(mongodump --uri=URL --archive=FILE), and mongorestore to "
                          "restore")
    from store.sqlite.backup import backup

    return backup(path, target, overwrite=overwrite)


def restore_sqlite_database(database_url: str, backup_file: Path) -> RestoreReport:
    """Puts a backup in place of the SQLite database (``store.sqlite.backup.restore``)."""
    path = sqlite_path(database_url)
    if path is None:
        raise ConfigError("restore puts SQLite backups back; for MongoDB use mongorestore")
    from store.sqlite.backup import restore

    return restore(backup_file, path)
