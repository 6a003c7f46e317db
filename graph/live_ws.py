"""GraphQL over websockets: graphql-transport-ws and the legacy graphql-ws protocol, on raw
ASGI, with subscription events fanned out once per event rather than once per subscriber.

Why not Strawberry's handlers: they run graphql-core's execution of the selection, JSON
encoding and an ASGI send for every subscriber and every event, which is ~70 µs per
delivery; a live map with a thousand viewers cannot afford that. Here:

* The domain (``LiveService.watch``) keeps ONE bus subscription per topic and decides
  visibility (``Policy.sees_event``) per event once per distinct viewer, then calls each
  operation's ``deliver`` synchronously.
* Operations that would get the same result share a ``RenderGroup``: the selection runs
  once per event per group, is encoded once, and every member gets the same text with
  its own ``id`` spliced in. The key is (document, operation, variables) plus the viewer,
  except when the selection reads only the event's own leaf fields (``cpId``, ``status``,
  ``droppedBefore``…, see ``_local_fields``): those results cannot depend on who asks, so
  every viewer shares them. Any nested object (``station { owner … }``) depends on the
  viewer's scope and field views, so it is shared only between connections of one viewer.
* Nested selections (store reads, resolvers) render through the process's
  ``RenderQueue``: at most ``MAX_RENDERS`` at once, started one per loop turn, groups
  taking turns; chargers' frames and queries run between them. Past ``RENDER_BACKLOG``
  renders waiting, a group's render still waiting is coalesced into the newest event
  (the newest state, with ``droppedBefore`` counting what was skipped). Event-only
  selections are not queued: they cost no store read and are rendered at once.
* Sends start eagerly: while a socket's transport is writable, uvicorn's ``send``
  completes without suspending, so a delivery costs no task switch. A socket that is not
  writable gets its messages queued (``Outbox``), at most ``queue_size`` per operation;
  beyond that its oldest events are dropped and the next one it gets says so in
  ``droppedBefore`` (shaped again for that subscriber alone). Nobody else waits for it.

Pre-execution behaviour follows Strawberry's handlers (close codes 4400/4401/4403/4406/
4408/4409/4429, ``error`` messages for validation errors); queries and mutations sent over
the socket run through ``schema.execute``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from datetime import timedelta
from typing import Any, cast

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSyntaxError,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    get_operation_ast,
    is_leaf_type,
)
from graphql.execution import Executor, create_source_event_stream, execute_subscription_event
from graphql.execution.collect_fields import collect_fields
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.execution import PreExecutionError

from domain.errors import Unauthenticated
from domain.events import AccessChanged, DomainEvent, EventsDropped
from domain.policy import SYSTEM, Viewer
from domain.services import Services
from domain.services.live import Watch
from graph.auth import TokenService
from graph.context import GraphContext
from graph.errors import mask
from graph.loaders import Loaders
from graph.pipeline import prepared, too_complex
from graph.subscription import LiveFeed, events_lost

log = logging.getLogger("chargegraph.graph")


def _close_reason(error: Unauthenticated) -> str:
    """The close reason for a token refused: an expired one says so (the client
    refreshes and reconnects, as HTTP's ``TOKEN_EXPIRED`` tells it), any other
    "Forbidden" (sign in again)."""
    return "Token expired" if error.code == "TOKEN_EXPIRED" else "Forbidden"

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
#: Results of one non-shared group (nested fields: store reads) not yet handed out; past
#: this the group's renders still waiting are coalesced into the newest event (see
#: ``RenderQueue``), and if none is waiting the new event is skipped and counted in its
#: members' ``droppedBefore``.
LANE_LIMIT = 64
#: Renders of nested selections running at once in the process. Each is a task whose steps
#: share the event loop with chargers' frames and queries: thirty addresses of a hundred
#: nested subscriptions, none sharing a group, started 3,000 of them per status change and
#: a charger's Heartbeat waited seconds behind them for each of its loop turns.
MAX_RENDERS = 4
#: Renders waiting for one of those slots, in the process. Past this, a group with a render
#: still waiting coalesces it into the newest event: its members get the newest state
#: with the events skipped counted in ``droppedBefore``, instead of a queue that grows
#: while events come faster than they can be rendered.
RENDER_BACKLOG = 256

Authorize = Callable[[str | None], Awaitable[Viewer]]
Message = dict[str, Any]


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# ------------------------------------------------------------------ eager sends
class _Resume:
    """Awaitable that continues a coroutine ``start_eagerly`` ran to its first suspension
    (what ``asyncio.eager_task_factory`` does on Python 3.12+)."""

    __slots__ = ("coro", "yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self.coro = coro
        self.yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.yielded
        while True:
            try:
                value = yield pending
            except BaseException as exc:  # cancellation and the like go into the coroutine
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                pending = coro.send(value)
            except StopIteration as stop:
                return stop.value


def start_eagerly(coro: Coroutine[Any, Any, Any]) -> _Resume | None:
    """Runs ``coro`` until it first suspends. ``None`` if it finished (its exception, if
    any, is raised here); otherwise an awaitable that finishes it, to be awaited by a
    task."""
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return _Resume(coro, yielded)


# ------------------------------------------------------------------ outgoing queue
class _Out:
    """One message waiting for a socket. For events: the operation, the event and the
    ``droppedBefore`` it was shaped with; ``message`` is None when it must be shaped again
    (events before it were dropped after it was queued)."""

    __slots__ = ("cancelled", "dropped_before", "event", "message", "op")

    def __init__(self, message: Message | None, op: LiveOperation | None = None,
                 event: DomainEvent | None = None, dropped_before: int = 0) -> None:
        self.message = message
        self.op = op
        self.event = event
        self.dropped_before = dropped_before
        self.cancelled = False


class Outbox:
    """Everything a connection sends goes through here, in order. While idle, a message
    is sent at once (eagerly, see ``start_eagerly``); while a send is suspended (socket
    not writable) messages queue, and a writer task drains them."""

    def __init__(self, send: Send, queue_size: int) -> None:
        self._send = send
        self.queue_size = queue_size
        self._queue: deque[_Out] = deque()
        self._writer: asyncio.Task[None] | None = None
        self.dead = False

    def control(self, message: Message) -> None:
        self._push(_Out({"type": "websocket.send", "text": _dumps(message)}))

    def event(self, op: LiveOperation, message: Message, event: DomainEvent,
              dropped_before: int) -> None:
        if self._writer is None and not self.dead:
            self._now(message)  # the common case: the socket keeps up
            return
        if self.dead:
            return
        item = _Out(message, op, event, dropped_before)
        pending = op.pending
        if len(pending) >= self.queue_size:
            # The subscriber is not keeping up: lose its oldest event; the event after it
            # now carries the count and must be shaped again.
            oldest = pending.popleft()
            oldest.cancelled = True
            heir = pending[0] if pending else item
            heir.dropped_before += oldest.dropped_before + 1
            heir.message = None
        pending.append(item)
        self._queue.append(item)

    def _push(self, item: _Out) -> None:
        if self.dead:
            return
        if self._writer is None:
            assert item.message is not None
            self._now(item.message)
        else:
            self._queue.append(item)

    def _now(self, message: Message) -> None:
        sending: Awaitable[None] = self._send(message)
        rest: Awaitable[Any] | None = sending
        if asyncio.iscoroutine(sending):  # an ASGI send may be any awaitable
            try:
                rest = start_eagerly(sending)
            except Exception:
                self._die()
                return
        if rest is not None:
            self._writer = asyncio.get_running_loop().create_task(self._drain(rest))

    async def _drain(self, first: Awaitable[Any]) -> None:
        try:
            await first
            queue = self._queue
            while queue:
                item = queue.popleft()
                if item.cancelled:
                    continue
                op = item.op
                if op is not None and op.pending and op.pending[0] is item:
                    op.pending.popleft()
                message = item.message
                if message is None:
                    assert op is not None and item.event is not None
                    message = await op.group.render_alone(op, item.event, item.dropped_before)
                await self._send(message)
        except Exception:
            self._die()
        finally:
            self._writer = None

    def _die(self) -> None:
        # The socket is gone (or closed by us): nothing more will be sent.
        self.dead = True
        self._queue.clear()

    async def close(self, code: int, reason: str = "") -> None:
        if self.dead:
            return
        self._die()
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
        with contextlib.suppress(Exception):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def stop(self) -> None:
        self._die()
        if self._writer is not None:
            self._writer.cancel()


# ------------------------------------------------------------------ shared rendering
class _Result:
    """One event shaped for one group and one ``droppedBefore``. ``payload`` is the
    encoded ``{"data": …}``; members waiting for it (async shaping, or queued behind an
    earlier async result of the group) are in ``waiting``."""

    __slots__ = ("dropped", "event", "messages", "payload", "released", "waiting")

    def __init__(self, event: DomainEvent, dropped: int) -> None:
        self.event = event
        self.dropped = dropped
        self.payload: str | None = None
        self.released = False
        self.waiting: list[LiveOperation] = []
        self.messages: dict[str, Message] = {}

    def give(self, op: LiveOperation) -> None:
        if not self.released:
            self.waiting.append(op)
            return
        message = self.messages.get(op.prefix)
        if message is None:
            # Operations with the same id and protocol (every client calls its first
            # subscription "1") share the spliced text and the ASGI message too.
            message = {"type": "websocket.send", "text": op.prefix + cast(str, self.payload)
                       + "}"}
            self.messages[op.prefix] = message
        op.outbox.event(op, message, self.event, self.dropped)
        if op.last is not None and op.last(self.event):
            op.connection.complete_after(op)

    def release(self) -> None:
        self.released = True
        waiting, self.waiting = self.waiting, []
        for op in waiting:
            if not op.stopped:
                self.give(op)


class RenderQueue:
    """The process's budget for rendering nested selections (the groups that are not
    ``shared``; event-only selections are synchronous and go at once).

    At most ``limit`` renders run at once, and they are started one per turn of the event
    loop (a start runs the selection's synchronous part): whatever else is ready, a
    charger's frame or a query's next step, runs between two starts and between the steps
    of the renders running, instead of waiting behind thousands of them. Groups with
    renders waiting take turns, one render each (round robin), so one group's backlog
    does not hold the others up. While ``backlog`` renders wait (``crowded``), a group
    with a render still waiting for an older event coalesces it into the newest
    (``RenderGroup.render_for``), so what waits stays under ``backlog`` plus one per
    group however fast events come.

    A slow socket's own renders (an event shaped again for its ``droppedBefore``,
    ``RenderGroup.render_alone``) wait for a slot here too, taking turns with the groups:
    a hundred stalled sockets resuming at once would otherwise render a hundred nested
    selections at once."""

    def __init__(self, limit: int = MAX_RENDERS, backlog: int = RENDER_BACKLOG) -> None:
        self.limit = limit
        self.backlog = backlog
        #: Renders started and not finished; renders waiting for a start.
        self.running = 0
        self.waiting = 0
        self._turns: deque[RenderGroup] = deque()
        self._solo: deque[asyncio.Future[None]] = deque()
        self._solo_first = False
        self._next: asyncio.Handle | None = None

    @property
    def crowded(self) -> bool:
        return self.waiting >= self.backlog

    def queued(self, group: RenderGroup) -> None:
        """``group`` has one more render waiting."""
        self.waiting += 1
        if not group.in_turn:
            group.in_turn = True
            self._turns.append(group)
        self._schedule()

    def taken(self, count: int) -> None:
        """``count`` renders no longer wait (started, coalesced or their group gone)."""
        self.waiting -= count

    def started(self) -> None:
        self.running += 1

    def finished(self) -> None:
        self.running -= 1
        self._schedule()

    async def slot(self) -> None:
        """Wait for a turn to render outside a group; the caller calls ``finished``."""
        granted = asyncio.get_running_loop().create_future()
        self._solo.append(granted)
        self.waiting += 1
        self._schedule()
        try:
            await granted
        except asyncio.CancelledError:
            if granted.cancelled():  # still waiting: give the place up
                self._solo.remove(granted)
                self.waiting -= 1
            else:  # granted, then cancelled before it ran: give the slot back
                self.finished()
            raise

    def _schedule(self) -> None:
        if self._next is None and (self._turns or self._solo) and self.running < self.limit:
            self._next = asyncio.get_running_loop().call_soon(self._start_one)

    def _start_one(self) -> None:
        # One start per loop turn: ``call_soon`` from here runs after everything that was
        # ready before it. Solo renders and groups alternate while both wait.
        self._next = None
        if self._solo and self.running < self.limit and (self._solo_first or not self._turns):
            self._solo_first = False
            self.waiting -= 1
            self.started()
            self._solo.popleft().set_result(None)
            self._schedule()
            return
        self._solo_first = bool(self._solo)
        turns = self._turns
        while turns and self.running < self.limit:
            group = turns.popleft()
            started = group.start_next()
            if group.has_waiting():
                turns.append(group)
            else:
                group.in_turn = False
            if started:
                break
        self._schedule()


class RenderGroup:
    """Operations whose results for an event are identical (see the module docstring):
    the selection runs once per event (and per distinct ``droppedBefore``); for a group
    that is not ``shared``, when the process's ``RenderQueue`` gives it a turn."""

    def __init__(self, hub: LiveHub, key: tuple[Any, ...], executor: Executor,
                 feed: LiveFeed, context: GraphContext, shared: bool) -> None:
        self.hub = hub
        self.key = key
        self.executor = executor
        self.wrap = feed.wrap
        self.context = context
        self.shared = shared
        self.members = 0
        self._last: DomainEvent | None = None
        self._results: dict[int, _Result] = {}
        # Results not yet handed out, in event order: an async result holds back later
        # ones so a member never sees events out of order.
        self._lane: deque[_Result] = deque()
        # The lane's tail not started yet (not ``shared``): waiting for the render queue.
        self._queued: deque[_Result] = deque()
        #: Whether the render queue has this group in its turns.
        self.in_turn = False

    def render_for(self, event: DomainEvent, dropped: int, op: LiveOperation) -> None:
        if event is not self._last:
            self._last = event
            self._results = {}
        result = self._results.get(dropped)
        if result is None and self._queued and self._queued[0].event is not event and (
                self.hub.renders.crowded or len(self._lane) >= LANE_LIMIT):
            dropped += self._coalesce(op)
            result = self._results.get(dropped)
        if result is None:
            if len(self._lane) >= LANE_LIMIT:
                op.dropped += dropped + 1
                return
            result = self._results[dropped] = self._start(event, dropped)
        result.give(op)

    def _coalesce(self, op: LiveOperation) -> int:
        """Drops the renders still waiting for events before this one: their members are
        told they missed those events by the ``droppedBefore`` of the next they get (the
        newest state, since nested fields read the records as they are when rendered).
        Returns ``op``'s count, to be shaped into this event; the other members pick
        theirs up when this event reaches them."""
        queued, skipped = self._queued, set()
        while queued and queued[0].event is not self._last:
            result = queued.popleft()
            skipped.add(result)
            for member in result.waiting:
                if not member.stopped:
                    member.dropped += result.dropped + 1
        self.hub.renders.taken(len(skipped))
        self._lane = deque(r for r in self._lane if r not in skipped)
        own, op.dropped = op.dropped, 0
        return own

    def _start(self, event: DomainEvent, dropped: int) -> _Result:
        result = _Result(event, dropped)
        if not self.shared:
            self._lane.append(result)
            self._queued.append(result)
            self.hub.renders.queued(self)
            return result
        outcome = self._execute(event, dropped)
        if isinstance(outcome, str):
            result.payload = outcome
            if not self._lane:
                result.release()
                return result
        else:
            task = asyncio.get_running_loop().create_task(outcome)
            task.add_done_callback(lambda t: self._finished(result, t))
        self._lane.append(result)
        return result

    def has_waiting(self) -> bool:
        return bool(self._queued)

    def start_next(self) -> bool:
        """The render queue's turn: starts the oldest render waiting, if any."""
        if not self._queued:
            return False
        result = self._queued.popleft()
        renders = self.hub.renders
        renders.taken(1)
        outcome = self._execute(result.event, result.dropped)
        if isinstance(outcome, str):
            result.payload = outcome
            self._release_ready()
            return True
        renders.started()
        task = asyncio.get_running_loop().create_task(outcome)

        def done(task: asyncio.Task[str]) -> None:
            renders.finished()
            self._finished(result, task)

        task.add_done_callback(done)
        return True

    def _finished(self, result: _Result, task: asyncio.Task[str]) -> None:
        if task.cancelled():
            result.payload = _dumps(_internal_error_payload())
        else:
            result.payload = task.result()
        self._release_ready()

    def _release_ready(self) -> None:
        lane = self._lane
        while lane and lane[0].payload is not None:
            lane.popleft().release()

    def _context(self) -> GraphContext:
        if self.shared:
            return self.context  # the selection reads no context (event fields only)
        base = self.context
        return GraphContext(base.services, base.tokens, base.viewer,
                            Loaders(base.services.reads, base.viewer), base.request,
                            connection_params=base.connection_params)

    def _execute(self, event: DomainEvent, dropped: int) -> str | Coroutine[Any, Any, str]:
        try:
            executor = self.executor.build_per_event_executor(self.wrap(event, dropped))
            executor.context_value = self._context()
            outcome = execute_subscription_event(executor)
        except Exception:
            log.exception("shaping a subscription event failed")
            return _dumps(_internal_error_payload())
        if isinstance(outcome, ExecutionResult):
            return _encode(outcome)
        return _finish(cast(Awaitable[ExecutionResult], outcome))

    async def render_alone(self, op: LiveOperation, event: DomainEvent, dropped: int
                           ) -> Message:
        """The event shaped for one member only (its own ``droppedBefore``), in a slot of
        the render queue when the selection reads the store (not ``shared``)."""
        renders = None if self.shared else self.hub.renders
        if renders is not None:
            await renders.slot()
        try:
            outcome = self._execute(event, dropped)
            payload = outcome if isinstance(outcome, str) else await outcome
        finally:
            if renders is not None:
                renders.finished()
        return {"type": "websocket.send", "text": op.prefix + payload + "}"}

    def join(self) -> None:
        self.members += 1

    def leave(self) -> None:
        self.members -= 1
        if self.members <= 0:
            self.hub.groups.pop(self.key, None)
            # Nobody left to get them: renders not started yet are not run.
            self.hub.renders.taken(len(self._queued))
            self._queued.clear()
            self._lane.clear()


async def _finish(outcome: Awaitable[ExecutionResult]) -> str:
    try:
        return _encode(await outcome)
    except Exception:
        log.exception("shaping a subscription event failed")
        return _dumps(_internal_error_payload())


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


def _internal_error_payload() -> dict[str, Any]:
    return {"data": None, "errors": [{"message": "Internal server error",
                                      "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]}


def _result_payload(result: ExecutionResult) -> dict[str, Any]:
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [mask(e).formatted for e in result.errors]
    if result.extensions:
        payload["extensions"] = result.extensions
    return payload


def _encode(result: ExecutionResult) -> str:
    return _dumps(_result_payload(result))


_LOCAL_FIELDS: dict[str, frozenset[str]] = {}


def _local_fields(event_type: GraphQLObjectType) -> frozenset[str]:
    """Fields of an event type whose value comes from the event alone: leaves without
    arguments whose resolver (if any) takes no ``info`` — without ``info`` nothing can
    reach the viewer, the loaders or the store. Anything else is assumed to depend on the
    viewer."""
    known = _LOCAL_FIELDS.get(event_type.name)
    if known is not None:
        return known
    names = {"__typename"}
    for name, field in event_type.fields.items():
        if field.args or not is_leaf_type(get_named_type(field.type)):
            continue
        definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
        if definition is None or getattr(definition, "extensions", None) \
                or getattr(definition, "permission_classes", None):
            continue
        resolver = getattr(definition, "base_resolver", None)
        if resolver is not None and resolver.info_parameter is not None:
            continue
        names.add(name)
    known = _LOCAL_FIELDS[event_type.name] = frozenset(names)
    return known


def _reads_event_only(selection_set: SelectionSetNode | None, local: frozenset[str],
                      fragments: dict[str, Any], seen: dict[str, bool] | None = None
                      ) -> bool:
    """``seen``: the answer for each fragment already looked into, so each is looked
    into once however often it is spread (a chain of fragments each spreading the next
    twice would take exponential time)."""
    if selection_set is None:
        return True
    if seen is None:
        seen = {}
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value not in local or selection.selection_set is not None:
                return False
        elif isinstance(selection, InlineFragmentNode):
            if not _reads_event_only(selection.selection_set, local, fragments, seen):
                return False
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            answer = seen.get(name)
            if answer is None:
                fragment = fragments.get(name)
                seen[name] = True  # a cycle (refused by validation) adds nothing
                answer = seen[name] = fragment is not None and _reads_event_only(
                    fragment.selection_set, local, fragments, seen)
            if not answer:
                return False
        else:
            return False
    return True


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
        kind = "next" if connection.protocol == TRANSPORT_WS else "data"
        self.prefix = f'{{"id":{_dumps(op_id)},"type":"{kind}","payload":'
        self.dropped = 0
        self.pending: deque[_Out] = deque()
        self.stopped = False
        self.watch: Any = None

    def deliver(self, event: DomainEvent | EventsDropped) -> None:
        if type(event) is EventsDropped:
            if event.interrupted and not self.stopped:
                self.connection.lose(self.id)
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
                 render_backlog: int = RENDER_BACKLOG) -> None:
        self.services = services
        self.tokens = tokens
        self.schema = schema
        self.queue_size = queue_size
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
        return prepared(self.schema._schema, query)


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
        self.outbox = Outbox(send, self.hub.queue_size)
        self.request = HTTPConnection(scope)
        #: Whose operations these are, for ``LiveHub``'s per-address limit.
        self.client = self.request.client.host if self.request.client else ""
        self.context: GraphContext | None = None
        #: The ``authorization`` of ``connection_init``, checked again now and then.
        self.authorization: str | None = None
        #: Set when this user's rights changed somewhere: re-check without waiting.
        self.recheck = asyncio.Event()
        self.access_watch: Watch | None = None
        self.init_received = False
        #: The init timeout's close, kept referenced until it ran.
        self.closing: asyncio.Future[None] | None = None
        self.operations: dict[str, LiveOperation | asyncio.Task[None]] = {}

    # -- messages -----------------------------------------------------------
    async def handle(self, raw: str) -> None:
        try:
            message = orjson.loads(raw)
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
        elif kind == "ping":
            self.outbox.control({"type": "pong"})
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            if self.context is None:
                raise _Close(4401, "Unauthorized")
            op_id, payload = message.get("id"), message.get("payload")
            if not isinstance(op_id, str) or not isinstance(payload, dict):
                raise _Close(4400, "Failed to parse message")
            if op_id in self.operations:
                raise _Close(4409, f"Subscriber for {op_id} already exists")
            if self._room_for(op_id):
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
        elif kind == "connection_terminate":
            raise _Close(1000, "")
        elif kind == "start":
            op_id, payload = message.get("id"), message.get("payload")
            if not isinstance(op_id, str) or not isinstance(payload, dict):
                return
            if self.context is None:
                raise _Close(4401, "Unauthorized")
            if op_id in self.operations:
                self._stop(op_id)
            if self._room_for(op_id):
                await self._start(op_id, payload)
        elif kind == "stop":
            op_id = message.get("id")
            if isinstance(op_id, str) and op_id in self.operations:
                self._stop(op_id)
                self.outbox.control({"type": "complete", "id": op_id})

    async def _authorize(self, payload: dict[str, Any]) -> None:
        self.authorization = connection_authorization(payload, self.request)
        viewer = await self.endpoint.authorize(self.authorization)
        context = GraphContext.build(self.hub.services, self.hub.tokens, viewer, self.request)
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

    # -- operations ---------------------------------------------------------
    def _room_for(self, op_id: str) -> bool:
        """Whether the socket may run one more operation (per socket, per client address
        and in all: ``LiveHub.refusal``); if not, the op gets an error. Each live
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
        self._error(op_id, [refusal])
        return False

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
        formatted = [mask(e).formatted for e in errors]
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
            raise _Close(4400, "Invalid subscribe payload")
        try:
            document, errors = self.hub.document(query)
        except GraphQLSyntaxError as exc:
            if self.protocol == LEGACY_WS:
                self._error(op_id, [exc])
                return
            raise _Close(4400, exc.message) from None
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            reason = (f"Unknown operation named '{operation_name}'." if operation_name
                      else "Can't get GraphQL operation type")
            if self.protocol == LEGACY_WS:
                self._error(op_id, [GraphQLError(reason)])
                return
            raise _Close(4400, reason)
        if errors:
            self._error(op_id, errors)
            return
        if operation.operation is not OperationType.SUBSCRIPTION:
            task = asyncio.get_running_loop().create_task(
                self._single(op_id, query, variables, operation_name))
            self._add(op_id, task)
            return
        too_large = too_complex(self.hub.schema._schema, query, document, operation_name,
                                variables)
        if too_large:  # per event: queries and mutations are checked by the pipeline
            self._error(op_id, too_large)
            return
        await self._subscribe(op_id, document, query, variables, operation_name)

    async def _single(self, op_id: str, query: str, variables: dict[str, Any] | None,
                      operation_name: str | None) -> None:
        """A query or mutation sent over the socket: one result, then complete. The
        connection's rights are checked first (as an HTTP request would be)."""
        assert self.context is not None
        reason = await self.withdrawn()
        if reason is not None:
            self._drop(op_id)
            await self.outbox.close(4403, reason)
            return
        context = GraphContext.build(self.hub.services, self.hub.tokens, self.context.viewer,
                                     self.request)
        try:
            result = await self.hub.schema.execute(query, variable_values=variables,
                                                   context_value=context,
                                                   operation_name=operation_name)
        except Exception as exc:
            result = PreExecutionError(data=None, errors=[GraphQLError(str(exc))])
        if self.operations.get(op_id) is not asyncio.current_task():
            return  # stopped meanwhile
        if isinstance(result, PreExecutionError):
            self._drop(op_id)
            self._error(op_id, list(result.errors or []))
            return
        kind = "next" if self.protocol == TRANSPORT_WS else "data"
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [e.formatted for e in result.errors]
        self.outbox.control({"type": kind, "id": op_id, "payload": payload})
        self._drop(op_id)
        self.outbox.control({"type": "complete", "id": op_id})

    async def _subscribe(self, op_id: str, document: DocumentNode, query: str,
                         variables: dict[str, Any] | None, operation_name: str | None
                         ) -> None:
        assert self.context is not None
        schema = self.hub.schema._schema
        built = Executor.build(schema, document, None, self.context, variables,
                               operation_name)
        if isinstance(built, list):
            self._error(op_id, built)
            return
        executor = built
        source: Any = create_source_event_stream(executor)
        if asyncio.iscoroutine(source) or isinstance(source, Awaitable):
            source = await source
        if isinstance(source, ExecutionResult):
            self._error(op_id, list(source.errors or [GraphQLError("subscription failed")]))
            return
        if op_id in self.operations:  # the same id arrived while we awaited
            raise _Close(4409, f"Subscriber for {op_id} already exists")
        if not self._room_for(op_id):  # other sockets' operations started while we awaited
            if not isinstance(source, LiveFeed):
                with contextlib.suppress(Exception):
                    await source.aclose()
            return
        if not isinstance(source, LiveFeed):
            # Not one of ours: run it per subscriber, the way graphql-core does.
            self._add(op_id, asyncio.get_running_loop().create_task(
                self._per_subscriber(op_id, executor, source)))
            return
        root_type = schema.subscription_type
        assert root_type is not None
        fields = collect_fields(schema, executor.fragments, executor.variable_values,
                                root_type, executor.operation, False).grouped_field_set
        details = next(iter(fields.values()))
        root_field = root_type.fields[details[0].node.name.value]
        event_type = cast(GraphQLObjectType, get_named_type(root_field.type))
        local = _local_fields(event_type)
        shared = all(_reads_event_only(d.node.selection_set, local,
                                       executor.fragment_definitions) for d in details)
        variables_key = orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS)
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
            live.watch = self.hub.services.live.watch(self.context.viewer, [source.topic],
                                                      live.deliver, live.ended)
        except Exception:
            self._drop(op_id)
            live.stop()
            raise
        # Asked once it watches (review s16: an end published while it was asked,
        # before the watch, was never delivered): nothing left to follow, a session over
        # before it was asked for, and it completes now, unless its end came meanwhile.
        if source.over is not None and await source.over() \
                and self.operations.get(op_id) is live:
            self.finish(op_id)

    async def _per_subscriber(self, op_id: str, executor: Executor, source: Any) -> None:
        kind = "next" if self.protocol == TRANSPORT_WS else "data"
        try:
            async for payload in source:
                per_event = executor.build_per_event_executor(payload)
                outcome = execute_subscription_event(per_event)
                if not isinstance(outcome, ExecutionResult):
                    outcome = await cast(Awaitable[ExecutionResult], outcome)
                self.outbox.control({"type": kind, "id": op_id,
                                     "payload": _result_payload(outcome)})
        finally:
            with contextlib.suppress(Exception):
                await source.aclose()
        if self.operations.get(op_id) is asyncio.current_task():
            self._drop(op_id)
            self.outbox.control({"type": "complete", "id": op_id})

    def close_all(self) -> None:
        for op_id in list(self.operations):
            self._stop(op_id)
        if self.access_watch is not None:
            self.access_watch.close()
        self.outbox.stop()


class LiveEndpoint:
    """The ASGI websocket app for ``/graphql``. ``authorize`` turns ``connection_init``'s
    ``authorization`` into a viewer, raising ``Unauthenticated`` for a bad token."""

    def __init__(self, services: Services, tokens: TokenService, schema: Any,
                 authorize: Authorize, *, queue_size: int = DEFAULT_QUEUE_SIZE,
                 connection_init_timeout: timedelta = timedelta(minutes=1),
                 revalidate_every: timedelta = REVALIDATE_EVERY,
                 max_operations: int = MAX_OPERATIONS,
                 max_operations_per_client: int = MAX_OPERATIONS_PER_CLIENT,
                 max_renders: int = MAX_RENDERS,
                 render_backlog: int = RENDER_BACKLOG) -> None:
        self.hub = LiveHub(services, tokens, schema, queue_size,
                           max_operations=max_operations,
                           max_operations_per_client=max_operations_per_client,
                           max_renders=max_renders, render_backlog=render_backlog)
        self.authorize = authorize
        self.connection_init_timeout = connection_init_timeout
        self.revalidate_every = revalidate_every

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
                    await connection.outbox.close(close.code, close.reason)
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
                await connection.outbox.close(4403, reason)
                return

    @staticmethod
    def _init_timeout(connection: Connection) -> None:
        # Both protocols: a legacy socket that never sends connection_init (whatever else
        # it sends) would otherwise be held open for ever.
        if not connection.init_received:
            connection.closing = asyncio.ensure_future(
                connection.outbox.close(4408, "Connection initialisation timeout"))
