"""A webhook receiver for tests: a plain asyncio HTTP/1.1 server on 127.0.0.1 (a free
port) that records every request and answers with the statuses it is given in turn."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from domain.clock import utcnow


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: When it was received, by the wall clock a dispatcher's due times are on.
    at: datetime = field(default_factory=utcnow)

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    def signed_with(self, secret: str) -> bool:
        """The receiver's side of ``X-ChargeGraph-Signature`` (as the README shows)."""
        parts = dict(item.split("=", 1)
                     for item in self.headers["x-chargegraph-signature"].split(","))
        expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + self.body,
                            hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, parts["v1"])


#: A "status" for ``Receiver`` that answers forever, slowly (see ``_drip``).
DRIP = 0


class Receiver:
    def __init__(self, *statuses: int) -> None:
        #: Answers in turn; when used up, the last one (200 if none were given) again.
        self.statuses = deque(statuses or (200,))
        self.requests: list[Received] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def of_type(self, kind: str) -> list[Received]:
        return [r for r in self.requests if r.json["type"] == kind]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        try:
            method, path, _ = (await reader.readline()).decode().split(" ", 2)
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode().strip()):
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(method, path, headers, body))
            status = self.statuses.popleft() if len(self.statuses) > 1 else self.statuses[0]
            if status == DRIP:
                await self._drip(writer)
                return
            answer = b"ok" if status < 300 else b"receiver says no"
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(answer)}\r\n"
                         "Connection: close\r\n\r\n".encode() + answer)
            await writer.drain()
        finally:
            writer.close()

    @staticmethod
    async def _drip(writer: asyncio.StreamWriter) -> None:
        """An answer that never ends: a byte of a header at a time, each soon enough
        that no single read times out."""
        writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not writer.is_closing():
            writer.write(b"z")
            await writer.drain()
            await asyncio.sleep(0.02)


class HeldReceiver(Receiver):
    """Reads each request once ``go`` is set (until then, it waits unread)."""

    def __init__(self, *statuses: int) -> None:
        super().__init__(*statuses)
        self.go = asyncio.Event()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        await self.go.wait()
        await super()._handle(reader, writer)
