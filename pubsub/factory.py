"""Choosing the event bus from its URL."""

from __future__ import annotations

from typing import Any


def open_event_bus(url: str) -> Any:
    if url in ("memory://", "memory:", "memory"):
        from pubsub.memory import MemoryEventBus

        return MemoryEventBus()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from pubsub.redis import RedisEventBus

        return RedisEventBus(url)
    raise ValueError(f"unsupported pubsub URL {url!r}: use memory:// or redis://host:6379/0")
