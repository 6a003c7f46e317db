"""The MongoDB store for the contract suite: a real server when
``CHARGEGRAPH_TEST_MONGODB_URL`` is set, otherwise mongomock's query engine."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

from store.mongo import MongoStore
from tests.support.mongomock_async import async_mongomock_database


@contextlib.asynccontextmanager
async def open_mongo_store() -> AsyncIterator[MongoStore]:
    url = os.environ.get("CHARGEGRAPH_TEST_MONGODB_URL")
    if url:
        name = f"chargegraph_test_{uuid.uuid4().hex[:12]}"
        store = MongoStore.connect(url, database=name)
        await store.start()
        try:
            yield store
        finally:
            await store._client.drop_database(name)
            await store.close()
    else:
        store = MongoStore(async_mongomock_database())
        await store.start()
        try:
            yield store
        finally:
            await store.close()
