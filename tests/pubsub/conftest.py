from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from pubsub.memory import MemoryEventBus
from pubsub.redis import RedisEventBus
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        instance: Any = MemoryEventBus(queue_size=100)
    else:
        server = request.getfixturevalue("redis_server")
        instance = RedisEventBus(server.url, queue_size=100)
    await instance.start()
    yield instance
    await instance.close()
