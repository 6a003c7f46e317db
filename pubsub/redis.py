"""Events between ChargeGraph instances through Redis pub/sub.

One Redis subscription per process (not per subscriber): a single listener task receives
every event and fans it out locally through a ``MemoryEventBus``. Events this process
publishes come back the same way, so every instance delivers in the same order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from domain.events import ALL_TOPICS, DomainEvent
from pubsub.codec import UndecodableEvent, decode, encode
from pubsub.memory import MemoryEventBus

log = logging.getLogger("chargegraph.pubsub")

PREFIX = "chargegraph:"
MAX_BACKOFF_S = 5.0


class RedisEventBus:
    def __init__(self, url: str, queue_size: int = 1000) -> None:
        self.url = url
        self.local = MemoryEventBus(queue_size)
        self._redis: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def subscriber_count(self) -> int:
        return self.local.subscriber_count

    async def start(self) -> None:
        self._redis = aioredis.from_url(self.url, health_check_interval=15,
                                        socket_keepalive=True)
        self._listener = asyncio.create_task(self._listen(), name="chargegraph-redis-events")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._redis is not None:
            await self._redis.aclose()
        await self.local.close()

    async def publish(self, event: DomainEvent) -> None:
        await self._redis.publish(PREFIX + event.topic, encode(event))

    def subscribe(self, topics: Sequence[str]) -> Any:
        return self.local.subscribe(topics)

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*(PREFIX + t for t in ALL_TOPICS))
                self._ready.set()
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        self.local.deliver(decode(message["data"]))
                    except UndecodableEvent:
                        log.warning("skipped a message that is not an event")
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("lost Redis (%s); reconnecting in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
