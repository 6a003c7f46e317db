"""Several ChargeGraph processes share events through one Redis."""

from __future__ import annotations

import asyncio

from domain.events import StationConnectionChanged
from pubsub.redis import RedisEventBus
from tests.support.redis_server import RedisServer

EVENT = StationConnectionChanged(station_id="a" * 24, cp_id="CP-1", online=True)


async def test_event_published_on_one_instance_reaches_another(redis_server: RedisServer
                                                               ) -> None:
    a, b = RedisEventBus(redis_server.url), RedisEventBus(redis_server.url)
    await a.start()
    await b.start()
    try:
        on_b = b.subscribe(["station_connection"])
        on_a = a.subscribe(["station_connection"])
        await a.publish(EVENT)
        assert await asyncio.wait_for(on_b.__anext__(), 5) == EVENT
        assert await asyncio.wait_for(on_a.__anext__(), 5) == EVENT
    finally:
        await a.close()
        await b.close()


async def test_listener_survives_a_redis_restart() -> None:
    server = RedisServer().start()
    bus = RedisEventBus(server.url)
    await bus.start()
    try:
        stream = bus.subscribe(["station_connection"])
        server.stop()
        await asyncio.sleep(0.3)
        server.start()  # same port
        for _ in range(100):  # bounded: publish until the listener is back
            try:
                await bus.publish(EVENT)
            except Exception:
                await asyncio.sleep(0.1)
                continue
            try:
                assert await asyncio.wait_for(stream.__anext__(), 0.3) == EVENT
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("no event after the restart")
    finally:
        await bus.close()
        server.cleanup()
