"""A thin async face over mongomock: the subset of PyMongo's async API the MongoDB store
uses, so the store's real query documents run on mongomock's engine when no MongoDB
server is available."""

from __future__ import annotations

from typing import Any

import mongomock


class AsyncCursor:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def sort(self, keys: Any) -> AsyncCursor:
        if keys:
            self._cursor = self._cursor.sort(keys)
        return self

    def limit(self, n: int) -> AsyncCursor:
        self._cursor = self._cursor.limit(n)
        return self

    async def to_list(self, length: int | None = None) -> list[Any]:
        items = list(self._cursor)
        return items if length is None else items[:length]


class AsyncCollection:
    def __init__(self, collection: Any) -> None:
        self._c = collection

    def find(self, *args: Any, **kwargs: Any) -> AsyncCursor:
        return AsyncCursor(self._c.find(*args, **kwargs))

    async def aggregate(self, pipeline: list[Any]) -> AsyncCursor:
        return AsyncCursor(iter(list(self._c.aggregate(pipeline))))

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._c, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call


class AsyncDatabase:
    def __init__(self, db: Any) -> None:
        self._db = db

    def __getitem__(self, name: str) -> AsyncCollection:
        return AsyncCollection(self._db[name])

    async def command(self, name: str) -> dict[str, Any]:
        return dict(self._db.command(name))

    def sync(self) -> Any:
        """The underlying mongomock database, for tests that inspect raw documents."""
        return self._db


def async_mongomock_database(name: str = "chargegraph") -> AsyncDatabase:
    return AsyncDatabase(mongomock.MongoClient(tz_aware=True)[name])
