"""Choosing the store backend from the database URL."""

from __future__ import annotations

from pathlib import Path

from domain.ports import Store


def open_store(database_url: str) -> Store:
    if database_url.startswith("sqlite:///"):
        from store.sqlite import SqliteStore

        path = database_url.removeprefix("sqlite:///")
        if not path:
            raise ValueError("sqlite URL needs a file: sqlite:///chargegraph.db")
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # zero setup: make the folder
        return SqliteStore(path)
    if database_url.startswith(("mongodb://", "mongodb+srv://")):
        from store.mongo import MongoStore

        return MongoStore.connect(database_url)  # type: ignore[no-any-return]
    raise ValueError(f"unsupported database URL {database_url!r}: use sqlite:///file.db or "
                     "mongodb://host/db")
