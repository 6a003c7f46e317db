"""One charger, several instances: which of its connections is the station's is decided by
the number the store draws per connection, not by the instances' clocks. Each instance
here has its own services, store connection and clock, on one database and one bus."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Subprotocol

from chargegraph.housekeeping import following_changes
from domain import entities as d
from domain.clock import utcnow
from domain.errors import ChargerLost
from domain.policy import SYSTEM, Policy
from domain.query import Eq
from domain.services import ConnectorSpec, ServiceContext, Services
from ocpp_bridge.gateway import OcppGateway
from ocpp_bridge.server import OcppServer
from ocpp_bridge.simulator import connected
from pubsub.memory import MemoryEventBus
from store.sqlite import SqliteStore
from tests.helpers import FastHasher, all_taken, soon, until


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
                   clock: Callable[[], datetime] = utcnow, *, leased: bool = False
                   ) -> AsyncIterator[Instance]:
    """``leased``: with an instance lease (an hour: never lapsing in a test) and the
    lease round (``upkeep``) the test drives."""
    store = SqliteStore(str(path))
    await store.start()
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                       bus=bus, clock=clock))
    server = OcppServer(services.charging, OcppGateway(), "127.0.0.1", 0,
                        response_timeout=5, instances_bus=bus,
                        instances=services.instances if leased else None,
                        lease_seconds=3600)
    try:
        async with following_changes(services.charging, bus):  # as ``chargegraph`` wires it
            await server.start()
            try:
                yield Instance(services, store, server)
            finally:
                await server.stop()
    finally:
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
    async with instance(path, bus, leased=True) as at, connected(at.url, "CP-1"):
        await until(lambda: _settled(at, at.server))
        await at.services.charging.disconnect("CP-1")
        await at.server.upkeep()  # its lease is valid: it used to look no further
        assert await _settled(at, at.server)


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
                # A's watcher has heard B's announcement (it acts on it as it takes it),
                # A's own connection still being recorded.
                await soon(lambda: all_taken(bus))
                go.set()
                await until(lambda: _closed(old))
                assert old._connection.close_reason == "connected to another instance"
                assert is_open(new) and await _settled(a, b.server)


async def test_upkeep_closes_a_socket_superseded_while_its_announcement_was_lost(
        path: Path) -> None:
    """QA s19 (cluster): the charger moved from A to B while the bus was away, so A never
    heard B's announcement; A kept its stale socket, and commands sent through A went to
    it and timed out. A's upkeep reads its connections' numbers and lets it go."""
    apart, elsewhere = MemoryEventBus(), MemoryEventBus()  # A hears nothing of B
    await apart.start()
    await elsewhere.start()
    try:
        async with instance(path, apart, leased=True) as a, \
                instance(path, elsewhere) as b, connected(a.url, "CP-1") as stale:
            await until(lambda: _settled(a, a.server))
            await a.server.upkeep()
            assert is_open(stale)  # still the station's: kept
            async with connected(b.url, "CP-1") as live:
                await until(lambda: _settled(a, b.server))
                await a.server.upkeep()
                await until(lambda: _closed(stale))
                assert stale._connection.close_reason == "connected to another instance"
                assert is_open(live) and await _settled(a, b.server)
    finally:
        await apart.close()
        await elsewhere.close()


async def test_a_command_sent_after_a_supersession_not_yet_heard_says_no_order(
        path: Path) -> None:
    """QA s32: the charger moved from A to B while the bus was away, and A, not knowing,
    sent it a command on the stale socket. When A's upkeep let that socket go, the
    command failed saying the charger "connected to another instance while its previous
    connection had the command", though the new connection came first. It says what
    is true in either order."""
    apart, elsewhere = MemoryEventBus(), MemoryEventBus()  # A hears nothing of B
    await apart.start()
    await elsewhere.start()
    try:
        async with instance(path, apart, leased=True) as a, \
                instance(path, elsewhere) as b, \
                ws_connect(f"{a.url}/CP-1", subprotocols=[Subprotocol("ocpp1.6")]) as stale:
            await until(lambda: _settled(a, a.server))
            async with connected(b.url, "CP-1"):
                await until(lambda: _settled(a, b.server))
                # Sent after B's connection was recorded; the stale socket never answers.
                command = asyncio.create_task(a.server.gateway.call(
                    "CP-1", "UnlockConnector", {"connectorId": 1}, 30))
                frame = json.loads(await stale.recv())
                assert frame[2] == "UnlockConnector"
                await a.server.upkeep()
                with pytest.raises(ChargerLost) as lost:
                    await asyncio.wait_for(command, 10)
                assert str(lost.value) == (
                    "CP-1 connected to another instance; the command went to its previous "
                    "connection, which may have got it: its outcome is unknown")
    finally:
        await apart.close()
        await elsewhere.close()


# ------------------------------------------------------------------ arrival order
def arrivals(at: Instance, count: int) -> Callable[[], Awaitable[bool]]:
    """Whether ``count`` arrivals of CP-1 hold or wait for their turn on ``at``."""
    async def queued() -> bool:
        return at.server._arriving.users("CP-1") == count
    return queued


async def test_an_arrival_queued_behind_a_slow_one_loses_to_a_newer_socket_elsewhere(
        path: Path, bus: MemoryEventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review: the charger's socket X waited on instance A behind a slow earlier arrival
    W; the charger gave up on it and connected to B (Y). X drew its connection number
    only when its turn came, after Y: it was recorded as the station's newest, and B
    closed Y, the live socket, as superseded. Numbered as it arrived, X is older than Y:
    the station ends on Y, which stays open."""
    async with instance(path, bus) as a, instance(path, bus) as b:
        charging = a.services.charging
        real = charging.connect
        holding, go = asyncio.Event(), asyncio.Event()

        async def first_is_slow(cp_id: str, **kwargs: Any) -> Any:
            if not holding.is_set():  # W's record, holding CP-1's turn on A
                holding.set()
                await go.wait()
            return await real(cp_id, **kwargs)
        monkeypatch.setattr(charging, "connect", first_is_slow)
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(go.set)  # whatever fails, W is let go
            w = await stack.enter_async_context(connected(a.url, "CP-1"))
            await holding.wait()
            x = await stack.enter_async_context(connected(a.url, "CP-1"))
            await until(arrivals(a, 2))  # X waits its turn behind W
            y = await stack.enter_async_context(connected(b.url, "CP-1"))
            await until(lambda: _settled(a, b.server))
            go.set()

            async def w_and_another_closed() -> bool:
                return not is_open(w) and not (is_open(x) and is_open(y))
            await until(w_and_another_closed)
            assert is_open(y) and not is_open(x)
            assert x._connection.close_reason == "connected to another instance"
            await until(arrivals(a, 0))
            found = await station(a)
            on_b = b.server.gateway.handler_of("CP-1")
            assert on_b is not None and found.online
            assert (found.connected_instance, found.connection) == (
                b.server.instance_id, on_b.number)
            assert a.server.gateway.handler_of("CP-1") is None


async def test_of_two_arrivals_here_the_later_wins_whichever_draw_returns_first(
        path: Path, bus: MemoryEventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first arrival's number comes back from the store after the second has drawn
    its own and been recorded: the first, older, must not replace the second (it would
    have closed it, then lost to its number in the store and closed itself: the charger
    left with no connection at all). It is the one closed."""
    async with instance(path, bus) as a:
        draw = a.store.next_sequence
        drawn, go = asyncio.Event(), asyncio.Event()

        async def first_returns_late(name: str) -> int:
            number = await draw(name)
            if name == "connection" and not drawn.is_set():
                drawn.set()
                await go.wait()
            return number
        monkeypatch.setattr(a.store, "next_sequence", first_returns_late)
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(go.set)  # whatever fails, the first arrival is let go
            first = await stack.enter_async_context(connected(a.url, "CP-1"))
            await drawn.wait()
            second = await stack.enter_async_context(connected(a.url, "CP-1"))
            await until(lambda: _settled(a, a.server))
            newer = a.server.gateway.handler_of("CP-1")
            assert newer is not None
            go.set()
            await until(lambda: _closed(first))
            assert first._connection.close_reason == "replaced by a new connection"
            await until(arrivals(a, 0))
            assert a.server.gateway.handler_of("CP-1") is newer and is_open(second)
            found = await station(a)
            assert found.online and found.connection == newer.number
