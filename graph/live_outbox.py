"""What a websocket connection sends, in order: at once while the socket keeps up (the
send started eagerly, no task switch), queued while it does not, with a subscriber that
falls behind losing its oldest events (counted in the next one's ``droppedBefore``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import Send

from domain.events import DomainEvent

if TYPE_CHECKING:
    from graph.live_ws import LiveOperation

Message = dict[str, Any]

#: The ASGI extension (in ``scope["extensions"]``) and message type by which the app asks
#: the server to drop a websocket's TCP connection at once, without a close frame: `serve`'s
#: uvicorn protocol offers it (``chargegraph.http_limits.WebSocketProtocol``). A close waits
#: for the socket to take it, and a client that stopped reading never does.
ABORT = "chargegraph.websocket.abort"
#: Seconds a close may wait for the socket to take its frame; then the connection is
#: dropped (``Outbox.close``).
CLOSE_WITHIN_S = 2.0


def dumps(value: Any) -> str:
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
class QueuedSend:
    """One message waiting for a socket. For events: the operation, the event and the
    ``droppedBefore`` it was shaped with; ``message`` is None when it must be shaped again
    (events before it were dropped after it was queued). ``sent_at``: when the socket took
    it (its send completed, ``Outbox.clock()``), ``None`` until then."""

    __slots__ = ("cancelled", "dropped_before", "event", "message", "op", "sent_at")

    def __init__(self, message: Message | None, op: LiveOperation | None = None,
                 event: DomainEvent | None = None, dropped_before: int = 0) -> None:
        self.message = message
        self.op = op
        self.event = event
        self.dropped_before = dropped_before
        self.cancelled = False
        self.sent_at: float | None = None


class Outbox:
    """Everything a connection sends goes through here, in order. While idle, a message
    is sent at once (eagerly, see ``start_eagerly``); while a send is suspended (socket
    not writable) messages queue, and a writer task drains them. ``abort``: the server
    offers ``ABORT``; ``close_within``: seconds a close may wait for the socket."""

    def __init__(self, send: Send, queue_size: int, *, abort: bool = False,
                 close_within: float = CLOSE_WITHIN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        #: What ``sent_at`` reads: the keep-alive's clock (``live_ws.Timers.now``).
        self.clock = clock
        self.queue_size = queue_size
        self.abort = abort
        self.close_within = close_within
        self._queue: deque[QueuedSend] = deque()
        self._writer: asyncio.Task[None] | None = None
        self.dead = False
        #: ``clock()`` when the socket last took a message (a send completed:
        #: the keep-alive pings a socket that has been quiet, and closes one that took
        #: nothing for an interval, ``Connection.keep_alive``).
        self.sent_at = self.clock()

    def control(self, message: Message) -> QueuedSend:
        """Sends ``message`` after everything before it; the item tells when it went out
        (``sent_at``), which the keep-alive's ``ping`` needs: one queued behind a backlog
        cannot have been answered yet."""
        item = QueuedSend({"type": "websocket.send", "text": dumps(message)})
        self._push(item)
        return item

    def event(self, op: LiveOperation, message: Message, event: DomainEvent,
              dropped_before: int) -> None:
        if self._writer is None and not self.dead:
            self._now(message)  # the common case: the socket keeps up
            return
        if self.dead:
            return
        item = QueuedSend(message, op, event, dropped_before)
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

    def _push(self, item: QueuedSend) -> None:
        if self.dead:
            return
        if self._writer is None:
            assert item.message is not None
            self._now(item.message, item)
        else:
            self._queue.append(item)

    def _now(self, message: Message, item: QueuedSend | None = None) -> None:
        """Sends at once; stamped ``sent_at`` when the socket took it: here if the send
        completed without suspending, else when the writer has seen it complete (a send
        that waits for the socket to be writable has not gone out: review, a ping stamped
        when its send began had its pong awaited while it waited)."""
        sending: Awaitable[None] = self._send(message)
        rest: Awaitable[Any] | None = sending
        if asyncio.iscoroutine(sending):  # an ASGI send may be any awaitable
            try:
                rest = start_eagerly(sending)
            except Exception:
                self._die()
                return
        if rest is None:
            self.sent_at = self.clock()
            if item is not None:
                item.sent_at = self.sent_at
        else:
            self._writer = asyncio.get_running_loop().create_task(self._drain(rest, item))

    async def _drain(self, first: Awaitable[Any], first_item: QueuedSend | None) -> None:
        try:
            await first
            self.sent_at = self.clock()
            if first_item is not None:
                first_item.sent_at = self.sent_at
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
                self.sent_at = item.sent_at = self.clock()
        except Exception:
            self._die()
        finally:
            self._writer = None

    def _die(self) -> None:
        # The socket is gone (or closed by us): nothing more will be sent.
        self.dead = True
        self._queue.clear()

    async def close(self, code: int, reason: str = "") -> bool:
        """Closes the socket: what is queued is dropped and the close frame sent. False if
        the socket did not take the frame within ``close_within`` (its client reads
        nothing: uvicorn's send waits for the socket to be writable, the close's too, for
        as long as the client is connected): its TCP connection is then dropped
        (``ABORT``, where the server offers it) and the caller releases what it holds."""
        if self.dead:
            return True
        self._die()
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
        try:
            async with asyncio.timeout(self.close_within):
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except TimeoutError:
            if self.abort:
                with contextlib.suppress(Exception):
                    await self._send({"type": ABORT})
            return False
        except Exception:  # the socket is gone already
            pass
        return True

    def stop(self) -> None:
        self._die()
        if self._writer is not None:
            self._writer.cancel()
