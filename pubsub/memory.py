"""In-process fan-out with a bounded queue per subscriber.

``publish`` hands the event to every interested queue synchronously and returns: it never
awaits a subscriber. A subscriber whose queue is full loses its OLDEST events, and its
stream yields ``EventsDropped(count)`` right before the next event it does get, so a slow
browser tab learns it missed something and can never hold up a charger.

The Redis backend reuses this class for its local fan-out (``deliver``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from domain.events import EVENT_TYPES, DomainEvent, EventsDropped

DEFAULT_QUEUE_SIZE = 1000


class _Queue:
    """One subscriber's pending events; ``dropped`` counts those lost since its last read."""

    __slots__ = ("closed", "dropped", "interrupted", "items", "maxsize", "topics", "wakeup")

    def __init__(self, topics: frozenset[str], maxsize: int) -> None:
        self.topics = topics
        self.maxsize = maxsize
        self.items: deque[DomainEvent] = deque()
        self.dropped = 0
        self.interrupted = False
        self.closed = False
        self.wakeup = asyncio.Event()

    def offer(self, event: DomainEvent) -> None:
        if len(self.items) >= self.maxsize:
            self.items.popleft()
            self.dropped += 1
        self.items.append(event)
        self.wakeup.set()


class MemoryEventBus:
    """``domain.ports.EventBus`` for one process. ``queue_size``: events each subscriber
    may have pending before its oldest ones are dropped."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.queue_size = queue_size
        self._by_topic: dict[str, set[_Queue]] = {topic: set() for topic in EVENT_TYPES}
        self._queues: set[_Queue] = set()
        self._closed = False

    async def start(self) -> None:
        """Nothing to connect; here so both backends share one lifecycle."""

    async def close(self) -> None:
        """End every stream: each yields what it already holds, then stops."""
        self._closed = True
        for queue in list(self._queues):
            queue.closed = True
            queue.wakeup.set()
            self._forget(queue)

    @property
    def subscriber_count(self) -> int:
        return len(self._queues)

    @property
    def connected(self) -> bool:
        """In-process: nothing to lose touch with."""
        return True

    @property
    def receiving(self) -> bool:
        """In-process: every event is this process's own."""
        return True

    async def publish(self, event: DomainEvent) -> None:
        self.deliver(event)

    def deliver(self, event: DomainEvent) -> None:
        """Queue ``event`` for every subscriber of its topic, without blocking."""
        # A snapshot: a stream garbage-collected while we loop (its ``__del__`` may run at
        # any allocation) unsubscribes, and a set must not change under its iterator.
        for queue in tuple(self._by_topic.get(event.topic, ())):
            queue.offer(event)

    def interrupt(self) -> None:
        """Tell every subscriber, at once, that events may have been lost: each stream
        yields ``EventsDropped(count, interrupted=True)`` as its next item (the Redis
        backend calls this when its connection breaks and when it is back)."""
        for queue in tuple(self._queues):
            queue.interrupted = True
            queue.wakeup.set()

    def subscribe(self, topics: Iterable[str]) -> EventStream:
        """Events on ``topics`` published from now on (registered here, not at the first
        read, so nothing in between is missed). Close the stream with ``aclose()``; a
        stream that is garbage-collected unsubscribes too."""
        if isinstance(topics, str):  # "fault" would otherwise subscribe to "f", "a", ...
            raise TypeError("subscribe() takes a list of topics, not one string")
        wanted = frozenset(topics)
        unknown = wanted - self._by_topic.keys()
        if unknown:
            raise ValueError(f"unknown topics {sorted(unknown)}; known: {sorted(EVENT_TYPES)}")
        queue = _Queue(wanted, self.queue_size)
        if self._closed:
            queue.closed = True  # a stream of a closed bus ends at once instead of hanging
        else:
            self._queues.add(queue)
            for topic in wanted:
                self._by_topic[topic].add(queue)
        return EventStream(self, queue)

    def _forget(self, queue: _Queue) -> None:
        self._queues.discard(queue)
        for topic in queue.topics:
            self._by_topic[topic].discard(queue)


class EventStream:
    """One subscriber's events, an ``AsyncIterator[DomainEvent | EventsDropped]``.

    Cancelling a pending ``__anext__`` (a timeout, say) leaves the subscription in place;
    it ends with ``aclose()``, with the bus's ``close()``, or when the stream is
    garbage-collected (a consumer task that was cancelled and dropped its reference)."""

    def __init__(self, bus: MemoryEventBus, queue: _Queue) -> None:
        self._bus = bus
        self._queue = queue

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> DomainEvent | EventsDropped:
        queue = self._queue
        while not queue.items and not queue.interrupted:
            if queue.closed:
                raise StopAsyncIteration
            queue.wakeup.clear()
            await queue.wakeup.wait()
        if queue.dropped or queue.interrupted:
            # Everything dropped was older than what is queued, so the marker goes first;
            # an interruption jumps the queue too: the reader will read the state afresh.
            dropped, queue.dropped = queue.dropped, 0
            interrupted, queue.interrupted = queue.interrupted, False
            return EventsDropped(dropped, interrupted)
        return queue.items.popleft()

    async def aclose(self) -> None:
        """Unsubscribe now; pending events are discarded and a reader waiting in another
        task gets ``StopAsyncIteration``."""
        self._close()

    def _close(self) -> None:
        queue = self._queue
        queue.closed = True
        queue.items.clear()
        queue.dropped = 0
        queue.interrupted = False
        queue.wakeup.set()
        self._bus._forget(queue)

    def __del__(self) -> None:
        # A consumer that vanished without closing must not leave its queue filling up.
        # Nobody can be waiting on a stream nobody references, so forgetting is enough
        # (and touching the wakeup event could need a loop that is already closed).
        self._bus._forget(self._queue)
