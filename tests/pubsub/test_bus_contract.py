"""Both event buses behave alike: delivery, topics, fan-out, order, overflow, cleanup."""

from __future__ import annotations

import asyncio
import gc
from datetime import UTC, datetime
from typing import Any

import pytest

from domain.events import (
    CommandCompleted,
    ConnectorStatusChanged,
    EventsDropped,
    FaultReported,
    ReservationChanged,
    SessionChanged,
    StationConnectionChanged,
)
from pubsub.codec import UndecodableEvent, decode, encode

AT = datetime(2026, 3, 29, 1, 59, 59, 123000, tzinfo=UTC)
OWNED = {"station_id": "a" * 24, "cp_id": "CP-1", "company_id": "c" * 24,
         "owner_id": "o" * 24, "at": AT}
SAMPLES = [
    ConnectorStatusChanged(**OWNED, connector_record_id="b" * 24, connector_id=2,
                           status="Faulted", error_code="GroundFailure", info="RCD"),
    StationConnectionChanged(**OWNED, online=False),
    SessionChanged(**OWNED, change="UPDATED", session_id="d" * 24, transaction_id=7,
                   connector_id=1, user_id="u" * 24, vehicle_id=None, energy_wh=1234,
                   power_w=7200.5, state="ACTIVE"),
    FaultReported(**OWNED, connector_id=1, error_code="HighTemperature", status="Faulted",
                  vendor_error_code="E42"),
    ReservationChanged(**OWNED, reservation_record_id="r" * 24, reservation_id=3,
                       connector_id=1, user_id=None, state="CANCELLED"),
    CommandCompleted(**OWNED, command_id="x" * 24, action="Reset", requested_by="u" * 24,
                     status="Accepted", result={"status": "Accepted", "nested": [1, "a"]}),
]
ALL = [e.topic for e in SAMPLES]


async def take(stream: Any, n: int, timeout: float = 5) -> list[Any]:
    return [await asyncio.wait_for(stream.__anext__(), timeout) for _ in range(n)]


def test_codec_round_trip_and_garbage() -> None:
    for event in SAMPLES:
        assert decode(encode(event)) == event
    for garbage in (b"nope", b'{"topic": "unknown"}', b'{"topic": "fault"}', b"[]"):
        with pytest.raises(UndecodableEvent):
            decode(garbage)


async def test_every_event_type_round_trips(bus: Any) -> None:
    stream = bus.subscribe(ALL)
    for event in SAMPLES:
        await bus.publish(event)
    assert await take(stream, len(SAMPLES)) == SAMPLES
    await stream.aclose()


async def test_topics_filter_and_fan_out(bus: Any) -> None:
    faults = bus.subscribe(["fault"])
    everything_a = bus.subscribe(ALL)
    everything_b = bus.subscribe(ALL)
    for event in SAMPLES:
        await bus.publish(event)
    assert await take(faults, 1) == [SAMPLES[3]]
    assert await take(everything_a, 6) == SAMPLES
    assert await take(everything_b, 6) == SAMPLES
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(faults.__anext__(), 0.2)
    for stream in (faults, everything_a, everything_b):
        await stream.aclose()


async def test_order_per_publisher(bus: Any) -> None:
    stream = bus.subscribe(["station_connection"])
    events = [StationConnectionChanged(**{**OWNED, "cp_id": f"CP-{i}"}, online=True)
              for i in range(50)]
    for event in events:
        await bus.publish(event)
    assert [e.cp_id for e in await take(stream, 50)] == [e.cp_id for e in events]
    await stream.aclose()


async def test_slow_subscriber_is_told_and_never_blocks(bus: Any) -> None:
    slow = bus.subscribe(["station_connection"])  # queue of 100, never read meanwhile
    for i in range(5_000):
        await bus.publish(StationConnectionChanged(**{**OWNED, "cp_id": f"CP-{i}"},
                                                   online=True))
    last = "CP-4999"
    seen: list[Any] = []
    while not seen or getattr(seen[-1], "cp_id", None) != last:
        seen.append(await asyncio.wait_for(slow.__anext__(), 10))
    drops = [e for e in seen if isinstance(e, EventsDropped)]
    assert drops and sum(d.count for d in drops) + len(seen) - len(drops) == 5_000
    assert [e.cp_id for e in seen[-3:] if not isinstance(e, EventsDropped)][-1] == last
    await slow.aclose()


async def test_unsubscribe_cleans_up(bus: Any) -> None:
    stream = bus.subscribe(ALL)
    assert bus.subscriber_count == 1
    await stream.aclose()
    assert bus.subscriber_count == 0
    forgotten = bus.subscribe(ALL)
    assert bus.subscriber_count == 1
    del forgotten
    gc.collect()
    assert bus.subscriber_count == 0
