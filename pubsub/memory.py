"""In-process fan-out with a bounded queue per subscriber.

``publish`` never waits for a subscriber: a subscriber whose queue is full loses its
oldest events and gets an ``EventsDropped`` marker before the next event it reads, so a
slow browser tab can never hold up a charger.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from domain.events import DomainEvent, EventsDropped

DEFAULT_QUEUE = 1000


class _Subscriber:
    __slots__ = ("closed", "dropped", "items", "maxsize", "topics", "wakeup")

    def __init__(self, topics: frozenset[str], maxsize: int) -> None:
        self.topics = topics
        self.maxsize = maxsize
        self.items: deque[DomainEvent] = deque()
        self.dropped = 0
        self.closed = False
        self.wakeup = asyncio.Event()

    def offer(self, event: DomainEvent) -> None:
        if len(self.items) >= self.maxsize:
            self.items.popleft()
            self.dropped += 1
        self.items.append(event)
        self.wakeup.set()


class MemoryEventBus:
    def __init__(self, queue_size: int = DEFAULT_QUEUE) -> None:
        self.queue_size = queue_size
        self._subscribers: set[_Subscriber] = set()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for subscriber in list(self._subscribers):
            subscriber.closed = True
            subscriber.wakeup.set()
        self._subscribers.clear()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def publish(self, event: DomainEvent) -> None:
        self.deliver(event)

    def deliver(self, event: Any) -> None:
        """Hand ``event`` to every interested subscriber, synchronously, never blocking."""
        for subscriber in self._subscribers:
            if event.topic in subscriber.topics:
                subscriber.offer(event)

    def subscribe(self, topics: Sequence[str]) -> _Stream:
        """Registered at once (not at the first read), so nothing published after this
        call is missed."""
        subscriber = _Subscriber(frozenset(topics), self.queue_size)
        self._subscribers.add(subscriber)
        return _Stream(self, subscriber)

    def _forget(self, subscriber: _Subscriber) -> None:
        self._subscribers.discard(subscriber)


class _Stream:
    """One subscriber's events as an async iterator; ``aclose`` unsubscribes."""

    def __init__(self, bus: MemoryEventBus, subscriber: _Subscriber) -> None:
        self._bus = bus
        self._subscriber = subscriber

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> DomainEvent | EventsDropped:
        subscriber = self._subscriber
        while not subscriber.items:
            if subscriber.closed:
                self._bus._forget(subscriber)
                raise StopAsyncIteration
            subscriber.wakeup.clear()
            await subscriber.wakeup.wait()
        if subscriber.dropped:
            dropped, subscriber.dropped = subscriber.dropped, 0
            return EventsDropped(dropped)
        return subscriber.items.popleft()

    async def aclose(self) -> None:
        self._subscriber.closed = True
        self._bus._forget(self._subscriber)

    def __del__(self) -> None:
        # A consumer that vanished without closing must not leak its queue.
        self._bus._forget(self._subscriber)
