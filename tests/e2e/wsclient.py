"""A minimal GraphQL-over-websocket client (graphql-transport-ws and legacy graphql-ws)."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

_ids = itertools.count(1)


class GraphQLWS:
    def __init__(self, ws: ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol

    @classmethod
    async def open(cls, url: str, token: str | None = None,
                   protocol: str = "graphql-transport-ws") -> GraphQLWS:
        ws = await connect(url, subprotocols=[protocol])  # type: ignore[list-item]
        client = cls(ws, protocol)
        payload = {"authorization": f"Bearer {token}"} if token else {}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if ack["type"] == "ka":  # legacy keep-alive may come first
            ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert ack["type"] == "connection_ack", ack
        return client

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        op_id = str(next(_ids))
        kind = "subscribe" if self.protocol == "graphql-transport-ws" else "start"
        await self.ws.send(json.dumps({"id": op_id, "type": kind, "payload": {
            "query": query, "variables": variables or {}}}))
        return op_id

    async def next(self, timeout: float = 5) -> dict[str, Any]:
        """The next data/error message (keep-alives skipped, the server's pings answered
        as graphql-ws's client does, or a test quiet for two intervals is closed)."""
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if message["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
            if message["type"] in ("ka", "ping", "pong"):
                continue
            return message  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.ws.close()
