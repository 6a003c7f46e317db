"""Choosing the event bus from its URL (``CHARGEGRAPH_PUBSUB_URL``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from pubsub.memory import DEFAULT_QUEUE_SIZE, EventStream, MemoryEventBus
from pubsub.redis import CHANNEL_PREFIX, RedisEventBus, redacted

REDIS_SCHEMES = ("redis", "rediss")


class ManagedEventBus(Protocol):
    """``domain.ports.EventBus`` plus the lifecycle the service shell drives."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, event: Any) -> None: ...

    def subscribe(self, topics: Iterable[str]) -> EventStream: ...

    @property
    def subscriber_count(self) -> int: ...

    @property
    def connected(self) -> bool:
        """Whether events reach the other instances now (always, in-process)."""
        ...

    @property
    def receiving(self) -> bool:
        """Whether the other instances' events reach this one now (always, in-process)."""
        ...


def check_event_bus_url(url: str) -> str:
    """The backend a URL selects (``"memory"`` or ``"redis"``); ``ValueError`` with a
    message for anything else, so the shell can reject it before binding ports."""
    try:
        parts = urlsplit(url.strip())
        # Reading the port checks it, as redis-py would only once the service starts
        # (QA s26: redis://host:63790x/0 ended `serve` with a lifespan traceback).
        parts.port  # noqa: B018
    except ValueError as error:  # the URL is not shown: its password could not be cut
        raise ValueError(f"the pubsub URL is malformed ({error}): use memory:// or "
                         "redis://host:6379/0") from None
    scheme = parts.scheme.lower()
    if scheme == "memory" and not (parts.netloc or parts.path or parts.query):
        return "memory"
    if scheme in REDIS_SCHEMES and parts.hostname:
        return "redis"
    raise ValueError(f"unsupported pubsub URL {redacted(url)!r}: use memory:// (one "
                     "instance) or redis://host:6379/0 / rediss://… (several instances)")


def channel_prefix(url: str, prefix: str | None = None) -> str:
    """The channel prefix of a deployment on the Redis at ``url``: ``prefix`` when set
    (``CHARGEGRAPH_PUBSUB_PREFIX``), else one per database number. Redis pub/sub ignores
    the database number, so two deployments given their own databases of one server
    (staging on /1, production on /0) received each other's events and relayed
    commands to each other's chargers. Database 0 keeps the historical prefix, so
    instances of an existing deployment still talk to each other across an upgrade."""
    if prefix is not None:
        return check_channel_prefix(prefix)
    parts = urlsplit(url.strip())
    # The database as redis-py reads it: the path, or a ``db`` query parameter.
    database = parts.path.strip("/") or parse_qs(parts.query).get("db", [""])[0]
    return CHANNEL_PREFIX if database in ("", "0") else f"{CHANNEL_PREFIX}{database}:"


def check_channel_prefix(prefix: str) -> str:
    if not 0 < len(prefix) <= 64 or not prefix.isprintable() or any(c.isspace()
                                                                     for c in prefix):
        raise ValueError("the pubsub prefix must be 1 to 64 printable characters without "
                         "spaces, e.g. chargegraph-staging:")
    return prefix


def open_event_bus(url: str, *, queue_size: int = DEFAULT_QUEUE_SIZE,
                   prefix: str | None = None) -> ManagedEventBus:
    """A new, not yet started bus: ``memory://`` or ``redis://…`` / ``rediss://…``
    (its channels prefixed per deployment: ``channel_prefix``)."""
    if check_event_bus_url(url) == "memory":
        return MemoryEventBus(queue_size)
    return RedisEventBus(url.strip(), queue_size=queue_size,
                         channel_prefix=channel_prefix(url, prefix))
