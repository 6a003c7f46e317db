"""The GraphQL websocket as `serve` runs it (real uvicorn, a real websockets client): a
socket is closed when its token expires. (That a subscribe after the expiry starts nothing,
the timer not yet due: tests/graph/test_live_ws.py, on clocks the test moves.)"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import cast

import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chargegraph.cli import _uvicorn
from chargegraph.settings import Settings
from domain.entities import Role
from domain.policy import SYSTEM
from graph import TokenService
from tests.helpers import loopback_socket, until_started

SECRET = "x" * 40
LOCAL = "subscription { connectorStatusChanged { cpId status } }"
#: How far past its expiry pyjwt still takes a token (``TokenService.subject``).
LEEWAY_S = 30


async def opened(url: str, protocol: str, token: str) -> ClientConnection:
    ws = await connect(url, subprotocols=[protocol])  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init",
                              "payload": {"authorization": f"Bearer {token}"}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
    return ws


def subscribe(protocol: str, op_id: str) -> str:
    kind = "subscribe" if protocol == "graphql-transport-ws" else "start"
    return json.dumps({"id": op_id, "type": kind, "payload": {"query": LOCAL}})


async def test_a_socket_is_closed_when_its_token_expires(tmp_path: Path) -> None:
    """QA s32: a socket whose token expired stayed open until the periodic re-check
    (every minute) caught up. Both protocols: a subscription started while the token
    was valid, the socket closed 4403 "Token expired" when it expires, nothing sent
    before the close but keep-alives."""
    sock = loopback_socket()
    port = sock.getsockname()[1]
    settings = Settings(database_url=f"sqlite:///{tmp_path}/ws.db",  # type: ignore[call-arg]
                        jwt_secret=SECRET, ocpp_enabled=False, port=port,
                        log_level="WARNING")
    server = _uvicorn(settings)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until_started(server)
    try:
        app = cast(Starlette, server.config.app)
        services = app.state.services
        user = await services.accounts.create_user(
            SYSTEM, email="mia@example.com", password="a long password", name="Mia",
            role=Role.DRIVER)
        # Past its expiry by all but 3 s of the leeway: taken by connection_init, then
        # expired within seconds, without a server of a shorter lifetime.
        token = TokenService(SECRET, timedelta(seconds=-(LEEWAY_S - 3))).issue(user.id).token
        url = f"ws://127.0.0.1:{port}/graphql"
        sockets = {protocol: await opened(url, protocol, token)
                   for protocol in ("graphql-transport-ws", "graphql-ws")}
        for protocol, ws in sockets.items():
            await ws.send(subscribe(protocol, "before"))  # still valid: started, silent
        for protocol, ws in sockets.items():
            with pytest.raises(ConnectionClosed):  # the token expires within seconds
                for _ in range(10):
                    message = await asyncio.wait_for(ws.recv(), 15)
                    if json.loads(message) != {"type": "ka"}:  # legacy keep-alives pass
                        raise AssertionError(f"{protocol}: {message!r}")
                raise AssertionError(f"{protocol}: not closed")
            assert ws.close_code == 4403 and ws.close_reason == "Token expired", protocol
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
