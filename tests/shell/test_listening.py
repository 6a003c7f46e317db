"""The GraphQL sockets bound before the lifespan starts (``chargegraph.listening``)."""

from __future__ import annotations

import asyncio

import pytest

from chargegraph.listening import listening_sockets


async def test_a_connection_before_serving_is_refused_then_served() -> None:
    """Review s23: listening at bind, a TCP probe was told "up" during the whole start-up
    (store, Redis, migrations) and its requests hung, reset if the start failed. Bound
    only, the port refuses until the server serves on the socket."""
    sockets = listening_sockets("127.0.0.1", 0)
    port = sockets[0].getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)

    async def greet(_: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        client.write(b"hello")
        await client.drain()
        client.close()

    server = await asyncio.start_server(greet, sock=sockets[0], backlog=2048)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b"hello"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
