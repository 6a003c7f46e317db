"""The MongoDB store for the suites: a real server when ``CHARGEGRAPH_TEST_MONGODB_URL`` is
set (a fresh database per use, dropped afterwards), otherwise mongomock's query engine
behind the async adapter, with operations interleaving between concurrent tasks as they do
on a server."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from store.mongo import MongoStore, journal
from tests.support.mongomock_async import async_mongomock_database

URL_VARIABLE = "CHARGEGRAPH_TEST_MONGODB_URL"
#: How much longer a batch of a test of what large batches write may take than a server's
#: (``unhurried_batches``).
UNHURRIED = 10


def unhurried_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a test of what a large batch writes, not of when one gives up: mongomock runs
    every operation of a batch in the test's own process, and a batch of thousands of
    documents ran past a server's 30 s deadline on a loaded machine (QA s29:
    ``BatchTimeout``). The deadline, and the age at which a sweep takes a batch's writer
    for dead (which must stay well past it), are scaled by ``UNHURRIED``."""
    monkeypatch.setattr(journal, "BATCH_DEADLINE_S", journal.BATCH_DEADLINE_S * UNHURRIED)
    monkeypatch.setattr(journal, "STALE_AFTER", journal.STALE_AFTER * UNHURRIED)


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
