"""A thin async face over mongomock: exactly the subset of PyMongo's async API the MongoDB
store uses, so the store's real query documents run on mongomock's engine when no MongoDB
server is available.

Shapes follow PyMongo's async API: ``find`` is a plain call returning a cursor (``sort``,
``limit``, awaitable ``to_list``); ``aggregate`` is a coroutine returning a command cursor;
the other collection methods are coroutines. Anything else raises ``AttributeError``, so a
store change that needs more of the API shows up here instead of passing by accident.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from typing import Any

import mongomock
from bson import ObjectId
from mongomock import helpers as mongomock_helpers
from pymongo.errors import DuplicateKeyError

#: Collection methods that are coroutines in ``pymongo.asynchronous.collection``.
COROUTINES = frozenset({
    "insert_one", "insert_many", "replace_one", "update_one", "update_many", "delete_one",
    "delete_many",
    "find_one", "find_one_and_update", "count_documents", "distinct",
    "index_information", "drop_index",
})


async def _io(interleave: bool) -> None:
    """Where a real driver would wait for the server. With ``interleave`` other tasks run
    here, so concurrent callers interleave between operations as they do on a server."""
    if interleave:
        await asyncio.sleep(0)


class AsyncCursor:
    def __init__(self, cursor: Any, interleave: bool = False) -> None:
        self._cursor = cursor
        self._interleave = interleave

    def sort(self, keys: list[tuple[str, int]]) -> AsyncCursor:
        if keys:  # PyMongo accepts an empty list; mongomock does not
            self._cursor = self._cursor.sort(keys)
        return self

    def limit(self, n: int) -> AsyncCursor:
        self._cursor = self._cursor.limit(n)
        return self

    async def to_list(self, length: int | None = None) -> list[Any]:
        await _io(self._interleave)
        items = list(self._cursor)
        return items if length is None else items[:length]


class AsyncCommandCursor:
    def __init__(self, rows: Iterable[Any]) -> None:
        self._rows = list(rows)

    async def to_list(self, length: int | None = None) -> list[Any]:
        return self._rows if length is None else self._rows[:length]


class AsyncCollection:
    def __init__(self, collection: Any, interleave: bool = False) -> None:
        self._c = collection
        self._interleave = interleave

    def find(self, *args: Any, **kwargs: Any) -> AsyncCursor:
        return AsyncCursor(self._c.find(*args, **kwargs), self._interleave)

    async def aggregate(self, pipeline: list[dict[str, Any]], *, allowDiskUse: bool = False
                        ) -> AsyncCommandCursor:
        """``allowDiskUse`` is accepted and has nothing to do here (all in memory)."""
        await _io(self._interleave)
        return AsyncCommandCursor(aggregate(self._c, pipeline))

    async def create_index(self, keys: list[tuple[str, int]], **options: Any) -> str:
        """As a server: an index that exists with the same keys and options is left alone.
        mongomock checks a unique index against every document again, ignoring its
        ``partialFilterExpression``, so a second start on a database holding a COMPLETED
        and an ACTIVE session of one connector failed there (and only there)."""
        await _io(self._interleave)
        name = options.get("name")
        existing = self._c.index_information().get(name) if name else None
        if existing is not None and [tuple(k) for k in existing["key"]] == list(keys) and all(
                existing.get(option) == value for option, value in options.items()
                if option != "name"):
            return str(name)
        partial = options.get("partialFilterExpression")
        if options.get("unique") and partial is not None and name:
            return self._partial_unique(keys, str(name), partial)
        return str(self._c.create_index(keys, **options))

    def _partial_unique(self, keys: list[tuple[str, int]], name: str,
                        partial: dict[str, Any]) -> str:
        """A unique partial index built as a server builds it: unique among the documents
        its filter matches. mongomock checks every document, so a collection of two
        documents outside the filter alike in its keys (two companies without a name's
        identity) could not have it; it enforces the filter on later writes."""
        seen: set[str] = set()
        for doc in self._c.find(partial):
            key = repr([doc.get(field) for field, _ in keys])
            if key in seen:
                raise DuplicateKeyError("E11000 Duplicate Key Error", 11000)
            seen.add(key)
        self._c._store.create_index(name, {"key": mongomock_helpers.create_index_list(keys),
                                           "unique": True, "partialFilterExpression": partial})
        return name

    def with_options(self, **options: Any) -> AsyncCollection:
        """The collection with other options (a read preference, a read concern), as
        PyMongo's: mongomock keeps them (``read_preference``, ``read_concern``) and reads
        its one copy whatever they say."""
        return AsyncCollection(self._c.with_options(**options), self._interleave)

    def __getattr__(self, name: str) -> Any:
        if name not in COROUTINES:
            raise AttributeError(f"the mongomock adapter has no {name!r}; add it to "
                                 "COROUTINES if PyMongo's async collection has it")
        method = getattr(self._c, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            await _io(self._interleave)
            return method(*args, **kwargs)

        return call


# ------------------------------------------------------------------ what mongomock lacks
# Two stages the store's joins use (``store/mongo/query.py``) that mongomock does not run:
# a ``$lookup`` with ``localField``/``foreignField`` *and* a ``pipeline`` (MongoDB 5.0's
# correlated form: the foreign documents whose field equals the local value, through the
# pipeline, with ``let`` variables bound to the local document's values), and
# ``$addFields`` of a ``$convert`` to ``objectId`` or ``string``. The
# pipeline is cut at such a stage: mongomock runs the part before it, the stage is applied
# here document by document with the server's semantics, and the rest runs on the result.


def aggregate(collection: Any, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for index, stage in enumerate(pipeline):
        if _emulated(stage):
            docs = aggregate(collection, pipeline[:index]) if index else list(collection.find())
            docs = [_apply(collection.database, stage, doc) for doc in docs]
            return _aggregate_over(collection.database, docs, pipeline[index + 1:])
    return list(collection.aggregate(pipeline)) if pipeline else list(collection.find())


def _emulated(stage: dict[str, Any]) -> bool:
    if "$lookup" in stage:
        return "pipeline" in stage["$lookup"]
    return "$addFields" in stage and any(
        isinstance(value, dict) and "$convert" in value for value in stage["$addFields"].values())


def _aggregate_over(db: Any, docs: list[dict[str, Any]], pipeline: list[dict[str, Any]]
                    ) -> list[dict[str, Any]]:
    """``pipeline`` run on ``docs`` (kept in their order), in a scratch collection. (No
    stage the store uses makes documents out of none.)"""
    if not pipeline or not docs:
        return docs
    scratch = db[f"_scratch_{uuid.uuid4().hex}"]
    scratch.insert_many(docs)
    try:
        return aggregate(scratch, pipeline)
    finally:
        scratch.drop()


def _apply(db: Any, stage: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    if "$lookup" in stage:
        spec = stage["$lookup"]
        local = _path(doc, spec["localField"])
        match = {spec["foreignField"]: {"$in": local} if isinstance(local, list) else local}
        # find first: mongomock answers an ``_id`` equality from its dict, not a scan
        found = list(db[spec["from"]].find(match))
        pipeline = spec["pipeline"]
        if "let" in spec:  # the variables, as the server binds them: this doc's values
            bound = {f"$${name}": _path(doc, path.removeprefix("$"))
                     for name, path in spec["let"].items()}
            pipeline = _bind(pipeline, bound)
        doc[spec["as"]] = _aggregate_over(db, found, pipeline)
        return doc
    for name, value in stage["$addFields"].items():
        convert = value["$convert"]
        doc[name] = _convert(_path(doc, convert["input"].removeprefix("$")), convert)
    return doc


def _bind(value: Any, bound: dict[str, Any]) -> Any:
    """``value`` (a pipeline) with each ``$$variable`` replaced by its value. A nested
    lookup's own variables shadow ours of the same name, as on the server: bound later."""
    if isinstance(value, str):
        return bound.get(value, value)
    if isinstance(value, list):
        return [_bind(item, bound) for item in value]
    if isinstance(value, dict):
        if isinstance(value.get("let"), dict):
            bound = {name: v for name, v in bound.items() if name[2:] not in value["let"]}
        return {key: _bind(item, bound) for key, item in value.items()}
    return value


def _path(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _convert(value: Any, spec: dict[str, Any]) -> Any:
    if value is None:
        return spec.get("onNull")
    if spec["to"] == "string" and isinstance(value, str | ObjectId):
        return str(value)
    if spec["to"] == "objectId" and isinstance(value, ObjectId):
        return value
    if spec["to"] == "objectId" and isinstance(value, str) and ObjectId.is_valid(value) \
            and len(value) == 24:
        return ObjectId(value)
    if "onError" in spec:
        return spec["onError"]
    raise NotImplementedError(f"$convert of {value!r} to {spec['to']}")


class AsyncDatabase:
    def __init__(self, db: Any, interleave: bool = False,
                 options: dict[str, Any] | None = None) -> None:
        self._db = db
        self._interleave = interleave
        # Given to each collection: mongomock's own database keeps a read preference
        # but not a read concern.
        self._options = options or {}

    @property
    def name(self) -> str:
        return str(self._db.name)

    def __getitem__(self, name: str) -> AsyncCollection:
        collection = self._db[name]
        if self._options:
            collection = collection.with_options(**self._options)
        return AsyncCollection(collection, self._interleave)

    def with_options(self, **options: Any) -> AsyncDatabase:
        """The database with other options, as PyMongo's (see ``AsyncCollection``)."""
        return AsyncDatabase(self._db, self._interleave, {**self._options, **options})

    async def command(self, name: str) -> dict[str, Any]:
        await _io(self._interleave)
        if name == "buildInfo":
            # mongomock runs no buildInfo; the server version it mimics is its client's
            # ``server_info`` (5.0.5 in 4.3), what the store checks at start.
            return dict(self._db.client.server_info())
        return dict(self._db.command(name))

    async def list_collection_names(self) -> list[str]:
        await _io(self._interleave)
        return list(self._db.list_collection_names())

    @property
    def client(self) -> AsyncClient:
        return AsyncClient(self._db.client, self._interleave)

    def sync(self) -> Any:
        """The underlying mongomock database, for tests that inspect raw documents."""
        return self._db


class AsyncClient:
    def __init__(self, client: Any, interleave: bool = False) -> None:
        self._client = client
        self._interleave = interleave

    async def drop_database(self, name: str) -> None:
        await _io(self._interleave)
        self._client.drop_database(name)


def async_mongomock_database(name: str = "chargegraph", *, tz_aware: bool = True,
                             interleave: bool = False) -> AsyncDatabase:
    """A fresh in-memory database (its own client, so nothing is shared between tests)."""
    return AsyncDatabase(mongomock.MongoClient(tz_aware=tz_aware)[name], interleave)
