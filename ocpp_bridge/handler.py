"""One connected charge point: routes its frames to the domain and carries commands to it.

Built on the ``ocpp`` package's ``ChargePoint`` for what goes *to* the charger (outgoing
``call()`` with its response queue and lock). What comes *from* the charger is framed,
validated and answered here: ``frames`` gives 1.6-correct errors, and each action's
handler reads the camelCase payload the schema just validated and returns the camelCase
answer. The package's route map would convert every key to snake case, build a result
dataclass and convert it back, per message — the larger part of a MeterValues frame's
cost (``python -m bench.ocpp_throughput``). Incoming messages of one charger are handled
one at a time, in order; handlers never call the charger (the package would deadlock
until the timeout), they only talk to the domain.

Commands (``command``) go through the package's ``call()``, which only ever hears of an
answer that parses, and waits out its timeout otherwise. So each command also waits on a
failure of its own, set at once when the charger's answer to it is malformed
(``ChargerError``) or the socket closes (``connection_closed``: ``ChargerOffline`` if it
was not sent yet, ``ChargerLost``, a ``ChargerTimeout``, if the charger got it).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, CallResult, validate_payload
from ocpp.v16 import ChargePoint
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from domain.command_rules import MAX_INT
from domain.errors import (
    OUTCOME_UNKNOWN,
    STOPPED_UNANSWERED,
    ChargerBusy,
    ChargerCallError,
    ChargerError,
    ChargerLost,
    ChargerNotSupported,
    ChargerOffline,
    DomainError,
    ValidationError,
)
from domain.ports import NO_METRICS, Metrics
from domain.services.charging import BootInfo, ChargingService, IdTagInfo
from domain.services.commands import masked, masked_answer
from domain.services.metering import MeterReading, SampledValue
from domain.wire import rfc3339
from ocpp_bridge import frames
from ocpp_bridge.casing import to_snake
from ocpp_bridge.frames import FrameError
from ocpp_bridge.log_masking import SecretMasking, masked_line, without_url_credentials
from ocpp_bridge.pacing import BYTE_RATE, FRAME_RATE, FramePacer, frame_bytes
from ocpp_bridge.timefmt import parse_timestamp

log = logging.getLogger("chargegraph.ocpp")
#: Every frame in and out, at INFO: quiet unless this logger is turned up.
wire_log = logging.getLogger("chargegraph.ocpp.wire")
# Whoever logs on it (the ``ocpp`` package logs a charger's CALLERROR at WARNING, with
# what it echoed): a URL's credentials are hidden, and a secret configuration value is
# masked or the line withheld.
wire_log.addFilter(SecretMasking())


#: Text in every frame that may carry a secret configuration value (``logged_frame``):
#: a ChangeConfiguration (of a vendor's BackendPassword, say) and a GetConfiguration
#: answer (a charger reading its AuthorizationKey back). Looked for as text: the wire log
#: writes every frame on the chargers' hot path, and a MeterValues or a Heartbeat is never
#: parsed again for it. A URL's credentials are hidden in every frame and line, not by
#: action (``log_masking.without_url_credentials``): a CALLERROR repeating a presigned
#: URL names no action (review s25).
MAY_HOLD_SECRET = ('"ChangeConfiguration"', '"configurationKey"')
#: How much of a frame that cannot be read the ``bad frame`` line (INFO, on by default)
#: masks and shows the start of: logs are bounded, and masking reads what it is given.
BAD_FRAME_READ = 2048
#: How much of a DataTransfer's data its INFO line shows.
DATA_SHOWN = 200
#: How much of a DataTransfer's data is masked before ``DATA_SHOWN`` of it is shown
#: (``data_shown``): enough for a password's words to reach their ``@``, and a bound on
#: the line's cost whatever the frame's size.
DATA_MASKED = 4096
#: What ends a token of the data (``data_shown``).
_TOKEN_END = re.compile(r"\s")


def data_shown(data: str) -> str:
    """What a DataTransfer's INFO line shows of its ``data``: its first ``DATA_MASKED``
    characters, to the end of the token there when it ends within as many more (else
    that token is cut, and a URL in it hidden whole after its scheme), masked
    (``masked_line``), then cut to ``DATA_SHOWN`` characters, a URL the cut falls in
    shown as ``scheme://[hidden]``. Cut to ``DATA_SHOWN`` first (review s26), a cut
    between ``ftp://diag:hun`` and ``ter two@host`` left no ``@`` to tell a password
    went on, and its middle words were written; masked whole (review r26-robust2), a
    4 MiB data held the event loop for 1.8 s to write 200 characters of it."""
    cut = len(data) > DATA_MASKED
    if cut:
        end = _TOKEN_END.search(data, DATA_MASKED, 2 * DATA_MASKED)
        data = data[:end.start() if end else DATA_MASKED]
    masked = masked_line(data, cut)
    if len(masked) <= DATA_SHOWN:
        return masked
    return without_url_credentials(masked[:DATA_SHOWN], cut=True)


#: What the wire log writes of such a frame when it cannot be read as an OCPP frame.
NOT_SHOWN = "[{} characters not shown: no OCPP frame, and they may hold a secret]"


def logged_frame(message: str | bytes, limit: int | None = None) -> str:
    """A frame, sent or received, as the wire log writes it: the credentials of every URL
    in it hidden as the audit hides an upload or download location's
    (``log_masking.without_url_credentials``: user information, query values), a
    command's secret key's new value as its audit entry masks it (``commands.masked``)
    and a secret key's value in a GetConfiguration answer (``commands.masked_answer``),
    since logs are shipped and read more widely than the audit. Only a frame holding
    ``MAY_HOLD_SECRET`` text is parsed again; one of those that is no JSON array is not
    written at all (nothing in it can be told apart from a secret). ``limit``: only the
    frame's first so many characters are read and written, a URL they cut hidden whole
    after its scheme (``log_masking.without_url_credentials``)."""
    text = message if isinstance(message, str) else message.decode("utf-8", "replace")
    cut = limit is not None and len(text) > limit
    if cut:
        text = text[:limit]
    text = without_url_credentials(text, cut=cut)
    if not any(marker in text for marker in MAY_HOLD_SECRET):
        return text
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return NOT_SHOWN.format(len(text))
    if not isinstance(frame, list):
        return NOT_SHOWN.format(len(text))
    # Every object of the frame, whatever its shape (a malformed answer is logged too).
    action = frame[2] if len(frame) == 4 and frame[0] == 2 and isinstance(frame[2], str) \
        else ""
    return orjson.dumps([masked_answer(masked(action, part)) if isinstance(part, dict)
                         else part for part in frame]).decode()


Payload = dict[str, Any]
#: How long after its TriggerMessage is answered a charger's BootNotification is taken as
#: that trigger's (it sends it right after the answer), not as a restart.
BOOT_AFTER_TRIGGER_S = 30.0


def described(exc: DomainError) -> str:
    """A domain error as a charger is told it: after the field it names, as a schema
    error is ("meterStart: must be within ..."; QA s32: a range error named none), but
    where its message begins with the field already ("connectorId 99 exceeds ...")."""
    if exc.field is None or exc.message.startswith(exc.field):
        return exc.message
    return f"{exc.field}: {exc.message}"


def _asks_boot(request: Any) -> bool:
    """Whether ``request`` is a TriggerMessage asking for a BootNotification."""
    return type(request).__name__.removesuffix("Payload") == "TriggerMessage" \
        and str(getattr(request, "requested_message", "")) == "BootNotification"


ActionHandler = Callable[["ChargePointHandler", Payload], Awaitable[Payload]]
#: Below this many bytes waiting in a socket's write buffer, frames skip flow control.
FAST_SEND_BUFFER = 64 * 1024
#: Close code for a charger whose station was removed (1008: policy violation).
CLOSE_UNKNOWN_STATION = 1008
#: Close code for a connection signed in with a password its station no longer has.
CLOSE_PASSWORD_CHANGED = 1008
#: The answer to the notifications whose confirmation carries no fields.
EMPTY: Payload = {}
#: The metrics label of an action we do not serve (or a frame without one): chargers may
#: send any name, and each distinct label would be a series of its own.
OTHER_ACTION = "other"


def id_tag_info(info: IdTagInfo) -> Payload:
    out: Payload = {"status": info.status}
    if info.expiry_date is not None:
        out["expiryDate"] = rfc3339(info.expiry_date)
    if info.parent_id_tag is not None:
        out["parentIdTag"] = info.parent_id_tag
    return out


#: The ``ocpp`` package names the errors of its schema checks as OCPP 2.x does; what our
#: messages say is in 1.6's words (the spec's own misspelling included).
OCPP16_SPELLING = {"FormatViolation": "FormationViolation",
                   "OccurrenceConstraintViolation": "OccurenceConstraintViolation"}

#: CALLERROR codes by which a charger says it cannot do a request at all
#: (``ChargerNotSupported``), not that it failed this time.
CANNOT_DO = frozenset({"NotSupported", "NotImplemented"})

#: OCPP 1.6's bound on a configuration value (CiString500). Chargers in the field report
#: longer ones (every measurand they meter, in MeterValuesSampledData: 551 characters on
#: a Wallbox Copper SB), and the schema refused the whole GetConfiguration answer for one.
CONFIGURATION_VALUE_MAX = 500


def _set_aside_long_values(payload: Any) -> dict[int, str]:
    """Takes the configuration values longer than ``CONFIGURATION_VALUE_MAX`` out of a
    GetConfiguration answer's ``payload`` (a value is optional there), by the index of
    their key, so the package's schema check judges the rest; ``_put_back`` returns them
    to the answer it builds."""
    keys = payload.get("configurationKey") if isinstance(payload, dict) else None
    if not isinstance(keys, list):
        return {}
    aside: dict[int, str] = {}
    for index, entry in enumerate(keys):
        if isinstance(entry, dict) and isinstance(entry.get("value"), str) \
                and len(entry["value"]) > CONFIGURATION_VALUE_MAX:
            aside[index] = entry.pop("value")
    return aside


def _put_back(answer: Any, aside: dict[int, str]) -> Any:
    """``answer`` (the package's GetConfiguration result) with the values
    ``_set_aside_long_values`` took out at their keys again."""
    keys = getattr(answer, "configuration_key", None)
    if not aside or not isinstance(keys, list):
        return answer
    for index, value in aside.items():
        if index < len(keys) and isinstance(keys[index], dict):
            keys[index]["value"] = value
    return answer


#: OCPP 1.6's step for a charging schedule's rates (the schemas' ``multipleOf``).
RATE_STEP = Decimal("0.1")


def _off_step(value: Any) -> bool:
    """Whether ``value`` is a number the 1.6 schema refuses only for its step."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return Decimal(str(value)) % RATE_STEP != 0
    except InvalidOperation:  # inf, nan: the package refuses those itself
        return False


def _set_aside_schedule_values(payload: Any) -> dict[str | int, float]:
    """Makes a GetCompositeSchedule answer's schedule pass the package's check where the
    1.6 schema refuses it only for what a charger computes: rates off its 0.1 step (a
    limit of 16.05 A, a minChargingRate of 1380.55 W: the charger's profiles combined)
    and no ``chargingSchedulePeriod`` (nothing planned: no periods). The rates are set
    aside (a period's limit by its index, ``minChargingRate`` by name) and replaced by 0
    for the check; ``_put_back_schedule_values`` returns them to the answer it builds.
    The periods left out read as none. Everything else in it is checked as strictly."""
    schedule = payload.get("chargingSchedule") if isinstance(payload, dict) else None
    if not isinstance(schedule, dict):
        return {}
    aside: dict[str | int, float] = {}
    if "chargingSchedulePeriod" not in schedule:
        schedule["chargingSchedulePeriod"] = []
    periods = schedule["chargingSchedulePeriod"]
    for index, period in enumerate(periods if isinstance(periods, list) else []):
        if isinstance(period, dict) and _off_step(period.get("limit")):
            aside[index] = period["limit"]
            period["limit"] = 0
    if _off_step(schedule.get("minChargingRate")):
        aside["minChargingRate"] = schedule["minChargingRate"]
        schedule["minChargingRate"] = 0
    return aside


def _put_back_schedule_values(answer: Any, aside: dict[str | int, float]) -> Any:
    """``answer`` (the package's GetCompositeSchedule result) with the rates
    ``_set_aside_schedule_values`` took out in their places again."""
    schedule = getattr(answer, "charging_schedule", None)
    if not aside or not isinstance(schedule, dict):
        return answer
    periods = schedule.get("charging_schedule_period")
    for place, value in aside.items():
        if place == "minChargingRate":
            schedule["min_charging_rate"] = value
        elif isinstance(place, int) and isinstance(periods, list) and place < len(periods) \
                and isinstance(periods[place], dict):
            periods[place]["limit"] = value
    return answer


def _beyond_int(value: Any, path: str = "") -> str | None:
    """The path of the first integer in ``value`` (an answer's payload) outside OCPP's
    integer as chargers and GraphQL's Int hold it (32-bit signed, ``MAX_INT``), or
    ``None``. The 1.6 schemas bound none (a listVersion of 2**63 passes them), and such
    a number failed whatever read it next: the API's Int, a store's integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -MAX_INT - 1 <= value <= MAX_INT else path or "payload"
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _beyond_int(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


class SentThenFailed(Exception):
    """A command's failure that none of ``command``'s foreseen errors names, once its
    frame was handed to the socket (``_mark_sent`` runs before the write): the charger
    may have it. Its ``__cause__`` is the failure; the gateway tells the caller
    (``ChargerLost`` when the charger is gone, not ``ChargerOffline``)."""


async def _check_outgoing(request: Any, unique_id: str) -> None:
    """The package's own check of a request we send, done before it is queued so that a
    failure is reported as ours (``ValidationError``), not as the charger's answer."""
    call = Call(unique_id=unique_id, action=request.__class__.__name__,
                payload=remove_nones(snake_to_camel_case(serialize_as_dict(request))))
    try:
        await validate_payload(call, "1.6")
    except OCPPError as exc:
        raise ValidationError(f"{call.action} breaks the OCPP 1.6 schema: "
                              f"{exc.description}", field="input") from exc


class ChargePointHandler(ChargePoint):
    def __init__(self, cp_id: str, connection: Any, charging: ChargingService, *,
                 response_timeout: float = 30, metrics: Metrics = NO_METRICS,
                 strict_schema: bool = False, pacer: FramePacer | None = None,
                 max_sampled_values: int = frames.MAX_SAMPLED_VALUES) -> None:
        super().__init__(cp_id, connection, response_timeout=response_timeout,
                         logger=wire_log)
        self.charging = charging
        self.metrics = metrics
        #: Refuse (FormationViolation) properties the 1.6 schemas do not know, instead of
        #: leaving them out, and refuse the values ``frames.LENIENT`` would mend
        #: (``frames.validate``): the schemas' letter, for testing a charger.
        self.strict_schema = strict_schema
        #: The most sampled values one MeterValues may carry (``frames.bound``).
        self.max_sampled_values = max_sampled_values
        #: (action, path) of the unknown properties, and (action, rule) of the values
        #: mended (``frames.LENIENT``), this connection was told about in the log
        #: already: once each, not at every frame.
        self._unknown_seen: set[tuple[str, str]] = set()
        #: Commands in flight: unique id → action, to read the answer's schema.
        self._actions: dict[str, str] = {}
        #: When this connection was recorded (``ChargingService.connect``).
        self.connected_at: datetime | None = None
        #: The number the store drew for this connection, once recorded (``OcppServer.
        #: _take``; ``Station.connection``): of two of its charger's, the newer is higher.
        self.number: int | None = None
        self._highest_connector: int | None = None
        self._unique_id = ""
        #: Commands in progress (sent, or waiting to be sent after the one in flight):
        #: unique id → where the error that ends it at once goes.
        self._pending: dict[str, asyncio.Future[ChargerError]] = {}
        #: Commands waiting for their turn: unique id → set once their frame is written.
        self._sending: dict[str, asyncio.Future[None]] = {}
        #: Commands the charger answered with a CALLERROR (a definite "not done").
        self._call_errors: set[str] = set()
        #: Commands in progress already handed their answer: a second one is a repeat.
        self._answered: set[str] = set()
        #: GetConfiguration answers' values over OCPP's 500 characters, set aside while
        #: the package checks the rest (``_set_aside_long_values``), by unique id.
        self._long_values: dict[str, dict[int, str]] = {}
        #: GetCompositeSchedule answers' rates off OCPP's 0.1 step, set aside while the
        #: package checks the rest (``_set_aside_schedule_values``), by unique id.
        self._schedule_values: dict[str, dict[str | int, float]] = {}
        self._closed = False
        #: Why this connection stopped being its charger's while its socket still closes
        #: ("connected to another instance"; ``superseded``), else ``None``.
        self.left: str | None = None
        #: Its station was removed (``station_removed``): its messages are refused.
        self._station_removed = False
        #: Whether it signed in at its handshake, and the station's password hash it
        #: signed in against (``None``: the station had none): a new password shuts it
        #: out (``password_changed``).
        self.signed_in = False
        self.signed_in_with: str | None = None
        #: Its station was given a new password (``password_changed``): shut out.
        self._shut_out = False
        #: The id of the station record it signed in as (at its handshake); ``None``
        #: when not known. A removal is its only if it is of that station: the cpId may
        #: have been created again since (``OcppServer._watch_removals``).
        self.station_id: str | None = None
        #: Its charger's pace (``OcppServer.pacers``: kept across its connections).
        self.pacer = FramePacer() if pacer is None else pacer
        #: When the charger's last frame came (our clock); ``None`` before its first.
        self.heard_at: datetime | None = None
        #: Until when (the loop's clock) a BootNotification answers a TriggerMessage of
        #: ours rather than says the charger restarted (``_boot_triggered``).
        self._boot_asked_until: float | None = None

    async def start(self) -> None:
        """The package's receive loop, paced (``ocpp_bridge/pacing.py``): a charger sending
        frames faster than any compliant one, or large frames back to back, waits, so
        that it cannot hold the event loop every other charger and request shares."""
        while True:
            message = await self._connection.recv()
            self.heard_at = self.charging.now()
            if wire_log.isEnabledFor(logging.INFO):
                wire_log.info("%s: receive message %s", self.id, logged_frame(message))
            # Its bytes as received (UTF-8), as the README states the pace; an ASCII
            # frame's are its length, known without reading it.
            wait = self.pacer.delay(frame_bytes(message))
            if wait > 0:
                if self.pacer.delayed == 1:
                    log.warning("%s: sends frames faster than %d a second or %d KiB a "
                                "second; taking them at that rate", self.id, FRAME_RATE,
                                BYTE_RATE // 1024)
                if await self._closed_while_paced(wait):
                    # It hung up, or a stop closed it, while paced: nothing more is read,
                    # and the frame held would be answered to nobody.
                    return
            await self.route_message(message)

    async def _closed_while_paced(self, wait: float) -> bool:
        """Waits ``wait`` seconds, or less when the connection closes meanwhile: a stop
        waits for every connection's handler, and would otherwise wait out a flooding
        charger's pace (up to 16 s for a burst of large frames), as would a charger that
        hung up. ``wait_closed`` is safe to cancel (websockets shields its waiter)."""
        try:
            await asyncio.wait_for(self._connection.wait_closed(), wait)
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------- commands
    async def command(self, request: Any, timeout: float) -> Any:
        """Send ``request`` with the package's ``call()`` and return its validated answer.

        ``timeout`` bounds two waits apart: for the command's turn (OCPP allows one
        command in flight per charger; ``ChargerBusy`` when it never got sent), and for
        the answer once the frame is out (``TimeoutError``). Fails at once with
        ``ChargerOffline`` when the socket closes, ``ChargerCallError`` when the charger
        answers with a CALLERROR and ``ChargerError`` when its answer cannot be read. A
        request that breaks the 1.6 schema is our caller's mistake, never the charger's:
        ``ValidationError``, nothing sent."""
        if self._closed:
            raise ChargerOffline(f"{self.id} went offline")
        unique_id = str(uuid.uuid4())
        await _check_outgoing(request, unique_id)
        if self._closed:  # while it was checked (on a thread): its failure went by it
            raise ChargerOffline(f"{self.id} went offline")
        loop = asyncio.get_running_loop()
        asks_boot = _asks_boot(request)
        if asks_boot:  # from before it goes: the charger may boot before its answer is read
            self._boot_asked_until = loop.time() + timeout + BOOT_AFTER_TRIGGER_S
        failed: asyncio.Future[ChargerError] = loop.create_future()
        sent: asyncio.Future[None] = loop.create_future()
        self._pending[unique_id] = failed
        self._sending[unique_id] = sent
        self._actions[unique_id] = type(request).__name__.removesuffix("Payload")
        call = asyncio.ensure_future(self.call(request, suppress=False, unique_id=unique_id))
        try:
            await asyncio.wait((call, failed, sent), timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            if not (call.done() or failed.done() or sent.done()):
                raise ChargerBusy(f"not sent within {timeout:g}s")
            if not (call.done() or failed.done()):
                await asyncio.wait((call, failed), timeout=timeout,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            del self._pending[unique_id]
            self._sending.pop(unique_id, None)
            self._actions.pop(unique_id, None)
            answered_with_error = unique_id in self._call_errors
            self._call_errors.discard(unique_id)
            self._answered.discard(unique_id)
            long_values = self._long_values.pop(unique_id, {})
            schedule_values = self._schedule_values.pop(unique_id, {})
            # Cancelled here (by a failure, or the timeout), the package's call leaves its
            # lock and the queue of answers as they were.
            call.cancel()
        if asks_boot and not (call.done() and not call.cancelled() and call.exception() is None
                              and getattr(call.result(), "status", None) == "Accepted"):
            self._boot_asked_until = None  # it will not boot for it
        if failed.done() and not (call.done() and not call.cancelled()):
            raise failed.result()  # the failure came first (an answer that came wins)
        if not call.done():
            raise TimeoutError(f"no answer within {timeout:g}s")
        try:
            return _put_back_schedule_values(_put_back(call.result(), long_values),
                                             schedule_values)
        except ConnectionClosed as exc:
            if sent.done():
                # Its frame was handed to the socket, which closed while writing it (a
                # charger slow to read: the write waits for its buffer to drain) or
                # before: the charger may have it (review s31: a ReserveNow's
                # reservation was deleted as never sent while the charger held it).
                raise ChargerLost(OUTCOME_UNKNOWN) from exc
            raise ChargerOffline(f"{self.id} went offline") from exc
        except OCPPError as exc:
            if answered_with_error:
                failure = ChargerNotSupported if exc.code in CANNOT_DO else ChargerCallError
                raise failure(f"{exc.code}: {exc.description}") from exc
            code = OCPP16_SPELLING.get(exc.code, exc.code)
            raise ChargerError(f"an answer that breaks the 1.6 schema ({code}: "
                               f"{exc.description})") from exc
        except (TimeoutError, ChargerError):
            raise
        except Exception as exc:  # e.g. a CALLERROR code the package does not know
            if answered_with_error:
                raise ChargerCallError(f"a CALLERROR the package cannot read "
                                       f"({exc.__class__.__name__})") from exc
            if sent.done():  # a write that failed half way, an answer we cannot build
                raise SentThenFailed(repr(exc)) from exc
            raise

    def stop_commands(self, reason: str) -> None:
        """The service begins to stop (the socket stays open meanwhile): a command not
        sent yet fails as never sent (``ChargerOffline``), later ones are refused. One
        the charger has already got keeps waiting for its answer (it may act on it: its
        real answer is worth the wait), until its own timeout or ``give_up_commands``."""
        self._fail_all(lambda unique_id: ChargerOffline(reason) if unique_id in self._sending
                       else None)

    def give_up_commands(self) -> None:
        """The stop's grace is nearly over: a command the charger has and did not answer
        fails as unanswered (``ChargerLost``: it may have acted, a reservation stays
        PENDING), not "try again", which would send it twice."""
        self._fail_all(lambda unique_id: ChargerLost(STOPPED_UNANSWERED))

    def connection_closed(self) -> None:
        """The socket is closed: commands fail at once, and later ones are refused. One
        still waiting for its turn was never sent (``ChargerOffline``); one the charger
        got may have been carried out, its answer lost with the socket: unanswered
        (``ChargerLost``, as at a stop), so a ReserveNow stays PENDING rather than be
        called REJECTED while the charger may hold the plug."""
        self._fail_all(lambda unique_id: ChargerOffline(f"{self.id} went offline")
                       if unique_id in self._sending else ChargerLost(OUTCOME_UNKNOWN))

    def superseded(self, left: str) -> None:
        """A newer connection of the charger took over (``left`` says where: "connected to
        another instance"): this one is not its connection any more, though its socket
        may take the close timeout to close (a dead peer). Its commands fail now as at a
        close, and later ones are refused: one not sent yet as never sent
        (``ChargerOffline``), one the charger may have got as unanswered
        (``ChargerLost``), each saying why. Without a claim about which came first: a
        supersession heard late (the bus away, found by the lease round) may have come
        before the command was sent on this connection (QA s32)."""
        self.left = left
        self._fail_all(lambda unique_id: ChargerOffline(f"{self.id} {left}")
                       if unique_id in self._sending else ChargerLost(
                           f"{self.id} {left}; the command went to its previous "
                           "connection, which may have got it: its outcome is unknown"))

    def station_removed(self) -> None:
        """Its station was removed while it was connected: its commands fail now as at
        a supersession, and what the socket still delivers while it closes is refused
        unread, as from an unknown charge point. It signed in as a station that no
        longer exists: one created again under its cpId (maybe another company's, with
        another password) is not this connection's to report into."""
        self.superseded("had its station removed")
        self._station_removed = True

    def password_changed(self) -> None:
        """Its station was given a new password since it signed in: it is shut out (the
        way to shut out a compromised charger, README). Its commands fail now as at a
        supersession, and what the socket still delivers while it closes is refused
        (SecurityError): it acts on what it was told, Accepted maybe, and must not go on
        reporting, starting sessions on drivers' cards, until it signs in again, which
        it cannot without the new password."""
        if not self._shut_out:
            self.superseded("had its station's password changed")
            self._shut_out = True

    async def shut_out_if_password_changed(self) -> bool:
        """Whether its station was given a new password since it signed in (then it is
        shut out, ``password_changed``): checked on every message from the station as
        cached, so a change whose announcement this instance missed, or that landed
        while this connection signed in, shuts it out at its next message."""
        if self._shut_out:
            return True
        if not self.signed_in or not await self.charging.password_changed(
                self.id, self.signed_in_with):
            return False
        self.password_changed()
        return True

    def _fail_all(self, error_for: Callable[[str], ChargerError | None]) -> None:
        """Refuses later commands, and fails each waiting one with its error (``None``:
        it keeps waiting)."""
        self._closed = True
        for unique_id, failed in self._pending.items():
            error = None if failed.done() else error_for(unique_id)
            if error is not None:
                failed.set_result(error)

    def _malformed_answer(self, error: FrameError) -> None:
        """A CALLRESULT or CALLERROR we cannot read. If its unique id names a command
        waiting for its answer, that command fails now with ``ChargerError``; else it is
        dropped, as any stray answer. Never answered: OCPP-J answers CALLs only."""
        failed = self._pending.get(error.unique_id)
        if failed is None or failed.done():
            log.info("%s: malformed answer to no command waiting (%s), dropped",
                     self.id, error.description)
            return
        log.info("%s: malformed answer to command %s (%s)", self.id, error.unique_id,
                 error.description)
        failed.set_result(ChargerError(error.description))

    def _deliver(self, response: CallResult | CallError) -> None:
        """Hand an answer to the command waiting for it. One to no command in progress
        (late, or never asked) is dropped here rather than left in the package's queue
        until the next command reads past it."""
        failed = self._pending.get(response.unique_id)
        if failed is None or failed.done():
            log.info("%s: answer %s matches no command waiting, dropped", self.id,
                     response.unique_id)
            return
        if response.unique_id in self._answered:
            # A charger that answers twice: the repeat, left in the package's queue, was
            # read by the next command as a stray and logged at ERROR (QA s18).
            log.info("%s: answer %s repeated, dropped", self.id, response.unique_id)
            return
        self._answered.add(response.unique_id)
        if isinstance(response, CallError):
            self._call_errors.add(response.unique_id)
        else:
            # Long configuration values are set aside first, so the vendor's own fields
            # are told apart (and logged) by a check the rest of the answer passes. A
            # vendor's own fields go before the integers: a big number of theirs (a
            # millisecond timestamp) is theirs, not an answer the command failed on
            # (review s24).
            self._keep_long_values(response)
            self._keep_schedule_values(response)
            self._leave_out_unknown(response)
            beyond = _beyond_int(response.payload)
            if beyond is not None:
                log.info("%s: answer %s carries %s beyond OCPP's 32-bit integers", self.id,
                         response.unique_id, beyond)
                failed.set_result(ChargerError(f"an answer whose {beyond} is beyond "
                                               "OCPP's 32-bit integers"))
                return
        self._response_queue.put_nowait(response)

    def _leave_out_unknown(self, response: CallResult) -> None:
        """An answer carrying properties its 1.6 schema does not know (a vendor's
        additions) loses them before the package validates it: the charger did what it
        answers (an Unlocked with a field of its own is still unlocked). Anything else
        wrong stays for the package to refuse."""
        action = self._actions.get(response.unique_id)
        if self.strict_schema or action is None or not isinstance(response.payload, dict):
            return
        try:
            checked = frames.validate(frames.CALLRESULT, action, response.payload,
                                      response.unique_id, strict=False)
        except (FrameError, OSError):
            return  # the package refuses it with its own words
        self._note_unknown(action, checked.unknown)
        # Optional fields answered null, left out: logged once per connection as a
        # message's are (review r27: an answer's were left out silently).
        self._note_mended(action, checked.mended)

    def _keep_long_values(self, response: CallResult) -> None:
        """A GetConfiguration answer whose values go beyond OCPP 1.6's 500 characters is
        taken with them whole, as the charger holds them (not ``strict_schema``): the
        operator asked what the charger is configured with, and one long value lost
        the whole answer (QA s25). Everything else in it is checked as strictly."""
        if self.strict_schema \
                or self._actions.get(response.unique_id) != "GetConfiguration":
            return
        aside = _set_aside_long_values(response.payload)
        if not aside:
            return
        self._long_values[response.unique_id] = aside
        keys = response.payload["configurationKey"]
        for index in aside:
            key = keys[index].get("key") if isinstance(keys[index], dict) else None
            if self._first_time("GetConfiguration", f"value of {key}"):
                log.info("%s: GetConfiguration: %s's value is longer than OCPP 1.6's %d "
                         "characters (%d): kept whole", self.id, key,
                         CONFIGURATION_VALUE_MAX, len(aside[index]))

    def _keep_schedule_values(self, response: CallResult) -> None:
        """A GetCompositeSchedule answer whose schedule breaks the 1.6 schema only by
        rates off its 0.1 step or by having no periods is taken as the charger gave it
        (not ``strict_schema``): it said Accepted, and the operator asked what it plans
        to apply (QA s25: such an answer was CHARGER_ERROR). Logged once per connection."""
        if self.strict_schema \
                or self._actions.get(response.unique_id) != "GetCompositeSchedule":
            return
        schedule = response.payload.get("chargingSchedule") \
            if isinstance(response.payload, dict) else None
        periodless = isinstance(schedule, dict) and "chargingSchedulePeriod" not in schedule
        aside = _set_aside_schedule_values(response.payload)
        if aside:
            self._schedule_values[response.unique_id] = aside
            if self._first_time("GetCompositeSchedule", "rate step"):
                log.info("%s: GetCompositeSchedule: rates off OCPP 1.6's 0.1 step (%s): "
                         "kept as answered", self.id,
                         ", ".join(str(value) for value in aside.values()))
        if periodless and self._first_time("GetCompositeSchedule", "no periods"):
            log.info("%s: GetCompositeSchedule: a schedule without "
                     "chargingSchedulePeriod: read as no periods", self.id)

    def _note_unknown(self, action: str, removed: list[str]) -> None:
        for path in removed:
            if self._first_time(action, path):
                log.info("%s: %s carries %s, which OCPP 1.6 does not define: left out",
                         self.id, action, path)

    def _note_mended(self, action: str, mended: list[frames.Mended]) -> None:
        """A WARNING, once per connection and rule (a charger that gets a unit wrong
        gets it wrong in every message): what it sent is lost, or read as Other."""
        for fix in mended:
            if self._first_time(action, fix.rule):
                kept = "left out" if fix.replacement is None \
                    else f"read as {fix.replacement}"
                log.warning("%s: %s: %s (OCPP 1.6): %s, the rest of the message kept; "
                            "not logged again on this connection", self.id, action,
                            fix.reason, kept)

    def _note_too_many(self, refused: frames.TooManySampledValues) -> None:
        """A WARNING, once per connection (a charger retries the frame it was refused):
        the charger, the bound and the setting to raise, for an operator whose chargers
        batch a backlog into one MeterValues."""
        if self._first_time("MeterValues", "sampled values bound"):
            log.warning("%s: sends a MeterValues of more than %d sampled values "
                        "(CHARGEGRAPH_OCPP_MAX_SAMPLED_VALUES): refused; not logged again "
                        "on this connection", self.id, refused.limit)

    def _first_time(self, action: str, path: str) -> bool:
        """Whether (``action``, ``path``) is told about for the first time on this
        connection (and at most 100 of them)."""
        if (action, path) in self._unknown_seen or len(self._unknown_seen) >= 100:
            return False
        self._unknown_seen.add((action, path))
        return True

    # ------------------------------------------------------------- sending
    async def _send(self, message: str) -> None:
        """Write a frame. While the socket's write buffer is nearly empty (a charger that
        reads its answers) the frame is written at once, as websockets' ``broadcast``
        writes; otherwise through ``send``, which waits for the buffer to drain, so a
        charger that stops reading cannot make us buffer without bound. ``send`` runs an
        async context manager per frame: a tenth of a MeterValues frame's cost."""
        if self._sending:
            self._mark_sent(message)
        if wire_log.isEnabledFor(logging.INFO):
            wire_log.info("%s: send %s", self.id, logged_frame(message))
        connection = self._connection
        if isinstance(connection, ServerConnection) \
                and connection.protocol.state is State.OPEN \
                and connection.transport.get_write_buffer_size() < FAST_SEND_BUFFER:
            try:
                broadcast((connection,), message, raise_exceptions=True)
                return
            except Exception:  # the write failed: send() reports it properly
                pass
        await connection.send(message)

    def _mark_sent(self, message: str) -> None:
        """A command's frame is going out: its wait for an answer starts now. (Looked
        for only while commands wait, so answers to the charger pay nothing.) One that
        already failed as never sent is not written: its failure is raised instead, so
        what its caller is told stays true. A stop (or a supersession) can fail a
        command queued behind another after that one left the package's lock but before
        this one's turn ran; written then, the charger acted on a command answered
        "nothing was sent" (review r33-a: a ReserveNow's reservation deleted while the
        charger held the plug)."""
        if not message.startswith("[2,"):
            return
        try:
            unique_id = str(orjson.loads(message)[1])
        except (ValueError, IndexError, TypeError):
            return
        sent = self._sending.pop(unique_id, None)
        if sent is None or sent.done():
            return
        failed = self._pending.get(unique_id)
        if failed is not None and failed.done():
            raise failed.result()
        sent.set_result(None)

    async def hang_up(self, code: int, reason: str) -> None:
        """Close the websocket (the charger is expected to reconnect)."""
        await self._connection.close(code, reason)

    # ------------------------------------------------------------- routing
    async def route_message(self, raw_msg: str | bytes) -> None:
        """Every CALL gets an answer: a CALLRESULT, or a CALLERROR with the 1.6 code, and
        so does a frame whose message type cannot be read. A CALLRESULT or CALLERROR goes
        to the command waiting for it, malformed or not, and is never answered (OCPP-J
        answers CALLs only). The connection stays up whatever arrives."""
        try:
            frame = frames.parse(raw_msg, strict=self.strict_schema)
        except FrameError as exc:
            # At INFO, logged by default: its start masked as the wire log's is, and
            # only when the line is written (review s25: a 4 MiB frame was masked whole
            # at any level, on the event loop).
            if log.isEnabledFor(logging.INFO):
                log.info("%s: bad frame (%s): %.200r", self.id, exc.description,
                         logged_frame(raw_msg, limit=BAD_FRAME_READ))
            if exc.is_answer:
                self._malformed_answer(exc)
            else:
                self.metrics.ocpp_message(OTHER_ACTION, False)
                await self._send(frames.call_error(exc.unique_id, exc.code,
                                                   exc.description))
            return
        if frame.message_type == frames.CALL:
            if len(frame.unique_id) > frames.UNIQUE_ID_MAX \
                    and self._first_time("", "long uniqueId"):
                log.warning("%s: sends uniqueIds longer than OCPP-J's %d characters (%d): "
                            "answered under them; not logged again on this connection",
                            self.id, frames.UNIQUE_ID_MAX, len(frame.unique_id))
            await self._answer(frame)
        elif frame.message_type == frames.CALLRESULT:
            self._deliver(CallResult(frame.unique_id, frame.payload))
        else:
            self._deliver(CallError(frame.unique_id, frame.error_code,
                                    frame.error_description, frame.error_details))

    async def _answer(self, frame: frames.Frame) -> None:
        uid = frame.unique_id
        action = frame.action or ""
        try:
            handler = ACTIONS.get(action)
            if handler is None:
                code = frames.NOT_SUPPORTED if action in frames.KNOWN_UNSERVED \
                    else frames.NOT_IMPLEMENTED
                raise FrameError(code, f"{action} is not served here", uid)
            # Before the checks, which would read every one of too many sampled values.
            try:
                frames.bound(action, frame.payload, uid, self.max_sampled_values)
            except frames.TooManySampledValues as exc:
                self._note_too_many(exc)
                raise
            checked = frames.validate(frames.CALL, action, frame.payload, uid,
                                      strict=self.strict_schema)
            if checked is not frames.CLEAN:
                self._note_unknown(action, checked.unknown)
                self._note_mended(action, checked.mended)
            if self._station_removed:
                raise FrameError(frames.PROPERTY_CONSTRAINT_VIOLATION,
                                 f"unknown charge point {self.id}", uid)
            if await self.shut_out_if_password_changed():
                self._count(action, False)
                await self._send(frames.call_error(
                    uid, frames.SECURITY_ERROR, f"{action} refused: the station's password "
                    "was changed since this connection signed in"))
                log.info("%s: its station's password was changed; closing", self.id)
                await self.hang_up(CLOSE_PASSWORD_CHANGED, "password changed")
                return
            if action != "BootNotification" and not await self.charging.admits(
                    self.id, action, frame.payload.get("transactionId"),
                    frame.payload.get("connectorId"), frame.payload.get("meterStop")):
                # The charger keeps what it queued (a StartTransaction, its meter values)
                # and sends it once an operator accepts the station. One told Accepted at
                # its last boot has its reports taken whatever the station's registration
                # became since, and any its stop, readings and connector states of what is
                # open on record for it, and the resend of a stop taken
                # (``domain.registration``, ``ChargingService._on_record``).
                raise FrameError(frames.SECURITY_ERROR,
                                 f"{action} refused: the station is not accepted (its "
                                 "registration is pending or rejected)", uid)
            self._unique_id = uid
            payload = await handler(self, frame.payload)
        except FrameError as exc:
            self._count(action, False)
            await self._send(frames.call_error(uid, exc.code, exc.description))
            return
        except DomainError as exc:
            # A store failure too, ``StoreOutcomeUnknown`` included (its write may
            # stand): nothing here writes the message again; the charger resends a
            # transaction message, and the resend is taken for what its first copy
            # wrote, if that stands (a start by ``_StartIdentity``, a stop by its
            # closed session, readings by their keys), not written twice.
            code = frames.PROPERTY_CONSTRAINT_VIOLATION if exc.code in (
                "OUT_OF_RANGE", "INVALID", "NOT_FOUND") else frames.GENERIC_ERROR
            self._count(action, False)
            await self._send(frames.call_error(uid, code, described(exc)))
            if exc.code == "NOT_FOUND" and exc.field == "cpId":
                # The station was removed while its charger was connected: hang up, so
                # it reconnects and meets the 401 of an unknown charge point.
                log.info("%s: the station no longer exists; closing", self.id)
                await self.hang_up(CLOSE_UNKNOWN_STATION, "unknown charge point")
            return
        except Exception:
            log.exception("%s: %s failed", self.id, action)
            self._count(action, False)
            await self._send(frames.call_error(uid, frames.INTERNAL_ERROR,
                                               "the central system failed to process this"))
            return
        self._count(action, True)
        await self._send(frames.call_result(uid, payload))
        if action == "StartTransaction":
            # Only now may the charger be addressed about the transaction (its site
            # share): it refuses a TxProfile for a transaction it was not told of.
            await self._after(action, self.charging.start_answered)
        elif action == "BootNotification" and payload.get("status") == "Accepted":
            # A charger that rebooted may have lost its site limit: sent again once it
            # knows it is accepted (before, it may refuse any command).
            await self._after(action, self.charging.boot_accepted)
        if action not in _RECORD_SEEN:
            try:
                await self.charging.seen(self.id)
            except Exception:  # the answer went out; a lastSeen not written is no error
                log.warning("%s: recording it seen failed", self.id, exc_info=True)

    async def _after(self, action: str, follow_up: Callable[[str], Awaitable[None]]
                     ) -> None:
        """What follows a message once its answer went out; a failure of it is logged,
        never the message's (it is answered; another trigger does what it missed)."""
        try:
            await follow_up(self.id)
        except Exception:
            log.warning("%s: after its %s failed", self.id, action, exc_info=True)

    def _count(self, action: str, ok: bool) -> None:
        """One answered CALL, counted before its frame goes out (a socket closing under
        the send does not make it unanswered on our side)."""
        self.metrics.ocpp_message(action if action in ACTIONS else OTHER_ACTION, ok)

    def _time(self, value: str, field: str) -> Any:
        return parse_timestamp(value, field, self._unique_id)

    async def _connector_ok(self, connector_id: int, *, allow_zero: bool) -> None:
        """Connector ids the station cannot have are a PropertyConstraintViolation. The
        station's highest id is cached per connection and re-read before refusing."""
        low = 0 if allow_zero else 1
        if connector_id >= low and self._highest_connector is not None \
                and connector_id <= self._highest_connector:
            return
        try:
            await self.charging.check_connector_id(self.id, connector_id,
                                                   allow_zero=allow_zero)
        except DomainError as exc:
            if exc.field == "cpId":
                raise  # the station itself is gone: ``_answer`` hangs up
            raise FrameError(frames.PROPERTY_CONSTRAINT_VIOLATION, described(exc),
                             self._unique_id) from exc
        if connector_id > (self._highest_connector or 0):
            self._highest_connector = connector_id

    # ------------------------------------------------------------- charger → us
    # Each reads the validated camelCase payload and returns the camelCase answer.
    async def boot_notification(self, p: Payload) -> Payload:
        boot = await self.charging.boot(self.id, BootInfo(
            vendor=p["chargePointVendor"], model=p["chargePointModel"],
            serial=p.get("chargePointSerialNumber") or p.get("chargeBoxSerialNumber"),
            firmware=p.get("firmwareVersion"), triggered=self._boot_triggered(),
            extra=to_snake({k: v for k, v in p.items()
                            if k not in ("chargePointVendor", "chargePointModel")})))
        return {"currentTime": rfc3339(boot.current_time), "interval": boot.interval,
                "status": boot.status.value}

    def _boot_triggered(self) -> bool:
        """Whether this BootNotification answers a TriggerMessage of ours (sent, or
        accepted a moment ago): the charger sends it without restarting, so it is no
        reboot (QA s22 verify: it ended a configuration change's wait for the reboot that
        applies it). Once: the next boot is a restart."""
        until, self._boot_asked_until = self._boot_asked_until, None
        return until is not None and asyncio.get_running_loop().time() <= until

    async def heartbeat(self, p: Payload) -> Payload:
        return {"currentTime": rfc3339(await self.charging.heartbeat(self.id))}

    async def authorize(self, p: Payload) -> Payload:
        return {"idTagInfo": id_tag_info(await self.charging.authorize(self.id, p["idTag"]))}

    async def start_transaction(self, p: Payload) -> Payload:
        await self._connector_ok(p["connectorId"], allow_zero=False)
        transaction_id, info = await self.charging.start_transaction(
            self.id, p["connectorId"], p["idTag"], p["meterStart"],
            self._time(p["timestamp"], "timestamp"), p.get("reservationId"))
        return {"transactionId": transaction_id, "idTagInfo": id_tag_info(info)}

    async def stop_transaction(self, p: Payload) -> Payload:
        info = await self.charging.stop_transaction(
            self.id, p["transactionId"], p["meterStop"], self._time(p["timestamp"], "timestamp"),
            reason=p.get("reason"), id_tag=p.get("idTag"),
            readings=self._readings(p.get("transactionData") or [],
                                    action="StopTransaction", required=False))
        return {"idTagInfo": id_tag_info(info)} if info else EMPTY

    async def meter_values(self, p: Payload) -> Payload:
        connector_id = p["connectorId"]
        await self._connector_ok(connector_id, allow_zero=True)
        await self.charging.meter_values(self.id, connector_id, p.get("transactionId"),
                                         self._readings(p["meterValue"],
                                                        action="MeterValues",
                                                        required=True))
        return EMPTY

    async def status_notification(self, p: Payload) -> Payload:
        await self._connector_ok(p["connectorId"], allow_zero=True)
        timestamp = p.get("timestamp")
        await self.charging.status_notification(
            self.id, p["connectorId"], p["status"], p["errorCode"], info=p.get("info"),
            timestamp=self._time(timestamp, "timestamp") if timestamp else None,
            vendor_error_code=p.get("vendorErrorCode"))
        return EMPTY

    async def data_transfer(self, p: Payload) -> Payload:
        status, reply = await self.charging.data_transfer(self.id, p["vendorId"],
                                                          p.get("messageId"), p.get("data"))
        if log.isEnabledFor(logging.INFO):
            # The charger's free text, masked as the wire log masks a frame (a URL's
            # user information and query values, a secret key's value).
            data = p.get("data")
            shown = None if data is None else data_shown(data)
            log.info("%s", masked_line(f"DataTransfer from {self.id}: vendor="
                                       f"{p['vendorId']} message={p.get('messageId')} "
                                       f"data={shown}"))
        return {"status": status} if reply is None else {"status": status, "data": reply}

    async def diagnostics_status_notification(self, p: Payload) -> Payload:
        await self.charging.diagnostics_status(self.id, p["status"])
        return EMPTY

    async def firmware_status_notification(self, p: Payload) -> Payload:
        await self.charging.firmware_status(self.id, p["status"])
        return EMPTY

    # ------------------------------------------------------------- helpers
    def _readings(self, meter_values: list[Payload], *, action: str,
                  required: bool) -> list[MeterReading]:
        """The readings of a MeterValues or a stop's transactionData. One whose timestamp
        fits the schema's pattern but is no instant (February 30th, month 13, year 1)
        is left out as ``frames.LENIENT`` leaves out one the schema refuses (the rest
        kept, logged once per connection), unless the schema is followed to the letter
        or nothing would be left where a reading is ``required`` (a MeterValues):
        then the message is refused with its first error (review s20: a stop refused
        for one reading's date left its session ACTIVE)."""
        readings: list[MeterReading] = []
        refused: FrameError | None = None
        for mv in meter_values:
            try:
                at = self._time(mv["timestamp"], "meterValue.timestamp")
            except FrameError as error:
                if self.strict_schema:
                    raise
                refused = refused or error
                continue
            readings.append(MeterReading(at, tuple(
                SampledValue(value=str(sv["value"]), measurand=sv.get("measurand"),
                             unit=sv.get("unit"), phase=sv.get("phase"),
                             context=sv.get("context"), location=sv.get("location"),
                             format=sv.get("format"))
                for sv in mv.get("sampledValue", ()))))
        if refused is not None:
            if required and not readings:
                raise refused
            if self._first_time(action, "meterValue.timestamp"):
                log.warning("%s: %s: a reading's timestamp is no instant (%s): that "
                            "reading left out, the rest of the message kept; not logged "
                            "again on this connection", self.id, action, refused)
        return readings


#: Actions whose handling records the station seen itself (``last_seen``).
_RECORD_SEEN = frozenset({"BootNotification", "Heartbeat"})

#: Every action a charger may send us (``frames.CHARGER_ACTIONS``) and its handler.
ACTIONS: dict[str, ActionHandler] = {
    "Authorize": ChargePointHandler.authorize,
    "BootNotification": ChargePointHandler.boot_notification,
    "DataTransfer": ChargePointHandler.data_transfer,
    "DiagnosticsStatusNotification": ChargePointHandler.diagnostics_status_notification,
    "FirmwareStatusNotification": ChargePointHandler.firmware_status_notification,
    "Heartbeat": ChargePointHandler.heartbeat,
    "MeterValues": ChargePointHandler.meter_values,
    "StartTransaction": ChargePointHandler.start_transaction,
    "StatusNotification": ChargePointHandler.status_notification,
    "StopTransaction": ChargePointHandler.stop_transaction,
}
