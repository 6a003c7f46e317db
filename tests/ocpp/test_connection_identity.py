"""One charger, several instances: which of its connections is the station's is decided by
the number the store draws per connection, not by the instances' clocks. Each instance
here has its own services, store connection and clock, on one database and one bus."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM, Policy
from domain.query import Eq
from domain.services import ConnectorSpec, ServiceContext, Services
from ocpp_bridge.gateway import OcppGateway
from ocpp_bridge.server import OcppServer
from ocpp_bridge.simulator import connected
from pubsub.memory import MemoryEventBus
from store.sqlite import SqliteStore
from tests.helpers import FastHasher, until


@dataclass
class Instance:
    services: Services
    store: SqliteStore
    server: OcppServer

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.bound_port}/ocpp"


@contextlib.asynccontextmanager
async def instance(path: Path, bus: MemoryEventBus,
                   clock: Callable[[], datetime] = utcnow) -> AsyncIterator[Instance]:
    store = SqliteStore(str(path))
    await store.start()
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                       bus=bus, clock=clock))
    server = OcppServer(services.charging, OcppGateway(), "127.0.0.1", 0,
                        response_timeout=5, instances_bus=bus)
    await server.start()
    try:
        yield Instance(services, store, server)
    finally:
        await server.stop()
        await store.close()


@pytest.fixture
async def bus() -> AsyncIterator[MemoryEventBus]:
    shared = MemoryEventBus()
    await shared.start()
    yield shared
    await shared.close()


@pytest.fixture
async def path(tmp_path: Path, bus: MemoryEventBus) -> Path:
    """The shared database, with CP-1 (no password)."""
    file = tmp_path / "shared.db"
    async with instance(file, bus) as setup:
        await setup.services.stations.create_station(
            SYSTEM, cp_id="CP-1", name="One",
            connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 50)])
    return file


async def station(at: Instance) -> d.Station:
    found = await at.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    assert found is not None
    return found


def is_open(cp: Any) -> bool:
    return cp._connection.close_code is None  # type: ignore[no-any-return]


# ------------------------------------------------------------------ the service
async def test_only_the_newest_connections_close_takes_the_station_offline(
        path: Path, bus: MemoryEventBus) -> None:
    async with instance(path, bus) as a, instance(path, bus) as b:
        on_a = await a.services.charging.connect("CP-1", instance="A")
        on_b = await b.services.charging.connect("CP-1", instance="B")
        assert on_a is not None and on_b is not None and on_b.number > on_a.number
        assert await a.services.charging.disconnect("CP-1", number=on_a.number) is None
        now = await station(a)
        assert (now.online, now.connected_instance, now.connection) == (True, "B",
                                                                        on_b.number)
        assert await b.services.charging.disconnect("CP-1", number=on_b.number) is not None
        assert not (await station(a)).online


async def test_a_connection_drawn_first_but_recorded_last_loses(
        path: Path, bus: MemoryEventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """A draws its number, B draws a higher one and records it before A writes: A's
    connection is not written over B's (a blind write made A the station's, and its
    later close took the station offline under B's open socket)."""
    async with instance(path, bus) as a, instance(path, bus) as b:
        charging = a.services.charging
        read = charging.station
        drawn, go = asyncio.Event(), asyncio.Event()

        async def held(cp_id: str) -> d.Station | None:
            drawn.set()
            await go.wait()
            return await read(cp_id)
        monkeypatch.setattr(charging, "station", held)
        connecting = asyncio.create_task(charging.connect("CP-1", instance="A"))
        await drawn.wait()
        on_b = await b.services.charging.connect("CP-1", instance="B")
        go.set()
        on_a = await connecting
        assert on_a is not None and on_b is not None
        assert not on_a.newest and on_b.newest
        assert ((await station(b)).connected_instance, (await station(b)).connection) == (
            "B", on_b.number)


# ------------------------------------------------------------------ the servers
async def test_the_same_charger_connecting_to_two_instances_at_once_keeps_one_socket(
        path: Path, bus: MemoryEventBus) -> None:
    """QA: in a third of such trials both sockets stayed open, and closing one recorded
    the station offline under the other."""
    async with instance(path, bus) as a, instance(path, bus) as b:
        for _ in range(8):
            await connect_to_both(a, b)
            await until(lambda: _offline(a))


async def connect_to_both(a: Instance, b: Instance) -> None:
    async with contextlib.AsyncExitStack() as sockets:
        first, second = await asyncio.gather(
            sockets.enter_async_context(connected(a.url, "CP-1")),
            sockets.enter_async_context(connected(b.url, "CP-1")))

        async def one_closed() -> bool:
            return is_open(first) != is_open(second)
        await until(one_closed)
        if is_open(first):
            winner, loser, server = first, second, a.server
        else:
            winner, loser, server = second, first, b.server
        assert loser._connection.close_reason == "connected to another instance"
        await until(lambda: _settled(a, server))
        await asyncio.sleep(0.2)  # the loser's disconnect handling, had it written anything
        assert await _settled(a, server)
        assert is_open(winner)


async def _settled(at: Instance, holder: OcppServer) -> bool:
    found = await station(at)
    return found.online and found.connected_instance == holder.instance_id


async def _offline(at: Instance) -> bool:
    return not (await station(at)).online


async def test_a_newer_connection_on_an_instance_whose_clock_is_behind_wins(
        path: Path, bus: MemoryEventBus) -> None:
    """QA: with instance C's clock 3 s behind A's, the charger moving from A to C was
    never let go by A (C's connection looked older), and A's socket closing then took the
    station offline while it was connected to C."""
    behind = lambda: utcnow() - timedelta(seconds=3)  # noqa: E731
    async with instance(path, bus) as a, instance(path, bus, behind) as c, \
            connected(a.url, "CP-1") as old:
        await until(lambda: _settled(a, a.server))
        async with connected(c.url, "CP-1") as new:
            await until(lambda: _closed(old))
            assert old._connection.close_reason == "connected to another instance"
            await until(lambda: _settled(a, c.server))
            await asyncio.sleep(0.2)  # A's disconnect handling, had it written anything
            assert await _settled(a, c.server)
            assert is_open(new)


async def _closed(cp: Any) -> bool:
    return not is_open(cp)


async def test_a_connected_chargers_heartbeat_repairs_its_station_recorded_offline(
        path: Path, bus: MemoryEventBus) -> None:
    async with instance(path, bus) as a, connected(a.url, "CP-1") as cp:
        await until(lambda: _settled(a, a.server))
        await a.services.charging.disconnect("CP-1")  # whatever recorded it offline
        assert not (await station(a)).online
        await cp.heartbeat()
        assert await _settled(a, a.server)


async def test_upkeep_repairs_a_connection_recorded_offline(
        path: Path, bus: MemoryEventBus) -> None:
    store = SqliteStore(str(path))
    await store.start()
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                       bus=bus))
    server = OcppServer(services.charging, OcppGateway(), "127.0.0.1", 0,
                        instances_bus=bus, instances=services.instances,
                        lease_seconds=3600)
    await server.start()
    try:
        at = Instance(services, store, server)
        async with connected(at.url, "CP-1"):
            await until(lambda: _settled(at, server))
            await services.charging.disconnect("CP-1")
            await server.upkeep()  # its lease is valid: it used to look no further
            assert await _settled(at, server)
    finally:
        await server.stop()
        await store.close()


async def test_a_newer_connection_announced_while_this_one_is_recorded_still_wins(
        path: Path, bus: MemoryEventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recorded its connection first; B's newer one is recorded and announced before A
    has taken note of its own number: A's socket still goes (the announcement used to
    be ignored while A's connection time was unknown)."""
    async with instance(path, bus) as a, instance(path, bus) as b:
        charging = a.services.charging
        real = charging.connect
        recorded, go = asyncio.Event(), asyncio.Event()

        async def slow(cp_id: str, **kwargs: Any) -> Any:
            done = await real(cp_id, **kwargs)
            recorded.set()
            await go.wait()
            return done
        monkeypatch.setattr(charging, "connect", slow)
        async with connected(a.url, "CP-1") as old:
            await recorded.wait()
            async with connected(b.url, "CP-1") as new:
                await until(lambda: _settled(a, b.server))
                await asyncio.sleep(0.05)  # A's watcher hears B's announcement
                go.set()
                await until(lambda: _closed(old))
                assert old._connection.close_reason == "connected to another instance"
                assert is_open(new) and await _settled(a, b.server)
