"""The GraphQL websocket as `serve` runs it (chargegraph.cli._uvicorn): a message is at most
what a request over HTTP may be (graph.http.MAX_BODY), not uvicorn's 16 MiB."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chargegraph.cli import _uvicorn
from chargegraph.settings import Settings
from graph.http import MAX_BODY
from tests.helpers import loopback_socket, until_started


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[str]:
    sock = loopback_socket()
    port = sock.getsockname()[1]
    settings = Settings(database_url=f"sqlite:///{tmp_path}/ws.db",  # type: ignore[call-arg]
                        jwt_secret="w" * 40, ocpp_enabled=False, port=port,
                        # Anonymous sockets are acknowledged only with the public map.
                        public_map=True, log_level="WARNING")
    server = _uvicorn(settings)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until_started(server)
    try:
        yield f"ws://127.0.0.1:{port}/graphql"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def init_of(size: int) -> str:
    """A ``connection_init`` of ``size`` bytes, padded with a key nobody reads."""
    empty = json.dumps({"type": "connection_init", "payload": {"padding": ""}})
    return json.dumps({"type": "connection_init",
                       "payload": {"padding": "x" * (size - len(empty))}})


async def test_a_message_over_the_http_limit_closes_the_socket_with_1009(served: str) -> None:
    async with connect(served, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                       max_size=None) as ws:
        await ws.send(init_of(MAX_BODY))  # as large as a request may be: read
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "connection_ack"}
    async with connect(served, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                       max_size=None) as ws:
        await ws.send(init_of(MAX_BODY + 1))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1009  # message too big
