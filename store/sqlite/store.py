"""``domain.ports.Store`` on SQLite: the embedded default backend.

Two connections to one WAL database file:

* the **writer** (``store.sqlite.writer``) runs every change inside ``BEGIN IMMEDIATE …
  COMMIT``, serialized by an asyncio lock (SQLite has one writer anyway; the lock makes
  concurrent coroutines queue here instead of failing with SQLITE_BUSY). Transactions run
  inline on the event loop (short: no fsync per commit under WAL), falling back to a
  thread only when another process holds the lock;
* the **readers** run every query in autocommit mode: first inline on the event loop
  under a 5 ms budget (``store.sqlite.reader``: nearly every read is an indexed page or
  batch), and on aiosqlite's thread when the budget runs out (an analytics scan). Under
  WAL each read sees the last committed state, so a reader interleaved with an open
  write transaction never sees a half-applied batch, which sharing the writer's
  connection would allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import aiosqlite
import orjson

from domain.aggregation import Group, Metric
from domain.entities import AuditEntry, E, Record
from domain.errors import NotFound
from domain.ports import Audit, Change, Delete, Guard, Insert, InsertIfAbsent, Update
from domain.query import ALL, Filter, Page, PageRequest, Sort
from store.fields import FieldSpec, audit_parts, changed_meanwhile
from store.sqlite import aggregate, paging
from store.sqlite.codec import (
    SqlValue,
    columns,
    encode,
    from_row,
    kind_of,
    per_kind,
    quote,
    spec_of,
    to_row,
)
from store.sqlite.constraints import unique_violation
from store.sqlite.migrations import HEAL_CP_ID_KEYS, apply_migrations, waiting_for_the_lock
from store.sqlite.reader import InlineReader, open_inline_reader
from store.sqlite.sql_filter import (
    HAVERSINE,
    SEARCH_FOLDED,
    column,
    compile_where,
    haversine_km,
    search_folded_sql,
)
from store.sqlite.writer import SECURE_DELETE, Writer, owe_scrub

_Statement = tuple[str, tuple[SqlValue, ...], Change | None]
#: An audit entry's insert, and the update it is written only if applied.
_Conditional = tuple[_Statement, Update]

#: The SQL functions our filters use, registered on every read connection.
SQL_FUNCTIONS = ((HAVERSINE, 4, haversine_km), (SEARCH_FOLDED, 1, search_folded_sql))


@per_kind
def _select_list(kind: type[Record]) -> str:
    return ", ".join(column("t0", name) for name in columns(kind))


@per_kind
def _insert_sql(kind: type[Record]) -> str:
    names = columns(kind)
    return (
        f"INSERT INTO {quote(kind.kind)} ({', '.join(quote(n) for n in names)}) "
        f"VALUES ({', '.join('?' * len(names))})"
    )


@per_kind
def _update_sql(kind: type[Record]) -> str:
    assignments = ", ".join(f"{quote(n)} = ?" for n in columns(kind) if n != "id")
    return f'UPDATE {quote(kind.kind)} SET {assignments} WHERE "id" = ?'


_PARTIAL_SQL: dict[tuple[type[Record], frozenset[str], tuple[str, ...]],
                   tuple[str, tuple[FieldSpec, ...]]] = {}


def _partial_update(record: Record, fields: frozenset[str],
                    guard: tuple[tuple[str, Any], ...] = ()
                    ) -> tuple[str, tuple[SqlValue, ...]]:
    """``UPDATE … SET`` only ``fields`` (``AND`` each ``guard`` field still holding its
    value: ``Update.conditions``); the SQL is built once per (kind, fields, guard
    fields)."""
    kind = type(record)
    held = tuple(name for name, _ in guard)
    key = (kind, fields, held)
    if key not in _PARTIAL_SQL:
        names = columns(kind)
        unknown = fields - set(names) | (set(held) - set(names))
        if unknown or "id" in fields:
            raise ValueError(f"cannot update {sorted(unknown or {'id'})} of {kind.kind}")
        picked = tuple(spec_of(kind, name) for name in names if name in fields)
        assignments = ", ".join(f"{quote(spec.name)} = ?" for spec in picked)
        # IS, not =: a guard may hold NULL (a session still without its stop reason).
        condition = "".join(f" AND {quote(name)} IS ?" for name in held)
        _PARTIAL_SQL[key] = (
            f'UPDATE {quote(kind.kind)} SET {assignments} WHERE "id" = ?{condition}', picked)
    sql, picked = _PARTIAL_SQL[key]
    # Only the written fields are encoded: a live-energy update touches 4 of 24.
    values = (*(encode(spec, getattr(record, spec.name)) for spec in picked), record.id,
              *(encode(spec_of(kind, name), value) for name, value in guard))
    return sql, values


def _update_params(record: Record) -> tuple[SqlValue, ...]:
    """``to_row`` in ``_update_sql`` order: every column but ``id``, then ``id``."""
    row = dict(zip(columns(type(record)), to_row(record), strict=True))
    record_id = row.pop("id")
    return (*row.values(), record_id)


def _json_array(values: list[Any]) -> str:
    """The JSON array parameter of a batch lookup (``json_each(?)``). orjson: the standard
    library's encoder cost ~3.6 µs per batch of ten keys, orjson 0.3. Integers beyond 64
    bits, which orjson refuses, are left to the standard library."""
    try:
        return orjson.dumps(values).decode()
    except TypeError:
        return json.dumps(values)


def _from(kind: type[Record]) -> str:
    return f"{quote(kind.kind)} AS t0"


def _checked(record: Record) -> type[Record]:
    """The record's entity type, refusing classes that are not stored entities."""
    kind = type(record)
    if kind_of(kind.kind) is not kind:
        raise ValueError(f"{kind.__name__} is not a stored entity type")
    return kind


def _missing(conn: sqlite3.Connection, run: list[_Statement]) -> str:
    """Which record of an update/delete run was not there (for the error message)."""
    for _, _, change in run:
        if change is None:
            continue
        record = change.record
        row = conn.execute(f'SELECT 1 FROM {quote(record.kind)} WHERE "id" = ?',
                           (record.id,)).fetchone()
        if row is None:
            return f"no such {record.kind.replace('_', ' ')}: {record.id}"
    return "a record to change is missing"


#: Rows per multi-row INSERT, largest first: a run of inserts goes as a few statements of
#: these sizes, so the prepared statements are reused from the connection's cache.
_INSERT_CHUNKS = (64, 16, 4, 1)


@functools.lru_cache(maxsize=512)
def _multi_row(sql: str, rows: int) -> str:
    """``INSERT … VALUES (?, …) [ON CONFLICT …]`` with ``rows`` value tuples."""
    head, _, rest = sql.partition(" VALUES ")
    end = rest.index(")") + 1
    return f"{head} VALUES {', '.join([rest[:end]] * rows)}{rest[end:]}"


def _insert_run(conn: sqlite3.Connection, sql: str, run: list[_Statement]) -> None:
    """One statement per chunk instead of one step per row: SQLite inserts the rows of a
    multi-row VALUES in one call, which is cheaper per row and, off the event loop,
    releases the GIL once per chunk rather than once per row."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    width = len(run[0][1])
    index = 0
    while index < len(run):
        left = len(run) - index
        size = next(c for c in _INSERT_CHUNKS if c <= left and c * width <= limit) \
            if width <= limit else 1
        chunk = run[index:index + size]
        conn.execute(_multi_row(sql, size) if size > 1 else sql,
                     [value for _, params, _ in chunk for value in params])
        index += size


def _must_apply(change: Change | None) -> bool:
    """Whether a guarded change that did not apply fails the write: a ``required``
    update, a delete with ``only_if``."""
    return (isinstance(change, Update) and change.required) \
        or (isinstance(change, Delete) and change.only_if is not None)


def _apply_each(conn: sqlite3.Connection, run: list[_Statement]) -> set[int]:
    """Updates (or deletes) one at a time, each that must apply checked on its own (a run
    may mix them with updates whose guard may fail quietly); returns the ``id()`` of
    each update skipped so (an ``executemany`` tells only how many rows a run changed,
    not which: ``_apply_batch`` comes here for a run with an audited guarded update)."""
    skipped: set[int] = set()
    for sql, params, change in run:
        if conn.execute(sql, params).rowcount:
            continue
        assert change is not None  # inserts are not applied one at a time
        if _must_apply(change):
            raise changed_meanwhile(change.record.kind)
        assert isinstance(change, Update)
        if change.only_if is None:
            raise NotFound(_missing(conn, [(sql, params, change)]), field="id")
        skipped.add(id(change))
    return skipped


def _guard_query(guard: Guard) -> tuple[str, list[SqlValue]]:
    """The guard's read, its condition as made now (``Guard.condition``)."""
    where_sql, params = compile_where(guard.kind, guard.condition())
    return f"SELECT 1 FROM {_from(guard.kind)} WHERE {where_sql} LIMIT 1", params


def _check_guards(conn: sqlite3.Connection, guards: Sequence[Guard]) -> None:
    """Inside the write transaction, after its changes: SQLite has one writer at a time
    (``BEGIN IMMEDIATE`` takes the lock, for every process on the file), so nothing can
    change what a guard reads between its check and the commit. Each is compiled here,
    its condition made as the write lands (``Guard.condition``), not before a wait for
    the lock."""
    for guard in guards:
        found = conn.execute(*_guard_query(guard)).fetchone() is not None
        if found != guard.exists:
            raise changed_meanwhile(guard.kind.kind)


def _apply_batch(conn: sqlite3.Connection, statements: list[_Statement],
                 guards: Sequence[Guard] = (),
                 conditional: Sequence[_Conditional] = ()) -> None:
    """One write transaction. Runs of the same insert go as multi-row statements, runs of
    the same update or delete through ``executemany``; updates and deletes must each
    touch their row (a guarded update may skip it); then the ``conditional`` audit
    entries whose update applied are inserted, and the guards are checked."""
    watched = {id(update) for _, update in conditional}
    skipped: set[int] = set()
    conn.execute("BEGIN IMMEDIATE")
    try:
        index = 0
        while index < len(statements):
            sql = statements[index][0]
            end = index + 1
            while end < len(statements) and statements[end][0] == sql:
                end += 1
            run = statements[index:end]
            if isinstance(run[0][2], Insert | InsertIfAbsent) or run[0][2] is None:
                _insert_run(conn, sql, run)
            else:
                if any(_must_apply(c) or id(c) in watched for _, _, c in run):
                    skipped |= _apply_each(conn, run)
                    index = end
                    continue
                cursor = conn.executemany(sql, [params for _, params, _ in run]) \
                    if len(run) > 1 else conn.execute(sql, run[0][1])
                guarded = isinstance(run[0][2], Update) and run[0][2].only_if is not None
                if cursor.rowcount < len(run) and not guarded:
                    raise NotFound(_missing(conn, run), field="id")
            index = end
        applied = [entry for entry, update in conditional if id(update) not in skipped]
        if applied:
            _insert_run(conn, applied[0][0], applied)
        _check_guards(conn, guards)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def create_private(path: str) -> None:
    """Creates a missing database file empty (a valid SQLite database) with mode 0600,
    before SQLite opens it: SQLite would create it with 0644 under the usual umask, and
    it holds password hashes and webhook secrets (``backup`` writes 0600 for the same
    reason). SQLite gives the ``-wal`` and ``-shm`` files the main file's mode. A file
    that exists keeps the mode its admin gave it."""
    with contextlib.suppress(FileExistsError):  # there already, or made meanwhile
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


log = logging.getLogger("chargegraph.store.sqlite")


async def _heal_at_start(conn: aiosqlite.Connection) -> None:
    """``migrations.HEAL_CP_ID_KEYS`` at a start, on the migrating connection (its own
    transaction: autocommit). Not the start's to fail on: a round later does it."""
    try:
        healed = (await conn.execute(HEAL_CP_ID_KEYS)).rowcount
    except sqlite3.Error:
        log.warning("giving stations their cpId's key failed; retrying later",
                    exc_info=True)
        return
    if healed > 0:
        log.info("gave %d stations an older build wrote their cpId's key", healed)

#: How often an open store gives stations an older build wrote their cpId's key
#: (``migrations.HEAL_CP_ID_KEYS``), as MongoDB's sweep does (``SWEEP_EVERY_S``).
HEAL_EVERY_S = 60.0


class SqliteStore:
    """The Store port on one SQLite file (``path``), in WAL mode.

    ``busy_timeout`` (seconds) is how long a statement waits for another process holding
    the write lock (a CLI command next to the server) before failing. ``heal_every``:
    seconds between rounds giving stations an instance of an older build wrote their
    cpId's key (``migrations.HEAL_CP_ID_KEYS``; ``None``: only at start).
    """

    #: Reads run inline on the event loop (or, when slow, one at a time on one thread):
    #: started together, they would still run one after the other.
    overlapping_reads = False
    reads_in_flight = False  # Store.reads_in_flight

    def __init__(self, path: str, *, busy_timeout: float = 5.0,
                 heal_every: float | None = HEAL_EVERY_S) -> None:
        if path == ":memory:" or not path:
            # Two connections to ":memory:" would be two different databases.
            raise ValueError("SqliteStore needs a database file path")
        self.path = path
        self.busy_timeout = busy_timeout
        self._heal_every = heal_every
        self._healer: asyncio.Task[None] | None = None
        self._writer: Writer | None = None
        self._reader: aiosqlite.Connection | None = None
        self._inline: InlineReader | None = None
        self._write_lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._writer is not None:
            return
        create_private(self.path)
        migrator = await self._connect()
        try:
            # Persistent in the file; only the first start actually switches the mode
            # (also a restored file's, which two instances may start on at once).
            await waiting_for_the_lock(migrator, "PRAGMA journal_mode = WAL")
            await apply_migrations(migrator)
            await _heal_at_start(migrator)
        finally:
            await migrator.close()
        writer = Writer(self.path, busy_timeout=self.busy_timeout)
        # A ``Guard`` is a filter run inside the write transaction: any filter a read may
        # use (a search, a distance) must run there too.
        writer.open(SQL_FUNCTIONS)
        try:
            reader = await self._connect()
        except BaseException:
            await writer.close()
            raise
        try:
            inline = open_inline_reader(self.path, SQL_FUNCTIONS)
        except BaseException:
            await reader.close()
            await writer.close()
            raise
        self._writer, self._reader, self._inline = writer, reader, inline
        # One an instance that stopped left owed (``Writer.scrub_if_owed``).
        writer.scrub_if_owed()
        if self._heal_every is not None:
            self._healer = asyncio.create_task(self._heal_forever(self._heal_every),
                                               name="chargegraph-sqlite-cp-id-keys")

    async def _heal_forever(self, every: float) -> None:
        # Stations an instance of an older build writes while this one runs (a rolling
        # upgrade): found by a charger in other case within a round, not at the next start.
        while True:
            await asyncio.sleep(every)
            await self._heal_cp_id_keys()

    async def _heal_cp_id_keys(self) -> None:
        """``migrations.HEAL_CP_ID_KEYS`` in a transaction of its own. A round that
        fails (the file busy, the disk full) is the next one's to do: neither a start
        nor the rounds depend on it."""
        writer = self._writer_conn()
        try:
            async with self._write_lock:
                healed = await writer.run(lambda conn: conn.execute(HEAL_CP_ID_KEYS).rowcount)
        except Exception:
            log.warning("giving stations their cpId's key failed; retrying later",
                        exc_info=True)
            return
        if healed:
            log.info("gave %d stations an older build wrote their cpId's key", healed)

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: no implicit transactions from the sqlite3 module; every
        # transaction here is an explicit BEGIN IMMEDIATE.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            # NORMAL under WAL: a commit is durable once the WAL is synced at checkpoint;
            # a power cut may lose the last commits but never corrupts the database.
            await conn.execute("PRAGMA synchronous = NORMAL")
            # Migrations delete and rewrite rows too (``writer.SECURE_DELETE``).
            await conn.execute(f"PRAGMA secure_delete = {SECURE_DELETE}")
            for name, arity, function in SQL_FUNCTIONS:
                await conn.create_function(name, arity, function, deterministic=True)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def close(self) -> None:
        if self._healer is not None:
            self._healer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._healer
            self._healer = None
        writer, reader, inline = self._writer, self._reader, self._inline
        self._writer = self._reader = self._inline = None
        if inline is not None:
            inline.close()
        if reader is not None:
            await reader.close()
        if writer is not None:
            await writer.close()

    async def ping(self) -> bool:
        return await self.health() is None

    async def health(self) -> str | None:
        """Whether the database answers a read of a real table (``SELECT 1`` would not
        touch the file), its file is still where it was opened, and its last write
        transaction did not fail in the database (disk full, I/O error, corruption)."""
        if self._writer is None:
            return "the store is not open"
        problem = self._writer.problem()
        if problem is not None:
            return problem
        try:
            rows = await self._read('SELECT COUNT(*) FROM "schema_version"', ())
        except (sqlite3.Error, ValueError, RuntimeError) as error:
            return f"the database does not answer: {error}"
        return None if len(rows) == 1 else "the database does not answer"

    # ------------------------------------------------------------------ reads
    async def _read(self, sql: str, params: Sequence[SqlValue]) -> list[Any]:
        if self._reader is None or self._inline is None:
            raise RuntimeError("SqliteStore is not started")
        rows = self._inline.try_read(sql, params)
        if rows is not None:
            return rows
        return list(await self._reader.execute_fetchall(sql, tuple(params)))

    async def get_many(
        self, kind: type[E], ids: Sequence[str], where: Filter = ALL
    ) -> list[E | None]:
        wanted = list(dict.fromkeys(i for i in ids if isinstance(i, str)))
        if not wanted:
            return [None] * len(ids)
        where_sql, params = compile_where(kind, where)
        # One JSON array parameter instead of one "?" per id: a single statement whatever
        # the batch size (no SQLITE_MAX_VARIABLE_NUMBER limit to chunk around).
        rows = await self._read(
            f"SELECT {_select_list(kind)} FROM {_from(kind)} "
            f"WHERE t0.\"id\" IN (SELECT value FROM json_each(?)) AND {where_sql}",
            [_json_array(wanted), *params],
        )
        found = {record.id: record for record in (from_row(kind, row) for row in rows)}
        return [found.get(i) if isinstance(i, str) else None for i in ids]

    async def get_committed(self, kind: type[E], ids: Sequence[str]) -> list[E | None]:
        # Reads see only committed transactions here.
        return await self.get_many(kind, ids)

    async def find_one(self, kind: type[E], where: Filter) -> E | None:
        # The first match in id order (the port's rule; MongoDB's too): without ORDER BY
        # SQLite returned whichever row its plan met first. The hot paths look up a
        # unique key (a session's transaction id, a station's cpId, a card's tag), whose
        # plan stays the same index search; other lookups sort only their own matches.
        where_sql, params = compile_where(kind, where)
        rows = await self._read(
            f"SELECT {_select_list(kind)} FROM {_from(kind)} WHERE {where_sql} "
            f'ORDER BY t0."id" LIMIT 1', params
        )
        return from_row(kind, rows[0]) if rows else None

    async def find_all(
        self, kind: type[E], where: Filter, sort: Sequence[Sort] = (), limit: int = 1000
    ) -> list[E]:
        if limit <= 0:
            return []
        where_sql, params = compile_where(kind, where)
        order, order_params = paging.order_by(kind, sort)
        rows = await self._read(
            f"SELECT {_select_list(kind)} FROM {_from(kind)} WHERE {where_sql} "
            f"ORDER BY {order} LIMIT ?",
            [*params, *order_params, limit],
        )
        return [from_row(kind, row) for row in rows]

    async def aggregate(self, kind: type[E], where: Filter, group: Sequence[Group],
                        metrics: Mapping[str, Metric]) -> list[dict[str, Any]]:
        sql, params = aggregate.build_query(kind, where, group, metrics)
        rows = await self._read(sql, params)
        return [aggregate.decode_row(kind, group, metrics, row) for row in rows]

    async def count(self, kind: type[E], where: Filter) -> int:
        where_sql, params = compile_where(kind, where)
        rows = await self._read(f"SELECT COUNT(*) FROM {_from(kind)} WHERE {where_sql}", params)
        return int(rows[0][0])

    async def find_page(
        self, kind: type[E], where: Filter, sort: Sequence[Sort], page: PageRequest
    ) -> Page[E]:
        sort = list(sort)
        where_sql, params = compile_where(kind, where)
        conditions = [where_sql]
        # Relay: both cursors bound the list, then first/last cut it.
        after = (paging.decode(page.after, kind, sort, "after", page.within)
                 if page.after else None)
        before = (paging.decode(page.before, kind, sort, "before", page.within)
                  if page.before else None)
        for key, is_after, name in ((after, True, "after"), (before, False, "before")):
            if key is not None:
                sql, extra = paging.beyond(kind, sort, key, after=is_after, field=name)
                conditions.append(sql)
                params.extend(extra)
        backward, limit = page.backward, page.limit
        # A backward page is the first `last` rows of the reversed order, flipped back.
        # One row more than asked tells whether there is more beyond the page.
        order, order_params = paging.order_by(kind, sort, reverse=backward)
        rows = await self._read(
            f"SELECT {_select_list(kind)} FROM {_from(kind)} WHERE {' AND '.join(conditions)} "
            f"ORDER BY {order} LIMIT ?",
            [*params, *order_params, limit + 1],
        )
        items = [from_row(kind, row) for row in rows[:limit]]
        more = len(rows) > limit
        if backward:
            items.reverse()
        return Page(
            items=items,
            cursors=[paging.cursor_of(item, sort, page.within) for item in items],
            # Across a cursor, Relay lets us answer "there is something" without looking:
            # the row the cursor came from is there (or was, a moment ago).
            has_next=before is not None if backward else more,
            has_previous=more if backward else after is not None,
        )

    async def find_grouped(
        self,
        kind: type[E],
        key_field: str,
        keys: Sequence[Any],
        where: Filter,
        sort: Sequence[Sort],
        limit: int,
    ) -> dict[Any, list[E]]:
        key_col, originals, keys_param = self._group_keys(kind, key_field, keys)
        if not originals or limit <= 0:
            return {}
        where_sql, params = compile_where(kind, where)
        n = len(columns(kind))
        table = quote(kind.kind)
        outer = ", ".join(column("r", name) for name in columns(kind))
        # One query for the whole batch: for every key, a correlated subquery takes the
        # first `limit` rows in sort order (an index range scan that stops at the limit).
        # It replaced ROW_NUMBER() OVER (PARTITION BY key), which numbered every matching
        # row and sorted twice: 3x slower on a page of 100 stations' connectors.
        # (Every entity table is a rowid table; rowid is the cheapest join back.)
        inner_order, inner_params = paging.order_by(kind, sort)
        outer_order, outer_params = paging.order_by(kind, sort, alias="r")
        rows = await self._read(
            f"SELECT {outer}, {column('r', spec_of(kind, key_field).name)} AS _key "
            f"FROM json_each(?) AS k JOIN {table} AS r ON r.rowid IN ("
            f"SELECT t0.rowid FROM {table} AS t0 WHERE {key_col} = k.value AND {where_sql} "
            f"ORDER BY {inner_order} LIMIT ?) "
            f"ORDER BY k.key, {outer_order}",
            [keys_param, *params, *inner_params, limit, *outer_params],
        )
        out: dict[Any, list[E]] = {}
        for row in rows:
            out.setdefault(originals.get(row[n], row[n]), []).append(from_row(kind, row[:n]))
        return out

    async def count_grouped(
        self, kind: type[E], key_field: str, keys: Sequence[Any], where: Filter
    ) -> dict[Any, int]:
        key_col, originals, keys_param = self._group_keys(kind, key_field, keys)
        if not originals:
            return {}
        where_sql, params = compile_where(kind, where)
        rows = await self._read(
            f"SELECT {key_col}, COUNT(*) FROM {_from(kind)} "
            f"WHERE {key_col} IN (SELECT value FROM json_each(?)) AND {where_sql} "
            f"GROUP BY {key_col}",
            [keys_param, *params],
        )
        return {originals.get(key, key): int(n) for key, n in rows}

    @staticmethod
    def _group_keys(kind: type[Record], key_field: str, keys: Sequence[Any]
                    ) -> tuple[str, dict[SqlValue, Any], str]:
        """The key column, the caller's key objects by stored value (the result is keyed by
        what the caller passed in), and the stored values as one JSON parameter."""
        spec = spec_of(kind, key_field)
        originals: dict[SqlValue, Any] = {}
        for key in keys:
            if key is not None:
                originals.setdefault(encode(spec, key), key)
        return column("t0", spec.name), originals, _json_array(list(originals))

    # ------------------------------------------------------------------ writes
    async def write(self, changes: Sequence[Change], audit: Sequence[Audit],
                    guards: Sequence[Guard] = ()) -> None:
        # Encode everything before taking the lock: a bad value fails before BEGIN.
        statements = [self._statement(change) for change in changes]
        entries, depending = audit_parts(changes, audit)
        statements += [(_insert_sql(AuditEntry), to_row(entry), None) for entry in entries]
        conditional = [((_insert_sql(AuditEntry), to_row(entry), None), update)
                       for entry, update in depending]
        if not statements and not guards:
            return
        writer = self._writer_conn()
        async with self._write_lock:
            try:
                await writer.run(
                    lambda conn: _apply_batch(conn, statements, guards, conditional))
            except sqlite3.IntegrityError as exc:
                violation = unique_violation(exc)
                if violation is None:
                    raise
                raise violation from exc

    @staticmethod
    def _statement(change: Change) -> _Statement:
        kind = _checked(change.record)
        if isinstance(change, Insert):
            return _insert_sql(kind), to_row(change.record), change
        if isinstance(change, InsertIfAbsent):
            # Only a repeated id is ignored: any other unique rule still raises.
            return (_insert_sql(kind) + ' ON CONFLICT ("id") DO NOTHING',
                    to_row(change.record), change)
        if isinstance(change, Update):
            if change.required and change.only_if is None:
                raise ValueError("required needs only_if")
            if change.fields is not None:
                sql, params = _partial_update(change.record, change.fields,
                                              change.conditions())
                return sql, params, change
            if change.only_if is not None:
                raise ValueError("only_if needs the fields to write")
            return _update_sql(kind), _update_params(change.record), change
        if isinstance(change, Delete):
            if change.only_if is None:
                return (f'DELETE FROM {quote(kind.kind)} WHERE "id" = ?',
                        (change.record.id,), change)
            guard = change.conditions()
            # IS, not =: as an update's guard (the value may be NULL).
            condition = "".join(f" AND {quote(field)} IS ?" for field, _ in guard)
            return (f'DELETE FROM {quote(kind.kind)} WHERE "id" = ?{condition}',
                    (change.record.id,
                     *(encode(spec_of(kind, field), value) for field, value in guard)),
                    change)
        raise TypeError(f"not a change: {change!r}")

    async def next_sequence(self, name: str) -> int:
        writer = self._writer_conn()
        # Under the write lock so it never runs inside another coroutine's open
        # transaction on the shared writer connection (and gets rolled back with it).
        async with self._write_lock:
            # One statement in autocommit mode: its own transaction, complete once all
            # its rows are fetched.
            rows = await writer.run(lambda conn: conn.execute(
                'INSERT INTO "sequence" ("name", "value") VALUES (?, 1) '
                'ON CONFLICT ("name") DO UPDATE SET "value" = "value" + 1 RETURNING "value"',
                (name,),
            ).fetchall())
        return int(rows[0][0])

    async def sequence_value(self, name: str) -> int:
        rows = await self._read('SELECT "value" FROM "sequence" WHERE "name" = ?', (name,))
        return int(rows[0][0]) if rows else 0

    async def scrub(self) -> None:
        """Old page images cut from the ``-wal`` file (``Writer.scrub``: a PASSIVE
        checkpoint then a TRUNCATE off the event loop, tried again in the background
        while a reader of an older snapshot blocks it), recorded as owed in the database
        first so that no instance stopping drops it (``owe_scrub``); what was freed in
        the database file was zeroed when it was freed (``secure_delete``)."""
        writer = self._writer_conn()
        async with self._write_lock:
            await writer.run(owe_scrub)
        await writer.scrub()

    def _writer_conn(self) -> Writer:
        if self._writer is None:
            raise RuntimeError("SqliteStore is not started")
        return self._writer
