"""Shared rendering of subscription events (see ``graph/live_ws.py``'s docstring): a
``RenderGroup`` runs one selection once per event for every operation that would get the
same result, and the process's ``RenderQueue`` paces the renders that read the store, so
chargers' frames and queries run between them."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    InlineFragmentNode,
    SelectionSetNode,
    get_named_type,
    is_leaf_type,
)
from graphql.execution import Executor, execute_subscription_event
from strawberry.schema.schema_converter import GraphQLCoreConverter

from domain.events import DomainEvent
from graph.context import GraphContext
from graph.errors import mask
from graph.live_outbox import Message, dumps
from graph.subscription import LiveFeed

if TYPE_CHECKING:
    from graph.live_ws import LiveHub, LiveOperation

log = logging.getLogger("chargegraph.graph")

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
            result.payload = dumps(internal_error_payload())
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
        return self.context.renewed()

    def _execute(self, event: DomainEvent, dropped: int) -> str | Coroutine[Any, Any, str]:
        try:
            executor = self.executor.build_per_event_executor(self.wrap(event, dropped))
            executor.context_value = self._context()
            outcome = execute_subscription_event(executor)
        except Exception:
            log.exception("shaping a subscription event failed")
            return dumps(internal_error_payload())
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
        return dumps(internal_error_payload())


def internal_error_payload() -> dict[str, Any]:
    return {"data": None, "errors": [{"message": "Internal server error",
                                      "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]}


def result_payload(result: ExecutionResult) -> dict[str, Any]:
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [mask(e).formatted for e in result.errors]
    if result.extensions:
        payload["extensions"] = result.extensions
    return payload


def _encode(result: ExecutionResult) -> str:
    return dumps(result_payload(result))


_LOCAL_FIELDS: dict[str, frozenset[str]] = {}


def local_fields(event_type: GraphQLObjectType) -> frozenset[str]:
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


def reads_event_only(selection_set: SelectionSetNode | None, local: frozenset[str],
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
            if not reads_event_only(selection.selection_set, local, fragments, seen):
                return False
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            answer = seen.get(name)
            if answer is None:
                fragment = fragments.get(name)
                seen[name] = True  # a cycle (refused by validation) adds nothing
                answer = seen[name] = fragment is not None and reads_event_only(
                    fragment.selection_set, local, fragments, seen)
            if not answer:
                return False
        else:
            return False
    return True
