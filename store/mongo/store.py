"""``domain.ports.Store`` on MongoDB with PyMongo's async API (``AsyncMongoClient``).

No multi-document transactions are assumed (standalone servers have none). A write batch
is made all-or-nothing with an undo journal instead: before touching anything, the batch's
before-images go into ``_journal``; then the changes and their audit entries are written;
then the journal entry is deleted. If a change fails, the applied ones are undone at once;
if the process dies half-way, ``start()`` undoes what the journal still lists. Readers may
glimpse a batch in flight, but nothing half-written stays.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from domain.aggregation import Group, Metric
from domain.entities import AuditEntry, E, Record
from domain.errors import NotFound, UniqueViolation
from domain.ports import (
    PARTIAL_UNIQUE_RULES,
    UNIQUE_RULES,
    Change,
    Delete,
    Insert,
    InsertIfAbsent,
    Update,
)
from domain.query import ALL, Filter, Page, PageRequest, Sort, decode_cursor, encode_cursor
from store.mongo import aggregate
from store.mongo.codec import compared, from_doc, shadow, spec_of, storage_name, to_doc
from store.mongo.query import NEVER, FilterCompiler, beyond, sort_spec

log = logging.getLogger("chargegraph.store.mongo")

JOURNAL = "_journal"
COUNTERS = "_counters"

#: Lookup indexes besides the unique ones: foreign keys and time series.
INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    "user": [[("company_id", ASCENDING)]],
    "vehicle": [[("owner_id", ASCENDING)]],
    "id_tag": [[("user_id", ASCENDING)], [("vehicle_id", ASCENDING)]],
    "station": [[("company_id", ASCENDING)], [("owner_id", ASCENDING)],
                [("lat", ASCENDING)], [("online", ASCENDING)]],
    "connector": [[("station_id", ASCENDING), ("connector_id", ASCENDING)]],
    "session": [[("station_id", ASCENDING), ("start_time", DESCENDING)],
                [("user_id", ASCENDING), ("start_time", DESCENDING)],
                [("vehicle_id", ASCENDING)], [("cp_id", ASCENDING), ("state", ASCENDING)],
                [("id_tag", ASCENDING), ("state", ASCENDING)]],
    "meter_sample": [[("session_id", ASCENDING), ("at", ASCENDING)],
                     [("cp_id", ASCENDING), ("at", ASCENDING)], [("at", ASCENDING)]],
    "status_event": [[("cp_id", ASCENDING), ("connector_id", ASCENDING), ("at", ASCENDING)],
                     [("station_id", ASCENDING), ("at", ASCENDING)]],
    "connection_event": [[("station_id", ASCENDING), ("at", ASCENDING)]],
    "connector_interval": [[("station_id", ASCENDING), ("start", ASCENDING)],
                           [("cp_id", ASCENDING), ("connector_id", ASCENDING),
                            ("end", ASCENDING)], [("start", ASCENDING)]],
    "reservation": [[("station_id", ASCENDING)], [("user_id", ASCENDING)]],
    "tariff": [[("station_id", ASCENDING), ("valid_from", DESCENDING)],
               [("company_id", ASCENDING), ("valid_from", DESCENDING)]],
    "payment": [[("station_id", ASCENDING)], [("user_id", ASCENDING)]],
    "audit_entry": [[("entity_id", ASCENDING), ("at", DESCENDING)],
                    [("actor", ASCENDING), ("at", DESCENDING)], [("at", DESCENDING)]],
}


def _index_name(kind: str, fields: Sequence[str], partial: bool = False) -> str:
    return f"uniq_{kind}_{'_'.join(fields)}{'_active' if partial else ''}"


_RULE_BY_INDEX: dict[str, tuple[str, str]] = {}
for _kind, _rules in UNIQUE_RULES.items():
    for _fields in _rules:
        _RULE_BY_INDEX[_index_name(_kind, _fields)] = (_kind, _fields[0])
for _kind, _partials in PARTIAL_UNIQUE_RULES.items():
    for _fields, _condition in _partials:
        # One active session per connector: the connector is what is taken.
        _RULE_BY_INDEX[_index_name(_kind, _fields, True)] = (_kind, "connector_id")
_INDEX_IN_MESSAGE = re.compile(r"index:\s+(\S+)")


def _violation(kind: str, field: str) -> UniqueViolation:
    if field == "id":
        return UniqueViolation("a record with this id exists", field="id")
    return UniqueViolation(f"another {kind.replace('_', ' ')} has the same {field}",
                           field=field)


def rule_of(exc: DuplicateKeyError) -> tuple[str, str] | None:
    """(kind, field) of the unique index a server named in its error, if it did."""
    details = exc.details or {}
    match = _INDEX_IN_MESSAGE.search(str(details.get("errmsg", "")) or str(exc))
    name = match.group(1) if match else None
    if name in _RULE_BY_INDEX:
        return _RULE_BY_INDEX[name]
    if "_id" in (details.get("keyPattern") or {}) or name == "_id_":
        return ("", "id")
    return None


class MongoStore:
    def __init__(self, db: Any, client: Any = None) -> None:
        self.db = db
        self._client = client
        self._filters = FilterCompiler(db)

    @classmethod
    def connect(cls, url: str, database: str | None = None) -> MongoStore:
        from pymongo import AsyncMongoClient

        client: Any = AsyncMongoClient(url, tz_aware=True, appname="chargegraph")
        name = database or (client.get_default_database(default="chargegraph").name)
        return cls(client[name], client)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        for kind, rules in UNIQUE_RULES.items():
            for fields in rules:
                await self.db[kind].create_index([(f, ASCENDING) for f in fields], unique=True,
                                                 name=_index_name(kind, fields))
        for kind, partials in PARTIAL_UNIQUE_RULES.items():
            for fields, (cond_field, cond_value) in partials:
                await self.db[kind].create_index(
                    [(f, ASCENDING) for f in fields], unique=True,
                    name=_index_name(kind, fields, True),
                    partialFilterExpression={cond_field: cond_value})
        for kind, indexes in INDEXES.items():
            for keys in indexes:
                await self.db[kind].create_index(keys)
        await self._recover()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def ping(self) -> bool:
        result = await self.db.command("ping")
        return bool(result.get("ok"))

    # ------------------------------------------------------------------ reads
    async def _where(self, kind: type[Record], where: Filter) -> dict[str, Any]:
        return await self._filters.compile(kind, where)

    async def get_many(self, kind: type[E], ids: Sequence[str], where: Filter = ALL
                       ) -> list[E | None]:
        wanted = {str(i) for i in ids if ObjectId.is_valid(str(i))}
        if not wanted:
            return [None] * len(ids)
        scope = await self._where(kind, where)
        query: dict[str, Any] = {"_id": {"$in": [ObjectId(i) for i in wanted]}}
        if scope is NEVER:
            return [None] * len(ids)
        if scope:
            query = {"$and": [query, scope]}
        docs = await self.db[kind.kind].find(query).to_list(None)
        found = {str(doc["_id"]): from_doc(kind, doc) for doc in docs}
        return [found.get(str(i)) for i in ids]  # type: ignore[misc]

    async def find_one(self, kind: type[E], where: Filter) -> E | None:
        found = await self.find_all(kind, where, (), limit=1)
        return found[0] if found else None

    async def find_all(self, kind: type[E], where: Filter, sort: Sequence[Sort] = (),
                       limit: int = 1000) -> list[E]:
        query = await self._where(kind, where)
        if query is NEVER:
            return []
        cursor = self.db[kind.kind].find(query).sort(sort_spec(kind, sort)).limit(limit)
        return [from_doc(kind, doc) for doc in await cursor.to_list(None)]  # type: ignore[misc]

    async def aggregate(self, kind: type[E], where: Filter, group: Sequence[Group],
                        metrics: Mapping[str, Metric]) -> list[dict[str, Any]]:
        query = await self._where(kind, where)
        if query is NEVER:
            rows: list[dict[str, Any]] = []
        else:
            stages = aggregate.pipeline(kind, query, group, metrics)
            rows = await (await self.db[kind.kind].aggregate(stages)).to_list(None)
        if not group and not rows:
            rows = [{}]  # SQL's one row of zeros over no matches
        return [aggregate.decode_row(kind, group, metrics, row) for row in rows]

    async def count(self, kind: type[E], where: Filter) -> int:
        query = await self._where(kind, where)
        if query is NEVER:
            return 0
        return int(await self.db[kind.kind].count_documents(query))

    async def find_page(self, kind: type[E], where: Filter, sort: Sequence[Sort],
                        page: PageRequest) -> Page[E]:
        query = await self._where(kind, where)
        if query is NEVER:
            return Page([], [], False, False)
        parts = [query] if query else []
        for cursor_value, is_after, field in ((page.after, True, "after"),
                                              (page.before, False, "before")):
            if cursor_value is not None:
                key = decode_cursor(cursor_value, sort, field)
                parts.append(beyond(kind, sort, key, after=is_after, field=field))
        combined = {"$and": parts} if len(parts) > 1 else (parts[0] if parts else {})
        backward = page.backward
        limit = page.limit
        cursor = self.db[kind.kind].find(combined).sort(sort_spec(kind, sort, backward))
        docs = await cursor.limit(limit + 1).to_list(None)
        more = len(docs) > limit
        docs = docs[:limit]
        if backward:
            docs.reverse()
        items: list[E] = [from_doc(kind, doc) for doc in docs]  # type: ignore[misc]
        cursors = [encode_cursor(sort, [getattr(r, s.field) for s in sort], r.id)
                   for r in items]
        if backward:
            return Page(items, cursors, has_next=page.before is not None, has_previous=more)
        return Page(items, cursors, has_next=more, has_previous=page.after is not None)

    async def find_grouped(self, kind: type[E], key_field: str, keys: Sequence[Any],
                           where: Filter, sort: Sequence[Sort], limit: int
                           ) -> dict[Any, list[E]]:
        spec = spec_of(kind, key_field)
        originals = {compared(spec, k): k for k in keys if k is not None}
        if not originals or limit <= 0:
            return {}
        query = await self._where(kind, where)
        if query is NEVER:
            return {}
        key_name = shadow(spec)
        match: dict[str, Any] = {key_name: {"$in": list(originals)}}
        if query:
            match = {"$and": [match, query]}
        pipeline = [
            {"$match": match},
            {"$sort": dict(sort_spec(kind, sort))},
            {"$group": {"_id": f"${key_name}", "docs": {"$push": "$$ROOT"}}},
            {"$project": {"docs": {"$slice": ["$docs", limit]}}},
        ]
        rows = await (await self.db[kind.kind].aggregate(pipeline)).to_list(None)
        return {originals[row["_id"]]: [from_doc(kind, d) for d in row["docs"]]  # type: ignore[misc]
                for row in rows if row["_id"] in originals}

    async def count_grouped(self, kind: type[E], key_field: str, keys: Sequence[Any],
                            where: Filter) -> dict[Any, int]:
        spec = spec_of(kind, key_field)
        originals = {compared(spec, k): k for k in keys if k is not None}
        if not originals:
            return {}
        query = await self._where(kind, where)
        if query is NEVER:
            return {}
        key_name = shadow(spec)
        match: dict[str, Any] = {key_name: {"$in": list(originals)}}
        if query:
            match = {"$and": [match, query]}
        pipeline = [{"$match": match}, {"$group": {"_id": f"${key_name}", "n": {"$sum": 1}}}]
        rows = await (await self.db[kind.kind].aggregate(pipeline)).to_list(None)
        return {originals[row["_id"]]: int(row["n"]) for row in rows
                if row["_id"] in originals}

    # ------------------------------------------------------------------ writes
    async def write(self, changes: Sequence[Change], audit: Sequence[AuditEntry]) -> None:
        if not changes and not audit:
            return
        if len(changes) == 1 and not audit:
            await self._apply(changes[0])  # one document: atomic by itself
            return
        undo: list[dict[str, Any]] = []
        touched: set[tuple[str, str]] = set()  # documents this batch already has undo for
        for change in changes:
            record = change.record
            key = (record.kind, record.id)
            if key in touched:
                continue  # the earliest before-image is the one to restore
            touched.add(key)
            before = await self.db[record.kind].find_one({"_id": ObjectId(record.id)})
            if isinstance(change, InsertIfAbsent) and before is not None:
                continue  # already there: nothing to do, nothing to undo
            undo.append({"kind": record.kind, "id": ObjectId(record.id), "before": before})
        journal_id = ObjectId()
        journal: dict[str, Any] = {"_id": journal_id, "undo": undo,
                                   "audit": [ObjectId(a.id) for a in audit]}
        await self.db[JOURNAL].insert_one(journal)
        applied = 0
        try:
            for change in changes:
                await self._apply(change)
                applied += 1
            if audit:
                await self.db["audit_entry"].insert_many([to_doc(a) for a in audit],
                                                         ordered=True)
        except BaseException:
            await self._undo(undo, [ObjectId(a.id) for a in audit])
            await self.db[JOURNAL].delete_one({"_id": journal_id})
            raise
        await self.db[JOURNAL].delete_one({"_id": journal_id})

    async def _apply(self, change: Change) -> None:
        record = change.record
        collection = self.db[record.kind]
        try:
            if isinstance(change, Insert):
                await collection.insert_one(to_doc(record))
            elif isinstance(change, InsertIfAbsent):
                try:
                    await collection.insert_one(to_doc(record))
                except DuplicateKeyError as exc:
                    if "_id" not in ((exc.details or {}).get("keyPattern") or {"_id": 1}):
                        raise
                    existing = await collection.find_one({"_id": ObjectId(record.id)})
                    if existing is None:  # another unique rule, not the id
                        raise
            elif isinstance(change, Update):
                doc = to_doc(record)
                if change.fields is None:
                    result = await collection.replace_one({"_id": ObjectId(record.id)}, doc)
                else:
                    names = {storage_name(f) for f in change.fields}
                    names |= {f"_n_{f}" for f in change.fields if f"_n_{f}" in doc}
                    if record.kind == "station" and {"lat", "lon"} & change.fields:
                        names.add("_geo")
                    values = {k: v for k, v in doc.items() if k in names}
                    result = await collection.update_one({"_id": ObjectId(record.id)},
                                                         {"$set": values})
                if result.matched_count == 0:
                    raise NotFound(f"no such {record.kind.replace('_', ' ')}: {record.id}",
                                   field="id")
            elif isinstance(change, Delete):
                result = await collection.delete_one({"_id": ObjectId(record.id)})
                if result.deleted_count == 0:
                    raise NotFound(f"no such {record.kind.replace('_', ' ')}: {record.id}",
                                   field="id")
            else:
                raise TypeError(f"not a change: {change!r}")
        except DuplicateKeyError as exc:
            inserting = isinstance(change, Insert | InsertIfAbsent)
            raise await self._explain(record, exc, inserting=inserting) from exc

    async def _explain(self, record: Record, exc: DuplicateKeyError, *, inserting: bool
                       ) -> UniqueViolation:
        """Which rule the unique index enforced. A real server names the index; mongomock
        does not, so then the clashing record is looked up (to report, not to enforce)."""
        known = rule_of(exc)
        if known is not None:
            return _violation(record.kind, known[1])
        doc = to_doc(record)
        collection = self.db[record.kind]
        if inserting and await collection.find_one({"_id": doc["_id"]}) is not None:
            return _violation(record.kind, "id")
        others = {"_id": {"$ne": doc["_id"]}}
        for fields in UNIQUE_RULES.get(record.kind, ()):
            if await collection.find_one({**others, **{f: doc[f] for f in fields}}):
                return _violation(record.kind, fields[0])
        for fields, (cond_field, cond_value) in PARTIAL_UNIQUE_RULES.get(record.kind, ()):
            if doc.get(cond_field) == cond_value and await collection.find_one(
                    {**others, cond_field: cond_value, **{f: doc[f] for f in fields}}):
                return _violation(record.kind, "connector_id")
        return UniqueViolation("a unique rule rejected the change")

    async def _undo(self, undo: list[dict[str, Any]], audit_ids: list[ObjectId]) -> None:
        """Restore every listed document to its before-image (idempotent)."""
        if audit_ids:
            await self.db["audit_entry"].delete_many({"_id": {"$in": audit_ids}})
        for entry in reversed(undo):
            collection = self.db[entry["kind"]]
            if entry["before"] is None:
                await collection.delete_one({"_id": entry["id"]})
            else:
                await collection.replace_one({"_id": entry["id"]}, entry["before"],
                                             upsert=True)

    async def _recover(self) -> None:
        """Undo batches a crash interrupted (their journal entries are still here)."""
        left = await self.db[JOURNAL].find({}).to_list(None)
        for journal in left:
            log.warning("undoing a write batch interrupted by a crash (%d changes)",
                        len(journal["undo"]))
            await self._undo(journal["undo"], journal.get("audit", []))
            await self.db[JOURNAL].delete_one({"_id": journal["_id"]})

    async def next_sequence(self, name: str) -> int:
        doc = await self.db[COUNTERS].find_one_and_update(
            {"_id": name}, {"$inc": {"value": 1}}, upsert=True,
            return_document=ReturnDocument.AFTER)
        return int(doc["value"])


