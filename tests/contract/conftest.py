"""The storage contract suite runs once per backend: every test takes the ``store``
fixture, a fresh started store with an empty database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from domain.ports import Store
from store.sqlite import SqliteStore

BACKENDS = ["sqlite", "mongo"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        sqlite = SqliteStore(str(tmp_path / "contract.db"))
        await sqlite.start()
        try:
            yield sqlite
        finally:
            await sqlite.close()
    else:
        # Real server when CHARGEGRAPH_TEST_MONGODB_URL is set, else mongomock.
        from tests.support.mongo_backend import open_mongo_store

        async with open_mongo_store() as mongo:
            yield mongo
