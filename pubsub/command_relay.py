"""Operator commands across instances: the ``ChargerGateway`` port for a deployment of
several ChargeGraph instances behind a load balancer, over the event bus.

A charger's websocket lives on one instance, but its operator's GraphQL mutation may land
on any. A command for a charger connected here goes straight to the local gateway;
otherwise it is published as ``ChargerCommandRelayed``. Every instance's relay listens:
the one holding the charger answers at once with a ``"claimed"`` ``ChargerCommandAnswered``.
The asker, if still waiting, confirms to the first claimer (``ChargerCommandConfirmed``),
and only then is the command sent to the charger; the holder then answers ``"answered"``
(its result) or ``"failed"`` (the error's code, message and field). Without the
confirmation a holder that heard the request late (it stalled, or Redis did) would send a
command its asker had already reported failed: it drops it instead. The asking instance
turns the answer back into the result or the same ``ChargerError`` the local gateway
would have raised, so the mutation reads the same wherever it ran.

* No claim within ``claim_timeout``: no instance holds the charger, or the one holding it
  does not hear the bus now (``ChargerUnclaimed``, a ``ChargerOffline``).
  A holder whose claim got no confirmation within ``claim_timeout`` drops the command.
* Claimed but no answer: the holder enforces the command's timeout on the charger
  itself (its turn behind other commands and the charger's answer, ``timeout`` each), and
  says it is still at it (``"progress"``) every third of the timeout. An asker that hears
  nothing from its holder for ``timeout`` plus ``claim_timeout`` (the holder was killed, or
  cut off) answers ``ChargerLost`` then (a ``ChargerTimeout`` that is not the charger's
  silence), not after the holder's whole bound (twice the timeout): behind a load
  balancer that was a 504.
* The charger is recorded offline meanwhile (``StationConnectionChanged``: its socket
  closed, or the holder's lease expired and another instance swept it): the holder's
  own answer is waited for ``claim_timeout`` more (it knows whether the charger got the
  command: ``ChargerOffline`` if not, ``ChargerLost`` if it did, as the local gateway
  says when a socket closes under a command); without it, a command confirmed to its
  holder may have reached the charger: ``ChargerLost``, its outcome unknown.
* The bus cannot publish: ``ChargerOffline`` naming the cause; nothing was sent.
* This instance begins to stop (``stop_commands``): its commands not yet confirmed to a
  holder fail at once (``ChargerOffline``); confirmed ones wait for their answer until the
  stop gives up (``give_up_commands``, before its grace ends: ``ChargerLost``). A holder
  that begins to stop refuses new commands and carries those it has to their answer in
  the same way (``settle``).

Redis pub/sub is at-most-once, so a relayed command is sent at most once as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from domain.errors import (
    OUTCOME_UNKNOWN,
    STOPPED_UNANSWERED,
    ChargerBusy,
    ChargerCallError,
    ChargerError,
    ChargerLost,
    ChargerNotSupported,
    ChargerOffline,
    ChargerRejected,
    ChargerTimeout,
    ChargerUnclaimed,
    DomainError,
    ValidationError,
)
from domain.events import (
    ChargerCommandAnswered,
    ChargerCommandConfirmed,
    ChargerCommandRelayed,
    EventsDropped,
    StationConnectionChanged,
)
from domain.ids import new_id
from domain.ports import ChargerGateway, EventBus
from domain.wire import wire_json

log = logging.getLogger("chargegraph.commands")

#: How long the instance holding a charger may take to claim a command (a Redis round
#: trip and a task switch; generous for a loaded instance).
CLAIM_TIMEOUT_S = 1.0
#: How often, as a share of the command's timeout, a holder tells its asker it is still
#: carrying a command out (three reports per timeout: one lost one is no silence).
PROGRESS_SHARE = 1 / 3

#: The longest ``close()`` waits for what this instance carries out for others: each tells
#: its asker the charger went offline, a publish a hung bus may hold (QA s21: the stop of
#: an instance must end whatever Redis does).
CLOSE_TIMEOUT_S = 5.0

#: Errors that cross the wire as themselves (by class name, with their code, message and
#: field); any other arrives as a ChargerError with the same code. ``ChargerLost`` is sent
#: as a flagged ``ChargerTimeout`` (``_failure``), and read by its name from an instance
#: that sent it so.
_ERRORS: dict[str, type[DomainError]] = {
    cls.__name__: cls for cls in (ChargerError, ChargerCallError, ChargerNotSupported,
                                  ChargerOffline, ChargerTimeout, ChargerLost,
                                  ChargerBusy, ChargerRejected,
                                  ValidationError)
}


def _failure(error: DomainError) -> dict[str, Any]:
    """``error`` as a holder's ``"failed"`` answer carries it (``_failed`` reads it). A
    ``ChargerLost`` goes by the name ``ChargerTimeout``, flagged ``error_lost``: an older
    asker does not know the name (it read a bare ``ChargerError``: ``site_load`` recorded
    an ERROR, not a TIMEOUT), and takes one whose message is ``OUTCOME_UNKNOWN`` (a socket
    closed under the command) for what it is (review r26: a rolling upgrade)."""
    lost = isinstance(error, ChargerLost)
    return {"error_type": ChargerTimeout.__name__ if lost else type(error).__name__,
            "error_code": error.code, "error_message": str(error),
            "error_field": error.field, "error_lost": lost}


def _failed(answer: ChargerCommandAnswered) -> DomainError:
    """The error a holder's ``"failed"`` answer carries (``_failure``): by its class name
    (any other arrives as a ``ChargerError`` with its code), and a ``ChargerLost`` when
    flagged so, or a ``ChargerTimeout`` saying ``OUTCOME_UNKNOWN``: what an older holder
    sends for a socket closed under the command, not the charger's silence (review r26:
    ``not_the_chargers_answer`` goes by the type, and kept that as the charger's)."""
    message = answer.error_message or "the relayed command failed"
    error_type = _ERRORS.get(answer.error_type or "", ChargerError)
    if error_type is ChargerTimeout and (answer.error_lost or message == OUTCOME_UNKNOWN):
        error_type = ChargerLost
    return error_type(message, field=answer.error_field, code=answer.error_code)


class CommandRelay:
    """``ChargerGateway`` over ``local`` (this instance's OCPP connections, ``None`` for
    an instance that serves only GraphQL) and every other instance on ``bus``."""

    def __init__(self, bus: EventBus, local: ChargerGateway | None, *,
                 claim_timeout: float = CLAIM_TIMEOUT_S) -> None:
        self.bus = bus
        self.local = local
        self.claim_timeout = claim_timeout
        self.instance = new_id()
        self._pending: dict[str, _Pending] = {}
        #: Commands this instance claimed, waiting for their asker's confirmation.
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._stopping: str | None = None
        #: When (the loop's clock) a stop gives up on commands sent (``stop_commands``).
        self._give_up_at: float | None = None
        self._give_up: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        # Subscribed before start() returns: a command sent right after is heard.
        stream = self.bus.subscribe([ChargerCommandRelayed.topic,
                                     ChargerCommandAnswered.topic,
                                     ChargerCommandConfirmed.topic,
                                     StationConnectionChanged.topic])
        self._listener = asyncio.create_task(self._listen(stream),
                                             name="chargegraph-command-relay")
        self._listener.add_done_callback(_log_death)

    def stop_commands(self, reason: str, give_up_in: float | None = None) -> None:
        """The service begins to stop (``app.state.begin_shutdown``, before uvicorn waits
        for requests in flight): this instance's commands waiting on a charger elsewhere
        that no holder has claimed yet, or not confirmed to it, were never sent: they fail
        now with ``reason`` (``ChargerOffline``). One confirmed to its holder may have
        reached the charger: it keeps waiting for the holder's answer, the charger's
        real one, until ``give_up_commands`` (in ``give_up_in`` seconds when given, before
        the stop's grace ends). New commands are refused (``ChargerOffline``). Those this
        instance carries out for others are stopped in the local gateway the same way
        (``stop_commands`` there: new ones refused, sent ones waited for), and their
        askers hear the answers (``settle`` holds the OCPP server's stop for them)."""
        self._stopping = reason
        # The local gateway (``OcppGateway``) stops too; the port does not require it.
        stop_local = getattr(self.local, "stop_commands", None)
        if callable(stop_local):
            stop_local(reason)
        for pending in self._pending.values():
            pending.stop(reason)
        if give_up_in is not None:
            loop = asyncio.get_running_loop()
            self._give_up_at = loop.time() + give_up_in
            self._give_up = loop.call_at(self._give_up_at, self.give_up_commands)

    def give_up_commands(self) -> None:
        """The stop's grace is nearly over: commands still waiting for a charger's answer,
        here (the local gateway's, also those carried out for others, whose askers hear
        it) or confirmed to a holder elsewhere, fail as unanswered (``ChargerLost``,
        ``STOPPED_UNANSWERED``: the charger may have acted)."""
        give_up_local = getattr(self.local, "give_up_commands", None)
        if callable(give_up_local):
            give_up_local()
        for pending in self._pending.values():
            pending.give_up()

    async def settle(self) -> None:
        """Called as the app stops, before the OCPP server (whose close would fail them
        at once, their answers lost): once a stop began, the commands this instance
        carries out for other instances' requests (which uvicorn does not wait for) get
        until ``give_up_commands`` to end, and the trip to publish how."""
        if self._give_up_at is None:
            return
        commands = set(self._serving)
        if commands:
            left = self._give_up_at - asyncio.get_running_loop().time()
            await asyncio.wait(commands, timeout=max(0.0, left) + self.claim_timeout)

    async def close(self) -> None:
        """Stops listening; commands this instance was carrying out for others are
        answered ``ChargerLost`` (a ``CHARGER_TIMEOUT``: the charger may have them), and
        its own that still wait: confirmed to their holder ``ChargerLost`` too, the rest
        ``CHARGER_OFFLINE``."""
        if self._give_up is not None:
            self._give_up.cancel()
        tasks = [*self._serving, *([self._listener] if self._listener else [])]
        self._listener = None
        for task in tasks:
            task.cancel()
        if tasks:
            _, left = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
            if left:  # their askers time out instead, as with a holder that was killed
                log.warning("%d relayed commands could not be answered at stop within "
                            "%gs (the event bus does not take them)", len(left),
                            CLOSE_TIMEOUT_S)
        reason = "the service is shutting down"
        for pending in self._pending.values():
            # One confirmed to its holder may have reached the charger: ChargerLost, as
            # at a stop's end, also when no stop came first (review s31: a failed start's
            # close answered it ChargerOffline, and a ReserveNow lost its reservation).
            pending.give_up()
            pending.fail(ChargerOffline(reason))  # the rest were never sent

    # ------------------------------------------------------------- the port
    def is_connected(self, cp_id: str, newest: int | None = None) -> bool:
        """Whether the charger is connected to this instance (others are asked by
        ``call``; the store's ``Station.online`` is the deployment-wide view)."""
        return self.local is not None and self.local.is_connected(cp_id, newest)

    def connected(self) -> list[str]:
        """The chargers connected to this instance (not those others hold)."""
        return self.local.connected() if self.local is not None else []

    async def call(self, cp_id: str, action: str, payload: dict[str, Any], timeout: float,
                   newest: int | None = None) -> dict[str, Any]:
        elsewhere: ChargerUnclaimed | None = None
        if self.local is not None and self.local.is_connected(cp_id):
            try:
                return await self.local.call(cp_id, action, payload, timeout, newest)
            except ChargerUnclaimed as superseded:
                elsewhere = superseded  # by ``newest``, elsewhere: relayed to its holder
        if self._stopping is not None:
            raise ChargerOffline(self._stopping)
        request_id = new_id()
        pending = self._pending[request_id] = _Pending(asyncio.get_running_loop(), cp_id,
                                                       action, self.claim_timeout)
        try:
            try:
                await self.bus.publish(ChargerCommandRelayed(
                    station_id=None, cp_id=cp_id, request_id=request_id,
                    origin=self.instance, action=action, payload=wire_json(payload),
                    timeout=timeout, newest=newest))
            except Exception as exc:
                log.warning("cannot relay %s to %s: %r", action, cp_id, exc)
                if elsewhere is not None:  # connected to another instance, unreachable
                    raise elsewhere from exc
                raise ChargerOffline(f"{cp_id} is not connected here and the other "
                                     "instances cannot be reached", field="cpId") from exc
            try:
                await asyncio.wait_for(asyncio.shield(pending.claimed), self.claim_timeout)
            except TimeoutError:
                raise ChargerUnclaimed(f"{cp_id} is not connected", field="cpId") from None
            assert pending.holder is not None
            if self._stopping is not None:  # unconfirmed, the holder drops it
                raise ChargerOffline(self._stopping)
            pending.confirmed = True
            try:
                await self.bus.publish(ChargerCommandConfirmed(
                    station_id=None, cp_id=cp_id, request_id=request_id,
                    origin=self.instance, holder=pending.holder))
            except Exception as exc:  # unconfirmed, the holder drops it: nothing was sent
                raise ChargerOffline(f"{cp_id} is connected to another instance that "
                                     "cannot be reached now", field="cpId") from exc
            return await self._answer(pending, timeout)
        finally:
            self._pending.pop(request_id, None)
            pending.forget()

    async def _answer(self, pending: _Pending, timeout: float) -> dict[str, Any]:
        """The holder's answer. It bounds the command's turn and the charger's answer by
        ``timeout`` each, and reports progress meanwhile: silence for ``timeout`` (plus
        ``claim_timeout`` for the trips) means it is gone, and the charger may have the
        command."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * timeout + self.claim_timeout
        quiet = timeout + self.claim_timeout
        while True:
            now = loop.time()
            if now >= deadline:
                raise ChargerTimeout(f"{pending.cp_id} did not answer {pending.action} "
                                     f"within {timeout:g}s")
            if now >= pending.heard + quiet:
                # Not the charger's silence (``ChargerLost``): its holder's.
                raise ChargerLost(f"{pending.cp_id} did not answer {pending.action}: "
                                  f"the instance holding it has not been heard from "
                                  f"for {quiet:g}s")
            try:
                return await asyncio.wait_for(
                    asyncio.shield(pending.answered),
                    min(deadline, pending.heard + quiet) - now)
            except TimeoutError:
                continue  # heard from meanwhile, or the limit: the loop decides

    # ------------------------------------------------------------- the listener
    async def _listen(self, stream: Any) -> None:
        async with contextlib.aclosing(stream):
            async for event in stream:
                if isinstance(event, ChargerCommandRelayed):
                    self._on_request(event)
                elif isinstance(event, ChargerCommandAnswered):
                    self._on_answer(event)
                elif isinstance(event, ChargerCommandConfirmed):
                    self._on_confirmed(event)
                elif isinstance(event, StationConnectionChanged) and not event.online:
                    self._on_offline(event.cp_id)
                elif isinstance(event, EventsDropped) and event.count:
                    # (An interruption is logged by the bus; commands whose messages it
                    # lost time out like any unanswered command.)
                    log.warning("command relay fell behind: %d messages dropped",
                                event.count)

    def _on_request(self, request: ChargerCommandRelayed) -> None:
        # Not claimed on a connection older than the newest the asker read: the charger
        # connected to another instance since (this one did not hear it, the bus was
        # out), whose claim this one's would beat, sending on the old socket (review s33).
        if request.origin == self.instance or self.local is None \
                or not self.local.is_connected(request.cp_id, request.newest):
            return
        task = asyncio.create_task(self._serve(self.local, request))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _serve(self, local: ChargerGateway, request: ChargerCommandRelayed) -> None:
        async def reply(stage: str, **fields: Any) -> None:
            await self.bus.publish(ChargerCommandAnswered(
                station_id=None, cp_id=request.cp_id, request_id=request.request_id,
                origin=request.origin, holder=self.instance, stage=stage, **fields))

        async def fail(error: DomainError) -> None:
            await reply("failed", **_failure(error))

        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[request.request_id] = confirmed
        try:
            await reply("claimed")
            try:
                await asyncio.wait_for(confirmed, self.claim_timeout)
            except TimeoutError:
                # The asker gave up (and told its client the command failed), or chose
                # another claimer: the charger must not get it.
                log.warning("%s: relayed %s not confirmed in time; dropped", request.cp_id,
                            request.action)
                return
            finally:
                self._confirmations.pop(request.request_id, None)
            finished = asyncio.Event()
            progress = asyncio.create_task(self._report_progress(reply, request.timeout,
                                                                 finished))
            self._serving.add(progress)
            progress.add_done_callback(self._serving.discard)
            try:
                result = await local.call(request.cp_id, request.action, request.payload,
                                          request.timeout, request.newest)
            except DomainError as error:
                await fail(error)
                return
            except asyncio.CancelledError:
                # This instance is stopping: say so now rather than let the asker wait.
                # Confirmed, the command may have reached the charger already (its turn
                # came, its frame written): its outcome is unknown (``ChargerLost``), not
                # "never sent", which would have the asker remove a reservation the
                # charger may hold (review s31).
                await asyncio.shield(fail(ChargerLost(
                    f"the instance holding {request.cp_id} stopped while it had "
                    f"{request.action}; its outcome is unknown")))
                raise
            except Exception as exc:
                log.warning("%s: relayed %s failed: %r", request.cp_id, request.action, exc)
                await fail(ChargerError(f"{request.cp_id}: {request.action} failed "
                                        f"({exc.__class__.__name__})"))
                return
            finally:
                finished.set()  # not cancelled: a publish under way completes
            try:
                await reply("answered", result=wire_json(result))
            except Exception as exc:  # an answer the wire cannot carry
                log.warning("cannot relay the answer to %s for %s: %r", request.action,
                            request.cp_id, exc)
                await fail(ChargerError(f"{request.cp_id} answered {request.action}, but "
                                        "the answer could not be relayed"))
        except Exception as exc:  # the bus failed: the asker times out and says so
            log.warning("cannot answer relayed %s for %s: %r", request.action,
                        request.cp_id, exc)

    @staticmethod
    async def _report_progress(reply: Callable[..., Awaitable[None]], timeout: float,
                               finished: asyncio.Event) -> None:
        """Until ``finished``, while the charger has the command (or it waits its turn):
        "still at it", so the asker can tell a holder that is slow from one that is
        gone."""
        while True:
            try:
                await asyncio.wait_for(finished.wait(), timeout * PROGRESS_SHARE)
                return
            except TimeoutError:
                pass
            try:
                await reply("progress")
            except Exception as exc:  # the bus: the asker may time out, and says so
                log.debug("cannot report progress: %r", exc)

    def _on_offline(self, cp_id: str) -> None:
        """The charger was recorded offline: a command claimed for it will get no answer
        (its holder's socket closed, or the holder is dead and was swept)."""
        for pending in self._pending.values():
            if pending.cp_id == cp_id:
                pending.went_offline()

    def _on_confirmed(self, event: ChargerCommandConfirmed) -> None:
        confirmed = self._confirmations.get(event.request_id) \
            if event.holder == self.instance else None
        if confirmed is not None and not confirmed.done():
            confirmed.set_result(None)

    def _on_answer(self, answer: ChargerCommandAnswered) -> None:
        pending = self._pending.get(answer.request_id) \
            if answer.origin == self.instance else None
        if pending is not None:
            pending.hear(answer)


class _Pending:
    """One relayed command waiting: its claim, then its answer, from the first instance
    that claimed it (should two hold the charger for a moment, during a reconnect, the
    other's answers are ignored)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cp_id: str, action: str,
                 grace: float) -> None:
        self.loop = loop
        self.cp_id = cp_id
        self.action = action
        #: How long the holder's own answer is awaited once the charger went offline.
        self.grace = grace
        self._offline: asyncio.TimerHandle | None = None
        self.claimed: asyncio.Future[None] = loop.create_future()
        self.answered: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.holder: str | None = None
        #: When the holder was last heard from (its claim, its progress reports).
        self.heard = loop.time()
        #: Confirmed to its holder: the charger may have got it.
        self.confirmed = False

    def hear(self, answer: ChargerCommandAnswered) -> None:
        if self.holder is None:
            self.holder = answer.holder
            self.claimed.set_result(None)
        if answer.holder != self.holder or self.answered.done():
            return
        self.heard = self.loop.time()
        if answer.stage == "answered":
            self.answered.set_result(answer.result or {})
        elif answer.stage == "failed":
            self.answered.set_exception(_failed(answer))
        # Any other stage (a newer instance's progress report) only counts as a claim.

    def fail(self, error: DomainError) -> None:
        """Ends the wait with ``error`` (this instance is closing)."""
        waiting = self.answered if self.claimed.done() else self.claimed
        if not waiting.done():
            waiting.set_exception(error)

    def went_offline(self) -> None:
        """Its charger was recorded offline after the claim: the charger will not answer.
        Not confirmed to the holder, the command was never sent (``ChargerOffline``).
        Confirmed, the charger may have got it: the holder, which knows, says so within
        ``grace`` (its answer and the offline record travel apart); if it does not, its
        outcome is unknown (``ChargerLost``, as the local gateway says)."""
        if not self.claimed.done() or self.answered.done():
            return
        if not self.confirmed:
            self.answered.set_exception(ChargerOffline(
                f"{self.cp_id} went offline before {self.action} was sent"))
        elif self._offline is None:
            self._offline = self.loop.call_later(self.grace, self._outcome_unknown)

    def _outcome_unknown(self) -> None:
        if not self.answered.done():
            self.answered.set_exception(ChargerLost(OUTCOME_UNKNOWN))

    def stop(self, reason: str) -> None:
        """This instance begins to stop: never claimed, the wait ends (``ChargerOffline``).
        One claimed but not confirmed yet is refused by ``call`` before it confirms; one
        confirmed (maybe sent) waits for its answer until ``give_up``."""
        if not self.claimed.done():
            self.claimed.set_exception(ChargerOffline(reason))

    def give_up(self) -> None:
        """Confirmed to its holder (maybe sent) and unanswered when this instance's stop
        gives up: ``ChargerLost``, the charger may have acted."""
        if self.confirmed and not self.answered.done():
            self.answered.set_exception(ChargerLost(STOPPED_UNANSWERED))

    def forget(self) -> None:
        """Retrieves what nobody awaited any more, so asyncio does not log it."""
        if self._offline is not None:
            self._offline.cancel()
        for future in (self.claimed, self.answered):
            if future.done() and not future.cancelled():
                future.exception()
            else:
                future.cancel()


def _log_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the command relay stopped listening", exc_info=task.exception())
