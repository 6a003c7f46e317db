"""The GraphQL sockets bound before the lifespan starts (``chargegraph.listening``)."""

from __future__ import annotations

import asyncio
import errno

import pytest

from chargegraph.listening import listening_sockets


async def test_nothing_else_can_bind_the_graphql_port_meanwhile() -> None:
    """The OCPP server binds as asyncio does, with SO_REUSEADDR: while the GraphQL socket
    was only bound, it bound the same port too and took every connection to it."""
    sockets = listening_sockets("127.0.0.1", 0)
    try:
        port = sockets[0].getsockname()[1]
        with pytest.raises(OSError) as refused:
            await asyncio.start_server(lambda r, w: None, "127.0.0.1", port,
                                       reuse_address=True)
        assert refused.value.errno == errno.EADDRINUSE
    finally:
        for sock in sockets:
            sock.close()


async def test_a_connection_made_before_serving_waits_and_is_served() -> None:
    """Listening before uvicorn serves: a client meanwhile waits in the backlog, and is
    served once the server (listening again, with its own backlog) starts."""
    sockets = listening_sockets("127.0.0.1", 0)
    port = sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def greet(_: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        client.write(b"hello")
        await client.drain()
        client.close()

    server = await asyncio.start_server(greet, sock=sockets[0], backlog=2048)
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b"hello"
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
