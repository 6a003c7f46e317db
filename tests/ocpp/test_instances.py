"""Connection state when several instances share one database: each OCPP server sees only
its own sockets, so one must not record a charger offline that another one holds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from domain import entities as d
from domain.query import Eq
from ocpp_bridge.gateway import OcppGateway
from ocpp_bridge.server import OcppServer
from ocpp_bridge.simulator import connected
from pubsub.memory import MemoryEventBus
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central


@contextlib.asynccontextmanager
async def second_instance(central: Central, bus: MemoryEventBus | None = None
                          ) -> AsyncIterator[tuple[OcppServer, str]]:
    """Another OCPP server on the same database, with its own connections, told of the
    other instances by ``bus`` (as ``chargegraph`` runs it with Redis; a bus of its own
    when none is given)."""
    if bus is None:
        bus = own_bus = MemoryEventBus()
        await own_bus.start()
    else:
        own_bus = None
    server = OcppServer(central.services.charging, OcppGateway(), "127.0.0.1", 0,
                        response_timeout=5, instances_bus=bus)
    await server.start()
    try:
        yield server, f"ws://127.0.0.1:{server.bound_port}/ocpp"
    finally:
        await server.stop()
        if own_bus is not None:
            await own_bus.close()


async def online(central: Central) -> bool:
    station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    assert station is not None
    return station.online


async def until(condition: object, attempts: int = 200) -> None:
    for _ in range(attempts):
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def test_an_instance_starting_leaves_chargers_of_the_others_online(
        central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD):
        await until(lambda: online(central))
        async with second_instance(central):
            assert await online(central)


async def test_the_sole_instance_starting_records_what_the_previous_process_lost(
        central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD):
        await until(lambda: online(central))
        restarted = OcppServer(central.services.charging, OcppGateway(), "127.0.0.1", 0)
        await restarted.start()
        await restarted.stop()
        assert not await online(central)


async def test_an_old_socket_closing_does_not_take_a_charger_offline_that_moved(
        central: Central) -> None:
    """The charger reconnected to instance B before instance A noticed its old socket
    die: A closing that socket later must leave the station online."""
    async with second_instance(central) as (_, b_url), contextlib.AsyncExitStack() as on_b:
        on_a = contextlib.AsyncExitStack()
        await on_a.enter_async_context(connected(central.url, "CP-1",
                                                 password=STATION_PASSWORD))
        await until(lambda: online(central))
        events_before = await central.store.count(d.ConnectionEvent, Eq("online", True))
        await on_b.enter_async_context(connected(b_url, "CP-1", password=STATION_PASSWORD))

        async def b_recorded() -> bool:
            return await central.store.count(d.ConnectionEvent,
                                             Eq("online", True)) > events_before
        await until(b_recorded)
        await on_a.aclose()

        async def a_let_go() -> bool:
            return not central.gateway.is_connected("CP-1")
        await until(a_let_go)
        await asyncio.sleep(0.2)  # A's disconnect handling, had it written anything
        assert await online(central)
        offline = await central.store.count(d.ConnectionEvent, Eq("online", False))
        assert offline == 0
        await on_b.aclose()

        async def offline_now() -> bool:
            return not await online(central)
        await until(offline_now)


async def test_a_charger_that_connected_elsewhere_is_let_go_here(tmp_path: Path) -> None:
    """With the instances' bus: instance A closes its old socket as soon as the charger's
    connection to instance B is announced, without recording a disconnect."""
    bus = MemoryEventBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    await seed(central)
    try:
        async with second_instance(central, bus) as (a, a_url), \
                second_instance(central, bus) as (b, b_url), \
                connected(a_url, "CP-1", password=STATION_PASSWORD) as on_a:

            async def a_holds() -> bool:
                return a.gateway.is_connected("CP-1") and await online(central)
            await until(a_holds)
            async with connected(b_url, "CP-1", password=STATION_PASSWORD):

                async def a_let_go() -> bool:
                    return not a.gateway.is_connected("CP-1")
                await until(a_let_go)
                assert b.gateway.is_connected("CP-1")
                assert on_a._connection.close_code == 1000  # type: ignore[attr-defined]
                await asyncio.sleep(0.2)  # A's disconnect handling, had it written anything
                assert await online(central)
                assert await central.store.count(d.ConnectionEvent,
                                                 Eq("online", False)) == 0
    finally:
        await stop_central(central)
        await bus.close()
