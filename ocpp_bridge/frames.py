"""OCPP-J 1.6 framing and payload validation, with the 1.6 error table.

The ``ocpp`` package stays silent on frames that are not JSON and answers with OCPP 2.x
error names (``FormatViolation``, ``OccurrenceConstraintViolation``); a 1.6 charger
expects ``FormationViolation`` and the spec's own misspelling ``OccurenceConstraintViolation``.
So frames are parsed and payloads validated here, against the package's 1.6 schemas.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, NoReturn

import ocpp
import orjson

from ocpp_bridge.schema import Pruned, SchemaError, compile_pruner, compile_schema

CALL, CALLRESULT, CALLERROR = 2, 3, 4

# The 1.6 error codes (OCPP-J 1.6 section 4.2.3), spelled as the spec spells them.
NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
INTERNAL_ERROR = "InternalError"
PROTOCOL_ERROR = "ProtocolError"
SECURITY_ERROR = "SecurityError"
FORMATION_VIOLATION = "FormationViolation"
PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
OCCURENCE_CONSTRAINT_VIOLATION = "OccurenceConstraintViolation"
TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
GENERIC_ERROR = "GenericError"

#: Actions a charge point may send in OCPP 1.6 (core and the profiles we serve).
CHARGER_ACTIONS = frozenset({
    "Authorize", "BootNotification", "DataTransfer", "DiagnosticsStatusNotification",
    "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StartTransaction",
    "StatusNotification", "StopTransaction",
})
#: Actions OCPP 1.6 (with its security extension) knows, but a charger sends none we serve.
KNOWN_UNSERVED = frozenset({
    "LogStatusNotification", "SecurityEventNotification", "SignCertificate",
    "SignedFirmwareStatusNotification",
    # central-system-initiated actions a confused charger might send us
    "CancelReservation", "ChangeAvailability", "ChangeConfiguration", "ClearCache",
    "ClearChargingProfile", "GetCompositeSchedule", "GetConfiguration", "GetDiagnostics",
    "GetLocalListVersion", "RemoteStartTransaction", "RemoteStopTransaction", "ReserveNow",
    "Reset", "SendLocalList", "SetChargingProfile", "TriggerMessage", "UnlockConnector",
    "UpdateFirmware", "CertificateSigned", "DeleteCertificate", "ExtendedTriggerMessage",
    "GetInstalledCertificateIds", "GetLog", "InstallCertificate", "SignedUpdateFirmware",
})


class FrameError(Exception):
    """A frame or payload we must answer with a CALLERROR, unless ``message_type`` says
    it is a malformed CALLRESULT or CALLERROR: OCPP-J answers CALLs only."""

    def __init__(self, code: str, description: str, unique_id: str = "-1",
                 details: dict[str, Any] | None = None, *,
                 message_type: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.unique_id = unique_id
        self.details = details or {}
        #: The frame's message type, when it could be read.
        self.message_type = message_type

    @property
    def is_answer(self) -> bool:
        """A CALLRESULT or CALLERROR, however malformed otherwise."""
        return self.message_type in (CALLRESULT, CALLERROR)


@dataclass(frozen=True, slots=True)
class Frame:
    message_type: int
    unique_id: str
    action: str | None = None
    payload: Any = None
    error_code: str | None = None
    error_description: str | None = None
    error_details: Any = None


#: The start of a CALLRESULT or CALLERROR, read from text that is not JSON: the message
#: type, then the unique id when it is there whole (a JSON string without escapes).
_ANSWER_HEAD = re.compile(r'\s*\[\s*(?P<type>[34])\s*(?:,\s*"(?P<uid>[^"\\]*)"|,|$)')
_CALL_HEAD = re.compile(r'\s*\[\s*2\s*,\s*"(?P<uid>[^"\\]{1,255})"')
#: Enough text for the message type and a unique id (at most ``UNIQUE_ID_LENIENT_MAX``
#: characters: a braced GUID's 38 are answered under themselves too, review r27).
_HEAD_CHARS = 300


#: OCPP-J 1.6's bound on a message's unique id ("to allow for GUIDs").
UNIQUE_ID_MAX = 36
#: The bound not ``strict``: a braced GUID (38) or a vendor's prefixed id is taken, but
#: an id is echoed in every answer, so one of any length is not (review r27).
UNIQUE_ID_LENIENT_MAX = 255


def parse(raw: str | bytes, *, strict: bool = True) -> Frame:
    """Parse one websocket message into a frame, or raise ``FrameError``. Not ``strict``,
    a CALL's unique id longer than ``UNIQUE_ID_MAX`` is taken (and answered under):
    refused, its charger never booted, and refused under the id cut to 36 characters
    (as before), the charger could not even tell which of its calls was refused and
    waited out its timeout. Strict, it is refused, under the charger's id as sent.

    A frame starting with a UTF-8 byte order mark (some .NET and Windows-based charger
    stacks write one) is read as the JSON after it, as lenient central systems read it:
    JSON text has no BOM (RFC 8259 8.1), but a parser may ignore one, and refused it was
    answered under uniqueId "-1", which told the charger nothing, its boot never
    answered (QA s28)."""
    raw = _without_bom(raw)
    try:
        # orjson: a third of json.loads' time per frame, and stricter (no NaN/Infinity,
        # no lone surrogates), which OCPP-J's plain JSON never needs.
        message = orjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        # Text that is not JSON may still begin as an answer ('[3, "<uid>", {' cut off):
        # then it is a broken answer to that call, not a frame to answer.
        text = raw[:_HEAD_CHARS] if isinstance(raw, str) \
            else raw[:_HEAD_CHARS].decode("utf-8", "replace")
        # What was wrong, for the charger's integrator: a number beyond a double
        # ("number is infinity when parsed as double") read as plain "not JSON" (QA s18).
        reason = f"the message is not valid JSON ({getattr(exc, 'msg', 'not UTF-8')})"
        head = _ANSWER_HEAD.match(text)
        if head is None:
            # A CALL whose head reads ([2, "<uid>", ...) is answered under its own id, so
            # the charger can tell which of its calls was refused (a lone surrogate
            # escaped in its payload was answered under "-1").
            call = _CALL_HEAD.match(text)
            raise FrameError(FORMATION_VIOLATION, reason,
                             call["uid"] if call else "-1") from exc
        raise FrameError(FORMATION_VIOLATION, reason,
                         head["uid"] or "-1", message_type=int(head["type"])) from exc
    if not isinstance(message, list) or not message:
        raise FrameError(FORMATION_VIOLATION, "an OCPP-J message is a non-empty JSON array")
    unique_id = message[1] if len(message) > 1 and isinstance(message[1], str) else "-1"
    kind = message[0]
    if kind == CALL:
        if len(message) != 4 or not isinstance(message[1], str) or not isinstance(
                message[2], str):
            raise FrameError(FORMATION_VIOLATION,
                             "a CALL is [2, uniqueId, action, payload]", unique_id)
        if strict and len(message[1]) > UNIQUE_ID_MAX:
            raise FrameError(FORMATION_VIOLATION,
                             f"uniqueId is at most {UNIQUE_ID_MAX} characters", unique_id)
        if len(message[1]) > UNIQUE_ID_LENIENT_MAX:
            raise FrameError(FORMATION_VIOLATION, f"uniqueId is at most {UNIQUE_ID_MAX} "
                             f"characters (up to {UNIQUE_ID_LENIENT_MAX} are taken)", "-1")
        if not isinstance(message[3], dict):
            raise FrameError(FORMATION_VIOLATION, "the payload must be a JSON object",
                             unique_id)
        return Frame(CALL, message[1], message[2], message[3])
    if kind == CALLRESULT:
        if len(message) != 3 or not isinstance(message[1], str):
            raise FrameError(FORMATION_VIOLATION, "a CALLRESULT is [3, uniqueId, payload]",
                             unique_id, message_type=CALLRESULT)
        return Frame(CALLRESULT, message[1], payload=message[2])
    if kind == CALLERROR:
        if len(message) != 5 or not isinstance(message[1], str):
            raise FrameError(FORMATION_VIOLATION, "a CALLERROR is [4, uniqueId, errorCode, "
                                                  "errorDescription, errorDetails]", unique_id,
                             message_type=CALLERROR)
        return Frame(CALLERROR, message[1], error_code=str(message[2]),
                     error_description=str(message[3]), error_details=message[4])
    raise FrameError(FORMATION_VIOLATION, f"unknown message type {kind!r}", unique_id)


#: A UTF-8 byte order mark, as text and as the bytes of a binary frame.
_BOM_TEXT = "\ufeff"
_BOM_BYTES = _BOM_TEXT.encode()


def _without_bom(raw: str | bytes) -> str | bytes:
    """``raw`` without the one byte order mark it may start with."""
    if isinstance(raw, str):
        return raw[1:] if raw.startswith(_BOM_TEXT) else raw
    return raw[len(_BOM_BYTES):] if raw.startswith(_BOM_BYTES) else raw


def _text(message: list[Any]) -> str:
    # A str, so websockets sends a text frame (OCPP-J uses text frames only).
    return orjson.dumps(message).decode()


def call_error(unique_id: str, code: str, description: str,
               details: dict[str, Any] | None = None) -> str:
    return _text([CALLERROR, unique_id, code, description[:255], details or {}])


def call_result(unique_id: str, payload: dict[str, Any]) -> str:
    return _text([CALLRESULT, unique_id, payload])


def call(unique_id: str, action: str, payload: dict[str, Any]) -> str:
    return _text([CALL, unique_id, action, payload])


#: jsonschema keyword → 1.6 error code, by what the 1.6 table says each code means.
_SCHEMA_ERRORS = {
    "required": OCCURENCE_CONSTRAINT_VIOLATION,  # a required field does not occur
    "type": TYPE_CONSTRAINT_VIOLATION,  # "somestring": 12
    "maxLength": TYPE_CONSTRAINT_VIOLATION,  # CiString20Type etc. are data types
    "format": TYPE_CONSTRAINT_VIOLATION,  # dateTime is a data type
    "enum": PROPERTY_CONSTRAINT_VIOLATION,  # a valid type with an invalid value
    "minimum": PROPERTY_CONSTRAINT_VIOLATION,
    "maximum": PROPERTY_CONSTRAINT_VIOLATION,
    "multipleOf": PROPERTY_CONSTRAINT_VIOLATION,
    "additionalProperties": FORMATION_VIOLATION,  # not the PDU's structure
    "minItems": OCCURENCE_CONSTRAINT_VIOLATION,
    "maxItems": OCCURENCE_CONSTRAINT_VIOLATION,
}


_SCHEMAS = os.path.join(os.path.dirname(ocpp.__file__), "v16", "schemas")
# RFC 3339 date-time, with the zone optional: many chargers omit it and OCPP times are UTC
# (the handler reads a zoneless time as UTC). Anything else is a TypeConstraintViolation.
_DATE_TIME = re.compile(
    r"^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:?\d\d)?$")


@cache
def _validator(message_type: int, action: str) -> Callable[[Any], Any]:
    """The 1.6 schema of ``action`` (from the ``ocpp`` package), compiled once by
    ``ocpp_bridge.schema`` (the package's default validation costs 30 times as much per
    message and hops to a thread pool: ``python -m bench.ocpp_validation``)."""
    return compile_schema(_schema(message_type, action),
                          formats={"date-time": _DATE_TIME.pattern})


@cache
def _schema(message_type: int, action: str) -> dict[str, Any]:
    name = action + ("Response" if message_type == CALLRESULT else "")
    with open(os.path.join(_SCHEMAS, f"{name}.json"), encoding="utf-8") as handle:
        return json.load(handle)  # type: ignore[no-any-return]


@cache
def _pruner(message_type: int, action: str) -> Callable[[Any], Pruned]:
    return compile_pruner(_schema(message_type, action))


@dataclass(frozen=True, slots=True)
class Mend:
    """A place in a charger's message where a value the 1.6 schema refuses is left out
    (``replacement`` ``None``) or replaced, and the message kept. ``path`` names a
    property of the payload, through arrays (``transactionData[].sampledValue[]``: every
    sampled value of every reading); ending in ``[]`` it is the items of an array, each
    left out on its own (an item whose array would then hold fewer than its schema's
    ``minItems`` is kept, and so is the error: nothing usable would be left).
    ``as_text``: a JSON number where the schema wants a string is replaced by its text
    (a value of another kind is left for the next rule)."""

    path: str
    replacement: str | None = None
    as_text: bool = False


@dataclass(frozen=True, slots=True)
class Mended:
    """One value a ``Mend`` left out or replaced: where it was (``transactionData[0].
    sampledValue[1]``), by which rule (its ``path``, for logging once per rule), what
    was wrong, and what it was replaced with (``None``: left out)."""

    path: str
    rule: str
    reason: str
    replacement: str | None = None


#: The charger's messages that are kept with a secondary field the 1.6 schema refuses
#: (not ``strict``): refusing them loses what cannot be asked for again. A StopTransaction
#: refused for its idTag, its reason or one sampled value of its transactionData left its
#: session ACTIVE and its card answering ConcurrentTx everywhere (QA s20); a MeterValues
#: frame refused for one sampled value lost the energy readings beside it; a status
#: report refused for a long ``info`` lost the status. What such a message is for stays
#: checked as strictly as anywhere (a StopTransaction's transactionId, meterStop and
#: timestamp; a status and its errorCode), and every other action keeps the schema's
#: letter: a start, an authorization or a boot with a wrong idTag or field is the
#: charger's to correct, and it is told so. Deepest first: a sampled value is left out
#: before its reading is judged.
LENIENT: dict[str, tuple[Mend, ...]] = {
    "StopTransaction": (
        Mend("transactionData[].sampledValue[].value", as_text=True),
        Mend("transactionData[].sampledValue[]"),
        Mend("transactionData[]"),  # a reading without a readable timestamp
        Mend("transactionData"),  # not even a list of readings
        Mend("idTag"),  # the stop stands; its answer carries no idTagInfo
        Mend("reason", "Other"),  # a reason the 1.6 enumeration does not have
    ),
    "MeterValues": (
        # A reading sent as a JSON number (1200.5, not "1200.5"): the same reading. Left
        # out as any refused sampled value, a charger writing them all so lost every
        # MeterValues frame (refused: nothing left) and its stop's readings.
        Mend("meterValue[].sampledValue[].value", as_text=True),
        Mend("meterValue[].sampledValue[]"),
        Mend("meterValue[]"),  # a reading without a timestamp, or no value left
    ),
    "StatusNotification": (Mend("info"), Mend("vendorId"), Mend("vendorErrorCode")),
}


#: The most sampled values one MeterValues may carry by default, over all its readings (a
#: reading holding none counts as one); ``OcppServer``'s ``max_sampled_values`` (the
#: ``CHARGEGRAPH_OCPP_MAX_SAMPLED_VALUES`` setting) raises it for chargers that batch a
#: backlog into one frame. OCPP 1.6 sets no bound, but a charger reports a reading
#: or a few per frame, each of its measurands per phase: tens of values. Each costs the
#: event loop tens of µs, checked against the schema, mended, made a stored sample, and
#: the loop is every charger's and every request's: the 36,600 of a 4 MiB frame held it
#: 0.5 s, and 0.8 s when each was mended or late (session 29). Beyond the bound a frame
#: is refused before it is read further (``bound``). Not a StopTransaction's
#: transactionData: a long session's grows with it, and a stop refused is retried
#: forever, its session open.
MAX_SAMPLED_VALUES = 1000


class TooManySampledValues(FrameError):
    """A MeterValues refused by ``bound``: more than ``limit`` sampled values (for the log
    line telling the operator what to raise)."""

    def __init__(self, limit: int, unique_id: str) -> None:
        super().__init__(OCCURENCE_CONSTRAINT_VIOLATION,
                         f"meterValue: more than {limit} sampled values in one "
                         "MeterValues; send them in smaller frames", unique_id)
        self.limit = limit


def bound(action: str, payload: dict[str, Any], unique_id: str,
          limit: int = MAX_SAMPLED_VALUES) -> None:
    """Refuses a MeterValues of more than ``limit`` sampled values with an
    OccurenceConstraintViolation (too many occurrences of one field, in the 1.6 table's
    words; ``TooManySampledValues``), the connection kept: the charger can send them in
    smaller frames. Counting costs a step per reading, up to the limit only: a 4 MiB frame
    of two million empty readings, counted whole for the log, held the loop longer than
    its parse (review r29); a payload of another shape is left to ``validate``."""
    readings = payload.get("meterValue") if action == "MeterValues" else None
    if not isinstance(readings, list):
        return
    count = 0
    for reading in readings:
        values = reading.get("sampledValue") if isinstance(reading, dict) else None
        count += max(len(values), 1) if isinstance(values, list) else 1
        if count > limit:
            raise TooManySampledValues(limit, unique_id)


@dataclass(frozen=True, slots=True)
class Checked:
    """What ``validate`` changed in a payload it let through: the paths of properties
    the schema does not know, left out, and the values ``LENIENT`` mended."""

    unknown: list[str]
    mended: list[Mended]


CLEAN = Checked([], [])


def validate(message_type: int, action: str, payload: dict[str, Any], unique_id: str, *,
             strict: bool = True) -> Checked:
    """Validate a payload against the 1.6 JSON schema of ``action``, raising the CALLERROR
    the 1.6 table prescribes for what is wrong. Not ``strict``, properties the schema does
    not know are removed from ``payload`` instead (vendors add fields of their own, and a
    charger refused its boot for one never charges), and so are optional ones sent as
    ``null`` (a serializer's way of saying "no value": read as absent, reported among
    the mended), the values ``LENIENT`` names for a charger's ``action`` are mended, and
    the rest is checked as strictly. Clean payloads pay one validation: the rest runs
    only after a refusal."""
    try:
        _validator(message_type, action)(payload)
        return CLEAN
    except SchemaError as error:
        if strict:
            _refuse(error, unique_id)
    pruned = _pruner(message_type, action)(payload)
    mended = [Mended(path, f"null {_rule_of(path)}", f"{path} is null")
              for path in pruned.nulls]
    if message_type == CALL:
        mended += _mend(action, payload)
    try:
        _validator(message_type, action)(payload)
    except SchemaError as error:
        _refuse(error, unique_id)
    return Checked(pruned.unknown, mended)


def _rule_of(path: str) -> str:
    """``path`` without its array indexes (``meterValue[0].sampledValue[2].unit`` is
    ``meterValue[].sampledValue[].unit``): what is logged once per connection."""
    return re.sub(r"\[\d+\]", "[]", path)


def _mend(action: str, payload: dict[str, Any]) -> list[Mended]:
    mended: list[Mended] = []
    for rule in LENIENT.get(action, ()):
        *parents, last = rule.path.split(".")
        places: list[tuple[str, dict[str, Any]]] = [("", payload)]
        for step in parents:  # down to the objects holding the last step
            name = step.removesuffix("[]")
            places = [(f"{where}{name}[{index}].", item)
                      for where, parent in places
                      if isinstance(items := parent.get(name), list)
                      for index, item in enumerate(items) if isinstance(item, dict)]
        for where, parent in places:
            mended += _mend_one(action, rule, last, where, parent)
    return mended


def _mend_one(action: str, rule: Mend, step: str, where: str, parent: dict[str, Any]
              ) -> list[Mended]:
    """``rule``'s last ``step`` in one object (``parent``, at ``where``)."""
    name = step.removesuffix("[]")
    if name not in parent:
        return []
    check = _part_validator(action, rule.path)
    if step == name:
        reason = _refusal(check, parent[name])
        if reason is None:
            return []
        replacement = rule.replacement
        if rule.as_text:
            value = parent[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                return []
            replacement = str(value)
        if replacement is None:
            del parent[name]
        else:
            parent[name] = replacement
        return [Mended(f"{where}{name}", rule.path, f"{where}{name}{reason}",
                       replacement)]
    items = parent[name]
    if not isinstance(items, list):
        return []
    kept, mended = [], []
    for index, item in enumerate(items):
        reason = _refusal(check, item)
        if reason is None:
            kept.append(item)
        else:
            path = f"{where}{name}[{index}]"
            mended.append(Mended(path, rule.path, f"{path}{reason}"))
    fewest = _schema_at(action, rule.path.removesuffix("[]")).get("minItems", 0)
    if not mended or len(kept) < fewest:
        return []  # nothing usable would be left: the message is refused as it is
    parent[name] = kept
    return mended


def _refusal(check: Callable[[Any], Any], value: Any) -> str | None:
    """Why ``check`` refuses ``value`` (in the schema's words, after the value's
    path), or ``None``."""
    try:
        check(value)
    except SchemaError as error:
        return error.message.removeprefix("data")
    return None


def _schema_at(action: str, path: str) -> dict[str, Any]:
    """The part of ``action``'s schema at ``path`` (``[]``: an array's items)."""
    schema = _schema(CALL, action)
    for step in path.split("."):
        schema = schema["properties"][step.removesuffix("[]")]
        if step.endswith("[]"):
            schema = schema["items"]
    return schema


@cache
def _part_validator(action: str, path: str) -> Callable[[Any], Any]:
    return compile_schema(_schema_at(action, path),
                          formats={"date-time": _DATE_TIME.pattern})


def _refuse(error: SchemaError, unique_id: str) -> NoReturn:
    code = _SCHEMA_ERRORS.get(error.rule, FORMATION_VIOLATION)
    where = error.path.removeprefix("data").lstrip(".") or "payload"
    message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
    raise FrameError(code, f"{where}: {message}", unique_id) from error
