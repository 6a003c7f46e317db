"""The pubsub contract runs once per backend (``bus``); Redis runs against a real server
that lives for the whole session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from pubsub.factory import ManagedEventBus
from pubsub.memory import MemoryEventBus
from pubsub.redis import RedisEventBus
from tests.support.redis_server import RedisServer

QUEUE_SIZE = 100


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[ManagedEventBus]:
    instance: ManagedEventBus
    if request.param == "memory":
        instance = MemoryEventBus(queue_size=QUEUE_SIZE)
    else:
        # Only the Redis half needs (or skips for want of) a server.
        server: RedisServer = request.getfixturevalue("redis_server")
        instance = RedisEventBus(server.url, queue_size=QUEUE_SIZE)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()
