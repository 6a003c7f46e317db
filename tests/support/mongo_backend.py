"""The MongoDB store for the suites: a real server when ``CHARGEGRAPH_TEST_MONGODB_URL`` is
set (a fresh database per use, dropped afterwards), otherwise mongomock's query engine
behind the async adapter, with operations interleaving between concurrent tasks as they do
on a server."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

from store.mongo import MongoStore
from tests.support.mongomock_async import async_mongomock_database

URL_VARIABLE = "CHARGEGRAPH_TEST_MONGODB_URL"


@contextlib.asynccontextmanager
async def open_mongo_store() -> AsyncIterator[MongoStore]:
    url = os.environ.get(URL_VARIABLE)
    if url:
        name = f"chargegraph_test_{uuid.uuid4().hex[:12]}"
        store = MongoStore.connect(url, database=name)
        try:
            await store.start()
            try:
                yield store
            finally:
                await store.db.client.drop_database(name)
        finally:
            await store.close()
    else:
        store = MongoStore(async_mongomock_database(interleave=True))
        await store.start()
        try:
            yield store
        finally:
            await store.close()
