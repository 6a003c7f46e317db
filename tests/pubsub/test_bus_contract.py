"""Both event buses keep one contract: delivery of every event type, topics, fan-out,
order, bounded queues that drop the oldest and say so, never blocking the publisher, and
no subscription outliving its stream.

With Redis, delivery is asynchronous (through the server and the listener task), so the
tests read a second, unfiltered ``probe`` stream up to the last event published: the
listener delivers each event to all local queues at once, so once the probe has it,
every queue has it, and what a slow stream holds is exact without any sleeping.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from domain.events import EVENT_TYPES, FaultReported
from pubsub import EventsDropped
from pubsub.factory import ManagedEventBus
from tests.pubsub.conftest import QUEUE_SIZE
from tests.pubsub.samples import ALL_TOPICS, SAMPLES, connection, number, read_until, take

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


async def publish_all(bus: ManagedEventBus, events: list[Any]) -> None:
    for event in events:
        await bus.publish(event)


async def test_every_event_type_arrives_field_for_field(bus: ManagedEventBus) -> None:
    assert {e.topic for e in SAMPLES} == set(EVENT_TYPES)
    stream = bus.subscribe(ALL_TOPICS)
    await publish_all(bus, SAMPLES)
    received = await take(stream, len(SAMPLES))
    assert received == SAMPLES
    assert [type(e) for e in received] == [type(e) for e in SAMPLES]
    assert [e.at.utcoffset() for e in received] == [e.at.utcoffset() for e in SAMPLES]
    await stream.aclose()


async def test_only_subscribed_topics_are_delivered(bus: ManagedEventBus) -> None:
    faults = bus.subscribe(["fault"])
    sessions_and_faults = bus.subscribe(["session", "fault"])
    closing = FaultReported(station_id=None, cp_id="LAST", connector_id=1,
                            error_code="OtherError", status="Faulted")
    await publish_all(bus, [*SAMPLES, closing])
    # In order and without a gap: had anything else arrived, it would come before `closing`.
    assert await take(faults, 2) == [SAMPLES[3], closing]
    assert await take(sessions_and_faults, 3) == [SAMPLES[2], SAMPLES[3], closing]
    await faults.aclose()
    await sessions_and_faults.aclose()


async def test_every_subscriber_gets_everything(bus: ManagedEventBus) -> None:
    streams = [bus.subscribe(ALL_TOPICS) for _ in range(5)]
    await publish_all(bus, SAMPLES)
    for stream in streams:
        assert await take(stream, len(SAMPLES)) == SAMPLES
        await stream.aclose()


async def test_order_per_publisher_and_one_order_for_all(bus: ManagedEventBus) -> None:
    first, second = bus.subscribe(["station_connection"]), bus.subscribe(["station_connection"])
    a = [connection(i, "A") for i in range(40)]
    b = [connection(i, "B") for i in range(40)]
    await asyncio.gather(publish_all(bus, a), publish_all(bus, b))  # interleaved
    seen_first, seen_second = await take(first, 80), await take(second, 80)
    for source in ("A", "B"):
        mine = [number(e) for e in seen_first if e.cp_id.startswith(source)]
        assert mine == list(range(40))
    assert seen_first == seen_second
    await first.aclose()
    await second.aclose()


async def test_a_full_queue_drops_the_oldest_and_says_so_first(bus: ManagedEventBus) -> None:
    slow = bus.subscribe(["station_connection"])
    probe = bus.subscribe(["station_connection"])
    events = [connection(i) for i in range(QUEUE_SIZE + 150)]
    await publish_all(bus, events)
    await read_until(probe, events[-1])
    assert await take(slow, QUEUE_SIZE + 1) == [EventsDropped(150), *events[150:]]
    # Caught up: the next event comes without a marker.
    await bus.publish(extra := connection(1000))
    assert await take(slow, 1) == [extra]
    # Falling behind again mid-stream: the marker sits right before the first survivor.
    more = [connection(2000 + i) for i in range(QUEUE_SIZE + 7)]
    await publish_all(bus, more)
    await read_until(probe, more[-1])
    assert await take(slow, 2) == [EventsDropped(7), more[7]]
    await slow.aclose()
    await probe.aclose()


async def test_publish_never_waits_for_a_subscriber_that_does_not_read(
        bus: ManagedEventBus) -> None:
    stalled = bus.subscribe(["station_connection"])  # never read while publishing
    events = [connection(i) for i in range(5_000)]
    await asyncio.wait_for(publish_all(bus, events), 60)
    seen = await read_until(stalled, events[-1], timeout=30)
    markers = [item for item in seen if isinstance(item, EventsDropped)]
    delivered = [number(item) for item in seen if not isinstance(item, EventsDropped)]
    assert markers, "a queue of 100 cannot hold 5,000 events"
    assert delivered == sorted(set(delivered))  # oldest dropped, no reordering, no repeats
    assert sum(m.count for m in markers) + len(delivered) == len(events)
    await stalled.aclose()


async def test_aclose_unsubscribes(bus: ManagedEventBus) -> None:
    stream = bus.subscribe(ALL_TOPICS)
    assert bus.subscriber_count == 1
    await stream.aclose()
    assert bus.subscriber_count == 0
    await stream.aclose()  # twice is fine
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_a_forgotten_stream_unsubscribes(bus: ManagedEventBus) -> None:
    forgotten = bus.subscribe(ALL_TOPICS)
    assert bus.subscriber_count == 1
    del forgotten
    gc.collect()
    assert bus.subscriber_count == 0


async def test_a_cancelled_consumer_leaves_no_subscription(bus: ManagedEventBus) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        stream = bus.subscribe(ALL_TOPICS)
        started.set()
        async for _ in stream:
            pass

    task = asyncio.create_task(consume())
    await started.wait()
    assert bus.subscriber_count == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del task
    await asyncio.sleep(0)  # the loop lets go of the finished task on its next turn
    gc.collect()
    assert bus.subscriber_count == 0


async def test_a_timed_out_read_keeps_the_subscription(bus: ManagedEventBus) -> None:
    stream = bus.subscribe(["fault"])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(stream), 0.05)
    assert bus.subscriber_count == 1
    await bus.publish(SAMPLES[3])
    assert await take(stream, 1) == [SAMPLES[3]]
    await stream.aclose()


async def test_aclose_ends_a_read_waiting_in_another_task(bus: ManagedEventBus) -> None:
    stream = bus.subscribe(ALL_TOPICS)
    reader = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)  # the reader is now waiting
    await stream.aclose()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(reader, 5)


async def test_close_ends_every_stream(bus: ManagedEventBus) -> None:
    streams = [bus.subscribe(ALL_TOPICS) for _ in range(3)]
    readers = [asyncio.ensure_future(anext(s)) for s in streams]
    await asyncio.sleep(0)
    await bus.close()
    assert bus.subscriber_count == 0
    for reader in readers:
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(reader, 5)
    late = bus.subscribe(ALL_TOPICS)  # a closed bus ends new streams at once, too
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(late), 5)


async def test_topics_are_checked(bus: ManagedEventBus) -> None:
    with pytest.raises(TypeError, match="list of topics"):
        bus.subscribe("fault")
    with pytest.raises(ValueError, match="unknown topics"):
        bus.subscribe(["fault", "faults"])
    assert bus.subscriber_count == 0
