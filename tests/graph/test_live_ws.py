"""Subscriptions over websockets (graph/live_ws.py) in process, over raw ASGI: shared
execution keeps every role's view exact, slow subscribers lose their oldest events without
holding anyone up, and both protocols behave as Strawberry's handlers did."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.entities import Record, Role
from domain.errors import ValidationError
from domain.events import (
    CommandCompleted,
    ConnectorStatusChanged,
    MaintenanceStatusChanged,
    ReservationChanged,
    SessionChanged,
    StationConnectionChanged,
)
from domain.policy import SYSTEM, Policy, Viewer
from domain.ports import Insert, Update
from domain.services import ServiceContext, Services
from domain.services.base import changed
from graph import TokenService, live_ws
from graph.app import resolve_viewer
from graph.context import GraphContext
from graph.errors import camel
from graph.ids import to_global_id
from graph.live_outbox import ABORT, start_eagerly
from graph.live_render import RENDER_BACKLOG, RenderQueue
from graph.live_ws import LiveEndpoint, Timers
from graph.pipeline import MAX_TOKENS
from graph.schema import schema
from graph.subscription import CommandEventFilter, SessionEventFilter
from pubsub.memory import MemoryEventBus
from tests.graph.conftest import SECRET, CountingStore
from tests.graph.test_scalars import set_price_body
from tests.graph.world import World, build_world
from tests.helpers import FastHasher, soon
from tests.support.fragments import counting_parser, doubling
from tests.support.garbage import left_to_the_collector

NESTED = """subscription($f: StationEventFilter) { connectorStatusChanged(filter: $f) {
  cpId status droppedBefore connector { maxKw } station { cpId owner { name } } } }"""
LOCAL = "subscription { connectorStatusChanged { cpId status info droppedBefore } }"
LOCAL_FRAGMENT = """subscription { connectorStatusChanged { ...F __typename } }
fragment F on ConnectorStatusEvent { cpId info stationId at }"""
#: These sockets' messages are counted exactly: no keep-alives among them (a legacy socket
#: gets a ``ka`` right after its ack). Keep-alives: tests/shell/test_websocket_keepalive.py.
NO_KEEPALIVE = timedelta(0)


class Setup:
    def __init__(self, services: Services, world: World, bus: MemoryEventBus,
                 queue_size: int = 1000,
                 revalidate_every: timedelta = timedelta(hours=1),
                 keep_alive: timedelta = NO_KEEPALIVE, timers: Timers | None = None,
                 token_clock: Callable[[], datetime] = utcnow) -> None:
        self.services = services
        self.world = world
        self.bus = bus
        self.tokens = TokenService(SECRET, timedelta(hours=1), clock=token_clock)

        async def authorize(header: str | None) -> Viewer:
            return await resolve_viewer(services, self.tokens, header)

        self.endpoint = LiveEndpoint(services, self.tokens, schema, authorize,
                                     queue_size=queue_size,
                                     revalidate_every=revalidate_every,
                                     keep_alive=keep_alive, timers=timers)

    def token(self, name: str) -> str:
        return self.tokens.issue(self.world.users[name].id).token

    async def open(self, name: str | None = None, protocol: str = "graphql-transport-ws"
                   ) -> Socket:
        socket = Socket(self.endpoint, protocol)
        await socket.connect()
        if name is not None or protocol:
            await socket.init(self.token(name) if name else None)
        return socket

    async def subscribed(self, count: int) -> None:
        for _ in range(500):
            if self.services.live.watching >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"only {self.services.live.watching} subscriptions")

    def status(self, cp_id: str, info: str, status: str = "Faulted") -> ConnectorStatusChanged:
        station = self.world.stations[cp_id]
        return ConnectorStatusChanged(
            station_id=station.id, cp_id=cp_id, company_id=station.company_id,
            owner_id=station.owner_id, connector_record_id=self.world.connectors[cp_id][0].id,
            connector_id=1, status=status, info=info)


class Socket:
    """An ASGI websocket client. ``gate`` cleared makes the server's sends wait, as a
    socket whose peer stopped reading does."""

    def __init__(self, app: Any, protocol: str, client: str = "test",
                 headers: dict[str, str] | None = None,
                 extensions: dict[str, Any] | None = None) -> None:
        self.app = app
        self.extensions = extensions or {}
        #: The gate holds the close too (uvicorn's send waits for a writable socket
        #: before any message).
        self.gate_closes = False
        self.protocol = protocol
        self.client = client
        self.headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outgoing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.gate = asyncio.Event()
        self.gate.set()
        self.task: asyncio.Task[None] | None = None

    async def _receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send" or (
                self.gate_closes and message["type"] == "websocket.close"):
            await self.gate.wait()
        self.outgoing.put_nowait(message)

    async def connect(self) -> None:
        scope = {"type": "websocket", "path": "/graphql", "raw_path": b"/graphql",
                 "query_string": b"", "headers": self.headers,
                 "subprotocols": [self.protocol],
                 "scheme": "ws", "server": ("testserver", 80),
                 "client": (self.client, 1), "extensions": self.extensions}
        self.task = asyncio.create_task(self.app(scope, self._receive, self._send))
        self.incoming.put_nowait({"type": "websocket.connect"})
        accept = await asyncio.wait_for(self.outgoing.get(), 5)
        assert accept["type"] == "websocket.accept"
        self.accepted = accept.get("subprotocol")

    def put(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        self.incoming.put_nowait({"type": "websocket.receive", "text": text})

    async def raw(self, timeout: float = 5) -> dict[str, Any]:
        return await asyncio.wait_for(self.outgoing.get(), timeout)

    async def next(self, timeout: float = 5) -> dict[str, Any]:
        message = await self.raw(timeout)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])  # type: ignore[no-any-return]

    async def init(self, token: str | None) -> dict[str, Any]:
        payload = {"authorization": f"Bearer {token}"} if token else {}
        self.put({"type": "connection_init", "payload": payload})
        return await self.next()

    def subscribe(self, op_id: str, query: str, variables: dict[str, Any] | None = None
                  ) -> None:
        kind = "subscribe" if self.protocol == "graphql-transport-ws" else "start"
        self.put({"id": op_id, "type": kind, "payload": {"query": query,
                                                         "variables": variables}})

    def nothing_pending(self) -> bool:
        return self.outgoing.empty()

    async def close(self) -> None:
        self.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
        if self.task is not None:
            await asyncio.wait_for(self.task, 5)


@pytest.fixture
async def live(store: CountingStore) -> AsyncIterator[Setup]:
    bus = MemoryEventBus()
    services = Services(ServiceContext(store=store,  # type: ignore[arg-type]
                                       policy=Policy(public_map=False),
                                       hasher=FastHasher(), bus=bus))
    world = await build_world(services)
    yield Setup(services, world, bus)
    await bus.close()


def data(message: dict[str, Any]) -> dict[str, Any]:
    assert message["type"] in ("next", "data"), message
    return message["payload"]["data"]["connectorStatusChanged"]  # type: ignore[no-any-return]


async def reference(live: Setup, name: str, query: str, event: ConnectorStatusChanged
                    ) -> dict[str, Any] | None:
    """What Strawberry's own per-subscriber subscription machinery answers this viewer."""
    viewer = live.world.viewer(name)
    context = GraphContext.build(live.services, live.tokens, viewer)
    stream = await schema.subscribe(query, context_value=context)
    waiter = asyncio.ensure_future(stream.__anext__())  # type: ignore[union-attr]
    for _ in range(100):
        await asyncio.sleep(0)
    await live.bus.publish(event)
    try:
        result = await asyncio.wait_for(waiter, 0.5)
    except TimeoutError:
        return None
    finally:
        await stream.aclose()  # type: ignore[union-attr]
    assert not result.errors, result.errors
    return result.data["connectorStatusChanged"]  # type: ignore[no-any-return,index]


async def test_shared_execution_keeps_each_roles_view(live: Setup) -> None:
    names = ["admin", "admin", "op_a", "op_a2", "op_b", "driver1", "driver2"]
    sockets = [await live.open(name) for name in names]
    for socket in sockets:
        socket.subscribe("1", NESTED)
    await live.subscribed(len(names))
    # Nested fields depend on the viewer: one execution per distinct viewer, not per socket.
    assert len(live.endpoint.hub.groups) == len(set(names))
    event = live.status("A-001", "first")
    await live.bus.publish(event)
    got = {}
    for name, socket in zip(names, sockets, strict=True):
        if name == "op_b":
            continue
        got[name] = data(await socket.next())
    assert got["admin"]["station"]["owner"] == {"name": "Op_A"}
    assert got["op_a"]["station"]["owner"] == {"name": "Op_A"}
    assert got["op_a2"]["station"]["owner"] == {"name": "Op_A"}
    assert got["driver1"]["station"]["owner"] is None  # the public view
    assert got["driver1"]["connector"] == {"maxKw": 150.0}
    await asyncio.sleep(0.05)
    assert sockets[names.index("op_b")].nothing_pending()  # another tenant's station
    for socket in sockets:
        await socket.close()
    assert live.services.live.watching == 0 and not live.endpoint.hub.groups
    # Exactly what the per-subscriber path gives each of them.
    for name in ("admin", "op_a", "op_b", "driver1"):
        assert got.get(name) == await reference(live, name, NESTED,
                                                live.status("A-001", "first")), name


async def test_reservation_changes_reach_their_driver_and_the_stations_operators(
        live: Setup) -> None:
    station = live.world.stations["A-001"]
    record = d.Reservation(reservation_id=7, station_id=station.id, cp_id="A-001",
                           connector_id=1, id_tag="TAG", user_id=live.world.users["driver1"].id,
                           expires_at=utcnow() + timedelta(hours=1),
                           state=d.ReservationState.ACTIVE)
    await live.services.ctx.store.write([Insert(record)], [])
    names = ["driver1", "driver2", "op_a", "op_b"]
    sockets = [await live.open(name) for name in names]
    for socket in sockets:
        socket.subscribe("1", """subscription { reservationChanged { reservationId cpId
            state reservation { idTag state } station { cpId } } }""")
    await live.subscribed(len(names))
    await live.bus.publish(ReservationChanged(
        station_id=station.id, cp_id="A-001", company_id=station.company_id,
        owner_id=station.owner_id, reservation_record_id=record.id, reservation_id=7,
        connector_id=1, user_id=record.user_id, state="ACTIVE"))
    expected = {"reservationId": 7, "cpId": "A-001", "state": "ACTIVE",
                "reservation": {"idTag": "TAG", "state": "ACTIVE"},
                "station": {"cpId": "A-001"}}
    for name in ("driver1", "op_a"):
        message = await sockets[names.index(name)].next()
        assert message["payload"]["data"]["reservationChanged"] == expected, name
    await asyncio.sleep(0.05)
    assert sockets[names.index("driver2")].nothing_pending()  # another driver's
    assert sockets[names.index("op_b")].nothing_pending()  # another company's station
    for socket in sockets:
        await socket.close()


async def test_a_socket_runs_a_bounded_number_of_operations(live: Setup) -> None:
    from graph.live_ws import MAX_OPERATIONS_PER_SOCKET

    socket = await live.open("admin")
    for i in range(MAX_OPERATIONS_PER_SOCKET):
        socket.subscribe(str(i), LOCAL)
    await live.subscribed(MAX_OPERATIONS_PER_SOCKET)
    socket.subscribe("one too many", LOCAL)
    refused = await socket.next()
    assert refused["type"] == "error" and refused["id"] == "one too many"
    assert refused["payload"][0]["extensions"]["code"] == "TOO_MANY_OPERATIONS"
    socket.put({"id": "0", "type": "complete"})  # one ends: there is room again
    socket.subscribe("now fits", LOCAL)
    await live.subscribed(MAX_OPERATIONS_PER_SOCKET)
    await asyncio.sleep(0.05)
    assert socket.nothing_pending()
    await socket.close()


async def test_event_only_selections_are_shared_across_roles(live: Setup) -> None:
    names = ["admin", "op_a", "op_b", "driver1"]
    sockets = [await live.open(name) for name in names]
    for socket in sockets:
        socket.subscribe("1", LOCAL)
        socket.subscribe("2", LOCAL_FRAGMENT)
    await live.subscribed(2 * len(names))
    assert len(live.endpoint.hub.groups) == 2  # one per document, whoever watches
    await live.bus.publish(live.status("A-002", "shared"))
    for name, socket in zip(names, sockets, strict=True):
        if name == "op_b":
            continue  # sharing the shape does not share visibility
        first, second = await socket.next(), await socket.next()
        by_id = {first["id"]: first, second["id"]: second}
        assert data(by_id["1"]) == {"cpId": "A-002", "status": "FAULTED", "info": "shared",
                                    "droppedBefore": 0}
        assert data(by_id["2"])["info"] == "shared"
        assert data(by_id["2"])["__typename"] == "ConnectorStatusEvent"
    await asyncio.sleep(0.05)
    assert sockets[2].nothing_pending()
    for socket in sockets:
        await socket.close()


async def test_a_slow_subscriber_loses_its_oldest_events_and_delays_nobody(
        store: CountingStore) -> None:
    bus = MemoryEventBus()
    services = Services(ServiceContext(store=store,  # type: ignore[arg-type]
                                       policy=Policy(), hasher=FastHasher(), bus=bus))
    live = Setup(services, await build_world(services), bus, queue_size=2)
    fast, slow = await live.open("admin"), await live.open("admin")
    fast.subscribe("1", LOCAL)
    slow.subscribe("1", LOCAL)
    await live.subscribed(2)
    slow.gate.clear()  # slow's peer stops reading
    for i in range(1, 7):
        await bus.publish(live.status("A-001", f"s{i}"))
    received = [data(await fast.next()) for _ in range(6)]
    assert [r["info"] for r in received] == [f"s{i}" for i in range(1, 7)]
    assert all(r["droppedBefore"] == 0 for r in received)
    slow.gate.set()
    late = [data(await slow.next()) for _ in range(3)]
    # s1 was being sent when the socket stalled; s2–s4 fell out of the queue of two.
    assert [(r["info"], r["droppedBefore"]) for r in late] == [
        ("s1", 0), ("s5", 3), ("s6", 0)]
    await fast.close()
    await slow.close()
    await bus.close()


async def test_a_ping_behind_a_backlog_is_awaited_from_when_it_went_out(
        live: Setup) -> None:
    """QA: the pong was awaited from when the keep-alive's ping was queued, so a client on
    a slow link, reading a burst of events with the ping behind them, was closed (4408)
    although it read everything and answered the ping as soon as it came. The wait counts
    from when the ping went out, and while it waits in the queue the socket taking
    messages shows that someone reads."""
    timers = ManualTimers()  # moved by the test: a loaded machine cannot stretch it
    live = Setup(live.services, live.world, live.bus, keep_alive=timedelta(seconds=1),
                 timers=timers)
    socket = await live.open("admin")  # acknowledged at 0
    socket.subscribe("1", LOCAL)
    await live.subscribed(1)
    socket.gate.clear()  # the link is slow: one message at a time, when let through
    for i in range(30):
        await live.bus.publish(live.status("A-001", f"s{i}"))
    kinds: list[str] = []
    at = 0.0
    while len(kinds) < 31:  # thirty events and the ping, a quarter interval each
        at += 0.25  # the ping is queued at 1.0 and reaches the socket around 7.75
        await timers.advance_to(at)
        socket.gate.set()
        socket.gate.clear()  # the send waiting goes, the next one waits again
        message = await socket.raw()
        assert message["type"] == "websocket.send", message  # was: close 4408 at 2.0
        kinds.append(json.loads(message["text"])["type"])
        if kinds[-1] == "ping":
            socket.put({"type": "pong"})
            await soon(socket.incoming.empty)  # the server has taken it (and noted when)
    assert kinds.count("next") == 30 and kinds.count("ping") == 1, kinds
    socket.gate.set()
    await timers.advance_to(at + 1.5)  # past the answered ping's deadline: still open
    assert socket.nothing_pending() or json.loads(
        (await socket.raw())["text"]) == {"type": "ping"}
    await socket.close()


async def test_a_socket_that_takes_nothing_is_closed_with_its_ping_unsent(
        live: Setup) -> None:
    """A client that stopped reading (a frozen tab, a half-open socket behind full
    buffers) never gets the ping: a socket that took nothing for an interval is closed.
    On the test's clock (``ManualTimers``): on the wall's, a loaded machine's set-up ran
    past the interval and the ping went out before the socket stopped taking."""
    timers = ManualTimers()
    live = Setup(live.services, live.world, live.bus, keep_alive=timedelta(seconds=1),
                 timers=timers)
    socket = await live.open("admin")  # acknowledged at 0: the last the socket took
    socket.subscribe("1", LOCAL)
    await live.subscribed(1)
    socket.gate.clear()
    for i in range(3):
        await live.bus.publish(live.status("A-001", f"s{i}"))
    await timers.advance_to(1.0)  # quiet for an interval: the ping queued behind them
    assert socket.nothing_pending()
    await timers.advance_to(1.9)  # the socket took nothing: still less than an interval
    assert socket.nothing_pending()
    await timers.advance_to(2.0)  # an interval since it took anything: closed
    assert await socket.raw() == {"type": "websocket.close", "code": 4408,
                                  "reason": "Pong timeout"}
    await socket.close()
    assert live.services.live.watching == 0


async def test_a_ping_that_waited_for_the_socket_is_awaited_from_when_the_socket_took_it(
        live: Setup) -> None:
    """README: a socket is closed 4408 when its client sends nothing "within as long again
    after the ping reached the socket". A ping given to the outbox while it is idle but the
    socket is not writable (uvicorn's send waits for ``writable`` before it writes: the
    transport is paused after the previous burst) is stamped ``sent_at`` when the send
    started, not when it went out, so the client is closed moments after the ping reaches
    it, although it answers well within an interval of receiving it."""
    timers = ManualTimers()
    live = Setup(live.services, live.world, live.bus, keep_alive=timedelta(seconds=1),
                 timers=timers)
    socket = await live.open("admin")  # acknowledged at 0
    socket.gate.clear()  # the socket stops taking messages; nothing is queued yet
    await timers.advance_to(1.0)  # the ping is due, given to the outbox, and waits
    assert socket.nothing_pending()
    await timers.advance_to(1.8)  # most of an interval later the socket takes it
    socket.gate.set()
    assert await socket.next() == {"type": "ping"}
    # The client answers after 0.4 of an interval (a slow link's round trip), past the
    # pong timer's first look (at 2.0, an interval after the ping was queued).
    await timers.advance_to(2.2)
    assert socket.nothing_pending(), await socket.raw()  # was: close 4408 "Pong timeout"
    socket.put({"type": "pong"})
    await soon(socket.incoming.empty)  # the server has taken it (and noted when)
    # Answered: the next look (an interval after the ping reached the socket) pings again.
    await timers.advance_to(2.8)
    assert await socket.next() == {"type": "ping"}
    await socket.close()


class ManualTimers(Timers):
    """The keep-alive's clock, moved by the test: its timers run as it passes them."""

    def __init__(self) -> None:
        self.at = 0.0
        self.order = itertools.count()
        self.due: list[tuple[float, int, asyncio.Handle, Callable[[], None]]] = []

    def now(self) -> float:
        return self.at

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.Handle:
        handle = asyncio.Handle(callback, (), asyncio.get_running_loop())  # cancellable
        self.due.append((self.at + delay, next(self.order), handle, callback))
        return handle

    async def advance_to(self, at: float) -> None:
        """Runs the timers due by ``at`` in order, each at its time, and then what they
        started (a close, a send) as far as it goes without waiting."""
        while (due := sorted(self.due)) and due[0][0] <= at:
            self.due.remove(due[0])
            self.at, _, handle, callback = due[0]
            if not handle.cancelled():
                callback()
        self.at = at
        for _ in range(20):
            await asyncio.sleep(0)


async def test_a_close_the_socket_does_not_take_drops_the_connection(live: Setup) -> None:
    """A client that reads nothing takes no close either: after ``close_within`` the
    server is asked to drop the connection (``ABORT``, where it offers it) and the
    subscriptions end at once, not when the client finally goes."""
    live = Setup(live.services, live.world, live.bus, keep_alive=timedelta(seconds=0.2))
    live.endpoint.close_within_s = 0.2
    socket = Socket(live.endpoint, "graphql-transport-ws", extensions={ABORT: {}})
    socket.gate_closes = True
    await socket.connect()
    await socket.init(live.token("admin"))
    socket.subscribe("1", LOCAL)
    await live.subscribed(1)
    socket.gate.clear()
    for i in range(3):
        await live.bus.publish(live.status("A-001", f"s{i}"))
    assert await socket.raw(3) == {"type": ABORT}
    assert live.services.live.watching == 0
    assert live.endpoint.hub.running == 0
    await socket.close()
    assert socket.nothing_pending()


async def test_at_most_one_pong_and_one_ka_wait_for_a_socket(live: Setup) -> None:
    """A client that reads nothing would have them pile up without bound (its events are
    bounded per subscription): while one waits, another adds nothing."""
    socket = await live.open("admin")  # no keep-alive: only the pongs
    socket.gate.clear()
    for _ in range(5):
        socket.put({"type": "ping"})
    await asyncio.sleep(0.05)
    socket.gate.set()
    assert await socket.next() == {"type": "pong"}
    for _ in range(5):
        await asyncio.sleep(0)
    assert socket.nothing_pending()
    socket.put({"type": "ping"})  # the last one went out: the next one is answered
    assert await socket.next() == {"type": "pong"}
    await socket.close()

    legacy = Setup(live.services, live.world, live.bus, keep_alive=timedelta(seconds=0.2))
    socket = await legacy.open("admin", protocol="graphql-ws")
    assert await socket.next() == {"type": "ka"}
    socket.gate.clear()
    await asyncio.sleep(1.1)  # five intervals
    socket.gate.set()
    assert await socket.next() == {"type": "ka"}
    for _ in range(5):
        await asyncio.sleep(0)
    assert socket.nothing_pending()  # not the four others
    await socket.close()


async def test_events_the_process_missed_are_announced(store: CountingStore) -> None:
    bus = MemoryEventBus(queue_size=1)
    services = Services(ServiceContext(store=store,  # type: ignore[arg-type]
                                       policy=Policy(), hasher=FastHasher(), bus=bus))
    live = Setup(services, await build_world(services), bus)
    socket = await live.open("op_a")
    socket.subscribe("1", NESTED)
    await live.subscribed(1)
    for i in range(1, 4):  # no await in between: the pump's queue of one overflows
        bus.deliver(live.status("A-001", f"s{i}"))
    got = data(await socket.next())
    assert got["droppedBefore"] == 2 and got["station"]["owner"] == {"name": "Op_A"}
    await socket.close()
    await bus.close()


async def test_nested_results_arrive_in_order(live: Setup) -> None:
    socket = await live.open("driver1")
    socket.subscribe("1", NESTED, {"f": {"cpIds": ["A-001", "B-001"]}})
    await live.subscribed(1)
    for i, cp_id in enumerate(["A-001", "A-002", "B-001", "A-001", "B-001"]):
        await live.bus.publish(live.status(cp_id, f"s{i}"))
    got = [data(await socket.next()) for _ in range(4)]
    assert [g["cpId"] for g in got] == ["A-001", "B-001", "A-001", "B-001"]  # filtered
    assert all(g["station"]["owner"] is None for g in got)
    await socket.close()


async def test_websocket_operations_have_the_limits_of_http_ones(live: Setup) -> None:
    """Depth, aliases and tokens are limited over websockets as over HTTP (one request
    pipeline parses and validates for both doors)."""
    socket = await live.open("admin")
    deep = ("subscription { sessionUpdated { session { "
            + "station { connectors { " * 8 + "connectorId" + " } }" * 8 + " } } }")
    socket.subscribe("deep", deep)
    error = await socket.next()
    assert error["type"] == "error" and error["id"] == "deep"
    assert "exceeds maximum operation depth" in error["payload"][0]["message"]
    aliases = "subscription { " + " ".join(
        f"a{i}: connectorStatusChanged {{ cpId }}" for i in range(40)) + " }"
    socket.subscribe("aliases", aliases)
    error = await socket.next()
    assert error["type"] == "error" and error["id"] == "aliases"
    assert "aliases" in error["payload"][0]["message"]
    tokens = "subscription { connectorStatusChanged { " + " ".join(
        "cpId" for _ in range(MAX_TOKENS)) + " } }"
    socket.subscribe("tokens", tokens)
    closed = await socket.raw()
    assert closed["type"] == "websocket.close" and closed["code"] == 4400
    assert "tokens" in closed["reason"]


async def test_transport_ws_protocol(live: Setup) -> None:
    socket = Socket(live.endpoint, "graphql-transport-ws")
    await socket.connect()
    assert socket.accepted == "graphql-transport-ws"
    socket.subscribe("1", LOCAL)
    assert await socket.raw() == {"type": "websocket.close", "code": 4401,
                                  "reason": "Unauthorized"}

    socket = await live.open("admin")
    socket.put({"type": "ping"})
    assert await socket.next() == {"type": "pong"}
    socket.subscribe("bad", "subscription { connectorStatusChanged { nope } }")
    error = await socket.next()
    assert error["type"] == "error" and error["id"] == "bad"
    assert "nope" in error["payload"][0]["message"]
    # A variable its type refuses is coded over the socket as over HTTP.
    socket.subscribe("var", "subscription($c: [String!]) { connectorStatusChanged("
                            "filter: {cpIds: $c}) { cpId } }", {"c": [1]})
    error = await socket.next()
    assert error["type"] == "error" and error["id"] == "var"
    assert error["payload"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "c.0"}
    socket.subscribe("q", "{ stations(first: 1) { totalCount } }")
    assert (await socket.next())["payload"] == {"data": {"stations": {"totalCount": 4}}}
    assert await socket.next() == {"type": "complete", "id": "q"}
    socket.subscribe("1", LOCAL)
    await live.subscribed(1)
    socket.subscribe("1", LOCAL)
    assert await socket.raw() == {"type": "websocket.close", "code": 4409,
                                  "reason": "Subscriber for 1 already exists"}
    await socket.close()
    assert live.services.live.watching == 0

    socket = await live.open("admin")
    socket.subscribe("1", LOCAL)
    await live.subscribed(1)
    socket.put({"id": "1", "type": "complete"})
    for _ in range(100):
        if live.services.live.watching == 0:
            break
        await asyncio.sleep(0.01)
    assert live.services.live.watching == 0
    socket.put({"type": "connection_init"})
    assert (await socket.raw())["code"] == 4429
    await socket.close()

    socket = await live.open("admin")
    socket.subscribe("1", "subscription { connectorStatusChanged {")
    assert (await socket.raw())["code"] == 4400
    await socket.close()
    socket = await live.open("admin")
    socket.put("not json")
    assert await socket.raw() == {"type": "websocket.close", "code": 4400,
                                  "reason": "WebSocket message must be valid JSON"}
    await socket.close()


async def test_connection_init_auth_and_subprotocols(live: Setup) -> None:
    socket = Socket(live.endpoint, "graphql-transport-ws")
    await socket.connect()
    socket.put({"type": "connection_init", "payload": {"authorization": "Bearer nope"}})
    assert await socket.raw() == {"type": "websocket.close", "code": 4403,
                                  "reason": "Forbidden"}
    await socket.close()

    socket = Socket(live.endpoint, "mqtt")
    await socket.connect()
    assert socket.accepted is None
    assert (await socket.raw())["code"] == 4406
    await socket.task  # type: ignore[misc]

    legacy = Socket(live.endpoint, "graphql-ws")
    await legacy.connect()
    legacy.put({"type": "connection_init", "payload": {"authorization": "Bearer nope"}})
    rejected = await legacy.next()
    assert rejected["type"] == "connection_error"
    assert rejected["payload"]["code"] == "INVALID_TOKEN"
    assert (await legacy.raw())["code"] == 1011
    await legacy.close()


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_an_anonymous_socket_is_closed_at_init_unless_the_map_is_public(
        live: Setup, protocol: str) -> None:
    """QA s24: with the public map off, a ``connection_init`` without a token was
    acknowledged and the socket held open for ever, though every subscription on it was
    refused. It is closed at init now (4403; the legacy protocol's connection_error);
    with the public map on it is acknowledged and follows the public topics only."""
    socket = Socket(live.endpoint, protocol)
    await socket.connect()
    socket.put({"type": "connection_init", "payload": {}})
    if protocol == "graphql-ws":
        assert await socket.next() == {"type": "connection_error", "payload": {
            "code": "UNAUTHENTICATED", "message": "sign in first"}}
        assert (await socket.raw())["code"] == 1011
    else:
        assert await socket.raw() == {"type": "websocket.close", "code": 4403,
                                      "reason": "Forbidden"}
    await socket.close()

    live.services.policy.public_map = True
    anonymous = await live.open(None, protocol=protocol)  # acknowledged (``init``)
    anonymous.subscribe("1", "subscription { sessionUpdated { transactionId } }")
    error = await anonymous.next()
    assert error["type"] == "error"
    refusal = error["payload"][0] if protocol == "graphql-transport-ws" else error["payload"]
    assert refusal["extensions"]["code"] == "UNAUTHENTICATED"
    anonymous.subscribe("2", LOCAL)  # the public availability map
    await live.subscribed(1)
    await anonymous.close()


async def test_the_periodic_re_check_catches_what_was_not_announced(live: Setup) -> None:
    """A change no ``AccessChanged`` announced (written by another instance whose bus
    message was lost, here straight into the store): within a re-validation period the
    socket is closed (4403). Untouched users keep their subscriptions."""
    fast = Setup(live.services, live.world, live.bus,
                 revalidate_every=timedelta(milliseconds=50))
    store = live.services.ctx.store
    kept = await fast.open("op_b")
    kept.subscribe("1", LOCAL)
    sockets = {name: await fast.open(name) for name in ("op_a", "op_a2", "driver1")}
    for socket in sockets.values():
        socket.subscribe("1", LOCAL)
    await live.subscribed(4)
    await asyncio.sleep(0.2)  # a few re-validation rounds that change nothing
    users = live.world.users
    for name, change in (("op_a", {"active": False}), ("op_a2", {"role": Role.DRIVER}),
                         ("driver1", {"token_epoch": 1})):
        await store.write([Update(changed(users[name], SYSTEM, **change))], [])
    for name, socket in sockets.items():
        closed = await socket.raw(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4403, "reason": "Forbidden"}, name
        await socket.close()
    await live.bus.publish(live.status("B-001", "still here"))
    assert data(await kept.next())["info"] == "still here"
    await kept.close()


async def test_an_expired_token_closes_the_socket_saying_so(live: Setup) -> None:
    """QA (s16): an expired token closed the socket as a revoked one did (4403
    "Forbidden"), so an app could not tell "refresh and reconnect" from "sign in again".
    The reason says "Token expired", at connection_init and when it expires later, told
    by the periodic re-check here (the expiry's own timer is the next test's): on the
    tokens' clock, which the test moves, the timers' standing still."""
    driver = live.world.users["driver1"].id
    expired = TokenService(SECRET, timedelta(minutes=-5)).issue(driver).token
    socket = Socket(live.endpoint, "graphql-transport-ws")
    await socket.connect()
    socket.put({"type": "connection_init", "payload": {"authorization": f"Bearer {expired}"}})
    assert await socket.raw() == {"type": "websocket.close", "code": 4403,
                                  "reason": "Token expired"}
    await socket.close()
    clock = TokenClock()
    fast = Setup(live.services, live.world, live.bus,
                 revalidate_every=timedelta(milliseconds=50), timers=ManualTimers(),
                 token_clock=clock)
    socket = await fast.open("driver1")  # a token of an hour: valid until 3630 s on
    socket.subscribe("1", LOCAL)
    await fast.subscribed(1)
    clock.now += timedelta(seconds=3600 + 30 + 1)
    assert await socket.raw(timeout=15) == {"type": "websocket.close", "code": 4403,
                                            "reason": "Token expired"}
    await socket.close()


async def test_a_socket_is_closed_when_its_token_expires_not_at_the_next_re_check(
        live: Setup) -> None:
    """QA s32: a live subscription went on sending events for up to a re-check period
    (a minute) after its token expired. The connection schedules its close for the
    token's expiry and the leeway (as HTTP refuses it then): on the timers the test
    moves, the re-check an hour away; nothing is delivered after the close."""
    timers = ManualTimers()
    live = Setup(live.services, live.world, live.bus, timers=timers)
    socket = await live.open("driver1")  # a token of an hour: valid until 3630 s on
    socket.subscribe("1", LOCAL)
    await live.subscribed(1)
    await timers.advance_to(3600 + 30 - 5)  # a few seconds before: still open
    await live.bus.publish(live.status("A-001", "before"))
    assert data(await socket.next())["info"] == "before"
    await timers.advance_to(3600 + 30 + 1)
    assert await socket.raw() == {"type": "websocket.close", "code": 4403,
                                  "reason": "Token expired"}
    # A socket opened now (its token good for another hour) is told the next event:
    # by then the closed one would have been given it too.
    witness = await live.open("driver1")
    witness.subscribe("1", LOCAL)
    await live.subscribed(2)
    await live.bus.publish(live.status("A-001", "after"))
    assert data(await witness.next())["info"] == "after"
    assert socket.nothing_pending(), await socket.raw()
    await witness.close()
    await socket.close()


class TokenClock:
    """The tokens' clock (``TokenService``), moved by the test apart from the timers'."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_a_subscribe_after_the_token_expired_closes_the_socket_before_its_timer(
        live: Setup, protocol: str) -> None:
    """QA: a subscription sent on a socket whose token had expired was started. Since QA
    s32 a timer closes the socket at the expiry, so a subscribe after it found it closed
    and the check before each subscription went untested (review r32-c). Here the
    token's clock is past the expiry and the timers' (a clock of their own) have not
    reached it: the subscribe alone closes the socket, and starts nothing."""
    clock = TokenClock()
    live = Setup(live.services, live.world, live.bus, timers=ManualTimers(),
                 token_clock=clock)
    socket = await live.open("driver1", protocol)  # its expiry timer at 3630 s
    clock.now += timedelta(hours=2)
    socket.subscribe("1", LOCAL)
    assert await socket.raw() == {"type": "websocket.close", "code": 4403,
                                  "reason": "Token expired"}
    assert live.services.live.watching == 0
    await socket.close()


async def test_timers_closing_a_socket_at_once_start_one_close(
        live: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r32-c: the token's expiry started its close over one a timer had started
    (a pong timeout here, or the init timeout), dropping the reference that kept that
    one's task alive. The second is skipped: a close is under way."""
    clock = TokenClock()
    timers = ManualTimers()
    live = Setup(live.services, live.world, live.bus, keep_alive=timedelta(seconds=1),
                 timers=timers, token_clock=clock)
    token = live.token("driver1")
    # Connected 2 s before the token expires (its hour and the leeway; less the part of
    # a second its whole-second ``exp`` drops): the expiry is due between 1.0 and 2.0
    # on the timers, the pong timeout of a ping sent at 1.0 unanswered at 2.0.
    clock.now += timedelta(hours=1, seconds=28)
    started: list[tuple[int, str]] = []
    close = live_ws.Connection.close

    async def closing(self: live_ws.Connection, code: int, reason: str = "") -> None:
        started.append((code, reason))
        await close(self, code, reason)
    monkeypatch.setattr(live_ws.Connection, "close", closing)
    socket = Socket(live.endpoint, "graphql-transport-ws")
    await socket.connect()
    await socket.init(token)
    await timers.advance_to(1.0)
    assert await socket.next() == {"type": "ping"}
    await timers.advance_to(2.0)  # both run before either close has begun
    assert await socket.raw() == {"type": "websocket.close", "code": 4403,
                                  "reason": "Token expired"}
    assert started == [(4403, "Token expired")]
    await socket.close()


async def test_a_subscribe_checks_the_token_s_expiry_without_a_store_read(
        live: Setup, store: CountingStore) -> None:
    """Review r2: the check before a new subscription read the user (``withdrawn``),
    one store read per subscribe awaited in turn in the socket's message loop (a round
    trip each on MongoDB). Rights withdrawn close the sockets as it is announced
    (``AccessChanged``) or by the periodic re-check; a subscribe checks only the token's
    expiry, which the token carries. Both protocols; the user is read once, by
    ``connection_init``."""
    for protocol in ("graphql-transport-ws", "graphql-ws"):
        store.detail.clear()
        socket = await live.open("driver1", protocol)
        assert store.detail.count("get_many:user") == 1, protocol
        store.detail.clear()
        for i in range(5):
            socket.subscribe(str(i), LOCAL)
        await live.subscribed(5)
        assert store.detail == [], protocol
        await socket.close()
        await asyncio.sleep(0)


async def test_a_rights_change_closes_sockets_at_once_and_ops_are_checked(
        live: Setup) -> None:
    """Without waiting for the periodic re-check: the account change is announced on
    the bus (``AccessChanged``) and the user's sockets close at once; and a query sent
    over a socket is checked like an HTTP request, announced or not."""
    slow = Setup(live.services, live.world, live.bus, revalidate_every=timedelta(hours=1))
    accounts = live.services.accounts
    admin = live.world.viewer("admin")
    watcher = await slow.open("op_a")
    watcher.subscribe("1", LOCAL)
    other = await slow.open("op_b")
    other.subscribe("1", LOCAL)
    await live.subscribed(2)
    await accounts.deactivate_user(admin, live.world.users["op_a"].id)
    closed = await watcher.raw(timeout=2)
    assert closed == {"type": "websocket.close", "code": 4403, "reason": "Forbidden"}
    await watcher.close()
    assert other.nothing_pending()

    asker = await slow.open("driver1")
    driver = live.world.users["driver1"]  # its password changed, unannounced:
    await live.services.ctx.store.write([Update(changed(driver, SYSTEM, token_epoch=1))], [])
    asker.put({"id": "q", "type": "subscribe", "payload": {"query": "{ me { name } }"}})
    refused = await asker.raw(timeout=2)
    assert refused == {"type": "websocket.close", "code": 4403, "reason": "Forbidden"}
    await asker.close()
    await other.close()


async def test_an_erasure_closes_the_erased_person_s_sockets_at_once(live: Setup) -> None:
    """QA s22: an erased account is signed out everywhere, as a deactivated one is: its
    open sockets close without waiting for the periodic re-check."""
    slow = Setup(live.services, live.world, live.bus, revalidate_every=timedelta(hours=1))
    erased = await slow.open("driver2")
    erased.subscribe("1", LOCAL)
    other = await slow.open("op_b")
    other.subscribe("1", LOCAL)
    await live.subscribed(2)
    await live.services.erasure.erase_user(live.world.viewer("admin"),
                                           live.world.users["driver2"].id)
    closed = await erased.raw(timeout=2)
    assert closed == {"type": "websocket.close", "code": 4403, "reason": "Forbidden"}
    await erased.close()
    assert other.nothing_pending()
    await other.close()
    await live.services.erasure.settled()


async def test_one_connection_init_per_socket_and_subscriptions_are_size_checked(
        live: Setup) -> None:
    legacy = await live.open("driver1", protocol="graphql-ws")
    legacy.put({"type": "connection_init", "payload": {}})  # would swap the rights checked
    closed = await legacy.raw()
    assert closed == {"type": "websocket.close", "code": 4429,
                      "reason": "Too many initialisation requests"}
    await legacy.close()

    socket = await live.open("op_a")
    nested = "name"
    for _ in range(3):
        nested = f"sessions(first: 100) {{ nodes {{ station {{ {nested} }} }} }}"
    socket.subscribe("1", "subscription { sessionUpdated { session { station { "
                          f"{nested} }} }} }} }}")
    error = await socket.next()
    assert error["type"] == "error"
    assert error["payload"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    await socket.close()


def _session_event(session: d.Session, change: str) -> SessionChanged:
    return SessionChanged(station_id=session.station_id, cp_id=session.cp_id,
                          company_id=session.company_id, owner_id=session.station_owner_id,
                          change=change, session_id=session.id,
                          transaction_id=session.transaction_id,
                          connector_id=session.connector_id, user_id=session.user_id,
                          vehicle_id=session.vehicle_id, energy_wh=7000, power_w=None,
                          state="COMPLETED" if change == "ENDED" else "ACTIVE")


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_one_sessions_updates_complete_with_its_end(live: Setup, protocol: str
                                                          ) -> None:
    """QA (s16, a driver app): sessionUpdated(filter: {sessionId}) delivered ENDED and then
    nothing, for ever; subscribed to a session already over, it never said a word. It
    completes after the ENDED event, and at once for a session over (or not the
    viewer's)."""
    from graph.ids import to_global_id

    query = """subscription($id: ID!) { sessionUpdated(filter: {sessionId: $id}) {
      change energyKwh } }"""
    active, over = live.world.sessions["s1"], live.world.sessions["s2"]
    socket = await live.open("driver1", protocol=protocol)
    socket.subscribe("done", query, {"id": to_global_id("session", over.id)})
    assert await socket.next() == {"type": "complete", "id": "done"}
    socket.subscribe("other", query, {"id": to_global_id("session", live.world.sessions[
        "s3"].id)})  # driver2's
    assert await socket.next() == {"type": "complete", "id": "other"}
    socket.subscribe("live", query, {"id": to_global_id("session", active.id)})
    await live.subscribed(1)
    for change in ("UPDATED", "ENDED"):
        await live.bus.publish(_session_event(active, change))
    got = [await socket.next() for _ in range(3)]
    assert [(m["type"], m["id"]) for m in got] == [
        ("next" if protocol == "graphql-transport-ws" else "data", "live")] * 2 + [
        ("complete", "live")]
    assert [m["payload"]["data"]["sessionUpdated"]["change"] for m in got[:2]] == [
        "UPDATED", "ENDED"]
    assert live.services.live.watching == 0  # forgotten, not only told
    # Review s16: its end published while it was asked whether it was over (before the
    # watch) was lost, and it waited for ever. Watched first, then asked.
    reads = live.services.reads
    read = reads.get

    async def ending_meanwhile(viewer: Any, kind: Any, record_id: str) -> Any:
        found = await read(viewer, kind, record_id)
        await live.bus.publish(_session_event(active, "ENDED"))
        await asyncio.sleep(0.05)
        return found

    reads.get = ending_meanwhile  # type: ignore[method-assign]
    try:
        socket.subscribe("race", query, {"id": to_global_id("session", active.id)})
        raced = [await socket.next() for _ in range(2)]
    finally:
        del reads.get
    assert [m["type"] for m in raced][-1] == "complete"
    assert raced[0]["payload"]["data"]["sessionUpdated"]["change"] == "ENDED"
    await asyncio.sleep(0.05)
    assert socket.nothing_pending()  # one complete, not two
    # A socket not reading while the events come: the completion waits behind them.
    socket.subscribe("slow", query, {"id": to_global_id("session", active.id)})
    await live.subscribed(1)
    socket.gate.clear()
    for change in ("UPDATED", "UPDATED", "ENDED"):
        await live.bus.publish(_session_event(active, change))
    for _ in range(100):  # until they wait in the socket's queue (the first one sending)
        if socket.nothing_pending() and live.services.live.watching == 0:
            break
        await asyncio.sleep(0.01)
    socket.gate.set()
    late = [await socket.next() for _ in range(4)]
    assert [m["type"] for m in late][-1] == "complete"
    assert [m["payload"]["data"]["sessionUpdated"]["change"] for m in late[:3]] == [
        "UPDATED", "UPDATED", "ENDED"]
    await socket.close()


async def test_maintenance_progress_reaches_who_runs_the_station(live: Setup) -> None:
    station = live.world.stations["A-001"]
    query = "subscription { maintenanceStatusChanged { cpId kind status station { cpId } } }"
    operator, driver = await live.open("op_a"), await live.open("driver1")
    for socket in (operator, driver):
        socket.subscribe("m", query)
    await live.subscribed(2)
    await live.bus.publish(MaintenanceStatusChanged(
        station_id=station.id, cp_id="A-001", company_id=station.company_id,
        owner_id=station.owner_id, kind="FIRMWARE", status="Installing"))
    got = await operator.next()
    assert got["payload"]["data"]["maintenanceStatusChanged"] == {
        "cpId": "A-001", "kind": "FIRMWARE", "status": "Installing",
        "station": {"cpId": "A-001"}}
    await asyncio.sleep(0.05)
    assert driver.nothing_pending()
    await operator.close()
    await driver.close()


async def test_maintenance_statuses_read_as_the_station_s_enums(live: Setup) -> None:
    """Review s32: ``MaintenanceEvent.status`` was a String in OCPP's spelling while
    ``Station.firmwareStatus`` and ``diagnosticsStatus`` are enums. Each kind's status
    is its station field's enum now (the other null); ``status`` stays as it was,
    deprecated."""
    station = live.world.stations["A-001"]
    query = """subscription { maintenanceStatusChanged {
        kind status firmwareStatus diagnosticsStatus } }"""
    operator = await live.open("op_a")
    operator.subscribe("m", query)
    await live.subscribed(1)
    sent = [("FIRMWARE", "DownloadFailed"), ("FIRMWARE", "Requested"),
            ("DIAGNOSTICS", "UploadFailed"), ("DIAGNOSTICS", "Requested")]
    for kind, status in sent:
        await live.bus.publish(MaintenanceStatusChanged(
            station_id=station.id, cp_id="A-001", company_id=station.company_id,
            owner_id=station.owner_id, kind=kind, status=status))
    got = [(await operator.next())["payload"]["data"]["maintenanceStatusChanged"]
           for _ in sent]
    assert got == [
        {"kind": "FIRMWARE", "status": "DownloadFailed", "firmwareStatus": "DOWNLOAD_FAILED",
         "diagnosticsStatus": None},
        {"kind": "FIRMWARE", "status": "Requested", "firmwareStatus": "REQUESTED",
         "diagnosticsStatus": None},
        {"kind": "DIAGNOSTICS", "status": "UploadFailed", "firmwareStatus": None,
         "diagnosticsStatus": "UPLOAD_FAILED"},
        {"kind": "DIAGNOSTICS", "status": "Requested", "firmwareStatus": None,
         "diagnosticsStatus": "REQUESTED"}]
    await operator.close()


async def test_legacy_graphql_ws(live: Setup) -> None:
    socket = await live.open("op_a", protocol="graphql-ws")
    socket.subscribe("7", NESTED)
    socket.subscribe("8", LOCAL)
    await live.subscribed(2)
    await live.bus.publish(live.status("A-001", "legacy"))
    messages = {m["id"]: m for m in [await socket.next(), await socket.next()]}
    assert messages["7"]["type"] == "data"
    assert data(messages["7"])["station"]["owner"] == {"name": "Op_A"}
    assert data(messages["8"])["info"] == "legacy"
    socket.put({"id": "7", "type": "stop"})
    assert await socket.next() == {"type": "complete", "id": "7"}
    socket.subscribe("9", "subscription { connectorStatusChanged { nope } }")
    error = await socket.next()
    assert error["type"] == "error" and "nope" in error["payload"]["message"]
    socket.put({"type": "connection_terminate"})
    assert (await socket.raw())["code"] == 1000
    await socket.close()
    assert live.services.live.watching == 0


async def test_subscriptions_complete_when_the_bus_closes(live: Setup) -> None:
    socket = await live.open("admin")
    socket.subscribe("1", LOCAL)
    await live.subscribed(1)
    await live.bus.close()
    assert await socket.next() == {"type": "complete", "id": "1"}
    await socket.close()


async def test_start_eagerly() -> None:
    async def immediate() -> int:
        return 1

    assert start_eagerly(immediate()) is None
    gate = asyncio.Event()
    steps: list[str] = []

    async def suspends() -> str:
        steps.append("before")
        await gate.wait()
        steps.append("after")
        return "done"

    rest = start_eagerly(suspends())
    assert rest is not None and steps == ["before"]  # ran up to its first suspension

    async def finish() -> Any:
        return await rest

    task = asyncio.create_task(finish())
    gate.set()
    assert await task == "done" and steps == ["before", "after"]

    gate.clear()
    blocked = start_eagerly(suspends())
    assert blocked is not None

    async def cancelled() -> Any:
        return await blocked

    task = asyncio.create_task(cancelled())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_events_loaded_records_go_with_its_rendering(live: Setup) -> None:
    """Each nested rendering loads through loaders of its own, on a copy of the
    subscription's executor; what it loaded goes when the rendering is done, not later
    with the garbage collector (unlike a request's, which graph.pipeline.RequestPipeline
    has to release: a request's executor is a reference cycle)."""
    socket = await live.open("admin")
    socket.subscribe("1", NESTED)
    await live.subscribed(1)
    with left_to_the_collector() as garbage:
        await live.bus.publish(live.status("A-001", "released"))
        assert data(await socket.next())["station"]["owner"] == {"name": "Op_A"}
    assert [r for r in garbage if isinstance(r, Record)] == []
    await socket.close()


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_an_interrupted_feed_ends_its_subscriptions_with_events_lost(
        live: Setup, protocol: str) -> None:
    """A broken bus connection loses an unknown number of events: a live map must read the
    state again, so every subscription ends at once with EVENTS_LOST, and a new one works."""
    socket = await live.open("op_a", protocol=protocol)
    socket.subscribe("1", NESTED)
    socket.subscribe("2", LOCAL)
    await live.subscribed(2)
    live.bus.interrupt()
    errors = {m["id"]: m for m in [await socket.next(), await socket.next()]}
    for op_id in ("1", "2"):
        assert errors[op_id]["type"] == "error"
        payload = errors[op_id]["payload"]
        first = payload[0] if isinstance(payload, list) else payload
        assert first["extensions"]["code"] == "EVENTS_LOST"
    for _ in range(100):
        if live.services.live.watching == 0:
            break
        await asyncio.sleep(0.01)
    assert live.services.live.watching == 0
    socket.subscribe("3", LOCAL)
    await live.subscribed(1)
    await live.bus.publish(live.status("A-001", "again"))
    assert data(await socket.next())["info"] == "again"
    assert socket.nothing_pending()
    await socket.close()


async def test_an_iterated_feed_raises_events_lost(live: Setup) -> None:
    """The per-subscriber path (graphql-core's own subscription machinery) says the same."""
    from graphql import GraphQLError

    from graph.subscription import LiveFeed

    context = GraphContext.build(live.services, live.tokens, SYSTEM, None)
    feed = LiveFeed(context, "connector_status", lambda event: True,
                    lambda event, dropped: (event.info, dropped))
    before = live.bus.subscriber_count
    first = asyncio.ensure_future(feed.__anext__())
    for _ in range(500):  # subscribed at the first read
        if live.bus.subscriber_count > before:
            break
        await asyncio.sleep(0.01)
    await live.bus.publish(live.status("A-001", "before"))
    assert await asyncio.wait_for(first, 5) == ("before", 0)
    live.bus.interrupt()
    with pytest.raises(GraphQLError) as info:
        await asyncio.wait_for(feed.__anext__(), 5)
    assert info.value.extensions == {"code": "EVENTS_LOST"}
    await feed.aclose()


async def test_doubled_fragments_of_a_subscription_are_looked_into_once(
        live: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the socket as over HTTP (tests/graph/test_fragments.py): the limits, the
    estimate and the question whether the selection reads the event only look into each
    fragment a bounded number of times, however often it is spread."""
    reads = counting_parser(monkeypatch)
    levels = 16
    socket = await live.open("admin")
    socket.subscribe("1", doubling(levels, "ConnectorStatusEvent", "cpId info",
                                   "subscription Doubled { connectorStatusChanged { ...F0 } }"))
    await live.subscribed(1)
    assert len(live.endpoint.hub.groups) == 1
    assert next(iter(live.endpoint.hub.groups.values())).shared  # the event's fields only
    await live.bus.publish(live.status("A-001", "doubled"))
    assert data(await socket.next()) == {"cpId": "A-001", "info": "doubled"}
    assert len(reads) == levels and max(reads.values()) <= 100, reads
    await socket.close()


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_a_literal_a_scalar_refuses_is_a_validation_error_over_the_socket(
        live: Setup, protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    socket = await live.open("admin", protocol=protocol)
    socket.subscribe("1", '{ sessions(filter: {from: "yesterday"}) { totalCount } }')
    error = await socket.next()
    assert error["type"] == "error" and error["id"] == "1"
    payload = error["payload"]
    first = payload[0] if isinstance(payload, list) else payload
    assert "DateTime cannot represent 'yesterday'" in first["message"]
    assert "errorId" not in first.get("extensions", {})
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await socket.close()


async def test_only_the_authorization_of_connection_init_is_kept(live: Setup) -> None:
    """The payload lives as long as the socket: whatever else a client puts in it (up to
    a message's size) is not held."""
    socket = Socket(live.endpoint, "graphql-transport-ws")
    await socket.connect()
    authorization = f"Bearer {live.token('admin')}"
    socket.put({"type": "connection_init",
                "payload": {"authorization": authorization, "padding": "x" * 100_000}})
    assert await socket.next() == {"type": "connection_ack"}
    socket.subscribe("1", NESTED)  # a group of its own, with the connection's context
    await live.subscribed(1)
    [group] = live.endpoint.hub.groups.values()
    assert group.context.connection_params == {"authorization": authorization}
    await socket.close()


@pytest.mark.parametrize("shape", ["Authorization", "headers", "authToken", "bare token",
                                   "upgrade header"])
async def test_a_socket_signs_in_with_the_token_shapes_clients_send(
        live: Setup, shape: str) -> None:
    """Only ``{"authorization": …}`` was read: the other shapes client libraries send
    were taken for anonymous, acknowledged, and every subscription then failed."""
    token = live.token("admin")
    shapes: dict[str, dict[str, Any]] = {
        "Authorization": {"Authorization": f"Bearer {token}"},
        "headers": {"headers": {"Authorization": f"Bearer {token}"}},
        "authToken": {"authToken": token},
        "bare token": {"token": f"Bearer {token}"},
        "upgrade header": {},
    }
    payload = shapes[shape]
    headers = {"Authorization": f"Bearer {token}"} if shape == "upgrade header" else None
    socket = Socket(live.endpoint, "graphql-transport-ws", headers=headers)
    await socket.connect()
    socket.put({"type": "connection_init", "payload": payload})
    assert await socket.next() == {"type": "connection_ack"}
    socket.subscribe("1", NESTED)
    await live.subscribed(1)
    [group] = live.endpoint.hub.groups.values()
    assert group.context.viewer.user_id == live.world.users["admin"].id
    await socket.close()


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_a_socket_without_connection_init_is_closed_on_both_protocols(
        live: Setup, protocol: str) -> None:
    """Other messages before ``connection_init`` (a legacy client's unknown ones, which
    that protocol ignores) do not keep a socket open; an initialised one stays."""
    async def authorize(header: str | None) -> Viewer:
        return await resolve_viewer(live.services, live.tokens, header)

    endpoint = LiveEndpoint(live.services, live.tokens, schema, authorize,
                            connection_init_timeout=timedelta(milliseconds=50),
                            keep_alive=NO_KEEPALIVE)
    silent = Socket(endpoint, protocol)
    await silent.connect()
    silent.put({"type": "ka"} if protocol == "graphql-ws" else {"type": "ping"})
    messages = [await silent.raw() for _ in range(1 if protocol == "graphql-ws" else 2)]
    assert messages[-1] == {"type": "websocket.close", "code": 4408,
                            "reason": "Connection initialisation timeout"}
    await silent.close()

    initialised = Socket(endpoint, protocol)
    await initialised.connect()
    await initialised.init(live.token("driver1"))
    await asyncio.sleep(0.2)  # the timeout's time has passed
    assert initialised.nothing_pending()
    await initialised.close()


async def test_operations_are_limited_per_client_address_and_in_all(live: Setup) -> None:
    """However many sockets they open: a client address runs at most so many operations
    at once, and all sockets together at most so many, each refused with
    TOO_MANY_OPERATIONS; what ends makes room again."""
    async def authorize(header: str | None) -> Viewer:
        return await resolve_viewer(live.services, live.tokens, header)

    endpoint = LiveEndpoint(live.services, live.tokens, schema, authorize,
                            max_operations=5, max_operations_per_client=3,
                            keep_alive=NO_KEEPALIVE)
    hub = endpoint.hub

    async def opened(client: str) -> Socket:
        socket = Socket(endpoint, "graphql-transport-ws", client)
        await socket.connect()
        await socket.init(live.token("admin"))
        return socket

    async def refused(socket: Socket, op_id: str) -> str:
        socket.subscribe(op_id, LOCAL)
        error = await socket.next()
        assert error["type"] == "error" and error["id"] == op_id, error
        [reason] = error["payload"]
        assert reason["extensions"] == {"code": "TOO_MANY_OPERATIONS"}
        return str(reason["message"])

    first, second = await opened("198.51.100.7"), await opened("198.51.100.7")
    first.subscribe("1", LOCAL)
    first.subscribe("2", LOCAL)
    second.subscribe("1", LOCAL)
    await live.subscribed(3)
    assert "per client address" in await refused(second, "2")
    other = await opened("203.0.113.9")  # another address has room of its own
    other.subscribe("1", LOCAL)
    other.subscribe("2", LOCAL)
    await live.subscribed(5)
    assert "try again later" in await refused(other, "3")  # five in all
    second.put({"id": "1", "type": "complete"})
    for _ in range(100):
        if hub.running == 4:
            break
        await asyncio.sleep(0.01)
    other.subscribe("3", LOCAL)  # room again
    await live.subscribed(5)
    assert hub.running_by_client == {"198.51.100.7": 2, "203.0.113.9": 3}
    await live.bus.publish(live.status("A-001", "limited"))
    assert data(await other.next())["info"] == "limited"
    for socket in (first, second, other):
        await socket.close()
    assert hub.running == 0 and hub.running_by_client == {}


def nested(i: int) -> str:
    """A nested selection of its own (the alias): a render group per subscription."""
    return (f"subscription {{ connectorStatusChanged {{ info droppedBefore "
            f"c{i}: connector {{ maxKw }} }} }}")


class HeldReads:
    """A store whose batch loads take a few loop turns, counting how many are under way at
    once (each nested render below has at most one)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.now = 0
        self.most = 0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_many(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            return await self.inner.get_many(*args, **kwargs)
        finally:
            self.now -= 1


async def held_setup(store: CountingStore, max_renders: int,
                     render_backlog: int = RENDER_BACKLOG, queue_size: int = 1000
                     ) -> tuple[HeldReads, MemoryEventBus, Setup]:
    """A world over ``HeldReads`` with an endpoint of the given render limits."""
    held = HeldReads(store)
    bus = MemoryEventBus()
    services = Services(ServiceContext(store=held,  # type: ignore[arg-type]
                                       policy=Policy(), hasher=FastHasher(), bus=bus))
    live = Setup(services, await build_world(services), bus)

    async def authorize(header: str | None) -> Viewer:
        return await resolve_viewer(services, live.tokens, header)

    live.endpoint = LiveEndpoint(services, live.tokens, schema, authorize,
                                 queue_size=queue_size, max_renders=max_renders,
                                 render_backlog=render_backlog, keep_alive=NO_KEEPALIVE)
    return held, bus, live


async def test_nested_renders_run_a_bounded_number_at_once(store: CountingStore) -> None:
    """Thirty subscriptions with selections of their own are thirty renders per event:
    they run at most ``max_renders`` at once (each a task sharing the loop with chargers
    and queries), not all at once, and every subscriber still gets every event."""
    held, bus, live = await held_setup(store, max_renders=3)
    socket = await live.open("admin")
    for i in range(30):
        socket.subscribe(str(i), nested(i))
    await live.subscribed(30)
    assert len(live.endpoint.hub.groups) == 30
    held.most = 0
    for n in range(2):
        await bus.publish(live.status("A-001", f"s{n}"))
    got = [await socket.next() for _ in range(60)]
    assert held.most <= 3
    by_op: dict[str, list[str]] = {}
    for message in got:
        event = data(message)
        assert event["droppedBefore"] == 0 and event[f"c{message['id']}"] == {"maxKw": 150.0}
        by_op.setdefault(message["id"], []).append(event["info"])
    assert by_op == {str(i): ["s0", "s1"] for i in range(30)}
    hub = live.endpoint.hub
    assert (hub.renders.running, hub.renders.waiting) == (0, 0)
    await socket.close()
    await bus.close()


async def test_past_the_render_backlog_groups_coalesce_to_the_newest_event(
        store: CountingStore) -> None:
    """Events faster than nested selections can be rendered: past the process's backlog,
    a group's render still waiting is replaced by the newest event's, whose
    ``droppedBefore`` counts what its members missed, so what waits stays bounded. The
    shared selection (event fields only) misses nothing."""
    _, bus, live = await held_setup(store, max_renders=1, render_backlog=4)
    hub = live.endpoint.hub
    groups = 10
    socket, light = await live.open("admin"), await live.open("admin")
    for i in range(groups):
        socket.subscribe(str(i), nested(i))
    light.subscribe("1", LOCAL)
    await live.subscribed(groups + 1)
    events = 6
    most_waiting = 0
    for n in range(events):
        await bus.publish(live.status("A-001", f"s{n}"))
        for _ in range(5):  # the pump hands the event out
            await asyncio.sleep(0)
        most_waiting = max(most_waiting, hub.renders.waiting)
    # At most the backlog plus one render per group waits, however many events come.
    assert most_waiting <= 4 + groups
    assert [data(await light.next())["info"] for _ in range(events)] == [
        f"s{n}" for n in range(events)]
    seen: dict[str, list[tuple[str, int]]] = {str(i): [] for i in range(groups)}
    while any(not s or s[-1][0] != f"s{events - 1}" for s in seen.values()):
        message = await socket.next()
        event = data(message)
        seen[message["id"]].append((event["info"], event["droppedBefore"]))
    for op_id, got in seen.items():
        numbers = [int(info[1:]) for info, _ in got]
        assert numbers == sorted(numbers), op_id  # in order
        # Every event is either delivered or counted in the next one's droppedBefore.
        assert len(got) + sum(dropped for _, dropped in got) == events, (op_id, got)
        for (info, dropped), before in zip(got, [None, *got], strict=False):
            skipped = int(info[1:]) - (int(before[0][1:]) + 1 if before else 0)
            assert dropped == skipped, (op_id, got)
    assert any(dropped for got in seen.values() for _, dropped in got)
    assert socket.nothing_pending()
    assert (hub.renders.running, hub.renders.waiting) == (0, 0)
    await socket.close()
    await light.close()
    await bus.close()


async def test_slow_sockets_re_render_within_the_render_budget(store: CountingStore) -> None:
    """A slow socket that lost events has the next one shaped again for its own
    ``droppedBefore``. Those renders wait for the process's render queue like any other:
    a hundred stalled sockets resuming at once ran a hundred nested renders together."""
    held, bus, live = await held_setup(store, max_renders=1, queue_size=2)
    sockets = [await live.open("admin") for _ in range(6)]
    for socket in sockets:
        socket.subscribe("1", nested(1))
    await live.subscribed(len(sockets))
    for socket in sockets:
        socket.gate.clear()  # every peer stops reading
    for n in range(5):
        await bus.publish(live.status("A-001", f"s{n}"))
    for _ in range(50):  # the group renders each event once for all of them
        await asyncio.sleep(0)
    held.most = 0
    for socket in sockets:
        socket.gate.set()
    for socket in sockets:
        got = [data(await socket.next())]
        while got[-1]["info"] != "s4":
            got.append(data(await socket.next()))
        # Every event delivered or counted; some fell out of the queue of two.
        assert len(got) + sum(e["droppedBefore"] for e in got) == 5
        assert any(e["droppedBefore"] for e in got)
    assert held.most == 1
    renders = live.endpoint.hub.renders
    assert (renders.running, renders.waiting) == (0, 0)
    for socket in sockets:
        await socket.close()
    await bus.close()


async def test_a_solo_render_cancelled_gives_its_place_or_slot_back() -> None:
    renders = RenderQueue(limit=1)
    renders.started()  # the one slot is taken
    waiting = asyncio.create_task(renders.slot())
    await asyncio.sleep(0)
    assert renders.waiting == 1
    waiting.cancel()  # its socket closed while it waited
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (renders.running, renders.waiting) == (1, 0)
    granted = asyncio.create_task(renders.slot())
    await asyncio.sleep(0)
    renders.finished()
    for _ in range(3):  # the queue hands the slot over...
        await asyncio.sleep(0)
        if renders.running:
            break
    granted.cancel()  # ...but the socket closed before the render began
    with pytest.raises(asyncio.CancelledError):
        await granted
    assert (renders.running, renders.waiting) == (0, 0)


async def test_renders_waiting_for_subscriptions_that_ended_are_not_run(
        store: CountingStore) -> None:
    held, bus, live = await held_setup(store, max_renders=1)
    renders = live.endpoint.hub.renders
    socket = await live.open("admin")
    for i in range(10):
        socket.subscribe(str(i), nested(i))
    await live.subscribed(10)
    await bus.publish(live.status("A-001", "gone"))
    for _ in range(100):
        if renders.running:
            break
        await asyncio.sleep(0)
    assert renders.running == 1 and renders.waiting == 9
    reads = held.calls
    await socket.close()
    assert renders.waiting == 0
    for _ in range(100):
        if not renders.running:
            break
        await asyncio.sleep(0)
    assert renders.running == 0 and held.calls <= reads + 1  # the one under way at most
    await bus.close()


async def test_a_command_id_filter_that_is_no_id_is_refused(live: Setup) -> None:
    """QA (s17): commandCompleted(filter: {commandId: "garbage"}) was accepted and
    followed nothing, for good; every other subscription filter refuses a bad id."""
    socket = await live.open("admin")
    socket.subscribe("1", 'subscription { commandCompleted(filter: {commandId: "garbage"}) '
                          "{ action } }")
    message = await socket.next()
    assert message["id"] == "1", message
    payload = message["payload"]
    errors = payload if isinstance(payload, list) else payload.get("errors", [payload])
    assert errors[0]["extensions"] == {"code": "INVALID_ID", "field": "filter.commandId"}
    await socket.close()


@pytest.mark.parametrize("name", ["cpIds", "stationIds"])
async def test_a_station_feed_filter_takes_at_most_a_hundred_ids(live: Setup,
                                                                 name: str) -> None:
    """A station feed's lists are bounded as every filter list (README: over 100 ids is
    TOO_LONG); they took any number (QA s26)."""
    from graph.ids import to_global_id

    one = "A-001" if name == "cpIds" else to_global_id("station",
                                                       live.world.stations["A-001"].id)
    socket = await live.open("admin")
    socket.subscribe("1", "subscription($f: StationEventFilter) { "
                          "connectorStatusChanged(filter: $f) { cpId } }",
                     {"f": {name: [one] * 101}})
    message = await socket.next()
    assert message["id"] == "1", message
    payload = message["payload"]
    errors = payload if isinstance(payload, list) else payload.get("errors", [payload])
    assert errors[0]["extensions"] == {"code": "TOO_LONG", "field": f"filter.{name}"}
    await socket.close()


async def test_every_charger_event_names_its_station_by_global_id(live: Setup) -> None:
    """QA (s17, a frontend): only connector status events had `stationId`; a map keyed by
    station had to select `station { id }` (a load per event) on the others."""
    from domain.events import StationConnectionChanged
    from graph.ids import to_global_id

    station = live.world.stations["A-001"]
    socket = await live.open("admin")
    socket.subscribe("1", "subscription { stationConnectionChanged { cpId stationId } }")
    await live.subscribed(1)
    await live.bus.publish(StationConnectionChanged(
        station_id=station.id, cp_id="A-001", company_id=station.company_id,
        owner_id=station.owner_id, online=True))
    event = (await socket.next())["payload"]["data"]["stationConnectionChanged"]
    assert event == {"cpId": "A-001", "stationId": to_global_id("station", station.id)}
    await socket.close()


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_a_decimal_sent_as_a_json_number_over_the_socket_is_read_as_written(
        live: Setup, protocol: str) -> None:
    """As over HTTP (review s25): a JSON number was read as a float, so a price of
    0.35000000000000001 (finer than a price may be) was stored as 0.35. And a
    subscription whose variables hold such a number is still keyed and served."""
    socket = await live.open("op_a", protocol=protocol)
    company = to_global_id("company", live.world.companies["a"].id)
    kind = "subscribe" if protocol == "graphql-transport-ws" else "start"
    for op_id, price, answer in (
            ("fine", "0.35000000000000001",
             {"tariff": None, "errors": [{"field": "pricePerKwh", "code": "INVALID"}]}),
            ("kept", "0.5901",
             {"tariff": {"pricePerKwh": "0.5901", "taxRate": "0.19"}, "errors": []})):
        socket.put(f'{{"id": "{op_id}", "type": "{kind}", "payload": '
                   f'{set_price_body(company, price).decode()}}}')
        result = await socket.next()
        assert result["id"] == op_id and result["payload"]["data"]["setTariff"] == answer
        assert (await socket.next())["type"] == "complete"
    socket.put(json.dumps({"id": "s", "type": kind, "payload": {
        "query": LOCAL, "variables": {"unused": "NUMBER"}}}).replace('"NUMBER"', "0.10"))
    await live.subscribed(1)
    await live.bus.publish(live.status("A-001", "exact"))
    assert data(await socket.next())["info"] == "exact"
    await socket.close()


def session_event(live: Setup, cp_id: str, transaction_id: int) -> SessionChanged:
    station = live.world.stations[cp_id]
    return SessionChanged(
        station_id=station.id, cp_id=cp_id, company_id=station.company_id,
        owner_id=station.owner_id, change="UPDATED", session_id=f"s{transaction_id}",
        transaction_id=transaction_id, connector_id=1, user_id=None, vehicle_id=None,
        energy_wh=0, power_w=None, state="ACTIVE")


def command_event(live: Setup, cp_id: str, number: int) -> CommandCompleted:
    station = live.world.stations[cp_id]
    return CommandCompleted(
        station_id=station.id, cp_id=cp_id, company_id=station.company_id,
        owner_id=station.owner_id, command_id=f"c{number}", action="Reset",
        requested_by="system", status="Accepted")


def feed_filters(live: Setup) -> dict[str, dict[str, Any]]:
    """The session and command feeds' filters: by the lists of chargers and of stations,
    and by the deprecated one-value cpId with its list (both must hold)."""
    stations = [to_global_id("station", live.world.stations[cp].id) for cp in ("A-001",
                                                                                "B-001")]
    return {"1": {"cpIds": ["A-001", "B-001"]}, "2": {"stationIds": stations},
            "3": {"cpId": "A-001", "cpIds": ["A-001", "A-002"]}}


@pytest.mark.parametrize(("kind", "query", "make", "key"), [
    ("SessionEventFilter", "sessionUpdated(filter: $f) { transactionId }", session_event,
     "transactionId"),
    ("CommandEventFilter", "commandCompleted(filter: $f) { commandId }", command_event,
     "commandId"),
], ids=["sessions", "commands"])
async def test_the_session_and_command_feeds_take_lists_of_cp_ids_and_station_ids(
        live: Setup, kind: str, query: str, make: Callable[[Setup, str, int], Any],
        key: str) -> None:
    """QA s30 leftovers: sessionUpdated and commandCompleted took a single cpId, the
    station feeds lists. Told by order: each subscription's events come in the order
    published, so one it should not get would come before its last."""
    socket = await live.open("admin")
    filters = feed_filters(live)
    for op_id, f in filters.items():
        socket.subscribe(op_id, f"subscription($f: {kind}) {{ {query} }}", {"f": f})
    await live.subscribed(len(filters))
    for number, cp_id in enumerate(("A-001", "A-002", "B-001", "A-001"), start=1):
        await live.bus.publish(make(live, cp_id, number))
    expected = {"1": [1, 3, 4], "2": [1, 3, 4], "3": [1, 4]}
    got: dict[str, list[int]] = {op_id: [] for op_id in expected}
    for _ in range(sum(map(len, expected.values()))):
        message = await socket.next()
        assert message["type"] == "next", message
        value = next(iter(message["payload"]["data"].values()))[key]
        got[message["id"]].append(int(str(value).removeprefix("c")))
    assert got == expected
    await socket.close()


@pytest.mark.parametrize("kind", [SessionEventFilter, CommandEventFilter],
                         ids=["sessions", "commands"])
def test_a_feed_filter_by_charger_holds_every_condition_given(kind: Any) -> None:
    """The session and command feeds' lists as every filter's: an empty one none, over
    100 TOO_LONG, a list of stations by global id, the old cpId and its list ANDed."""
    at_a = StationConnectionChanged(station_id="a" * 24, cp_id="A", online=True)

    def accepts(**f: Any) -> Callable[[Any], bool]:
        return kind(**f).accepts()  # type: ignore[no-any-return]

    assert accepts()(at_a) and accepts(cp_ids=["A", "B"])(at_a)
    assert not accepts(cp_ids=[])(at_a) and not accepts(station_ids=[])(at_a)
    assert accepts(station_ids=[to_global_id("station", "a" * 24)])(at_a)
    assert not accepts(station_ids=[to_global_id("station", "b" * 24)])(at_a)
    assert accepts(cp_id="A")(at_a) and not accepts(cp_id="B")(at_a)
    assert accepts(cp_id="A", cp_ids=["A", "B"])(at_a)
    assert not accepts(cp_id="A", cp_ids=["B"])(at_a)
    assert not accepts(cp_id="B", cp_ids=["A"])(at_a)
    for field, value in (("cp_ids", "A"), ("station_ids", to_global_id("station", "a" * 24))):
        with pytest.raises(ValidationError) as refused:
            accepts(**{field: [value] * 101})
        assert (refused.value.field, refused.value.code) == (
            f"filter.{camel(field)}", "TOO_LONG")
    with pytest.raises(ValidationError) as refused:
        accepts(station_ids=[to_global_id("user", "a" * 24)])
    assert refused.value.field == "filter.stationIds"
