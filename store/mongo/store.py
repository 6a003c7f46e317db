"""``domain.ports.Store`` on MongoDB with PyMongo's async API (``AsyncMongoClient``).

One collection per entity kind, documents as ``store/mongo/codec.py`` describes, filters
compiled by ``query.py``, analytics by ``aggregate.py``. No multi-document transactions are
assumed (standalone servers have none): a write batch is made all-or-nothing by the undo
journal in ``journal.py`` (written by ``batch.py``); unique rules are unique indexes
(``indexes.py``). A server outage leaves every read and write as ``StoreUnavailable``
(``outage.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pymongo
from bson import SON, ObjectId
from pymongo import ReturnDocument
from pymongo.errors import ConfigurationError, PyMongoError

from domain.aggregation import Group, Metric
from domain.entities import E, Record
from domain.ports import Audit, Change, Guard
from domain.query import ALL, Filter, Page, PageRequest, Sort, decode_cursor, encode_cursor
from store.fields import FieldSpec, changed_meanwhile
from store.mongo import aggregate, batch, journal, writes
from store.mongo.codec import compared, from_doc, shadow, spec_of
from store.mongo.indexes import ensure_indexes
from store.mongo.migrations import (
    SCHEMA_VERSION,
    Steps,
    before_indexes,
    check_schema,
    claim_schema,
    from_primary,
    heal_cp_id_keys,
    heal_search_shadows,
    migrate,
    new_database,
)
from store.mongo.outage import client_options, mapping_outages
from store.mongo.query import (
    Query,
    all_of,
    beyond,
    compile_query,
    computed_keys,
    computed_name,
    sort_spec,
    storable,
)

log = logging.getLogger("chargegraph.store.mongo")

COUNTERS = "_counters"
#: A health check answers quickly, also when the server is gone (instead of waiting out
#: the server selection timeout, ``outage.DEFAULT_TIMEOUTS_MS``).
PING_TIMEOUT_S = 3.0
#: The per-key reads of one grouped load in flight at once: enough to overlap their round
#: trips, few enough to leave most of the connection pool (100) to other requests.
GROUPED_READS_IN_FLIGHT = 16
#: The oldest MongoDB the store runs on: a read with a sub-select joins by a ``$lookup``
#: with ``localField``/``foreignField`` *and* a ``pipeline`` (``query.Query.pipeline``),
#: which servers before 5.0 refuse.
MIN_SERVER_VERSION = (5, 0)


class ServerTooOld(ConfigurationError):
    """The MongoDB server is older than ``MIN_SERVER_VERSION``. A configuration error
    (PyMongo's), so a start fails with one line naming it (``chargegraph/startup.py``)
    instead of every scoped read failing later."""


async def check_server_version(db: Any) -> None:
    """Refuses a server older than ``MIN_SERVER_VERSION`` (``buildInfo``, which needs no
    privilege)."""
    info = await db.command("buildInfo")
    found = _version_of(info)
    if found < MIN_SERVER_VERSION:
        wanted = ".".join(map(str, MIN_SERVER_VERSION))
        raise ServerTooOld(f"MongoDB {info.get('version', 'of unknown version')} is too old: "
                           f"ChargeGraph needs MongoDB {wanted} or later")


def _version_of(info: Mapping[str, Any]) -> tuple[int, ...]:
    """(major, minor) of a ``buildInfo`` answer: its ``versionArray``, else its
    ``version`` text ("7.0.14", "8.0.0-rc3")."""
    parts = info.get("versionArray")
    if not parts:
        text = str(info.get("version") or "0.0")
        parts = [int(p) if p.isdigit() else 0
                 for p in text.split("-")[0].split(".")]
    return tuple(int(part) for part in list(parts)[:2])


#: Seconds between rounds of ``migrations.heal_search_shadows`` besides the one at each
#: start (only while the store sweeps periodically: ``sweep_every``).
HEAL_EVERY_S = 3600.0

#: The most stations without their cpId's key (``migrations.heal_cp_id_keys``) each
#: sweep gives theirs.
CP_ID_KEYS_PER_SWEEP = 1_000


class MongoStore:
    """``db`` is an async database (PyMongo's ``AsyncDatabase``, or the tests' mongomock
    adapter); ``client`` is closed by ``close()`` when given. ``sweep_every``: seconds
    between sweeps for batches a dead writer left (``None``: only at start); the same
    loop folds search shadows again hourly (``HEAL_EVERY_S``)."""

    #: Each read is a round trip to the server: started together, they overlap.
    overlapping_reads = True
    reads_in_flight = True  # Store.reads_in_flight

    def __init__(self, db: Any, client: Any = None, *,
                 sweep_every: float | None = journal.SWEEP_EVERY_S) -> None:
        self.db = db
        self._client = client
        self._sweep_every = sweep_every
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    def connect(cls, url: str, database: str | None = None) -> MongoStore:
        """A store on its own client; the database is ``database``, else the URL's path,
        else ``chargegraph``. Nothing is contacted before ``start()``."""
        client: Any = pymongo.AsyncMongoClient(url, tz_aware=True, appname="chargegraph",
                                               **client_options(url))
        name = database or client.get_default_database(default="chargegraph").name
        return cls(client[name], client)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Checks the server is recent enough (``check_server_version``), refuses a
        database a newer build claimed (``check_schema``), creates the indexes, rolls back
        batches a crash left and brings documents written under older rules up to date
        (``store/mongo/migrations.py``), then claims the database for this build's schema
        (``claim_schema``); idempotent."""
        await check_server_version(self.db)
        # What the start reads decides what it writes: read from the primary.
        db = from_primary(self.db)
        # Before anything else is written. The claim comes with the first step this
        # start runs (``_once``), so one that fails before (an index it cannot build)
        # leaves the database to the build that had it.
        await check_schema(db)
        # Each step said on an upgrade, a new database's only by the end line (as SQLite's).
        began, steps = time.monotonic(), Steps(say=not await new_database(db))
        await before_indexes(db, steps)
        await ensure_indexes(db)
        await self._sweep_once()
        await migrate(db, steps)
        # This build serves from here, writing documents by its rules: an older build
        # must not start on them, whether or not a step of this one was still to do.
        await claim_schema(db)
        if steps.ran:  # by this start: not another instance's steps meanwhile
            log.info("migrated the database to schema %d in %.2f s" if steps.say else
                     "created the database at schema %d in %.2f s", SCHEMA_VERSION,
                     time.monotonic() - began)
        if self._sweep_every is not None and (self._sweeper is None or self._sweeper.done()):
            self._sweeper = asyncio.create_task(self._sweep_forever(self._sweep_every),
                                                name="chargegraph-mongo-journal-sweep")

    async def _sweep_forever(self, every: float) -> None:
        # Another instance may die while this one runs: its batches go stale and are
        # rolled back here, not only when someone restarts.
        healed = time.monotonic()
        while True:
            await asyncio.sleep(every)
            await self._sweep_once()
            await self._cp_id_keys_once()
            if time.monotonic() - healed >= HEAL_EVERY_S:
                healed = time.monotonic()
                await self._heal_once()

    async def _heal_once(self) -> None:
        # Search shadows an instance of an earlier version folded by its rule after this
        # version's start folded them again (``migrations.heal_search_shadows``): a
        # failed round is the next hour's to do, not the end of the sweeping.
        try:
            await heal_search_shadows(from_primary(self.db))
        except Exception:
            log.warning("search shadow healing failed; retrying later", exc_info=True)

    async def _cp_id_keys_once(self) -> None:
        # Stations an instance of a build from before ``Station.cp_id_key`` wrote since
        # (a rolling upgrade): found by a charger in other case within a sweep, not at
        # the next start. An index lookup that finds none, as a rule.
        try:
            await heal_cp_id_keys(from_primary(self.db), CP_ID_KEYS_PER_SWEEP)
        except Exception:
            log.warning("giving stations their cpId's key failed; retrying later",
                        exc_info=True)

    async def _sweep_once(self) -> None:
        # Neither a start nor the sweeping depends on a sweep: what it cannot roll back
        # now stays in the journal for the next one (a server outage, which would fail a
        # start at its next step anyway, must not end the periodic sweeping for good).
        try:
            await journal.sweep(self.db)
        except Exception:
            log.warning("journal sweep failed; retrying later", exc_info=True)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._client is not None:
            await self._client.close()

    async def ping(self) -> bool:
        return await self.health() is None

    async def health(self) -> str | None:
        try:
            with pymongo.timeout(PING_TIMEOUT_S):
                result = await self.db.command("ping")
        except PyMongoError:
            # Unreachable, or the client is closed. The driver's text names hosts: not
            # for an unauthenticated health check.
            return "the database does not answer"
        return None if result.get("ok") else "the database does not answer"

    # ------------------------------------------------------------------ reads
    async def _read(self, kind: type[Record], query: Query, extra: dict[str, Any] | None = None,
                    sort: Sequence[tuple[str, int]] = (), limit: int | None = None
                    ) -> list[dict[str, Any]]:
        """The documents matching ``query`` and ``extra``: one ``find``, or an aggregation
        when the query joins (``query.py``)."""
        collection = self.db[kind.kind]
        if query.stages:
            return await self._aggregate(kind, query.pipeline(extra, sort, limit))
        cursor = collection.find(all_of(query.before, extra))
        if sort:
            cursor = cursor.sort(list(sort))
        if limit is not None:
            cursor = cursor.limit(limit)
        return list(await cursor.to_list(None))

    async def _aggregate(self, kind: type[Record], pipeline: list[dict[str, Any]]
                         ) -> list[dict[str, Any]]:
        """Runs ``pipeline`` on ``kind``'s collection. A stage that holds what passes
        through it (a ``$sort`` no index serves, a ``$group``) may write to disk past
        100 MB instead of failing the read (MongoDB 5.0 and before do not by default)."""
        cursor = await self.db[kind.kind].aggregate(pipeline, allowDiskUse=True)
        return list(await cursor.to_list(None))

    @mapping_outages
    async def get_many(self, kind: type[E], ids: Sequence[str], where: Filter = ALL
                       ) -> list[E | None]:
        wanted = {str(i) for i in ids if ObjectId.is_valid(str(i))}
        if not wanted:
            return [None] * len(ids)
        query = compile_query(kind, where)
        if query.never:
            return [None] * len(ids)
        docs = await self._read(kind, query, {"_id": {"$in": [ObjectId(i) for i in wanted]}})
        found = {str(doc["_id"]): from_doc(kind, doc) for doc in docs}
        return [found.get(str(i)) for i in ids]  # type: ignore[misc]

    @mapping_outages
    async def get_committed(self, kind: type[E], ids: Sequence[str]) -> list[E | None]:
        """The documents once no batch in flight (its journal still there) wrote them
        last: such a batch may yet roll back what it wrote, an insert among them. Waits
        for it as a batch waits for another (``journal.wait_settled``, up to
        ``journal.SETTLE_WAIT_S``; a dead writer's stale journal is swept at once), then
        reads again; ``Conflict`` CHANGED when it is still in flight by then."""
        wanted = [ObjectId(str(i)) for i in dict.fromkeys(ids) if ObjectId.is_valid(str(i))]
        if not wanted:
            return [None] * len(ids)
        deadline = time.monotonic() + journal.SETTLE_WAIT_S
        while True:
            docs = await self.db[kind.kind].find({"_id": {"$in": wanted}}).to_list(None)
            busy = await journal.in_flight(self.db, docs)
            if not busy:
                break
            if not await journal.wait_settled(self.db, busy, deadline - time.monotonic()):
                raise changed_meanwhile(kind.kind)
        found = {str(doc["_id"]): from_doc(kind, doc) for doc in docs}
        return [found.get(str(i)) for i in ids]  # type: ignore[misc]

    @mapping_outages
    async def find_one(self, kind: type[E], where: Filter) -> E | None:
        found = await self.find_all(kind, where, (), limit=1)
        return found[0] if found else None

    @mapping_outages
    async def find_all(self, kind: type[E], where: Filter, sort: Sequence[Sort] = (),
                       limit: int = 1000) -> list[E]:
        if limit <= 0:
            return []  # MongoDB reads limit(0) as "no limit"
        query = compile_query(kind, where)
        if query.never:
            return []
        docs = await self._sorted(kind, query, sort, limit=limit)
        return [from_doc(kind, doc) for doc in docs]  # type: ignore[misc]

    async def _sorted(self, kind: type[Record], query: Query, sort: Sequence[Sort], *,
                      limit: int, extra: dict[str, Any] | None = None,
                      positions: Sequence[dict[str, Any]] = (), reverse: bool = False
                      ) -> list[dict[str, Any]]:
        """The first ``limit`` documents matching ``query``, ``extra`` and the cursor
        ``positions`` in ``sort`` order (reversed). ``_read`` where every key is a stored
        field; with a distance key an aggregation that adds it (``computed_keys``) after
        the filter (whose latitude band uses its index), so the cursor compares it, and
        sorts by it: no index serves a distance, the ``Near`` filter bounds what is
        sorted."""
        order = sort_spec(kind, sort, reverse)
        computed = computed_keys(kind, sort)
        if not computed:
            return await self._read(kind, query, all_of(extra, *positions), order, limit)
        stages = query.pipeline(extra)
        stages.append({"$addFields": computed})
        if positions:
            stages.append({"$match": {"$and": list(positions)}})
        stages += [{"$sort": SON(order)}, {"$limit": limit}]
        return await self._aggregate(kind, stages)

    @mapping_outages
    async def aggregate(self, kind: type[E], where: Filter, group: Sequence[Group],
                        metrics: Mapping[str, Metric]) -> list[dict[str, Any]]:
        query = compile_query(kind, where)
        if query.never:
            rows: list[dict[str, Any]] = []
        else:
            stages = aggregate.pipeline(
                kind, query.pipeline(aggregate.bucketed(kind, group)), group, metrics)
            rows = await self._aggregate(kind, stages)
        if not group and not rows:
            rows = [{}]  # SQL's one row of zeros over no matches
        return [aggregate.decode_row(kind, group, metrics, row) for row in rows]

    @mapping_outages
    async def count(self, kind: type[E], where: Filter) -> int:
        query = compile_query(kind, where)
        if query.never:
            return 0
        if not query.stages:
            return int(await self.db[kind.kind].count_documents(query.before))
        pipeline = [*query.pipeline(), {"$count": "n"}]
        rows = await self._aggregate(kind, pipeline)
        return int(rows[0]["n"]) if rows else 0

    @mapping_outages
    async def find_page(self, kind: type[E], where: Filter, sort: Sequence[Sort],
                        page: PageRequest) -> Page[E]:
        query = compile_query(kind, where)
        if query.never:
            return Page([], [], False, False)
        positions = []
        for cursor_value, is_after, field in ((page.after, True, "after"),
                                              (page.before, False, "before")):
            if cursor_value is not None:
                key = decode_cursor(cursor_value, kind.kind, sort, field, page.within)
                positions.append(beyond(kind, sort, key, after=is_after, field=field))
        backward = page.backward
        limit = page.limit
        docs = await self._sorted(kind, query, sort, limit=limit + 1, positions=positions,
                                  reverse=backward)
        more = len(docs) > limit
        docs = docs[:limit]
        if backward:
            docs.reverse()
        items: list[E] = [from_doc(kind, doc) for doc in docs]  # type: ignore[misc]
        # A distance's cursor value is the one the server computed and compares (its
        # ``computed_keys`` field), not one recomputed here.
        cursors = [encode_cursor(kind.kind, sort,
                                 [doc[computed_name(i)] if s.origin is not None
                                  else getattr(r, s.field) for i, s in enumerate(sort)], r.id,
                                 page.within)
                   for r, doc in zip(items, docs, strict=True)]
        if backward:
            return Page(items, cursors, has_next=page.before is not None, has_previous=more)
        return Page(items, cursors, has_next=more, has_previous=page.after is not None)

    @mapping_outages
    async def find_grouped(self, kind: type[E], key_field: str, keys: Sequence[Any],
                           where: Filter, sort: Sequence[Sort], limit: int
                           ) -> dict[Any, list[E]]:
        # One find per key, each an index range that stops at ``limit`` (the key's index
        # ends with the sort and the ``_id`` tie-breaker), started together. A single
        # $group pushing every matching document would read each parent's whole history
        # (a server refuses a $push past 100 MiB: ~245k sessions on one station), and
        # $topN, which would not, is not in mongomock.
        spec = spec_of(kind, key_field)
        originals = _keyed(spec, keys)
        if not originals or limit <= 0:
            return {}
        query = compile_query(kind, where)
        if query.never:
            return {}
        in_flight = asyncio.Semaphore(GROUPED_READS_IN_FLIGHT)

        async def first_rows(value: Any) -> list[E]:
            async with in_flight:
                docs = await self._sorted(kind, query, sort, limit=limit,
                                          extra={shadow(spec): value})
            return [from_doc(kind, doc) for doc in docs]  # type: ignore[misc]

        found = await asyncio.gather(*(first_rows(value) for value in originals))
        return {originals[value]: rows
                for value, rows in zip(originals, found, strict=True) if rows}

    @mapping_outages
    async def count_grouped(self, kind: type[E], key_field: str, keys: Sequence[Any],
                            where: Filter) -> dict[Any, int]:
        spec = spec_of(kind, key_field)
        originals = _keyed(spec, keys)
        if not originals:
            return {}
        query = compile_query(kind, where)
        if query.never:
            return {}
        key_name = shadow(spec)
        pipeline = [*query.pipeline({key_name: {"$in": list(originals)}}),
                    {"$group": {"_id": f"${key_name}", "n": {"$sum": 1}}}]
        rows = await self._aggregate(kind, pipeline)
        return {originals[row["_id"]]: int(row["n"]) for row in rows
                if row["_id"] in originals}

    # ------------------------------------------------------------------ writes
    @mapping_outages
    async def write(self, changes: Sequence[Change], audit: Sequence[Audit],
                    guards: Sequence[Guard] = ()) -> None:
        if not changes and not audit:
            await self._check_guards(guards)
            return
        if len(changes) == 1 and not audit and not guards:
            await writes.apply(self.db, changes[0])  # one document: atomic by itself
            return
        check = (lambda: self._check_guards(guards)) if guards else None
        await batch.write(self.db, changes, audit, check)

    async def _check_guards(self, guards: Sequence[Guard]) -> None:
        """The guards, read once the batch has written everything and before its journal
        closes (``batch.Batch.run``); one that does not hold rolls the batch back.

        Without multi-document transactions this is no lock, and there is a window: a
        batch of another instance may change what a guard read between the read and the
        journal's close. Checking after the writes narrows it to what matters for the
        use cases' pairs of guarded writes (a session's insert guarded by its station's
        existence, the station's delete guarded by no active session on it): each
        writes first and reads second, so of two such batches at least one reads the
        other's write and fails (both may: a batch in flight is read before its
        rollback). A guard may thus fail on another batch's write that is rolled back
        later: the caller sees CHANGED and tries again."""
        for guard in guards:
            found = await self.find_one(guard.kind, guard.condition()) is not None
            if found != guard.exists:
                raise changed_meanwhile(guard.kind.kind)

    async def scrub(self) -> None:
        """Nothing to do: no document image outlives its write here. The journal keeps a
        batch's before-images (an erased person's name and email among them) only while
        the batch is in flight, and deletes them when it ends (``journal.close_batch``;
        a dead writer's by the sweep). What the server keeps of deleted or overwritten
        documents (WiredTiger's free blocks, a replica set's oplog until it rolls over) is
        the deployment's to bound: see "Erasing an account" in docs/architecture.md."""

    @mapping_outages
    async def next_sequence(self, name: str) -> int:
        doc = await self.db[COUNTERS].find_one_and_update(
            {"_id": name}, {"$inc": {"value": 1}}, upsert=True,
            return_document=ReturnDocument.AFTER)
        return int(doc["value"])

    @mapping_outages
    async def sequence_value(self, name: str) -> int:
        doc = await self.db[COUNTERS].find_one({"_id": name}, {"value": 1})
        return 0 if doc is None else int(doc["value"])


def _keyed(spec: FieldSpec, keys: Sequence[Any]) -> dict[Any, Any]:
    """The caller's keys by their stored form. Text that is no ObjectId in an id field is
    no stored key: nothing is found for it, as in SQLite (not a raw ``InvalidId``)."""
    return {compared(spec, key): key for key in keys
            if key is not None and storable(spec, key)}
