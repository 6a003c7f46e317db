"""GraphQL over websockets: graphql-transport-ws and the legacy graphql-ws protocol, on raw
ASGI, with subscription events fanned out once per event rather than once per subscriber.

Why not Strawberry's handlers: they run graphql-core's execution of the selection, JSON
encoding and an ASGI send for every subscriber and every event, which is ~70 µs per
delivery; a live map with a thousand viewers cannot afford that. Here:

* The domain (``LiveService.watch``) keeps ONE bus subscription per topic and decides
  visibility (``Policy.sees_event``) per event once per distinct viewer, then calls each
  operation's ``deliver`` synchronously.
* Operations that would get the same result share a ``RenderGroup``
  (``graph/live_render.py``): the selection runs once per event per group, is encoded
  once, and every member gets the same text with its own ``id`` spliced in. The key is
  (document, operation, variables) plus the viewer, except when the selection reads only
  the event's own leaf fields (``cpId``, ``status``, ``droppedBefore``…, see
  ``live_render.local_fields``): those results cannot depend on who asks, so every
  viewer shares them. Any nested object (``station { owner … }``) depends on the
  viewer's scope and field views, so it is shared only between connections of one viewer.
* Nested selections (store reads, resolvers) render through the process's
  ``RenderQueue``: at most ``MAX_RENDERS`` at once, started one per loop turn, groups
  taking turns; chargers' frames and queries run between them. Past ``RENDER_BACKLOG``
  renders waiting, a group's render still waiting is coalesced into the newest event
  (the newest state, with ``droppedBefore`` counting what was skipped). Event-only
  selections are not queued: they cost no store read and are rendered at once.
* Sends start eagerly: while a socket's transport is writable, uvicorn's ``send``
  completes without suspending, so a delivery costs no task switch. A socket that is not
  writable gets its messages queued (``Outbox``, ``graph/live_outbox.py``), at most
  ``queue_size`` per operation; beyond that its oldest events are dropped and the next
  one it gets says so in ``droppedBefore`` (shaped again for that subscriber alone).
  Nobody else waits for it.

Pre-execution behaviour follows Strawberry's handlers (close codes 4400/4401/4403/4406/
4408/4409/4429, ``error`` messages for validation errors); queries and mutations sent over
the socket run through ``schema.execute``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSyntaxError,
    OperationType,
    get_named_type,
    get_operation_ast,
)
from graphql.execution import Executor, create_source_event_stream, execute_subscription_event
from graphql.execution.collect_fields import collect_fields
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send
from strawberry.types.execution import PreExecutionError

from domain.errors import Unauthenticated
from domain.events import AccessChanged, DomainEvent, EventsDropped
from domain.policy import SYSTEM, Viewer
from domain.ports import NO_METRICS, Metrics
from domain.services import Services
from domain.services.live import Watch
from graph import exact_json
from graph.auth import BEARER_FORMAT, BadBearerFormat, TokenService, bearer_token
from graph.context import GraphContext
from graph.errors import mask, payload_codes, request_outcome
from graph.live_outbox import ABORT, CLOSE_WITHIN_S, Outbox, QueuedSend, dumps
from graph.live_render import (
    MAX_RENDERS,
    RENDER_BACKLOG,
    RenderGroup,
    RenderQueue,
    local_fields,
    reads_event_only,
    result_payload,
)
from graph.pipeline import operation_type, prepared, too_complex
from graph.subscription import LiveFeed, events_lost, events_unavailable

log = logging.getLogger("chargegraph.graph")


def _close_reason(error: Unauthenticated) -> str:
    """The close reason for a token refused: an expired one says so (the client
    refreshes and reconnects, as HTTP's ``TOKEN_EXPIRED`` tells it), one not sent as
    ``Bearer <token>`` says that, as HTTP does (QA s33: a bare token closed "Forbidden",
    as a revoked one, and an app could not tell its own mistake from a sign-out), any
    other "Forbidden" (sign in again)."""
    if error.code == "TOKEN_EXPIRED":
        return "Token expired"
    return BEARER_FORMAT if isinstance(error, BadBearerFormat) else "Forbidden"


TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
PROTOCOLS = (TRANSPORT_WS, LEGACY_WS)
DEFAULT_QUEUE_SIZE = 1000
#: Operations one socket may run at once (a map screen needs a handful).
MAX_OPERATIONS_PER_SOCKET = 100
#: Operations all sockets from one client address may run at once (the address uvicorn
#: reports: ``X-Forwarded-For`` from a trusted proxy). Sockets are not limited in number:
#: thirty sockets of a hundred subscriptions, each aliased apart so that none shared a
#: render group, made every status change cost seconds, and chargers waited 10 s for
#: answers. Two hundred leave an office behind one address room for dozens of screens.
MAX_OPERATIONS_PER_CLIENT = 200
#: Operations all sockets of the process may run at once: what many addresses together
#: may make an event cost (a thousand viewers of a live map with a few each).
MAX_OPERATIONS = 10_000
#: How often a signed-in connection's token and user are checked again.
REVALIDATE_EVERY = timedelta(seconds=60)
#: The keep-alive's interval (``CHARGEGRAPH_WS_KEEPALIVE_S``): below the 60 s idle
#: timeouts of proxies and load balancers (nginx's ``proxy_read_timeout``, AWS ALB), and
#: below the 30 s in which Apollo's legacy client expects the next ``ka``.
KEEPALIVE = timedelta(seconds=25)
#: The close of a graphql-transport-ws socket whose client did not answer a ``ping`` in
#: time: graphql-ws's own recipe for a pong timeout (a client closing with 4408 "Request
#: Timeout"), and a code its client retries (1011 is among those it gives up on).
PONG_TIMEOUT = (4408, "Pong timeout")
#: How early by ``Timers.now()`` a timer may run: a deadline this close is reached.
_EARLY = 0.001


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Timers:
    """The keep-alive's time: ``time.monotonic`` and the running loop's ``call_later``,
    in one place so that a test can run it on a clock it moves itself (by order, not by
    how fast a loaded machine runs; tests/graph/test_live_ws.py)."""

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        return asyncio.get_running_loop().call_later(delay, callback)


Authorize = Callable[[str | None], Awaitable[Viewer]]


def connection_authorization(payload: dict[str, Any], request: HTTPConnection
                             ) -> str | None:
    """The ``Authorization`` a socket signs in with, in the shapes client libraries send:
    ``{"authorization": "Bearer …"}`` (any case), ``{"headers": {"Authorization": …}}``
    (Apollo's ``connectionParams`` copied from HTTP), a bare ``authToken``/``token``,
    else the upgrade request's own header (clients that are not browsers can set it).
    Before, all but the first were taken for anonymous: the socket was acknowledged and
    each subscription then failed with "sign in first"."""
    nested = payload.get("headers")
    for source in (payload, nested if isinstance(nested, dict) else {}):
        for key, value in source.items():
            if isinstance(key, str) and key.lower() == "authorization" and value:
                return str(value)
    for key in ("authToken", "token"):
        token = payload.get(key)
        if isinstance(token, str) and token:
            return token if token.lower().startswith("bearer ") else f"Bearer {token}"
    return request.headers.get("authorization") or None


def _operation_of(payload: Any) -> str:
    """The operation type a ``subscribe``/``start`` payload asks for, as an HTTP request's
    is told (``pipeline.operation_type``); ``unknown`` for a malformed payload."""
    if not isinstance(payload, dict):
        return "unknown"
    query, name = payload.get("query"), payload.get("operationName")
    if not isinstance(query, str) or (name is not None and not isinstance(name, str)):
        return "unknown"
    return operation_type(query, name)


# ------------------------------------------------------------------ operations
class LiveOperation:
    """One subscription of one connection, fed by the domain's pump."""

    __slots__ = (
        "accept",
        "connection",
        "dropped",
        "group",
        "id",
        "last",
        "outbox",
        "pending",
        "prefix",
        "stopped",
        "watch",
    )

    def __init__(self, connection: Connection, op_id: str, group: RenderGroup,
                 feed: LiveFeed) -> None:
        self.connection = connection
        self.outbox = connection.outbox
        self.id = op_id
        self.group = group
        self.accept = feed.accept
        self.last = feed.last
        self.prefix = \
            f'{{"id":{dumps(op_id)},"type":"{connection.result_type}","payload":'
        self.dropped = 0
        self.pending: deque[QueuedSend] = deque()
        self.stopped = False
        self.watch: Any = None

    def deliver(self, event: DomainEvent | EventsDropped) -> None:
        if type(event) is EventsDropped:
            if event.interrupted and not self.stopped:
                self.connection.lose(self.id)
                return
            if event.unavailable and not self.stopped:
                self.connection.unheard(self.id)
                return
            self.dropped += event.count
            return
        if self.stopped or not self.accept(event):
            return
        dropped, self.dropped = self.dropped, 0
        self.group.render_for(cast(DomainEvent, event), dropped, self)

    def ended(self) -> None:
        # The bus closed under us (shutdown): the subscription is complete.
        if not self.stopped:
            self.connection.finish(self.id)

    def stop(self, *, keep_pending: bool = False) -> None:
        """No more events; those queued for the socket are dropped unless
        ``keep_pending`` (a completed subscription's last event goes out first)."""
        if self.stopped:
            return
        self.stopped = True
        if self.watch is not None:
            self.watch.close()
        if not keep_pending:
            for item in self.pending:
                item.cancelled = True
            self.pending.clear()
        self.group.leave()


class LiveHub:
    """Per app: the render groups (and the way to the request pipeline's documents)."""

    def __init__(self, services: Services, tokens: TokenService, schema: Any,
                 queue_size: int = DEFAULT_QUEUE_SIZE, *,
                 max_operations: int = MAX_OPERATIONS,
                 max_operations_per_client: int = MAX_OPERATIONS_PER_CLIENT,
                 max_renders: int = MAX_RENDERS,
                 render_backlog: int = RENDER_BACKLOG, introspection: bool = True,
                 metrics: Metrics = NO_METRICS) -> None:
        self.services = services
        self.tokens = tokens
        self.schema = schema
        #: Whether operations on the sockets may ask ``__schema`` and ``__type``
        #: (``graph.pipeline``), as over HTTP.
        self.introspection = introspection
        self.queue_size = queue_size
        #: Where the sockets' operations are counted, as HTTP's requests are
        #: (``graphql_request``, transport ``ws``).
        self.metrics = metrics
        self.groups: dict[tuple[Any, ...], RenderGroup] = {}
        self.renders = RenderQueue(max_renders, render_backlog)
        self.max_operations = max_operations
        self.max_operations_per_client = max_operations_per_client
        #: Operations running on all sockets, and per client address.
        self.running = 0
        #: Sockets accepted and not yet closed (read by ``/metrics``).
        self.connections = 0
        self.running_by_client: dict[str, int] = {}

    def refusal(self, client: str) -> GraphQLError | None:
        """Why one more operation from ``client`` may not start now, if it may not."""
        if self.running_by_client.get(client, 0) >= self.max_operations_per_client:
            return GraphQLError(
                f"at most {self.max_operations_per_client} operations at once per client "
                "address", extensions={"code": "TOO_MANY_OPERATIONS"})
        if self.running >= self.max_operations:
            return GraphQLError(
                f"the service runs at most {self.max_operations:,} operations over "
                "websockets at once: try again later",
                extensions={"code": "TOO_MANY_OPERATIONS"})
        return None

    def started(self, client: str) -> None:
        self.running += 1
        self.running_by_client[client] = self.running_by_client.get(client, 0) + 1

    def ended(self, client: str) -> None:
        self.running -= 1
        left = self.running_by_client[client] - 1
        if left:
            self.running_by_client[client] = left
        else:
            del self.running_by_client[client]  # addresses come and go: no growth

    def document(self, query: str) -> tuple[DocumentNode, list[GraphQLError]]:
        """Parsed and validated once per distinct query (clients repeat a few), with the
        limits of a request over HTTP; ``GraphQLSyntaxError`` for a query that does not
        parse."""
        return prepared(self.schema._schema, query, introspection=self.introspection)


# ------------------------------------------------------------------ connections
class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Connection:
    def __init__(self, endpoint: LiveEndpoint, scope: Scope, send: Send, protocol: str
                 ) -> None:
        self.endpoint = endpoint
        self.hub = endpoint.hub
        self.protocol = protocol
        extensions = scope.get("extensions") or {}
        self.outbox = Outbox(send, self.hub.queue_size, abort=ABORT in extensions,
                             close_within=endpoint.close_within_s,
                             clock=endpoint.timers.now)
        self.request = HTTPConnection(scope)
        #: Whose operations these are, for ``LiveHub``'s per-address limit.
        self.client = self.request.client.host if self.request.client else ""
        self.context: GraphContext | None = None
        #: The ``authorization`` of ``connection_init``, checked again now and then.
        self.authorization: str | None = None
        #: When its token expires (``TokenSubject.valid_until``); ``None``: anonymous.
        self.valid_until: datetime | None = None
        #: Set when this user's rights changed somewhere: re-check without waiting.
        self.recheck = asyncio.Event()
        self.access_watch: Watch | None = None
        self.init_received = False
        #: The close a timer started (``close_soon``), kept referenced until it ran.
        self.closing: asyncio.Future[None] | None = None
        #: ``Timers.now()`` when the client last sent a message.
        self.heard_at = endpoint.timers.now()
        #: The keep-alive's ``ping`` that no message has answered yet, and when it was
        #: given to the outbox (it may wait there behind a backlog).
        self.ping: QueuedSend | None = None
        self.ping_queued_at = 0.0
        #: The last ``ka`` (legacy) and ``pong`` given to the outbox: while one waits
        #: there, another adds nothing (a client that reads nothing would otherwise have
        #: them pile up without bound: events are bounded per operation, these were not).
        self.ka: QueuedSend | None = None
        self.pong: QueuedSend | None = None
        self.keep_alive_timer: Cancellable | None = None
        #: Closes the socket when its token expires (``valid_until``, on the timers).
        self.expiry_timer: Cancellable | None = None
        self.operations: dict[str, LiveOperation | asyncio.Task[None]] = {}

    @property
    def result_type(self) -> str:
        """The type of a message carrying a result: graphql-transport-ws's ``next``, the
        legacy protocol's ``data``."""
        return "next" if self.protocol == TRANSPORT_WS else "data"

    # -- messages -----------------------------------------------------------
    async def handle(self, raw: str) -> None:
        try:
            # A JSON number in ``payload.variables`` keeps its digits (a small message).
            message = exact_json.loads(raw, exact=exact_json.MESSAGE)
        except orjson.JSONDecodeError:
            if self.protocol == LEGACY_WS:
                return  # the legacy protocol ignores what it cannot parse
            raise _Close(4400, "WebSocket message must be valid JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            if self.protocol == LEGACY_WS:
                return
            raise _Close(4400, "Failed to parse message")
        if self.protocol == TRANSPORT_WS:
            await self._transport_ws(message)
        else:
            await self._legacy_ws(message)

    async def _transport_ws(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "connection_init":
            if self.init_received:
                raise _Close(4429, "Too many initialisation requests")
            payload = message.get("payload")
            payload = {} if payload is None else payload
            if not isinstance(payload, dict):
                raise _Close(4400, "Invalid connection init payload")
            self.init_received = True
            try:
                await self._authorize(payload)
            except Unauthenticated as exc:
                raise _Close(4403, _close_reason(exc)) from None
            self.outbox.control({"type": "connection_ack"})
            self.keep_alive()
        elif kind == "ping":
            if self.pong is None or self.pong.sent_at is not None:
                self.pong = self.outbox.control({"type": "pong"})
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            op_id, payload = message.get("id"), message.get("payload")
            if self.context is None:
                self._count(_operation_of(payload), "invalid")
                raise _Close(4401, "Unauthorized")
            if not isinstance(op_id, str) or not isinstance(payload, dict):
                self._count("unknown", "invalid")
                raise _Close(4400, "Failed to parse message")
            if op_id in self.operations:
                self._count(_operation_of(payload), "invalid")
                raise _Close(4409, f"Subscriber for {op_id} already exists")
            if self._room_for(op_id, lambda: _operation_of(payload)):
                await self._start(op_id, payload)
        elif kind == "complete":
            op_id = message.get("id")
            if not isinstance(op_id, str):
                raise _Close(4400, "Failed to parse message")
            self._stop(op_id)
        else:
            raise _Close(4400, f"Unknown message type: {kind}")

    async def _legacy_ws(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "connection_init":
            if self.init_received:
                # A second init would swap the rights the re-checks look at, while the
                # running subscriptions keep the first ones: refused as the newer
                # protocol refuses it.
                raise _Close(4429, "Too many initialisation requests")
            self.init_received = True
            payload = message.get("payload")
            if payload is not None and not isinstance(payload, dict):
                self.outbox.control({"type": "connection_error"})
                raise _Close(1000, "")
            try:
                await self._authorize(payload or {})
            except Unauthenticated as exc:
                self.outbox.control({"type": "connection_error",
                                     "payload": {"code": exc.code, "message": exc.message}})
                raise _Close(1011, "") from None
            self.outbox.control({"type": "connection_ack"})
            # As the protocol's reference server does: a first ``ka`` right after the ack
            # (Apollo's client starts timing the server from it), then one per interval.
            self.keep_alive()
        elif kind == "connection_terminate":
            raise _Close(1000, "")
        elif kind == "start":
            op_id, payload = message.get("id"), message.get("payload")
            if not isinstance(op_id, str) or not isinstance(payload, dict):
                self._count("unknown", "invalid")
                return
            if self.context is None:
                self._count(_operation_of(payload), "invalid")
                raise _Close(4401, "Unauthorized")
            if op_id in self.operations:
                self._stop(op_id)
            if self._room_for(op_id, lambda: _operation_of(payload)):
                await self._start(op_id, payload)
        elif kind == "stop":
            op_id = message.get("id")
            if isinstance(op_id, str) and op_id in self.operations:
                self._stop(op_id)
                self.outbox.control({"type": "complete", "id": op_id})

    async def _authorize(self, payload: dict[str, Any]) -> None:
        self.authorization = connection_authorization(payload, self.request)
        viewer = await self.endpoint.authorize(self.authorization)
        if viewer.anonymous and not self.hub.services.policy.public_map:
            # Without the public map an anonymous socket has nothing to follow (every
            # subscription is refused), and what else it could send HTTP answers as
            # well: acknowledged, such sockets were held open for ever (QA s24). Closed
            # at init instead (4403), as graphql-transport-ws allows.
            raise Unauthenticated("sign in first")
        token = bearer_token(self.authorization)
        # Read once, for the check before each new subscription (``expired``), and the
        # device for every operation's context (``GraphContext.device_id``).
        subject = self.hub.tokens.subject(token) if token else None
        self.valid_until = subject.valid_until if subject is not None else None
        if self.valid_until is not None:
            # Closed when it expires, not at the next periodic re-check: that let a
            # subscription go on sending events for up to a period after (QA s32).
            left = (self.valid_until - self.hub.tokens.now()).total_seconds()
            self.expiry_timer = self.endpoint.timers.call_later(max(left, 0.0),
                                                                self._expire)
        context = GraphContext.build(self.hub.services, self.hub.tokens, viewer, self.request,
                                     introspection=self.hub.introspection,
                                     device_id=subject.family_id if subject else None)
        # Only what is used, not the payload: it lives as long as the socket, and a client
        # could make it as large as a message may be.
        context.connection_params = ({"authorization": self.authorization}
                                     if self.authorization else {})
        self.context = context
        if viewer.user_id is not None and self.hub.services.ctx.bus is not None:
            # A change of this user's rights anywhere wakes the re-check at once.
            self.access_watch = self.hub.services.live.watch(
                SYSTEM, [AccessChanged.topic], self._on_access, lambda: None)

    def _on_access(self, event: DomainEvent | EventsDropped) -> None:
        if isinstance(event, EventsDropped) or (
                isinstance(event, AccessChanged) and self.context is not None
                and event.user_id == self.context.viewer.user_id):
            self.recheck.set()

    async def withdrawn(self) -> str | None:
        """Why the ``connection_init`` token no longer stands for the same rights (the
        close reason), or ``None`` while it does: not expired or revoked, the user active
        with the same role and company. An expiry is told apart ("Token expired": refresh
        and reconnect) from a withdrawal ("Forbidden": sign in again); both close 4403."""
        if self.context is None or self.authorization is None:
            return None  # anonymous: nothing to withdraw
        try:
            viewer = await self.endpoint.authorize(self.authorization)
        except Unauthenticated as exc:
            return _close_reason(exc)
        return None if viewer == self.context.viewer else "Forbidden"

    def expired(self) -> bool:
        """Whether the ``connection_init`` token has expired, by the time it carries: no
        store read, unlike ``withdrawn``."""
        return self.valid_until is not None and self.hub.tokens.now() >= self.valid_until

    def _expire(self) -> None:
        """The token's expiry (``expiry_timer``): closed 4403 "Token expired", as a
        subscribe after it is (``_subscribe``), and as HTTP refuses it from then on."""
        if not self.outbox.dead:
            self.close_soon(4403, "Token expired")

    def close_soon(self, code: int, reason: str) -> None:
        """Closes the socket from a timer (the init timeout, the keep-alive, the token's
        expiry), the close kept referenced until it ran (``closing``); none when one is
        under way already: two timers due at once each started one, the second's
        reference replacing the first's (review r32-c), and the loop keeps only weak
        references to tasks."""
        if self.closing is None or self.closing.done():
            self.closing = asyncio.ensure_future(self.close(code, reason))

    # -- keep-alive ---------------------------------------------------------
    def keep_alive(self) -> None:
        """Starts the keep-alive of an acknowledged connection (unless it is off).

        A proxy or load balancer cuts a websocket that carried nothing for its idle
        timeout (60 s for nginx's ``proxy_read_timeout`` and AWS ALB). uvicorn's
        websocket-level pings are answered by the client's websocket stack (the browser,
        not the page): they tell the server that the peer is connected, not that the page
        runs or reads, and the page never sees them, so they do not tell it that the
        server is there. So:

        * graphql-transport-ws: a ``ping`` once the socket has been quiet for the interval,
          quiet meaning nothing sent to the client or nothing heard from it (events going
          out do not show that anyone still reads them: a half-open socket takes them into
          its buffers without complaint). A client that sends nothing at all (no ``pong``,
          nothing else) within a further interval from when the socket took the ping is
          closed, 4408 "Pong timeout", which graphql-ws's client answers by reconnecting;
          a ping not yet taken (behind a backlog, or the socket not writable) keeps the
          socket open while the socket takes messages, and it is closed once it has taken
          nothing for an interval, an interval after the ping at the earliest
          (``_pong_wait``). A client that takes not even the close is dropped
          (``close``).
        * graphql-ws (legacy): a ``ka`` every interval, busy or not, as its reference
          server sends them: Apollo's client counts only ``ka``, never data, and closes a
          socket that went 30 s without one. The protocol has no answer to it.

        One timer per socket, re-armed for when the next ping could be due; nothing runs
        per message beyond noting the time (``heard_at``, ``Outbox.sent_at``)."""
        interval = self.endpoint.keep_alive_s
        if interval <= 0 or self.keep_alive_timer is not None:
            return
        if self.protocol == LEGACY_WS:
            self._ka()
        self._keep_alive_in(interval)

    def _ka(self) -> None:
        if self.ka is None or self.ka.sent_at is not None:  # none still waiting
            self.ka = self.outbox.control({"type": "ka"})

    def _keep_alive_in(self, delay: float) -> None:
        self.keep_alive_timer = self.endpoint.timers.call_later(delay, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        if self.outbox.dead:
            return
        interval = self.endpoint.keep_alive_s
        if self.protocol == LEGACY_WS:
            self._ka()
            self._keep_alive_in(interval)
            return
        now = self.endpoint.timers.now()
        if self.ping is not None:
            if self.heard_at < self.ping_queued_at:
                wait = self._pong_wait(self.ping, now, interval)
                if wait is None:
                    self.close_soon(*PONG_TIMEOUT)
                else:
                    self._keep_alive_in(wait)
                return
            self.ping = None
        wait = min(self.heard_at, self.outbox.sent_at) + interval - now
        if wait > _EARLY:
            self._keep_alive_in(wait)
            return
        self.ping = self.outbox.control({"type": "ping"})
        self.ping_queued_at = now
        self._keep_alive_in(interval)

    def _pong_wait(self, ping: QueuedSend, now: float, interval: float) -> float | None:
        """How much longer an unanswered ``ping`` may wait for its answer; ``None``: no
        longer, the client is gone. A full interval from when the socket took it (its send
        completed), not from when it was queued: behind a backlog (a client on a slow
        link reading a burst of events) or a socket not yet writable it reaches the
        client late, and such a client was closed although it read and answered (QA,
        review). While it waits in the outbox, the socket taking messages shows that the
        client reads; one that took nothing for an interval (``Outbox.sent_at``) is not
        read by anyone, and is closed then."""
        taken = self.outbox.sent_at if ping.sent_at is None else ping.sent_at
        wait = taken + interval - now
        return wait if wait > _EARLY else None

    # -- operations ---------------------------------------------------------
    def _room_for(self, op_id: str, kind: Callable[[], str]) -> bool:
        """Whether the socket may run one more operation (per socket, per client address
        and in all: ``LiveHub.refusal``); if not, the op gets an error, counted as refused
        (``kind``: its operation type, told only then). Each live
        operation costs rendering per event: thousands on one socket that never reads made
        every status change cost a third of a second of the event loop."""
        if len(self.operations) >= MAX_OPERATIONS_PER_SOCKET:
            refusal: GraphQLError | None = GraphQLError(
                f"at most {MAX_OPERATIONS_PER_SOCKET} operations per connection",
                extensions={"code": "TOO_MANY_OPERATIONS"})
        else:
            refusal = self.hub.refusal(self.client)
        if refusal is None:
            return True
        self._count(kind(), "invalid")
        self._error(op_id, [refusal])
        return False

    def _count(self, kind: str, outcome: str) -> None:
        """An operation sent over the socket, counted as an HTTP request is
        (``Metrics.graphql_request``): ``invalid`` refused before it ran, else its
        result's outcome; a subscription once, as it starts."""
        self.hub.metrics.graphql_request(kind, outcome, "ws")

    def _add(self, op_id: str, operation: LiveOperation | asyncio.Task[None]) -> None:
        if op_id not in self.operations:
            self.hub.started(self.client)
        self.operations[op_id] = operation

    def _drop(self, op_id: str) -> LiveOperation | asyncio.Task[None] | None:
        operation = self.operations.pop(op_id, None)
        if operation is not None:
            self.hub.ended(self.client)
        return operation

    def _error(self, op_id: str, errors: list[GraphQLError]) -> None:
        # Without suggestions when introspection is off: the validation errors
        # (``prepared``) and the variables' (``Executor.build``) alike.
        formatted = [mask(e, suggestions=self.hub.introspection).formatted for e in errors]
        payload: Any = formatted if self.protocol == TRANSPORT_WS else formatted[0]
        self.outbox.control({"type": "error", "id": op_id, "payload": payload})

    def complete_after(self, op: LiveOperation) -> None:
        """The operation's last event is on its way (``LiveFeed.last``): forget it and
        say complete right after that event (the outbox sends in order)."""
        if self.operations.get(op.id) is not op:
            return
        self._drop(op.id)
        op.stop(keep_pending=True)
        self.outbox.control({"type": "complete", "id": op.id})

    def finish(self, op_id: str) -> None:
        """The operation ended on the server's side: forget it and say so."""
        self._stop(op_id)
        self.outbox.control({"type": "complete", "id": op_id})

    def lose(self, op_id: str) -> None:
        """The operation's feed broke and events were lost: end it with an error, so the
        client reads the current state and subscribes again, rather than show a live map
        that silently stopped being true."""
        self._stop(op_id)
        self._error(op_id, [events_lost()])

    def unheard(self, op_id: str) -> None:
        """The operation started while the other instances' events cannot reach this one:
        told at once, as a result with no data and an EVENTS_UNAVAILABLE error, without
        ending it (ended, a client doing as README says would subscribe again at once,
        and again, for the whole outage). It goes on with this instance's events, and
        ends with EVENTS_LOST when the bus is back, as every other does (QA s32: it
        looked live and heard nothing from the other instances)."""
        formatted = mask(events_unavailable(), suggestions=self.hub.introspection).formatted
        self.outbox.control({"type": self.result_type, "id": op_id,
                             "payload": {"data": None, "errors": [formatted]}})

    def _stop(self, op_id: str) -> None:
        operation = self._drop(op_id)
        if isinstance(operation, LiveOperation):
            operation.stop()
        elif operation is not None:
            operation.cancel()

    async def _start(self, op_id: str, payload: dict[str, Any]) -> None:
        query = payload.get("query")
        variables = payload.get("variables")
        operation_name = payload.get("operationName")
        if not isinstance(query, str) or (variables is not None
                                          and not isinstance(variables, dict)) or (
                operation_name is not None and not isinstance(operation_name, str)):
            self._count("unknown", "invalid")
            raise _Close(4400, "Invalid subscribe payload")
        try:
            document, errors = self.hub.document(query)
        except GraphQLSyntaxError as exc:
            self._count("unknown", "invalid")
            if self.protocol == LEGACY_WS:
                self._error(op_id, [exc])
                return
            raise _Close(4400, exc.message) from None
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            self._count("unknown", "invalid")
            reason = (f"Unknown operation named '{operation_name}'." if operation_name
                      else "Can't get GraphQL operation type")
            if self.protocol == LEGACY_WS:
                self._error(op_id, [GraphQLError(reason)])
                return
            raise _Close(4400, reason)
        kind = operation.operation.value
        if errors:
            self._count(kind, "invalid")
            self._error(op_id, errors)
            return
        if operation.operation is not OperationType.SUBSCRIPTION:
            task = asyncio.get_running_loop().create_task(
                self._single(op_id, kind, query, variables, operation_name))
            self._add(op_id, task)
            return
        too_large = too_complex(self.hub.schema._schema, query, document, operation_name,
                                variables)
        if too_large:  # per event: queries and mutations are checked by the pipeline
            self._count(kind, "invalid")
            self._error(op_id, too_large)
            return
        await self._subscribe(op_id, document, query, variables, operation_name)

    async def _single(self, op_id: str, kind: str, query: str,
                      variables: dict[str, Any] | None, operation_name: str | None) -> None:
        """A query or mutation sent over the socket: one result, then complete. The
        connection's rights are checked first (as an HTTP request would be)."""
        assert self.context is not None
        reason = await self.withdrawn()
        if reason is not None:
            self._count(kind, "invalid")
            self._drop(op_id)
            await self.close(4403, reason)
            return
        context = self.context.renewed()
        codes: list[str] = []  # the payload errors' codes, for its outcome (this task's)
        marker = payload_codes.set(codes)
        try:
            result = await self.hub.schema.execute(query, variable_values=variables,
                                                   context_value=context,
                                                   operation_name=operation_name)
            outcome = request_outcome(result, codes)
        except Exception as exc:
            result = PreExecutionError(data=None, errors=[GraphQLError(str(exc))])
            outcome = "error"  # it failed as it ran: not refused
        finally:
            payload_codes.reset(marker)
        self._count(kind, outcome)
        if self.operations.get(op_id) is not asyncio.current_task():
            return  # stopped meanwhile
        if isinstance(result, PreExecutionError):
            self._drop(op_id)
            self._error(op_id, list(result.errors or []))
            return
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [e.formatted for e in result.errors]
        self.outbox.control({"type": self.result_type, "id": op_id, "payload": payload})
        self._drop(op_id)
        self.outbox.control({"type": "complete", "id": op_id})

    async def _subscribe(self, op_id: str, document: DocumentNode, query: str,
                         variables: dict[str, Any] | None, operation_name: str | None
                         ) -> None:
        """A subscription: started unless the token has expired, which closes the socket
        (4403 "Token expired") whatever the periodic re-check has yet to find (QA: a new
        subscription on a socket whose token had expired ran). Only the expiry: rights
        withdrawn close the user's sockets as the change is announced (``AccessChanged``)
        or by the periodic re-check, and reading the user for every subscribe cost one
        store read each (a network round trip on MongoDB), awaited in turn in the
        socket's message loop (review r2)."""
        assert self.context is not None
        kind = OperationType.SUBSCRIPTION.value
        if self.expired():
            self._count(kind, "invalid")
            raise _Close(4403, "Token expired")
        schema = self.hub.schema._schema
        built = Executor.build(schema, document, None, self.context, variables,
                               operation_name)
        if isinstance(built, list):
            self._count(kind, "invalid")
            self._error(op_id, built)
            return
        executor = built
        source: Any = create_source_event_stream(executor)
        if asyncio.iscoroutine(source) or isinstance(source, Awaitable):
            source = await source
        if isinstance(source, ExecutionResult):  # its resolver ran and refused
            self._count(kind, "error")
            self._error(op_id, list(source.errors or [GraphQLError("subscription failed")]))
            return
        if op_id in self.operations:  # the same id arrived while we awaited
            self._count(kind, "invalid")
            raise _Close(4409, f"Subscriber for {op_id} already exists")
        # Other sockets' operations may have started while we awaited.
        if not self._room_for(op_id, lambda: kind):
            if not isinstance(source, LiveFeed):
                with contextlib.suppress(Exception):
                    await source.aclose()
            return
        if not isinstance(source, LiveFeed):
            # Not one of ours: run it per subscriber, the way graphql-core does.
            self._add(op_id, asyncio.get_running_loop().create_task(
                self._per_subscriber(op_id, executor, source)))
            self._count(kind, "ok")
            return
        root_type = schema.subscription_type
        assert root_type is not None
        fields = collect_fields(schema, executor.fragments, executor.variable_values,
                                root_type, executor.operation, False).grouped_field_set
        details = next(iter(fields.values()))
        root_field = root_type.fields[details[0].node.name.value]
        event_type = cast(GraphQLObjectType, get_named_type(root_field.type))
        local = local_fields(event_type)
        shared = all(reads_event_only(d.node.selection_set, local,
                                       executor.fragment_definitions) for d in details)
        variables_key = orjson.dumps(variables or {}, default=exact_json.encode_default,
                                     option=orjson.OPT_SORT_KEYS)
        key: tuple[Any, ...] = (query, operation_name, variables_key)
        if not shared:
            key = (*key, self.context.viewer)
        group = self.hub.groups.get(key)
        if group is None:
            group = RenderGroup(self.hub, key, executor, source, self.context, shared)
            self.hub.groups[key] = group
        group.join()
        live = LiveOperation(self, op_id, group, source)
        self._add(op_id, live)
        try:
            live.watch = self.hub.services.live.watch(self.context.viewer,
                                                      list(source.topics),
                                                      live.deliver, live.ended)
        except Exception:
            self._count(kind, "error")
            self._drop(op_id)
            live.stop()
            raise
        self._count(kind, "ok")  # once, as it starts: its events are not requests
        # Asked once it watches (review s16: an end published while it was asked,
        # before the watch, was never delivered): nothing left to follow, a session over
        # before it was asked for, and it completes now, unless its end came meanwhile.
        if source.over is not None and await source.over() \
                and self.operations.get(op_id) is live:
            self.finish(op_id)

    async def _per_subscriber(self, op_id: str, executor: Executor, source: Any) -> None:
        try:
            async for payload in source:
                per_event = executor.build_per_event_executor(payload)
                outcome = execute_subscription_event(per_event)
                if not isinstance(outcome, ExecutionResult):
                    outcome = await cast(Awaitable[ExecutionResult], outcome)
                self.outbox.control({"type": self.result_type, "id": op_id,
                                     "payload": result_payload(outcome)})
        finally:
            with contextlib.suppress(Exception):
                await source.aclose()
        if self.operations.get(op_id) is asyncio.current_task():
            self._drop(op_id)
            self.outbox.control({"type": "complete", "id": op_id})

    async def close(self, code: int, reason: str = "") -> None:
        """Closes the socket. One whose client reads nothing never takes the close: it is
        dropped (``Outbox.close``) and its operations end now, rather than go on being
        rendered, and counted toward the limits, until TCP gives up on it (review: a
        client that stayed connected and read nothing was held for ever)."""
        if not await self.outbox.close(code, reason):
            log.info("dropped a GraphQL websocket of %s that took nothing (close %s)",
                     self.client or "?", code)
            self.close_all()

    def close_all(self) -> None:
        for timer in (self.keep_alive_timer, self.expiry_timer):
            if timer is not None:
                timer.cancel()
        for op_id in list(self.operations):
            self._stop(op_id)
        if self.access_watch is not None:
            self.access_watch.close()
            self.access_watch = None
        self.outbox.stop()


class LiveEndpoint:
    """The ASGI websocket app for ``/graphql``. ``authorize`` turns ``connection_init``'s
    ``authorization`` into a viewer, raising ``Unauthenticated`` for a bad token."""

    def __init__(self, services: Services, tokens: TokenService, schema: Any,
                 authorize: Authorize, *, queue_size: int = DEFAULT_QUEUE_SIZE,
                 connection_init_timeout: timedelta = timedelta(minutes=1),
                 revalidate_every: timedelta = REVALIDATE_EVERY,
                 keep_alive: timedelta = KEEPALIVE,
                 close_within: timedelta = timedelta(seconds=CLOSE_WITHIN_S),
                 max_operations: int = MAX_OPERATIONS,
                 max_operations_per_client: int = MAX_OPERATIONS_PER_CLIENT,
                 max_renders: int = MAX_RENDERS,
                 render_backlog: int = RENDER_BACKLOG, introspection: bool = True,
                 timers: Timers | None = None, metrics: Metrics = NO_METRICS) -> None:
        self.hub = LiveHub(services, tokens, schema, queue_size,
                           max_operations=max_operations,
                           max_operations_per_client=max_operations_per_client,
                           max_renders=max_renders, render_backlog=render_backlog,
                           introspection=introspection, metrics=metrics)
        self.authorize = authorize
        self.connection_init_timeout = connection_init_timeout
        self.revalidate_every = revalidate_every
        #: Seconds between keep-alives (``Connection.keep_alive``); 0: none.
        self.keep_alive_s = keep_alive.total_seconds()
        #: The keep-alive's clock and timers (``time.monotonic``, the loop's by default).
        self.timers = timers or Timers()
        #: Seconds a close may wait for the socket to take it (``Outbox.close``).
        self.close_within_s = close_within.total_seconds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        offered = list(scope.get("subprotocols") or ())
        protocol = next((p for p in offered if p in PROTOCOLS), None)
        await send({"type": "websocket.accept", "subprotocol": protocol})
        if protocol is None:
            await send({"type": "websocket.close", "code": 4406,
                        "reason": "Subprotocol not acceptable"})
            return
        connection = Connection(self, scope, send, protocol)
        timer = asyncio.get_running_loop().call_later(
            self.connection_init_timeout.total_seconds(), self._init_timeout, connection)
        revalidation = asyncio.create_task(self._revalidate(connection),
                                           name="chargegraph-live-revalidate")
        self.hub.connections += 1
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    break  # websocket.disconnect
                if connection.outbox.dead:
                    break  # closed (or dropped) meanwhile: nothing more is handled
                connection.heard_at = self.timers.now()
                text = message.get("text")
                try:
                    if text is None:
                        if protocol == LEGACY_WS:
                            raise _Close(1002, "WebSocket message type must be text")
                        raise _Close(4400, "WebSocket message type must be text")
                    await connection.handle(text)
                    if connection.init_received:
                        timer.cancel()
                except _Close as close:
                    await connection.close(close.code, close.reason)
                    break
                if connection.outbox.dead:
                    break
        finally:
            self.hub.connections -= 1
            timer.cancel()
            revalidation.cancel()
            connection.close_all()

    async def _revalidate(self, connection: Connection) -> None:
        """A subscription outlives the request that authorized it: every
        ``revalidate_every``, and at once when the user's rights change anywhere
        (``AccessChanged``), the connection's token is checked again, and the socket is
        closed (4403) once it has expired or been revoked (deactivation, new password) or
        its user's role or company changed. Subscribers reconnect with a fresh token and
        see what they may see now."""
        period = self.revalidate_every.total_seconds()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.recheck.wait(), period)
            connection.recheck.clear()
            try:
                reason = await connection.withdrawn()
            except Exception:  # the store out of reach: try again next round
                log.exception("re-validating a live connection failed")
                continue
            if reason is not None:
                await connection.close(4403, reason)
                return

    @staticmethod
    def _init_timeout(connection: Connection) -> None:
        # Both protocols: a legacy socket that never sends connection_init (whatever else
        # it sends) would otherwise be held open for ever.
        if not connection.init_received:
            connection.close_soon(4408, "Connection initialisation timeout")
