"""The GraphQL port's bounds as `serve` runs it (chargegraph.cli._uvicorn, real uvicorn on
a loopback port): a request head must be complete in time, and connections beyond
CHARGEGRAPH_MAX_CONNECTIONS are answered 503 with a WARNING now and then (QA s24: a
thousand idle or half-sent sockets were held for ever and filled the open files GraphQL,
/healthz and the chargers share)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

import chargegraph.http_limits as http_limits
from chargegraph.cli import _uvicorn
from chargegraph.settings import Settings
from graph.live_ws import MAX_OPERATIONS
from tests.helpers import loopback_socket, until, until_started

#: The head timeout in these tests (10 s in service).
HEAD_TIMEOUT = 0.5

@asynccontextmanager
async def serving(tmp_path: Path, **settings: Any) -> AsyncIterator[int]:
    sock = loopback_socket()
    port = sock.getsockname()[1]
    server = _uvicorn(Settings(database_url=f"sqlite:///{tmp_path}/limits.db",
                               jwt_secret="l" * 40, ocpp_enabled=False, port=port,
                               log_level="WARNING", **settings))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until_started(server)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def opened(port: int, sent: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    if sent:
        sock.sendall(sent)
    return sock


async def closed_after(sock: socket.socket, within: float) -> float | None:
    """Seconds until the server closed ``sock`` (what it sent before is read and
    dropped), or ``None`` if it was still open after ``within``."""
    loop = asyncio.get_running_loop()
    began = time.monotonic()
    try:
        while True:
            left = within - (time.monotonic() - began)
            if left <= 0:
                return None
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), left)
            except TimeoutError:
                return None
            except ConnectionResetError:
                return time.monotonic() - began
            if not data:
                return time.monotonic() - began
    finally:
        sock.close()


async def answered(sock: socket.socket) -> bytes:
    """One response to a request without a body (read up to its headers' end and the
    body its Content-Length gives)."""
    loop = asyncio.get_running_loop()
    data = b""
    while b"\r\n\r\n" not in data:
        data += await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
    return head


@pytest.fixture(params=["httptools", "h11"])
def head_timeout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both protocols the service may run with: httptools where installed (uvicorn's
    choice), h11 otherwise."""
    monkeypatch.setattr(http_limits, "HEAD_TIMEOUT_S", HEAD_TIMEOUT)
    if request.param == "h11":
        monkeypatch.setattr(http_limits, "HeadTimeoutProtocol", http_limits.H11HeadTimeout)
    return str(request.param)


async def test_a_request_head_not_complete_in_time_closes_its_connection(
        tmp_path: Path, head_timeout: str) -> None:
    async with serving(tmp_path) as port:
        idle = opened(port)
        half = opened(port, b"GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        half_post = opened(port, b"POST /graphql HTTP/1.1\r\nHost: x\r\n")
        kept_alive = opened(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await answered(kept_alive)).startswith(b"HTTP/1.1 200")
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next request stalls
        # Long before uvicorn's keep-alive timeout (5 s), which data received stops.
        took = await asyncio.gather(*(closed_after(s, 3) for s in
                                      (idle, half, half_post, kept_alive)))
        assert all(t is not None and HEAD_TIMEOUT * 0.8 <= t < 2.5 for t in took), took

        async with httpx.AsyncClient() as client:  # a complete request is answered
            assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        # A websocket is past its head: the timeout does not close it.
        async with connect(f"ws://127.0.0.1:{port}/graphql",
                           subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await asyncio.sleep(HEAD_TIMEOUT * 3)
            await asyncio.wait_for(await ws.ping(), 2)


async def test_connections_beyond_the_cap_are_answered_503_and_logged_now_and_then(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(http_limits.REFUSALS, "_last", None)  # other tests' refusals
    monkeypatch.setattr(http_limits.REFUSALS, "_refused", 0)
    async with serving(tmp_path, max_connections=3) as port:
        url = f"http://127.0.0.1:{port}/graphql"  # not /healthz: served through the cap
        holding = [opened(port) for _ in range(3)]
        await asyncio.sleep(0.1)
        with caplog.at_level(logging.WARNING):
            for _ in range(5):
                async with httpx.AsyncClient() as client:
                    refused = await client.get(url)
                assert refused.status_code == 503
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [
            "1 request(s) answered 503 Service Unavailable: the GraphQL port serves at "
            "most CHARGEGRAPH_MAX_CONNECTIONS (3) connections at once (logged at most once "
            "every 60 s)"]
        for sock in holding:
            sock.close()
        await asyncio.sleep(0.1)
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).status_code != 503


async def test_the_health_check_is_served_at_the_cap(
        tmp_path: Path, head_timeout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An orchestrator probing /healthz of an instance busy at its cap was answered 503,
    and killed a healthy instance. The health check (GET or HEAD) is served; the rest
    of the port, /healthz by another method included, stays capped."""
    monkeypatch.setattr(http_limits.REFUSALS, "_last", None)  # its refusals: not others'
    monkeypatch.setattr(http_limits.REFUSALS, "_refused", 0)
    async with serving(tmp_path, max_connections=3) as port, httpx.AsyncClient() as client:
        base = f"http://127.0.0.1:{port}"
        holding = [opened(port) for _ in range(3)]

        async def at_cap() -> bool:
            return (await client.get(f"{base}/graphql")).status_code == 503

        await until(at_cap)  # the server counts the held connections
        health = await client.get(f"{base}/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert (await client.head(f"{base}/healthz")).status_code == 200
        assert (await client.post(f"{base}/healthz")).status_code == 503
        assert (await client.get(f"{base}/")).status_code == 503
        for sock in holding:
            sock.close()


def test_refusals_are_logged_once_a_while_with_their_count() -> None:
    now = [0.0]
    log = http_limits.RefusalLog(every=60, clock=lambda: now[0])
    log.limit = 1000

    def refusal() -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1,
                                 http_limits.UVICORN_REFUSAL, None, None)

    first = refusal()
    assert log.filter(first) and first.getMessage().startswith("1 request(s) answered 503")
    assert "CHARGEGRAPH_MAX_CONNECTIONS (1000)" in first.getMessage()
    now[0] = 30
    assert not any(log.filter(refusal()) for _ in range(9))
    now[0] = 61
    later = refusal()
    assert log.filter(later) and later.getMessage().startswith("10 request(s)")
    other = logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, "other", None,
                              None)
    assert log.filter(other) and other.getMessage() == "other"


async def test_the_server_keeps_serving_while_sockets_stall(tmp_path: Path,
                                                            head_timeout: str) -> None:
    """The QA pass's attack, scaled down: stalled sockets beyond the cap are closed in
    time, and the port serves again without the client letting go."""
    async with serving(tmp_path, max_connections=20) as port:
        stalled = [opened(port, b"POST /graphql HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"")
                   for i in range(40)]
        try:
            await asyncio.sleep(HEAD_TIMEOUT * 3)
            async with httpx.AsyncClient() as client:
                health = await client.get(f"http://127.0.0.1:{port}/healthz")
            assert health.status_code == 200
        finally:
            for sock in stalled:
                sock.close()


def test_the_default_cap_leaves_room_for_the_live_hub_s_subscribers() -> None:
    """Review s24: uvicorn counts open websockets toward ``limit_concurrency`` but never
    refuses an upgrade, so at a default of 1,000 a thousand live-map subscribers made every
    HTTP request, /healthz included, a 503. The default sits above as many sockets as the
    live hub runs operations, with room for HTTP beside them."""
    assert Settings().max_connections >= MAX_OPERATIONS + 1000
