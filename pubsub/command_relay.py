"""Operator commands across instances: the ``ChargerGateway`` port for a deployment of
several ChargeGraph instances behind a load balancer, over the event bus.

A charger's websocket lives on one instance, but its operator's GraphQL mutation may land
on any. A command for a charger connected here goes straight to the local gateway;
otherwise it is published as ``ChargerCommandRelayed``. Every instance's relay listens:
the one holding the charger answers at once with a ``"claimed"`` ``ChargerCommandAnswered``
and, once the charger has answered, with ``"answered"`` (its result) or ``"failed"`` (the
error's code, message and field). The asking instance turns that back into the result or
the same ``ChargerError`` the local gateway would have raised, so the mutation reads the
same wherever it ran.

* No claim within ``claim_timeout``: no instance holds the charger, ``ChargerOffline``.
* Claimed but no answer within the command's timeout (plus ``claim_timeout`` for the
  trip): ``ChargerTimeout`` (the holder enforces the timeout on the charger itself).
* The bus cannot publish: ``ChargerOffline`` naming the cause; nothing was sent.

Redis pub/sub is at-most-once, so a relayed command is sent at most once as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from domain.errors import (
    ChargerError,
    ChargerOffline,
    ChargerTimeout,
    DomainError,
    ValidationError,
)
from domain.events import ChargerCommandAnswered, ChargerCommandRelayed, EventsDropped
from domain.ids import new_id
from domain.ports import ChargerGateway, EventBus

log = logging.getLogger("chargegraph.commands")

#: How long the instance holding a charger may take to claim a command (a Redis round
#: trip and a task switch; generous for a loaded instance).
CLAIM_TIMEOUT_S = 1.0

#: Errors that cross the wire by their code; anything else arrives as a ChargerError.
_ERRORS: dict[str, type[DomainError]] = {
    cls.code: cls for cls in (ChargerError, ChargerOffline, ChargerTimeout, ValidationError)
}


def _jsonable(value: Any) -> Any:
    """Command payloads as JSON: times as RFC 3339 text (what the OCPP wire carries)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class CommandRelay:
    """``ChargerGateway`` over ``local`` (this instance's OCPP connections, ``None`` for
    an instance that serves only GraphQL) and every other instance on ``bus``."""

    def __init__(self, bus: EventBus, local: ChargerGateway | None, *,
                 claim_timeout: float = CLAIM_TIMEOUT_S) -> None:
        self.bus = bus
        self.local = local
        self.claim_timeout = claim_timeout
        self.instance = new_id()
        self._pending: dict[str, tuple[asyncio.Future[None], asyncio.Future[Any]]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Subscribed before start() returns: a command sent right after is heard.
        stream = self.bus.subscribe([ChargerCommandRelayed.topic,
                                     ChargerCommandAnswered.topic])
        self._listener = asyncio.create_task(self._listen(stream),
                                             name="chargegraph-command-relay")

    async def close(self) -> None:
        tasks = [t for t in (self._listener, *self._serving) if t is not None]
        self._listener = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for claimed, answered in self._pending.values():
            for future in (claimed, answered):
                if not future.done():
                    future.set_exception(ChargerOffline("the service is shutting down"))

    # ------------------------------------------------------------- the port
    def is_connected(self, cp_id: str) -> bool:
        """Whether the charger is connected to this instance (others are asked by
        ``call``; the store's ``Station.online`` is the deployment-wide view)."""
        return self.local is not None and self.local.is_connected(cp_id)

    async def call(self, cp_id: str, action: str, payload: dict[str, Any], timeout: float
                   ) -> dict[str, Any]:
        if self.local is not None and self.local.is_connected(cp_id):
            return await self.local.call(cp_id, action, payload, timeout)
        loop = asyncio.get_running_loop()
        request_id = new_id()
        claimed: asyncio.Future[None] = loop.create_future()
        answered: asyncio.Future[Any] = loop.create_future()
        self._pending[request_id] = (claimed, answered)
        try:
            try:
                await self.bus.publish(ChargerCommandRelayed(
                    station_id=None, cp_id=cp_id, request_id=request_id,
                    origin=self.instance, action=action, payload=_jsonable(payload),
                    timeout=timeout))
            except Exception as exc:
                log.warning("cannot relay %s to %s: %r", action, cp_id, exc)
                raise ChargerOffline(f"{cp_id} is not connected here and the other "
                                     "instances cannot be reached", field="cpId") from exc
            try:
                await asyncio.wait_for(asyncio.shield(claimed), self.claim_timeout)
            except TimeoutError:
                raise ChargerOffline(f"{cp_id} is not connected", field="cpId") from None
            try:
                result: dict[str, Any] = await asyncio.wait_for(
                    answered, timeout + self.claim_timeout)
            except TimeoutError:
                raise ChargerTimeout(f"{cp_id} did not answer {action} within "
                                     f"{timeout:g}s") from None
            return result
        finally:
            self._pending.pop(request_id, None)

    # ------------------------------------------------------------- the listener
    async def _listen(self, stream: Any) -> None:
        async with contextlib.aclosing(stream):
            async for event in stream:
                if isinstance(event, ChargerCommandRelayed):
                    self._on_request(event)
                elif isinstance(event, ChargerCommandAnswered):
                    self._on_answer(event)
                elif isinstance(event, EventsDropped):
                    log.warning("command relay fell behind: %d messages dropped",
                                event.count)

    def _on_request(self, request: ChargerCommandRelayed) -> None:
        if request.origin == self.instance or self.local is None \
                or not self.local.is_connected(request.cp_id):
            return
        task = asyncio.create_task(self._serve(self.local, request))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _serve(self, local: ChargerGateway, request: ChargerCommandRelayed) -> None:
        async def reply(stage: str, **fields: Any) -> None:
            await self.bus.publish(ChargerCommandAnswered(
                station_id=None, cp_id=request.cp_id, request_id=request.request_id,
                origin=request.origin, stage=stage, **fields))

        try:
            await reply("claimed")
            try:
                result = await local.call(request.cp_id, request.action, request.payload,
                                          request.timeout)
            except DomainError as error:
                await reply("failed", error_code=error.code, error_message=str(error),
                            error_field=error.field)
            else:
                await reply("answered", result=result)
        except Exception as exc:  # the bus failed: the asker times out and says so
            log.warning("cannot answer relayed %s for %s: %r", request.action,
                        request.cp_id, exc)

    def _on_answer(self, answer: ChargerCommandAnswered) -> None:
        pending = self._pending.get(answer.request_id) \
            if answer.origin == self.instance else None
        if pending is None:
            return  # another instance's, or one that gave up waiting
        claimed, answered = pending
        if not claimed.done():
            claimed.set_result(None)
        if answered.done() or answer.stage == "claimed":
            return
        if answer.stage == "answered":
            answered.set_result(answer.result or {})
        else:
            error_type = _ERRORS.get(answer.error_code or "", ChargerError)
            answered.set_exception(error_type(answer.error_message or "relayed command "
                                              "failed", field=answer.error_field))
