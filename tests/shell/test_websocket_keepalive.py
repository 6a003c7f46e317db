"""GraphQL websocket keep-alives as `serve` runs them (real uvicorn, real websockets
clients): a quiet graphql-transport-ws socket gets a ``ping`` and is closed when its client
never answers; a legacy graphql-ws one gets a ``ka`` every interval; 0 turns them off.

The interval is the setting's least, 1 s: each test waits a few seconds for messages that
must (or must not) arrive, and times nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chargegraph.cli import _uvicorn
from chargegraph.http_limits import WebSocketProtocol
from chargegraph.settings import Settings
from domain.entities import Role
from domain.events import ConnectorStatusChanged
from domain.policy import SYSTEM
from graph import TokenService
from tests.helpers import loopback_socket, until_started

SECRET = "k" * 40
TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, keepalive: float) -> AsyncIterator[tuple[str, str]]:
    """`serve`'s uvicorn with ``CHARGEGRAPH_WS_KEEPALIVE_S=keepalive``: its /graphql URL
    and a driver's token."""
    sock = loopback_socket()
    port = sock.getsockname()[1]
    settings = Settings(database_url=f"sqlite:///{tmp_path}/ka.db",  # type: ignore[call-arg]
                        jwt_secret=SECRET, ocpp_enabled=False, port=port,
                        log_level="WARNING", ws_keepalive_s=keepalive)
    server = _uvicorn(settings)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until_started(server)
    try:
        services = cast(Starlette, server.config.app).state.services
        user = await services.accounts.create_user(
            SYSTEM, email="mia@example.com", password="a long password", name="Mia",
            role=Role.DRIVER)
        token = TokenService(SECRET, timedelta(hours=1)).issue(user.id).token
        yield f"ws://127.0.0.1:{port}/graphql", token
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def opened(url: str, protocol: str, token: str) -> ClientConnection:
    ws = await connect(url, subprotocols=[protocol])  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init",
                              "payload": {"authorization": f"Bearer {token}"}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
    return ws


async def received(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    """What the server sends within ``seconds`` (less if it closes the socket)."""
    messages: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError, ConnectionClosed):
        async with asyncio.timeout(seconds):
            while True:
                messages.append(json.loads(await ws.recv()))
    return messages


async def test_a_quiet_socket_is_pinged_and_stays_open_while_its_client_answers(
        tmp_path: Path) -> None:
    async with serving(tmp_path, 1) as (url, token):
        ws = await opened(url, TRANSPORT, token)
        pings = 0
        async with asyncio.timeout(10):
            while pings < 3:  # three intervals and more: each ping answered in time
                message = json.loads(await ws.recv())
                assert message == {"type": "ping"}, message
                pings += 1
                await ws.send(json.dumps({"type": "pong"}))
        # A client's own ping is answered, and the socket still serves.
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
        await ws.close()


async def test_a_client_that_never_answers_a_ping_is_closed(tmp_path: Path) -> None:
    """A half-open socket (the client gone without a close: a laptop closed, a phone
    out of coverage) was held for ever, its subscriptions rendered for nobody."""
    async with serving(tmp_path, 1) as (url, token):
        ws = await opened(url, TRANSPORT, token)
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription { connectorStatusChanged { cpId status } }"}}))
        messages = await received(ws, 10)
        assert messages == [{"type": "ping"}]
        assert (ws.close_code, ws.close_reason) == (4408, "Pong timeout")


async def test_a_client_that_talks_is_not_pinged(tmp_path: Path) -> None:
    """Pings only on a quiet socket: a client that keeps sending (here its own pings,
    answered) shows it is there, and the answers keep the way to it busy."""
    async with serving(tmp_path, 1) as (url, token):
        ws = await opened(url, TRANSPORT, token)
        for _ in range(12):  # 3 s: three intervals
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
            await asyncio.sleep(0.25)
        await ws.close()


async def test_legacy_sockets_get_a_ka_every_interval_also_while_busy(
        tmp_path: Path) -> None:
    """graphql-ws has no pong: a ``ka`` right after the ack and then every interval,
    also between results (Apollo's client counts only ``ka`` and gives up on a socket
    30 s without one); never a close for want of an answer."""
    async with serving(tmp_path, 1) as (url, token):
        ws = await connect(url, subprotocols=[LEGACY])  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"authorization": f"Bearer {token}"}}))
        first = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
        assert first == [{"type": "connection_ack"}, {"type": "ka"}]
        kinds: list[str] = []
        for number in range(12):  # 3 s of queries answered, then 2 s of quiet
            await ws.send(json.dumps({"id": str(number), "type": "start",
                                      "payload": {"query": "{ me { email } }"}}))
            await asyncio.sleep(0.25)
        kinds += [m["type"] for m in await received(ws, 2)]
        assert kinds.count("data") == 12 and kinds.count("complete") == 12
        # 5 s: at least four, whatever the timer's phase against the queries.
        assert kinds.count("ka") >= 4, kinds
        assert ws.close_code is None
        await ws.close()


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_zero_turns_keepalives_off(tmp_path: Path, protocol: str) -> None:
    async with serving(tmp_path, 0) as (url, token):
        ws = await opened(url, protocol, token)
        assert await received(ws, 2.5) == []
        assert ws.close_code is None
        await ws.close()


def masked_frame(payload: bytes) -> bytes:
    """A masked text frame, as a client sends it."""
    mask = os.urandom(4)
    n = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else \
        struct.pack("!BBH", 0x81, 0x80 | 126, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("by", ["keep-alive", "uvicorn's ping"])
async def test_a_client_that_stopped_reading_is_dropped_and_its_subscriptions_end(
        tmp_path: Path, by: str) -> None:
    """A client that stopped reading (a frozen or suspended process, buffers full) never
    takes the close either: uvicorn's send waits for the socket to be writable, the
    close's too, so the socket and its subscriptions were held for as long as the client
    stayed connected. The close waits a short time, then the connection is dropped. So
    too when uvicorn's own ping (keep-alives off) goes unanswered: its close waited for
    the unsent data to go, and the app was never told."""
    sock = loopback_socket()
    port = sock.getsockname()[1]
    settings = Settings(database_url=f"sqlite:///{tmp_path}/ka.db",  # type: ignore[call-arg]
                        jwt_secret=SECRET, ocpp_enabled=False, port=port,
                        log_level="WARNING", ws_keepalive_s=1 if by == "keep-alive" else 0)
    server = _uvicorn(settings)
    if by != "keep-alive":  # read as each connection starts
        server.config.ws_ping_interval = server.config.ws_ping_timeout = 1
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until_started(server)
    writer: asyncio.StreamWriter | None = None
    try:
        services = cast(Starlette, server.config.app).state.services
        user = await services.accounts.create_user(
            SYSTEM, email="ada@example.com", password="a long password", name="Ada",
            role=Role.ADMIN)
        token = TokenService(SECRET, timedelta(hours=1)).issue(user.id).token
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=raw)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     f"Sec-WebSocket-Version: 13\r\n"
                     f"Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        writer.write(masked_frame(json.dumps({"type": "connection_init", "payload": {
            "authorization": f"Bearer {token}"}}).encode()))
        assert b"connection_ack" in await asyncio.wait_for(reader.read(100), 5)
        writer.write(masked_frame(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription { connectorStatusChanged { cpId info } }"}}).encode()))
        live = services.live
        for _ in range(500):
            if live.watching:
                break
            await asyncio.sleep(0.01)
        assert live.watching == 1
        cast(asyncio.Transport, writer.transport).pause_reading()  # buffers fill up
        big = "x" * 60_000
        for i in range(200):
            await services.ctx.bus.publish(ConnectorStatusChanged(
                station_id="s", cp_id="CP-1", connector_record_id=None, connector_id=1,
                status="Faulted", info=f"{i}{big}"))
            await asyncio.sleep(0.001)
        # Interval 1 s: pinged after one quiet interval, closed when the socket took
        # nothing for another (two at most while the ping waits): 8 s is plenty.
        for _ in range(80):
            if live.watching == 0:
                break
            await asyncio.sleep(0.1)
        assert live.watching == 0, "a socket that takes nothing is still served"
        # And its TCP connection is dropped, not left to drain for ever: the server holds
        # no connection (each counts toward CHARGEGRAPH_MAX_CONNECTIONS and open files).
        for _ in range(50):
            if not server.server_state.connections:
                break
            await asyncio.sleep(0.1)
        assert not server.server_state.connections, "its connection is still held"
    finally:
        if writer is not None:
            writer.transport.abort()
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def test_a_client_reading_nothing_is_dropped_with_a_backlog_under_the_high_water_mark(
        tmp_path: Path) -> None:
    """A client that reads nothing, whose unsent backlog sits in the transport's buffer
    below its high-water mark (64 KiB): the close frame is "taken" at once (uvicorn's
    ``writable`` still set), so the app has no cause to abort, and ``transport.close()``
    waits for a drain that never comes. `serve`'s protocol drops the connection
    ``CLOSE_WITHIN_S`` after a close frame went out (QA s25)."""
    sock = loopback_socket()
    port = sock.getsockname()[1]
    settings = Settings(database_url=f"sqlite:///{tmp_path}/ka.db",  # type: ignore[call-arg]
                        jwt_secret=SECRET, ocpp_enabled=False, port=port,
                        log_level="WARNING", ws_keepalive_s=1)
    server = _uvicorn(settings)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until_started(server)
    writer: asyncio.StreamWriter | None = None
    try:
        services = cast(Starlette, server.config.app).state.services
        user = await services.accounts.create_user(
            SYSTEM, email="ada@example.com", password="a long password", name="Ada",
            role=Role.ADMIN)
        token = TokenService(SECRET, timedelta(hours=1)).issue(user.id).token
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=raw)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     f"Sec-WebSocket-Version: 13\r\n"
                     f"Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        writer.write(masked_frame(json.dumps({"type": "connection_init", "payload": {
            "authorization": f"Bearer {token}"}}).encode()))
        assert b"connection_ack" in await asyncio.wait_for(reader.read(100), 5)
        writer.write(masked_frame(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription { connectorStatusChanged { cpId info } }"}}).encode()))
        live = services.live
        for _ in range(500):
            if live.watching:
                break
            await asyncio.sleep(0.01)
        assert live.watching == 1
        cast(asyncio.Transport, writer.transport).pause_reading()  # the client reads nothing
        (proto,) = list(server.server_state.connections)
        assert isinstance(proto, WebSocketProtocol)
        # Small events until some wait in the server's transport buffer: kernel buffers
        # full, the transport not paused (below 64 KiB). The client talks meanwhile (an
        # unsolicited pong), so the keep-alive counts from the end of the filling, not
        # from its start: the megabytes loopback buffers took a loaded machine past the
        # ping and its 4408, and the socket was gone before anything waited (QA s29).
        pong = masked_frame(json.dumps({"type": "pong"}).encode())
        for i in range(5000):
            writer.write(pong)
            await services.ctx.bus.publish(ConnectorStatusChanged(
                station_id="s", cp_id="CP-1", connector_record_id=None, connector_id=1,
                status="Faulted", info=f"{i}" + "y" * 8000))
            await asyncio.sleep(0.001)
            if proto.transport.get_write_buffer_size() > 0:
                break
        size = proto.transport.get_write_buffer_size()
        assert 0 < size < 65536 and proto.writable.is_set(), size
        # ping after 1 s quiet, 4408 a further 1 s on, dropped 2 s after that at most:
        # 14 s even covers uvicorn's own 10 s close timer.
        for _ in range(140):
            if not server.server_state.connections:
                break
            await asyncio.sleep(0.1)
        assert live.watching == 0
        assert not server.server_state.connections, (
            f"connection still held, close_sent={proto.close_sent}, "
            f"closing={proto.transport.is_closing()}, "
            f"unsent={proto.transport.get_write_buffer_size()}")
    finally:
        if writer is not None:
            writer.transport.abort()
        server.should_exit = True
        await asyncio.wait_for(task, 30)
