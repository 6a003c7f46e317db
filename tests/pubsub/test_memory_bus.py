"""What only the in-process bus promises: synchronous fan-out and its limits."""

from __future__ import annotations

import pytest

from pubsub import EventsDropped
from pubsub.memory import DEFAULT_QUEUE_SIZE, MemoryEventBus
from tests.pubsub.samples import connection, take


def test_the_default_queue_holds_a_thousand() -> None:
    assert DEFAULT_QUEUE_SIZE == 1000
    assert MemoryEventBus().queue_size == 1000


def test_a_queue_must_hold_something() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        MemoryEventBus(queue_size=0)


async def test_publish_returns_with_the_event_already_queued() -> None:
    bus = MemoryEventBus(queue_size=3)
    stream = bus.subscribe(["station_connection"])
    for i in range(5):
        await bus.publish(connection(i))
    assert await take(stream, 4) == [EventsDropped(2), connection(2), connection(3),
                                     connection(4)]
    await stream.aclose()


async def test_close_lets_streams_read_what_they_hold_first() -> None:
    bus = MemoryEventBus()
    stream = bus.subscribe(["station_connection"])
    await bus.publish(connection(1))
    await bus.close()
    assert [event async for event in stream] == [connection(1)]


async def test_publish_after_close_reaches_nobody_and_does_not_fail() -> None:
    bus = MemoryEventBus()
    await bus.close()
    await bus.publish(connection(1))  # a charger event during shutdown is not an error
    assert bus.subscriber_count == 0


async def test_an_interruption_is_announced_at_once_and_first() -> None:
    bus = MemoryEventBus()
    idle = bus.subscribe(["station_connection"])
    busy = bus.subscribe(["station_connection"])
    await bus.publish(connection(1))
    busy_items = [await busy.__anext__()]
    await bus.publish(connection(2))
    bus.interrupt()
    await bus.publish(connection(3))
    # The marker jumps the queue: the reader is going to read the state afresh anyway.
    assert await take(idle, 4) == [EventsDropped(0, interrupted=True), connection(1),
                                   connection(2), connection(3)]
    busy_items += await take(busy, 3)
    assert busy_items == [connection(1), EventsDropped(0, interrupted=True), connection(2),
                          connection(3)]
    # With nothing queued, it comes without waiting for an event.
    lonely = bus.subscribe(["station_connection"])
    bus.interrupt()
    assert await take(lonely, 1) == [EventsDropped(0, interrupted=True)]
    for stream in (idle, busy, lonely):
        await stream.aclose()
