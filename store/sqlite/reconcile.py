"""A database's tables, columns and indexes brought to what today's migrations make.

Migrations are frozen once released, and a database's version says which ran. Some were
changed after they had shipped on main (QA s18, upgrade): a database that ran an earlier
text of version 21, 27, 30 or 33 has its version number but lacks columns the code reads
(``session.soc_percent``, ``session.start_refused``, ``site_allocation.bound_kw``,
``local_list_entry.card_id``), and chargers' starts failed with "no such column" while
``/healthz`` said ok. A version alone cannot tell, so before the newer migrations run,
every start compares the database with a reference: what today's migrations up to its
version make of an empty database, in memory. What is missing is added: tables, columns
(with the backfill that column's migration runs), and indexes (one defined otherwise is
made again; one an earlier text made and no migration makes today is dropped,
``LEFTOVER_INDEXES``). Columns the reference lacks are left (never read), and so are
indexes no migration ever made: an administrator's own. The newer migrations then run on the schema
they were written for.

The reference costs a few milliseconds (empty tables); a database that matches it is
only read.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

log = logging.getLogger("chargegraph.store")

#: How many SQLite virtual machine steps a migrating statement runs between two looks at
#: whether the start was stopped (``Stoppable``): well under a millisecond.
STOP_CHECK_STEPS = 10_000


class Stoppable:
    """A migrating connection whose statement under way ends at once when the start is
    stopped (SIGTERM, Ctrl+C: ``signals.StoppableStart`` cancels the start's task). The
    statement runs on aiosqlite's thread, which a cancel does not reach: the rollback was
    queued behind it, and a stop waited out a statement of minutes (review r28-batch).
    ``roll_back`` of a cancel flags the stop, which a progress handler on the connection
    reads every ``STOP_CHECK_STEPS`` steps (``sqlite3.Connection.set_progress_handler``;
    one non-zero answer aborts the statement as ``interrupt()`` does, also one the
    thread had not begun when the cancel came), and interrupts the statement running
    (``interrupt()``, safe from another thread); then the handler goes (queued after the
    statement, so the rollback is never aborted) and the transaction is rolled back."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self._stopped = threading.Event()

    def _stop_asked(self) -> int:
        return 1 if self._stopped.is_set() else 0

    async def __aenter__(self) -> Stoppable:
        await self.conn.set_progress_handler(self._stop_asked, STOP_CHECK_STEPS)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._remove_handler()

    async def _remove_handler(self) -> None:
        await self.conn.set_progress_handler(None, 0)  # type: ignore[arg-type]

    async def roll_back(self, error: BaseException | None = None) -> None:
        """Rolls back the transaction ``error`` ended (a cancel: the statement under
        way stopped first)."""
        if isinstance(error, asyncio.CancelledError):
            self._stopped.set()
            await self.conn.interrupt()
            await self._remove_handler()
        await self.conn.rollback()


@dataclass(frozen=True)
class ColumnFill:
    """How a column a database lacks is added beyond its declaration: the default a NOT
    NULL column declared without one needs to be added at all (``ALTER TABLE`` must fill
    the rows there are), and statements giving the rows there are their value, as the
    column's migration did."""

    default: str | None = None
    backfill: str | None = None


#: Every session's State of Charge from its samples, by the live rule (no phase, 0 to
#: 100: ``metering.reading_soc``): migration 21's backfill, 40's repair (with a WHERE),
#: and a column added here (``COLUMN_FILLS``). No ";": each use ends it.
SOC_FROM_SAMPLES = """UPDATE "session" SET ("soc_percent", "soc_at") = (
    SELECT "value", "at" FROM "meter_sample"
    WHERE "meter_sample"."session_id" = "session"."id" AND "measurand" = 'SoC'
      AND "phase" IS NULL AND "value" BETWEEN 0 AND 100
    ORDER BY "at" DESC, "id" DESC LIMIT 1)"""

#: The columns a changed migration added, when its earlier text did not: what their own
#: migration does for the rows before them. Others are added as declared (NULL, or their
#: default).
COLUMN_FILLS: dict[tuple[str, str], ColumnFill] = {
    ("session", "soc_percent"): ColumnFill(backfill=SOC_FROM_SAMPLES),
    ("session", "soc_at"): ColumnFill(backfill=SOC_FROM_SAMPLES),
    # A share sent before the bound was kept: what it was given is what it was bound to.
    ("site_allocation", "bound_kw"): ColumnFill(
        default="0", backfill='UPDATE "site_allocation" SET "bound_kw" = "power_kw"'),
    # An entry recorded before its card was: the card of its tag when it was sent, if
    # one existed then (a card made later must not take it over: withdrawal fixer, s17).
    ("local_list_entry", "card_id"): ColumnFill(backfill="""UPDATE "local_list_entry" SET
        "card_id" = (SELECT "id" FROM "id_tag" WHERE "id_tag"."tag" = "local_list_entry"."tag"
                     AND "id_tag"."created_at" <= "local_list_entry"."created_at")"""),
}


#: Indexes earlier texts of released migrations made that no migration makes today,
#: dropped wherever found (others a migration does not make are an administrator's): on
#: ``meter_sample`` every MeterValues paid for them (2c54e4f removed the first).
LEFTOVER_INDEXES = frozenset({
    "meter_sample_session_measurand_at_idx",  # an earlier 21
    "meter_sample_at_idx",  # an earlier 3
    "local_list_entry_tag_idx",  # an earlier 33
})


@dataclass(frozen=True)
class _Column:
    name: str
    declared: str
    not_null: bool
    default: str | None


@dataclass
class Schema:
    """Tables (name → CREATE statement), their columns, and indexes (name → (table,
    CREATE statement)) of one database; SQLite's own are left out."""

    tables: dict[str, str]
    columns: dict[str, list[_Column]]
    indexes: dict[str, tuple[str, str]]


_TABLES = ("SELECT name, sql FROM sqlite_master WHERE type = 'table' "
           "AND name NOT LIKE 'sqlite_%' ORDER BY rowid")
_INDEXES = ("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' "
            "AND sql IS NOT NULL ORDER BY rowid")


def _schema(tables: Sequence[Any], columns: Mapping[str, Sequence[Any]],
            indexes: Sequence[Any]) -> Schema:
    """A schema from the rows of ``_TABLES``, ``PRAGMA table_xinfo`` per table, and
    ``_INDEXES``."""
    return Schema({str(r[0]): str(r[1]) for r in tables},
                  {table: [_Column(str(r[1]), str(r[2]), bool(r[3]), r[4]) for r in rows]
                   for table, rows in columns.items()},
                  {str(r[0]): (str(r[1]), str(r[2])) for r in indexes})


def reference(migrations: Sequence[tuple[int, str]],
              functions: Sequence[tuple[str, int, Callable[..., Any]]],
              split: Callable[[str], list[str]]) -> Schema:
    """The schema ``migrations`` make of an empty database."""
    conn = sqlite3.connect(":memory:")
    try:
        for name, arity, function in functions:
            conn.create_function(name, arity, function, deterministic=True)
        for _, script in migrations:
            for statement in split(script):
                conn.execute(statement)
        tables = conn.execute(_TABLES).fetchall()
        return _schema(tables, {str(t[0]): conn.execute(
            f'PRAGMA table_xinfo("{t[0]}")').fetchall() for t in tables},
            conn.execute(_INDEXES).fetchall())
    finally:
        conn.close()


async def _read(conn: aiosqlite.Connection) -> Schema:
    tables = list(await conn.execute_fetchall(_TABLES))
    columns = {str(t[0]): list(await conn.execute_fetchall(f'PRAGMA table_xinfo("{t[0]}")'))
               for t in tables}
    return _schema(tables, columns, list(await conn.execute_fetchall(_INDEXES)))


def _same(a: str, b: str) -> bool:
    """Two CREATE statements alike but for spacing and quotes around names."""
    def norm(sql: str) -> str:
        # Case kept: a literal's case is its meaning ('Blocked' is not 'BLOCKED').
        return re.sub(r"\s+", " ", sql.replace('"', "")).strip()
    return norm(a) == norm(b)


def repairs(found: Schema, wanted: Schema) -> list[str]:
    """The statements bringing ``found`` to ``wanted``: missing tables, columns (and their
    backfills, once each, after every column is there), indexes made again."""
    statements: list[str] = []
    backfills: list[str] = []
    for table, create in wanted.tables.items():
        if table not in found.tables:
            statements.append(create)
            continue
        have = {c.name for c in found.columns[table]}
        for column in wanted.columns[table]:
            if column.name in have:
                continue
            fill = COLUMN_FILLS.get((table, column.name), ColumnFill())
            default = column.default if column.default is not None else fill.default
            if column.not_null and default is None:
                raise sqlite3.DatabaseError(
                    f"the database lacks {table}.{column.name}, which cannot be added "
                    "(NOT NULL with no value for the rows there are): restore a backup "
                    "and upgrade that")
            statements.append(
                f'ALTER TABLE "{table}" ADD COLUMN "{column.name}" {column.declared}'
                + (" NOT NULL" if column.not_null else "")
                + (f" DEFAULT {default}" if default is not None else ""))
            if fill.backfill is not None and fill.backfill not in backfills:
                backfills.append(fill.backfill)
    statements += backfills
    for name, (_, create) in found.indexes.items():
        # One no migration makes is left (an administrator's own, for their queries:
        # reviewer s18), unless it is one an earlier text made and a later one removed
        # on purpose (``LEFTOVER_INDEXES``: each costs every charger's write).
        if (name in wanted.indexes and not _same(create, wanted.indexes[name][1])) \
                or (name in LEFTOVER_INDEXES and name not in wanted.indexes):
            statements.append(f'DROP INDEX "{name}"')
    for name, (_, create) in wanted.indexes.items():
        if name not in found.indexes or not _same(create, found.indexes[name][1]):
            statements.append(create)
    return statements


async def reconcile(conn: aiosqlite.Connection, wanted: Schema,
                    still: Callable[[], Awaitable[bool]],
                    begin: Callable[[], Awaitable[None]],
                    stoppable: Stoppable | None = None) -> list[str]:
    """Brings the database on ``conn`` (autocommit mode) to ``wanted`` in one
    transaction, and returns the statements that took (none when it matched). ``still``,
    asked inside the transaction, says whether ``wanted`` is still the database's
    version's: another process may have migrated it further meanwhile (and repaired it
    before), and what a newer version adds must not be taken for extra. ``begin`` opens
    the transaction with the write lock (``migrations.begin_migrating``); ``stoppable``:
    ``conn`` as one whose statement a stop ends at once (``Stoppable``)."""
    await begin()
    try:
        statements = repairs(await _read(conn), wanted) if await still() else []
        for statement in statements:
            await conn.execute(statement)
        await conn.commit()
    except BaseException as error:
        if stoppable is not None:
            await stoppable.roll_back(error)
        else:
            await conn.rollback()
        raise
    if statements:
        # Loud: it means a release changed a migration it had shipped.
        log.warning("the database's schema differed from its version's (a migration "
                    "changed after it was released); repaired with: %s",
                    "; ".join(" ".join(s.split()) for s in statements))
    return statements
