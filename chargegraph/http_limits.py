"""Bounds on the GraphQL port's connections (QA s24: a thousand idle or half-sent sockets
filled the process's open files, and GraphQL, /healthz and new chargers, which share the
process, were all refused until the client let go).

* A request head must be complete within ``HEAD_TIMEOUT_S`` of the connection opening,
  or of its first byte on a kept-alive connection, else the connection is closed: uvicorn
  times a connection out only between requests (keep-alive, after a response), so one
  that never finished its first request head was held for ever. The OCPP port's
  websockets server closes an unfinished handshake after 10 s too (its open timeout).
* A request body must be complete within ``BODY_TIMEOUT_S`` of its head's end, else it is
  answered 408 and the connection closed (QA s33: a ``Content-Length: 100`` with one byte
  sent was held for ever, uvicorn has no timer while a body is read, and five of them
  took every connection ``CHARGEGRAPH_MAX_CONNECTIONS=5`` allows). A deadline for the
  whole body, not a minimum rate: one timer, and a legal body (``graph.http.MAX_BODY``)
  sent slowly but steadily passes well within it. Not a setting, as the head's is not:
  both bound misbehaving clients, not a deployment's needs. No cap per client address:
  behind a proxy (``CHARGEGRAPH_TRUSTED_PROXIES``) every connection comes from the
  proxy's address, which a per-address cap would starve as a whole.
* At most ``CHARGEGRAPH_MAX_CONNECTIONS`` connections are served at once: uvicorn's
  ``limit_concurrency`` answers the requests beyond them 503. Open websockets count toward
  it, though uvicorn never refuses an upgrade (the default leaves room for them). Its own line
  for each refusal is turned into one WARNING a minute at most (``RefusalLog``). A GET (or
  HEAD) of ``/healthz`` is served through the cap (``_HealthThroughCap``): a 503 there
  told an orchestrator that a busy instance was down, and it was killed.
* A GraphQL websocket whose client reads nothing can be dropped by the app
  (``WebSocketProtocol``): uvicorn's send, the close's too, waits for the socket to be
  writable, and its ``transport.close()`` waits for the buffer to drain, so such a socket
  was held for as long as the client stayed connected. And once a close frame has gone
  into the transport (the app's or uvicorn's own), the connection is dropped if it is not
  closed within ``CLOSE_WITHIN_S`` (QA s25: a backlog under the transport's 64 KiB
  high-water mark let the close be "taken" at once, and nothing ever dropped it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import h11
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame
from websockets.http11 import Request

from graph.live_outbox import ABORT, CLOSE_WITHIN_S

#: Seconds a request head may take, from the connection opening (or, on a connection
#: kept alive, from the next request's first byte) until its blank line.
HEAD_TIMEOUT_S = 10.0

#: Seconds a request body may take, from its head's end until its last byte: 1 MB (the
#: largest body taken) at 17 kB/s.
BODY_TIMEOUT_S = 60.0

#: What a body not complete in time is answered before its connection is closed.
_BODY_TIMEOUT_MESSAGE = b"request body not complete in time"
REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                   b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                   % (len(_BODY_TIMEOUT_MESSAGE), _BODY_TIMEOUT_MESSAGE))

#: The health check's path (``app.create_app``), served at the connection cap too.
HEALTHZ = "/healthz"

#: What uvicorn logs (at WARNING, on ``uvicorn.error``) for each request it answers 503
#: at ``limit_concurrency``.
UVICORN_REFUSAL = "Exceeded concurrency limit."


class _RequestTimers:
    """The head and body timeouts, shared by the HTTP protocols below. ``_arm`` starts the
    head's unless it runs, ``_disarm`` stops it; when it fires, the connection is closed
    (no answer: the client has not finished asking). ``_arm_body`` starts the body's,
    ``_disarm_body`` stops it; when it fires, the request is answered 408 unless its
    response has begun, and the connection closed."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _arm_body(self) -> None:
        if self._body_timer is None:
            self._body_timer = self.loop.call_later(BODY_TIMEOUT_S, self._body_timed_out)

    def _disarm_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_started:
            # The app waits for the rest of the body; the connection's loss tells it
            # (``http.disconnect``), and its own answer then goes nowhere.
            self.cycle.response_started = True
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


class _HealthThroughCap:
    """Serves a GET or HEAD of ``HEALTHZ`` whatever the connection cap. uvicorn reads its
    ``limit_concurrency`` once a request's head is complete, its ``scope`` built (both
    protocols), and answers 503 at the cap; here it reads no cap for the health check,
    one small answer that tells whether the instance serves. Every other request, and an
    upgrade (never refused), is capped as before."""

    root_path: str
    _cap: int | None = None

    @property
    def limit_concurrency(self) -> int | None:
        scope = getattr(self, "scope", None)  # the request whose head just completed
        if scope is not None and scope.get("method") in ("GET", "HEAD") \
                and scope.get("path") == self.root_path + HEALTHZ:
            return None
        return self._cap

    @limit_concurrency.setter
    def limit_concurrency(self, cap: int | None) -> None:
        self._cap = cap  # uvicorn's ``__init__`` sets it from its config


class H11Bounded(_RequestTimers, _HealthThroughCap, H11Protocol):
    """uvicorn's h11 protocol (where httptools is not installed) with the head and body
    timeouts: h11 reports the peer ``IDLE`` until a request's head is complete, then
    ``SEND_BODY`` until its body is. No timer runs once the connection is upgraded to a
    websocket (as on httptools)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.get_protocol() is not self:
            # Upgraded to a websocket, which has timeouts of its own: h11 still reports
            # the request's body (SEND_BODY), but the connection is no longer ours, and
            # its ``connection_lost`` is the websocket's, which would stop no timer here.
            self._disarm()
            self._disarm_body()
            return
        state = self.conn.their_state
        if state is h11.IDLE and not self.transport.is_closing():
            self._arm()
        else:
            self._disarm()
        if state is h11.SEND_BODY and not self.transport.is_closing():
            self._arm_body()
        else:
            self._disarm_body()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._disarm_body()
        super().connection_lost(exc)


HttpProtocol: type[asyncio.Protocol]
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools on CPython
    HttpProtocol = H11Bounded
else:
    class HttpToolsBounded(_RequestTimers, _HealthThroughCap, HttpToolsProtocol):
        """uvicorn's httptools protocol (the one ``http="auto"`` picks when httptools is
        installed) with the head and body timeouts: the head's armed when the connection
        opens and when a request begins, stopped when its head is complete (a websocket
        upgrade's too: the websocket has timeouts of its own) or the connection is lost.
        The body timer runs from the head's end (not an upgrade's) until the message is
        complete, at once for a request without a body."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()
            if not (self.parser.should_upgrade() and self._should_upgrade()):
                self._arm_body()

        def on_message_complete(self) -> None:
            self._disarm_body()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._disarm_body()
            super().connection_lost(exc)

    HttpProtocol = HttpToolsBounded


class RefusalLog(logging.Filter):
    """Turns uvicorn's line for each request refused at ``limit_concurrency`` into one
    WARNING naming the setting, then at most one per ``every`` seconds, each counting the
    refusals since the line before: a flood of requests would otherwise log a line each."""

    def __init__(self, every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every = every
        self.clock = clock
        #: The cap ``limit_concurrency`` was given (the server's ``Config``).
        self.limit: int | None = None
        self._last: float | None = None
        self._refused = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != UVICORN_REFUSAL:
            return True
        self._refused += 1
        now = self.clock()
        if self._last is not None and now - self._last < self.every:
            return False
        self._last = now
        record.msg = ("%d request(s) answered 503 Service Unavailable: the GraphQL port "
                      "serves at most CHARGEGRAPH_MAX_CONNECTIONS (%s) connections at "
                      "once (logged at most once every %g s)")
        record.args = (self._refused, self.limit, self.every)
        self._refused = 0
        return True


#: On ``uvicorn.error``, where uvicorn logs the refusals (``log_refusals``).
REFUSALS = RefusalLog()


def log_refusals(limit: int) -> None:
    """Installs ``REFUSALS`` for a server whose ``limit_concurrency`` is ``limit``."""
    REFUSALS.limit = limit
    logging.getLogger("uvicorn.error").addFilter(REFUSALS)  # the same object: added once


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol, the one ``ws="auto"`` picks, offering the
    app the ``ABORT`` extension (``graph.live_outbox``): the message drops the TCP
    connection at once, without a close frame and whatever is still unsent. The app uses
    it when its close waited in vain for the socket to be writable (a client that reads
    nothing); uvicorn's ASGI offers no other way: returning from the app, or raising,
    ends in ``transport.close()``, which waits for the unsent data to go, that is for
    ever. The connection is then lost as any other (the app's ``receive`` says
    ``websocket.disconnect``, a send waiting raises) and leaves the server's count."""

    #: Drops the connection ``CLOSE_WITHIN_S`` after a close frame went out, unless lost
    #: by then (``_bound_close``).
    _close_bound: asyncio.TimerHandle | None = None
    _close_sent = False

    @property  # type: ignore[override]
    def close_sent(self) -> bool:
        return self._close_sent

    @close_sent.setter
    def close_sent(self, value: bool) -> None:
        # uvicorn sets it wherever it writes a close frame (the app's close, its own ping
        # timeout, a protocol error) or a refusal, then waits for the peer's echo (10 s)
        # or closes the transport: both wait on a client that may read nothing.
        self._close_sent = value
        if value:
            self._bound_close()

    def _bound_close(self) -> None:
        """A close frame was written: the connection must be lost within
        ``CLOSE_WITHIN_S``. ``transport.close()`` (uvicorn's, at the peer's echo or its
        10 s close timer) waits for the unsent data to go, for ever if the client reads
        nothing, even when that backlog is below the transport's high-water mark, so that
        the close itself was "taken" at once and the app had no cause to abort (QA s25)."""
        if self._close_bound is None and not getattr(self, "disconnected", False):
            self._close_bound = self.loop.call_later(CLOSE_WITHIN_S, self._close_overdue)

    def _close_overdue(self) -> None:
        self._close_bound = None
        if not self.disconnected:
            self.transport.abort()

    def handle_close(self, event: Frame) -> None:
        super().handle_close(event)  # the peer's close, answered (the reply is a close too)
        self._bound_close()

    def shutdown(self) -> None:
        super().shutdown()  # 1012 (or 500) written, the transport closed
        self._bound_close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_bound is not None:
            self._close_bound.cancel()
            self._close_bound = None
        super().connection_lost(exc)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # none when the handshake was refused
        if scope is not None:
            scope["extensions"][ABORT] = {}

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == ABORT:  # type: ignore[comparison-overlap]
            # Not after ``writable``, as every other message: the socket takes nothing.
            self.transport.abort()
            return
        await super().send(message)

    def keepalive_timeout(self) -> None:
        """uvicorn's own ping went unanswered (``ws_ping_timeout``): it writes a close and
        closes the transport, which waits for what is unsent to go; with a client that
        reads nothing, for ever, and the app is never told. What is still unsent is
        dropped instead."""
        super().keepalive_timeout()
        if self.transport.get_write_buffer_size():
            self.transport.abort()
