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
from collections.abc import Iterable
from typing import Any

import mongomock

#: Collection methods that are coroutines in ``pymongo.asynchronous.collection``.
COROUTINES = frozenset({
    "insert_one", "insert_many", "replace_one", "update_one", "delete_one", "delete_many",
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

    async def aggregate(self, pipeline: list[dict[str, Any]]) -> AsyncCommandCursor:
        await _io(self._interleave)
        return AsyncCommandCursor(self._c.aggregate(pipeline))

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
        return str(self._c.create_index(keys, **options))

    def __getattr__(self, name: str) -> Any:
        if name not in COROUTINES:
            raise AttributeError(f"the mongomock adapter has no {name!r}; add it to "
                                 "COROUTINES if PyMongo's async collection has it")
        method = getattr(self._c, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            await _io(self._interleave)
            return method(*args, **kwargs)

        return call


class AsyncDatabase:
    def __init__(self, db: Any, interleave: bool = False) -> None:
        self._db = db
        self._interleave = interleave

    @property
    def name(self) -> str:
        return str(self._db.name)

    def __getitem__(self, name: str) -> AsyncCollection:
        return AsyncCollection(self._db[name], self._interleave)

    async def command(self, name: str) -> dict[str, Any]:
        await _io(self._interleave)
        return dict(self._db.command(name))

    def sync(self) -> Any:
        """The underlying mongomock database, for tests that inspect raw documents."""
        return self._db


def async_mongomock_database(name: str = "chargegraph", *, tz_aware: bool = True,
                             interleave: bool = False) -> AsyncDatabase:
    """A fresh in-memory database (its own client, so nothing is shared between tests)."""
    return AsyncDatabase(mongomock.MongoClient(tz_aware=tz_aware)[name], interleave)
