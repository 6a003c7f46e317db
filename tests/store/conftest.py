"""The MongoDB store the tests of this package share: ``mongo``, a fresh started store on
mongomock (its own in-memory database).

Operations interleave between concurrent tasks as they do on a server (``interleave``):
the concurrent-writer tests need it, and the others lose nothing by it. No periodic
sweep: a test sweeps when it means to (``journal.sweep``), with the time it chooses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from store.mongo import MongoStore
from tests.support.mongomock_async import async_mongomock_database


@pytest.fixture
async def mongo() -> AsyncIterator[MongoStore]:
    store = MongoStore(async_mongomock_database(interleave=True), sweep_every=None)
    await store.start()
    yield store
    await store.close()
