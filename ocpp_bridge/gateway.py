"""The ``ChargerGateway`` port over live OCPP connections: which chargers are connected,
and sending one command to one of them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ocpp.charge_point import (
    remove_nones,
    serialize_as_dict,
)
from ocpp.v16 import call as ocpp_call

from domain.errors import (
    OUTCOME_UNKNOWN,
    ChargerBusy,
    ChargerCallError,
    ChargerError,
    ChargerLost,
    ChargerOffline,
    ChargerTimeout,
    ChargerUnclaimed,
    ValidationError,
)
from domain.ports import NO_METRICS, Metrics
from domain.services.commands import POSITIVE
from domain.wire import rfc3339, wire_json
from ocpp_bridge.casing import to_camel, to_snake
from ocpp_bridge.frames import FrameError
from ocpp_bridge.handler import ChargePointHandler, SentThenFailed
from ocpp_bridge.timefmt import parse_timestamp

log = logging.getLogger("chargegraph.ocpp")


#: A command's outcome as counted (``Metrics.charger_command``), by the error that ended
#: it; the most specific class first (``ChargerCallError`` is a ``ChargerError``).
OUTCOMES: tuple[tuple[type[Exception], str], ...] = (
    (ChargerOffline, "offline"), (ChargerTimeout, "timeout"), (ChargerBusy, "busy"),
    (ChargerCallError, "CALLERROR"), (ChargerError, "malformed"),
    (ValidationError, "invalid"))


def outcome_of(error: Exception) -> str:
    return next((name for kind, name in OUTCOMES if isinstance(error, kind)), "failed")


class OcppGateway:
    def __init__(self, metrics: Metrics = NO_METRICS) -> None:
        self._handlers: dict[str, ChargePointHandler] = {}
        self._stopping: str | None = None
        #: The stop's second stage, due (``stop_commands``' ``give_up_in``) until
        #: ``close`` cancels it.
        self._give_up: asyncio.TimerHandle | None = None
        self.metrics = metrics

    # ------------------------------------------------------------- registry
    def register(self, handler: ChargePointHandler) -> ChargePointHandler | None:
        """Make ``handler`` the live connection of its charger; returns the one it
        replaces (a charger that reconnected before its old socket timed out). The OCPP
        server registers only an arrival newer than the one held (by their connection
        numbers, ``OcppServer._newer_here``): an older socket never replaces a newer."""
        previous = self._handlers.get(handler.id)
        self._handlers[handler.id] = handler
        return previous if previous is not handler else None

    def stop_commands(self, reason: str, give_up_in: float | None = None) -> None:
        """The service begins to stop: commands not sent yet fail now with ``reason``
        (``ChargerOffline``) and new ones are refused, so their requests answer (and are
        audited) instead of holding up the shutdown. Those the charger already has wait
        for its answer, within their own timeout, until ``give_up_commands``: in
        ``give_up_in`` seconds when given (before the stop's grace ends). Chargers' own
        messages are still served until the server stops."""
        self._stopping = reason
        for handler in self._handlers.values():
            handler.stop_commands(reason)
        if give_up_in is not None:
            self._give_up = asyncio.get_running_loop().call_later(give_up_in,
                                                                  self.give_up_commands)

    def close(self) -> None:
        """The stop is over (its OCPP server stopped): the stop's second stage, if still
        due, is cancelled, as ``CommandRelay.close`` cancels its own, rather than left
        on the loop to run past the service's end."""
        if self._give_up is not None:
            self._give_up.cancel()
            self._give_up = None

    def give_up_commands(self) -> None:
        """The stop's grace is nearly over: commands still waiting for their charger's
        answer fail as unanswered (``ChargerLost``, ``STOPPED_UNANSWERED``)."""
        for handler in self._handlers.values():
            handler.give_up_commands()

    def unregister(self, handler: ChargePointHandler) -> bool:
        """Forget ``handler`` if it is still the live one; False if it was replaced."""
        if self._handlers.get(handler.id) is handler:
            del self._handlers[handler.id]
            return True
        return False

    def is_connected(self, cp_id: str, newest: int | None = None) -> bool:
        handler = self._handlers.get(cp_id)
        return handler is not None and not _superseded(handler, newest)

    def handler_of(self, cp_id: str) -> ChargePointHandler | None:
        return self._handlers.get(cp_id)

    def connected(self) -> list[str]:
        return list(self._handlers)

    # ------------------------------------------------------------- commands
    async def call(self, cp_id: str, action: str, payload: dict[str, Any], timeout: float,
                   newest: int | None = None) -> dict[str, Any]:
        """``_call``, counted by action and outcome. Counted here, on the instance the
        charger is connected to: a command relayed from another instance is counted
        once, where it was sent. Not sent, nor counted, on a connection older than
        ``newest`` (the store's, ``ChargerGateway.call``): during an outage of the bus
        between instances this instance does not hear that its charger connected to
        another, and its socket here stays open until a lease round finds it superseded
        (``OcppServer.upkeep``) or it is noticed dead; a command sent on it meanwhile
        reached no one or the charger twice (review s33)."""
        handler = self._handlers.get(cp_id)
        if handler is not None and _superseded(handler, newest):
            log.info("%s: its connection here (%s) is older than the one recorded (%s), on "
                     "another instance: %s not sent on it", cp_id, handler.number, newest,
                     action)
            raise ChargerUnclaimed(f"{cp_id} is connected to another instance",
                                   field="cpId")
        # Our own callers name the action, but only OCPP's are labels (bounded series).
        label = action if getattr(ocpp_call, action, None) is not None else "other"
        try:
            answer = await self._call(cp_id, action, payload, timeout)
        except Exception as error:
            self.metrics.charger_command(label, outcome_of(error))
            raise
        status = answer.get("status")
        # A refusal (Rejected, NotSupported, UnlockFailed, ...) is a CALLRESULT all the
        # same, but a dashboard of chargers refusing commands needs it told apart.
        refused = isinstance(status, str) and status not in POSITIVE
        self.metrics.charger_command(label, "rejected" if refused else "ok")
        return answer

    async def _call(self, cp_id: str, action: str, payload: dict[str, Any], timeout: float
                    ) -> dict[str, Any]:
        if self._stopping is not None:
            raise ChargerOffline(self._stopping)
        handler = self._handlers.get(cp_id)
        if handler is None:
            raise ChargerOffline(f"{cp_id} is not connected", field="cpId")
        request_type = getattr(ocpp_call, action, None)
        if request_type is None:
            raise ValidationError(f"unknown OCPP action {action}", field="action")
        try:
            request = request_type(**to_snake(wire_json(payload)))
        except TypeError as exc:
            raise ValidationError(f"{action}: {exc}", field="input") from exc
        try:
            response = await handler.command(request, timeout)
        except TimeoutError as exc:
            raise ChargerTimeout(f"{cp_id} did not answer {action} within {timeout:g}s"
                                 ) from exc
        except ChargerOffline as exc:
            raise ChargerOffline(self._stopping or f"{cp_id} {handler.left or 'went offline'}"
                                 f" before {action} was sent") from exc
        except ChargerTimeout:
            # Sent, never answered: the stop's grace ran out (``give_up_commands``), or
            # the socket closed after the charger got it (``connection_closed``).
            raise
        except ChargerBusy as exc:
            raise ChargerBusy(f"{action} was not sent: {cp_id} was busy with other commands "
                              f"for {timeout:g}s") from exc
        except ChargerCallError as exc:  # NotSupported stays NotSupported
            raise type(exc)(f"{cp_id} answered {action} with {exc.message}") from exc
        except ChargerError as exc:
            raise ChargerError(f"{cp_id} answered {action} with a malformed frame: "
                               f"{exc.message}") from exc
        except ValidationError:
            raise
        except Exception as exc:  # the socket closed under us, …
            # Once its frame was handed to the socket the charger may have it: gone, it
            # is ``ChargerLost`` (a reservation stays PENDING), never ``ChargerOffline``,
            # which tells the domain nothing was sent (``commands._undelivered`` removes
            # the reservation the charger may hold; review s31).
            sent = isinstance(exc, SentThenFailed)
            failure = exc.__cause__ if sent and exc.__cause__ is not None else exc
            log.warning("%s: %s failed: %r", cp_id, action, failure)
            if not self.is_connected(cp_id):
                if sent:
                    raise ChargerLost(OUTCOME_UNKNOWN) from failure
                raise ChargerOffline(f"{cp_id} went offline before {action} was sent"
                                     ) from failure
            raise ChargerError(f"{cp_id}: {action} failed ({failure.__class__.__name__})"
                               ) from failure
        answer: dict[str, Any] = to_camel(remove_nones(serialize_as_dict(response)))
        try:
            return _times_in_utc(answer)
        except FrameError as exc:
            raise ChargerError(f"{cp_id} answered {action} with a malformed frame: "
                               f"{exc.description}") from exc


#: Date-times in the answers of commands (GetCompositeSchedule's); the 1.6 schemas only
#: type them as strings.
ANSWER_TIMES = frozenset({"scheduleStart", "startSchedule"})


def _superseded(handler: ChargePointHandler, newest: int | None) -> bool:
    """Whether ``handler``'s connection is older than ``newest``, the station's newest as
    the store recorded it: that one is on another instance (``OcppGateway.call``)."""
    return newest is not None and handler.number is not None and newest > handler.number


def _times_in_utc(value: Any, path: str = "") -> Any:
    """``value`` with every date-time of ``ANSWER_TIMES`` as RFC 3339 in UTC, read as
    chargers write them (zoneless is UTC, "t"/"z" in lower case); ``FrameError`` for one
    that is no date-time, so a bad answer is the charger's error and not ours."""
    if isinstance(value, dict):
        return {key: (rfc3339(parse_timestamp(item, f"{path}{key}", ""))
                      if key in ANSWER_TIMES and isinstance(item, str)
                      else _times_in_utc(item, f"{path}{key}."))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_times_in_utc(item, f"{path}{i}.") for i, item in enumerate(value)]
    return value
