"""Choosing the event bus from its URL (``CHARGEGRAPH_PUBSUB_URL``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit

from pubsub.memory import DEFAULT_QUEUE_SIZE, EventStream, MemoryEventBus
from pubsub.redis import RedisEventBus, redacted

REDIS_SCHEMES = ("redis", "rediss")


class ManagedEventBus(Protocol):
    """``domain.ports.EventBus`` plus the lifecycle the service shell drives."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, event: Any) -> None: ...

    def subscribe(self, topics: Iterable[str]) -> EventStream: ...

    @property
    def subscriber_count(self) -> int: ...


def check_event_bus_url(url: str) -> str:
    """The backend a URL selects (``"memory"`` or ``"redis"``); ``ValueError`` with a
    message for anything else, so the shell can reject it before binding ports."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "memory" and not (parts.netloc or parts.path or parts.query):
        return "memory"
    if scheme in REDIS_SCHEMES and parts.hostname:
        return "redis"
    raise ValueError(f"unsupported pubsub URL {redacted(url)!r}: use memory:// (one "
                     "instance) or redis://host:6379/0 / rediss://… (several instances)")


def open_event_bus(url: str, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> ManagedEventBus:
    """A new, not yet started bus: ``memory://`` or ``redis://…`` / ``rediss://…``."""
    if check_event_bus_url(url) == "memory":
        return MemoryEventBus(queue_size)
    return RedisEventBus(url.strip(), queue_size=queue_size)
