"""The GraphQL port's bounds as `serve` runs it (chargegraph.cli._uvicorn, real uvicorn on
a loopback port): a request head must be complete in time, and connections beyond
CHARGEGRAPH_MAX_CONNECTIONS are answered 503 with a WARNING now and then (QA s24: a
thousand idle or half-sent sockets were held for ever and filled the open files GraphQL,
/healthz and the chargers share)."""

from __future__ import annotations

import asyncio
import logging
import socket
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
from tests.helpers import loopback_socket, soon, until, until_started

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


async def closed(sock: socket.socket) -> None:
    """Returns once the server closed ``sock`` (what it sent before is read and dropped),
    and closes it; fails if it did not within 30 s (a bound against a hang only: the
    test has fired what closes it)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(30):
            while await loop.sock_recv(sock, 65536):
                pass
    except ConnectionResetError:
        pass
    finally:
        sock.close()


def still_open(sock: socket.socket) -> bool:
    """Whether the server has not closed ``sock`` (which has nothing left to read)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:  # nothing to read, no end either
        return True
    except ConnectionResetError:
        return False


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
        monkeypatch.setattr(http_limits, "HttpProtocol", http_limits.H11Bounded)
    return str(request.param)


class HeadTimers:
    """The server's head timers, fired when the test says, not by the clock: a loaded
    machine ran a 0.5 s timeout late (the bounds of seconds these tests asserted)."""

    def __init__(self) -> None:
        #: Every connection's protocol that armed its timer, in order.
        self.armed: list[Any] = []

    def pending(self) -> list[Any]:
        """The connections whose head timer runs."""
        return [p for p in dict.fromkeys(self.armed) if p._head_timer is not None]

    def fire(self) -> int:
        """Fires every running head timer now, as the loop would when it is due; how
        many."""
        pending = self.pending()
        for protocol in pending:
            protocol._head_timer.cancel()
            protocol._head_timed_out()
        return len(pending)


@pytest.fixture
def head_timers(head_timeout: str, monkeypatch: pytest.MonkeyPatch) -> HeadTimers:
    """The head timeout on both protocols (``head_timeout``), an hour long: it fires
    when the test fires it (``HeadTimers.fire``)."""
    monkeypatch.setattr(http_limits, "HEAD_TIMEOUT_S", 3600)
    timers = HeadTimers()
    arm = http_limits._RequestTimers._arm

    def recorded(protocol: http_limits._RequestTimers) -> None:
        arm(protocol)
        timers.armed.append(protocol)

    monkeypatch.setattr(http_limits._RequestTimers, "_arm", recorded)
    return timers


async def test_a_request_head_not_complete_in_time_closes_its_connection(
        tmp_path: Path, head_timers: HeadTimers) -> None:
    async with serving(tmp_path) as port:
        idle = opened(port)
        half = opened(port, b"GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        half_post = opened(port, b"POST /graphql HTTP/1.1\r\nHost: x\r\n")
        kept_alive = opened(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await answered(kept_alive)).startswith(b"HTTP/1.1 200")
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next request stalls
        stalled = (idle, half, half_post, kept_alive)
        # A timer each, the answered request's stopped as its head completed and one
        # armed again by the next request's first byte: uvicorn's keep-alive timeout,
        # which data received stops, would close none of them.
        await soon(lambda: len(head_timers.pending()) == 4)
        loop = asyncio.get_running_loop()
        assert all(p._head_timer.when() > loop.time() + 3000 for p in head_timers.pending())
        assert all(still_open(s) for s in stalled)  # until their timers fire
        assert head_timers.fire() == 4
        await asyncio.gather(*(closed(s) for s in stalled))

        async with httpx.AsyncClient() as client:  # a complete request is answered
            assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        # A websocket is past its head: no timer runs for it, and none closes it.
        async with connect(f"ws://127.0.0.1:{port}/graphql",
                           subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            head_timers.fire()
            await asyncio.wait_for(await ws.ping(), 30)


class BodyTimers:
    """The server's body timers, fired when the test says (as ``HeadTimers``)."""

    def __init__(self) -> None:
        self.armed: list[Any] = []

    def pending(self) -> list[Any]:
        return [p for p in dict.fromkeys(self.armed) if p._body_timer is not None]

    def fire(self) -> int:
        pending = self.pending()
        for protocol in pending:
            protocol._body_timer.cancel()
            protocol._body_timed_out()
        return len(pending)


@pytest.fixture
def body_timers(head_timeout: str, monkeypatch: pytest.MonkeyPatch) -> BodyTimers:
    """The body timeout on both protocols, an hour long: it fires when the test fires it."""
    monkeypatch.setattr(http_limits, "BODY_TIMEOUT_S", 3600)
    timers = BodyTimers()
    arm = http_limits._RequestTimers._arm_body

    def recorded(protocol: http_limits._RequestTimers) -> None:
        arm(protocol)
        timers.armed.append(protocol)

    monkeypatch.setattr(http_limits._RequestTimers, "_arm_body", recorded)
    return timers


POST_HEAD = (b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n")


async def test_a_request_body_not_complete_in_time_is_answered_408_and_closed(
        tmp_path: Path, body_timers: BodyTimers, caplog: pytest.LogCaptureFixture) -> None:
    """QA s33: a body declared 100 bytes long, one sent, held its connection for ever;
    five of them took every connection the cap allowed. A slow body still passes: the
    deadline is for the whole body, from its head's end."""
    # uvicorn answers 503 from the cap on, these six connections counted each time.
    async with serving(tmp_path, max_connections=7) as port:
        stalled = [opened(port, POST_HEAD % 100 + b"{") for _ in range(5)]
        body = b'{"query":"{__typename}"}'
        slow = opened(port, POST_HEAD % len(body))
        await soon(lambda: len(body_timers.pending()) == 6)
        loop = asyncio.get_running_loop()
        assert all(p._body_timer.when() > loop.time() + 3000 for p in body_timers.pending())
        for piece in (body[:5], body[5:12], body[12:]):  # a byte now and then, moving on
            slow.sendall(piece)
            await asyncio.sleep(0)
        assert (await answered(slow)).startswith(b"HTTP/1.1 200")
        await soon(lambda: len(body_timers.pending()) == 5)  # the slow body's stopped
        # A request without a body stops it at once: the kept-alive connection's next.
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await answered(slow)).startswith(b"HTTP/1.1 200")
        assert len(body_timers.pending()) == 5
        assert all(still_open(s) for s in stalled)  # until their timers fire
        url = f"http://127.0.0.1:{port}/graphql"
        async with httpx.AsyncClient() as client:  # the cap is reached
            assert (await client.post(url, json={"query": "{__typename}"})).status_code == 503
        assert body_timers.fire() == 5
        for sock in stalled:
            sock.setblocking(True)
            sock.settimeout(30)
            assert sock.makefile("rb").readline().startswith(b"HTTP/1.1 408")
            sock.setblocking(False)
        await asyncio.gather(*(closed(s) for s in stalled))
        async with httpx.AsyncClient() as client:  # the connections are free again

            async def served() -> bool:
                response = await client.post(url, json={"query": "{__typename}"})
                return response.status_code == 200

            await until(served)
        # A websocket has no body: no timer runs for it, and none drops it (on h11, which
        # still reports the upgrade's request body, one ran and dropped every websocket
        # 60 s after it opened, without a close frame).
        async with connect(f"ws://127.0.0.1:{port}/graphql",
                           subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            body_timers.fire()  # had one run for it, the connection is dropped
            await asyncio.wait_for(await ws.ping(), 30)
            assert not body_timers.pending()
    # The app, told of the closed connection mid-body, answers nobody, quietly.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_connections_beyond_the_cap_are_answered_503_and_logged_now_and_then(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(http_limits.REFUSALS, "_last", None)  # other tests' refusals
    monkeypatch.setattr(http_limits.REFUSALS, "_refused", 0)
    async with serving(tmp_path, max_connections=3) as port:
        url = f"http://127.0.0.1:{port}/graphql"  # not /healthz: served through the cap
        # Accepted, and counted, before the requests below: connections are taken in
        # the order they arrived.
        holding = [opened(port) for _ in range(3)]
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
        async with httpx.AsyncClient() as client:

            async def served() -> bool:  # once the server has seen them closed
                return (await client.get(url)).status_code != 503

            await until(served)


async def test_the_health_check_is_served_at_the_cap(
        tmp_path: Path, head_timers: HeadTimers, monkeypatch: pytest.MonkeyPatch) -> None:
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
                                                            head_timers: HeadTimers) -> None:
    """The QA pass's attack, scaled down: stalled sockets beyond the cap are closed in
    time, and the port serves again without the client letting go (GraphQL, not only
    /healthz, which is served through the cap)."""
    async with serving(tmp_path, max_connections=20) as port:
        stalled = [opened(port, b"POST /graphql HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"")
                   for i in range(40)]
        try:
            await soon(lambda: len(head_timers.pending()) == 40)
            assert head_timers.fire() == 40
            await asyncio.gather(*(closed(s) for s in stalled))
            async with httpx.AsyncClient() as client:

                async def served() -> bool:  # once the server has seen them closed
                    return (await client.get(f"http://127.0.0.1:{port}/graphql")
                            ).status_code != 503

                await until(served)
        finally:
            for sock in stalled:
                sock.close()


def test_the_default_cap_leaves_room_for_the_live_hub_s_subscribers() -> None:
    """Review s24: uvicorn counts open websockets toward ``limit_concurrency`` but never
    refuses an upgrade, so at a default of 1,000 a thousand live-map subscribers made every
    HTTP request, /healthz included, a 503. The default sits above as many sockets as the
    live hub runs operations, with room for HTTP beside them."""
    assert Settings().max_connections >= MAX_OPERATIONS + 1000
