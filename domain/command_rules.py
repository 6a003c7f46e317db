"""What a command's payload must satisfy before it is sent to a charger.

The OCPP 1.6 schemas type the fields but bound almost none of them: a negative connector,
duration or retry count, or an id tag of 21 characters, would reach the charger and come
back as its error (or, worse, be acted on). Each field is checked here by its OCPP name,
wherever it sits in the payload, and refused as a user error naming the field's path
(``csChargingProfiles.chargingSchedule.chargingSchedulePeriod.1.startPeriod``) before
anything is stored or sent: every field at fault at once, in the payload's order (which
is the input's), as the rest of the API reports an input (``validation.Checks``). A rule
across fields judges only fields that passed their own rule, so no field is reported
twice. Lengths follow the 1.6 CiString types.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from domain import validation as v
from domain.errors import ValidationError

#: OCPP integers are 32-bit signed on most chargers.
MAX_INT = 2**31 - 1
#: A charging limit in W (or A): far above any charger, low enough to be a typo's end.
MAX_LIMIT = 10_000_000.0
#: The same per unit of a charging schedule: 10 MW, and 3,000 A (a megawatt charging
#: system's plug). 5,000,000 A is no limit anyone means.
MAX_LIMIT_PER_UNIT = {"W": MAX_LIMIT, "A": 3_000.0}
MAX_URL = 2000
TENTH = Decimal("0.1")
#: How far ahead an UpdateFirmware's ``retrieveDate`` may be: a rollout is planned for
#: days or weeks, and a charger told 2150 holds the request for ever (and a later one
#: replaces it unseen). A past one means "at once", as OCPP 1.6 reads it (5.19: not
#: before that time).
MAX_RETRIEVE_AHEAD = timedelta(days=365)
#: How long a reservation may hold a connector (ReserveNow's ``expiryDate`` from now).
MAX_RESERVATION_HOURS = 24
MAX_RESERVATION = timedelta(hours=MAX_RESERVATION_HOURS)
#: Actions whose connectorId 0 means the charge point as a whole (or "any connector").
WHOLE_STATION_ACTIONS = frozenset({"ChangeAvailability", "ReserveNow", "TriggerMessage",
                                   "SetChargingProfile", "ClearChargingProfile",
                                   "GetCompositeSchedule"})

Rule = Callable[[Any, str], Any]


def _whole(low: int, high: int = MAX_INT) -> Rule:
    def check(value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("must be a whole number", field=path, code="INVALID")
        if not low <= value <= high:
            raise ValidationError(f"must be within {low}..{high}", field=path,
                                  code="OUT_OF_RANGE")
        return value
    return check


def _text(max_len: int) -> Rule:
    def check(value: Any, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValidationError("must not be empty", field=path, code="REQUIRED")
        if len(value) > max_len:
            raise ValidationError(f"at most {max_len} characters", field=path,
                                  code="TOO_LONG")
        if not value.isprintable():
            raise ValidationError("no control characters", field=path, code="INVALID")
        return value
    return check


def _free_text(max_len: int) -> Rule:
    def check(value: Any, path: str) -> str:
        if not isinstance(value, str) or len(value) > max_len:
            raise ValidationError(f"at most {max_len} characters", field=path,
                                  code="TOO_LONG")
        return value
    return check


def _amount(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 <= value <= MAX_LIMIT:
        raise ValidationError(f"must be within 0..{v.number(MAX_LIMIT)}", field=path,
                              code="OUT_OF_RANGE")
    # The 1.6 schema's ``multipleOf: 0.1``, judged on the decimal the client wrote
    # (16.3 is not a multiple of 0.1 in binary floating point).
    if Decimal(str(value)) % TENTH:
        raise ValidationError("at most one decimal place (OCPP 1.6 limits go in steps "
                              "of 0.1)", field=path, code="INVALID")
    return value


#: What RFC 3986 never lets a URL hold as it is (it is percent-encoded: ``%20``, ``%22``):
#: whitespace, quotes and the other excluded characters.
_NOT_IN_A_URL = re.compile(r'[\s"<>\\^`{|}]')


def _url(value: Any, path: str) -> str:
    """Where the charger uploads or downloads a file: an absolute URL it can reach,
    written as RFC 3986 has it. A space or a quote left unencoded (in a password, a
    path) is refused: besides being no URL, it ended the URL where logs are read as
    free text (a charger's CALLERROR echoing the location, logged as a Python repr),
    and the rest of a password or a signature after it was written (review s25)."""
    text = _text(MAX_URL)(value, path)
    parts = urlsplit(text)
    if parts.scheme not in ("ftp", "ftps", "sftp", "http", "https") or not parts.netloc:
        raise ValidationError("an absolute ftp(s), sftp or http(s) URL", field=path,
                              code="INVALID")
    if (bad := _NOT_IN_A_URL.search(text)) is not None:
        raise ValidationError(f"{bad[0]!r} must be percent-encoded in a URL (a space is "
                              "%20, a double quote %22)", field=path, code="INVALID")
    return text


def _instant(value: Any, path: str) -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError("must be a date-time", field=path, code="INVALID")
    return v.instant(value, path)


def _tag(value: Any, path: str) -> str:
    return v.id_tag(value if isinstance(value, str) else None, path)


RULES: dict[str, Rule] = {
    "idTag": _tag,
    "parentIdTag": _tag,
    "key": _text(50),  # CiString50
    "value": _free_text(500),  # CiString500
    "vendorId": _text(255),
    "messageId": _text(50),
    "location": _url,
    "duration": _whole(0),
    "retries": _whole(0, 100),
    "retryInterval": _whole(0, 86_400),
    "reservationId": _whole(0),
    "transactionId": _whole(0),
    "listVersion": _whole(0),
    "chargingProfileId": _whole(0),
    "id": _whole(0),
    "stackLevel": _whole(0, 100),
    "startPeriod": _whole(0),
    "numberPhases": _whole(1, 3),
    "limit": _amount,
    "minChargingRate": _amount,
    "expiryDate": _instant,
    "validFrom": _instant,
    "validTo": _instant,
    "startSchedule": _instant,
    "startTime": _instant,
    "stopTime": _instant,
    "retrieveDate": _instant,
}


def check_command(action: str, payload: dict[str, Any], *, now: datetime,
                  faults: Sequence[ValidationError] = ()) -> dict[str, Any]:
    """The payload with every known field checked (id tags upper-cased, as stored). What
    fails is raised once all is checked: every field at fault, in the payload's order
    (``_place``), one ``ValidationError`` or several as ``ValidationErrors``. A field that
    failed its own rule is ``None`` in what the rules across fields read, and they skip
    it (or ask ``checks.failed``): it is not reported again through another field's rule.
    ``now``: the service's clock, which times in the payload are judged against
    (``_timely``). ``faults``: what the caller found wrong with fields of the payload
    before it was in OCPP's terms (reserveNow's end named twice), told with the rest in
    its place and counted as those fields' own rule's failure."""
    checks = v.Checks()
    checks.errors.extend(faults)
    checked = _walk(payload, "", checks)
    connector = checked.get("connectorId")
    if connector is not None:
        low = 0 if action in WHOLE_STATION_ACTIONS else 1
        checked["connectorId"] = checks(_whole(low, 100), connector, "connectorId")
    _ordered(checked, checks)
    _timely(action, checked, now, checks)
    _consistent(action, checked, checks)
    # The rules ran field by field, then across fields: a client is told the fields in
    # the order its input gives them (a form's order), as any other mutation's.
    checks.errors.sort(key=lambda error: _place(payload, error.field))
    checks.done()
    return checked


def _fault(checks: v.Checks, message: str, field: str, code: str) -> None:
    """Keeps the failure of a rule across fields with those of the fields' own rules."""
    checks.errors.append(ValidationError(message, field=field, code=code))


def _place(payload: dict[str, Any], field: str | None) -> tuple[int, ...]:
    """Where ``field`` (a dotted path) sits in ``payload``: the place of each part of its
    path among the fields (or items) of its level. A part the payload lacks (a field a
    rule requires, left out) comes after the fields given at its level."""
    place: list[int] = []
    node: Any = payload
    for part in (field or "").split("."):
        if isinstance(node, dict):
            keys = list(node)
            place.append(keys.index(part) if part in node else len(keys))
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            place.append(int(part))
            node = node[int(part)]
        else:
            place.append(0)
            node = None
    return tuple(place)


def _timely(action: str, payload: dict[str, Any], now: datetime, checks: v.Checks) -> None:
    """Times that only make sense from now on: a reservation's ``expiryDate`` is in the
    future and at most ``MAX_RESERVATION`` ahead (``_reservation_end``); a profile whose
    ``validTo`` has passed never applies (the charger accepts it, and an operator
    believes a limit is set); and a firmware ``retrieveDate`` is within
    ``MAX_RETRIEVE_AHEAD`` (a past one is "at once")."""
    if action == "ReserveNow" and not checks.failed("expiryDate"):
        checks(_reservation_end, payload.get("expiryDate"), now)
    for key in ("csChargingProfiles", "chargingProfile"):
        profile = payload.get(key)
        end = profile.get("validTo") if isinstance(profile, dict) else None
        if end is not None and end <= now and not checks.failed(f"{key}.validTo"):
            _fault(checks, "must be in the future: the profile would never apply",
                   f"{key}.validTo", "OUT_OF_RANGE")
    retrieve = payload.get("retrieveDate")
    if retrieve is not None and retrieve > now + MAX_RETRIEVE_AHEAD:
        _fault(checks, f"at most {MAX_RETRIEVE_AHEAD.days} days ahead", "retrieveDate",
               "OUT_OF_RANGE")


def _reservation_end(expiry: Any, now: datetime) -> None:
    """A ReserveNow's ``expiryDate``: given, in the future, at most ``MAX_RESERVATION``
    ahead. Judged with the payload's other fields, not once the reservation is being made: a
    request with a bad connector, tag and expiry is told all three at once."""
    if expiry is None:
        raise ValidationError("when the reservation ends", field="expiryDate",
                              code="REQUIRED")
    if not isinstance(expiry, datetime) or expiry <= now:
        raise ValidationError("must be in the future", field="expiryDate")
    if expiry > now + MAX_RESERVATION:
        raise ValidationError(f"a reservation lasts at most {MAX_RESERVATION_HOURS} h",
                              field="expiryDate", code="OUT_OF_RANGE")


def _consistent(action: str, payload: dict[str, Any], checks: v.Checks) -> None:
    """Rules OCPP 1.6 states across fields, which a charger would refuse (its compliance
    tests check that it does), or worse, read its own way."""
    if action == "RemoteStartTransaction":
        profile = payload.get("chargingProfile")
        if isinstance(profile, dict):
            # 5.11: the profile of a remote start is the transaction's own.
            if profile.get("chargingProfilePurpose") != "TxProfile":
                _fault(checks, "a remote start's profile must be a TxProfile",
                       "chargingProfile.chargingProfilePurpose", "INVALID")
            if profile.get("transactionId") is not None:
                _fault(checks, "there is no transaction yet",
                       "chargingProfile.transactionId", "INVALID")
    if action == "SetChargingProfile":
        _profile_fits_connector(payload, checks)
    for key in ("csChargingProfiles", "chargingProfile"):
        profile = payload.get(key)
        if isinstance(profile, dict) and profile.get("chargingProfileKind") == "Recurring" \
                and profile.get("recurrencyKind") is None:
            _fault(checks, "a Recurring profile needs its recurrencyKind",
                   f"{key}.recurrencyKind", "REQUIRED")
    if action == "SendLocalList":
        _local_list(payload, checks)
    if action == "ChangeConfiguration" and isinstance(payload.get("key"), str) \
            and not checks.failed("key", "value"):
        # A standard key's value by its spec type: a charger that accepts it keeps it in
        # force, and the product reads some (``SendLocalListMaxLength``).
        checks(v.configuration_value, folded_key(payload["key"]),
               str(payload.get("value", "")), "value")
    if action == "ChangeConfiguration" and is_heartbeat_key(payload.get("key")) \
            and not checks.failed("value"):
        # Accepted, it is what the station's boots are answered with from then on
        # (``Station.heartbeat_interval``): a value no boot may carry is refused here,
        # before the charger takes it, as the global setting's would be at start.
        checks(v.heartbeat_interval, payload.get("value", ""), "value")
    if action == "ChangeConfiguration" and str(payload.get("key", "")).lower() \
            == "authorizationkey":
        # The charger's Basic-auth password: changed here, our stored hash would not
        # follow, and the charger would be refused with its new key (and a change
        # whose answer is lost leaves nobody knowing which key it has).
        _fault(checks, "the charger's password is not changed by a command: set it "
               "with updateStation(password:) and on the charger itself", "key", "INVALID")


def is_heartbeat_key(key: Any) -> bool:
    """Whether a configuration key is ``HeartbeatInterval``: OCPP keys are CiStrings,
    compared without regard to case."""
    return isinstance(key, str) and folded_key(key) == "heartbeatinterval"


def folded_key(key: str) -> str:
    """A configuration key as compared: OCPP 1.6 keys are CiStrings (case-insensitive)."""
    return key.lower()


#: What makes a configuration key's value a secret: the OCPP 1.6 security whitepaper's
#: ``AuthorizationKey`` (the charger's Basic-auth password of security profiles 1 and 2;
#: write-only there, yet some chargers read it back) and any vendor key named for a
#: password, secret or credential the way vendors write them: ``MqttPwd``, ``WifiPSK`` (a
#: pre-shared key), ``ApiToken``, ``ModemPassphrase``, ``CloudApiKey``, ``TlsPrivateKey``
#: (QA s23: the first three were shown and audited in clear). Parts that name a secret
#: wherever they stand in the folded name (``BackendPassword``, ``OcppAuthorizationKey``);
#: also read as a pattern by ``log_masking``, which withholds a line naming any of them.
SECRET_KEY_PARTS = ("authorizationkey", "password", "passwd", "passphrase", "secret",
                    "apikey", "api_key", "privatekey", "private_key")
#: Words that name a secret when they are words of the key (not letters across two:
#: ``UseHttpsKeepAlive`` holds no "psk"): ``MqttPwd``, ``WifiPSK``, ``ApiToken2``,
#: ``AccessTokenValue``, ``CloudCredentials``, ``SimPinCode``; unless the key is a setting
#: about them (``SETTING_WORDS``, below).
SECRET_WORDS = frozenset({"pwd", "psk", "token", "credential", "credentials", "pin", "puk"})
#: Last words that make a key a setting about a secret, not one: ``IdTokenType``,
#: ``RfidTokenFormat``, ``TokenReaderEnabled``, ``TokenCaseInsensitive``,
#: ``PwdComplexityEnabled``, ``CredentialsRequired``, ``LockPinTimeout`` (review s23:
#: matched anywhere in the name they were hidden; matched as the last word only,
#: ``MqttPwd2`` and ``AccessTokenValue`` were shown).
SETTING_WORDS = frozenset({
    "type", "types", "format", "enabled", "enable", "disabled", "disable", "required",
    "complexity", "length", "mode", "reader", "insensitive", "sensitive", "interval",
    "timeout", "count", "supported", "allowed", "policy", "version", "status"})
#: A key's words: lower-case runs after a capital, runs of capitals (an acronym), digits.
_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def key_words(key: str) -> list[str]:
    """``key``'s words, lower case: camel case, acronyms, underscores and dashes split;
    digits are no words (``MqttPwd2`` is mqtt, pwd)."""
    return [w.lower() for w in _WORDS.findall(key) if not w.isdigit()]


#: What stands for a secret's value wherever one would be shown or logged.
HIDDEN = "[hidden]"


#: How much of a DataTransfer's ``data`` its audit entries keep (``with_data_bounded``).
AUDIT_DATA_KEPT = 1000


def with_data_bounded(request: dict[str, Any]) -> dict[str, Any]:
    """A DataTransfer request as the audit log keeps it: its ``data`` cut to its first
    ``AUDIT_DATA_KEPT`` characters when longer, with its whole length (``dataLength``)
    and the SHA-256 of its UTF-8 bytes (``dataSha256``), which support matches against
    what the charger logged; its vendorId and messageId whole. Kept whole (QA s28), a
    dataTransfer carried up to the API's 1 MB body into each of its two entries, kept
    for good, read by every operator of the station and in every audit export."""
    data = request.get("data")
    if not isinstance(data, str) or len(data) <= AUDIT_DATA_KEPT:
        return request
    return {**request, "data": data[:AUDIT_DATA_KEPT], "dataLength": len(data),
            "dataSha256": hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()}


def without_secret_value(image: dict[str, Any] | None) -> dict[str, Any] | None:
    """A COMMAND audit image (``commands.masked`` wrote it) with a ChangeConfiguration's
    value ``HIDDEN`` when its key is a secret by the rule as it is now: entries written
    before the rule named the key one (review s23: a vendor's ``MqttPwd`` changed before
    QA s23 was read back in clear by every operator of the station, for good); and an
    upload or download location without its credentials (``without_credentials``), for
    entries written before its query values were hidden (QA s25). A DataTransfer's
    ``data`` bounded (``with_data_bounded``), also in entries written whole before."""
    if image is None:
        return image
    request = image.get("request")
    if image.get("command") == "DataTransfer" and isinstance(request, dict):
        bounded = with_data_bounded(request)
        if bounded is not request:
            image = {**image, "request": bounded}
        return image
    if isinstance(request, dict) and isinstance(request.get("location"), str):
        shown = without_credentials(request["location"])
        if shown != request["location"]:
            image = {**image, "request": {**request, "location": shown}}
    if image.get("command") != "ChangeConfiguration":
        return image
    request = image.get("request")
    if not isinstance(request, dict) or "value" not in request \
            or request["value"] == HIDDEN or not is_secret_key(request.get("key")):
        return image
    return {**image, "request": {**request, "value": HIDDEN}}


def without_credentials(url: str) -> str:
    """An upload or download URL as the audit log, the station's rollout and the wire
    log keep it (one rule for all three): its user information
    (``ftp://user:password@host/``), every query value and its fragment ``HIDDEN``. A
    URL signed in its query string (an S3 presigned URL's ``X-Amz-Signature``, an Azure
    SAS token's ``sig``) is a credential as much (QA s25); the parameters' names stay,
    to tell which URL it was.

    Fail closed, by a rule simple enough to check by eye (the readings of review s25
    kept leaking: a password holding ``/``, ``?`` or ``#`` with an ``@`` in the query
    showed a signature, review s26). The authority is read as RFC 3986 reads it, up to
    the first ``/``, ``?`` or ``#`` after ``://``. Only when the URL holds exactly one
    ``@`` and it lies in that authority is what precedes it user information, hidden.
    Any ``@`` elsewhere (a password holding a delimiter, a query's e-mail), more than
    one, a host that is no ``host[:port]`` or ``[IPv6][:port]``, or no scheme: the URL
    is shown as ``scheme://[hidden]``, nothing of it read. Idempotent (``ftp://[hidden]@
    host/`` as older entries keep it is shown as it is) and linear in the URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if not url else HIDDEN
    if not _SCHEME_NAME.fullmatch(scheme):
        return HIDDEN
    hidden = f"{scheme}://{HIDDEN}"
    first = _AUTHORITY_END.search(rest)
    authority_end = first.start() if first else len(rest)
    at = rest.find("@", 0, authority_end)
    if url.count("@") != (1 if at >= 0 else 0):
        return hidden  # an '@' outside the authority, or more than one
    host = rest[at + 1:authority_end]
    if not _HOST.fullmatch(host):
        return hidden
    authority = f"{HIDDEN}@{host}" if at >= 0 else host
    base, hashmark, _ = rest[authority_end:].partition("#")
    path, mark, query = base.partition("?")
    return f"{scheme}://{authority}{path}{mark}{_query_names(query)}" \
        f"{hashmark}{HIDDEN if hashmark else ''}"


#: A URL's scheme (RFC 3986, 3.1): a letter, then letters, digits, ``+``, ``-``, ``.``.
_SCHEME_NAME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
#: A URL's host and port as its authority ends (RFC 3986, 3.2.2): a name or an IPv4
#: address (letters, digits, ``-._~`` and percent-escapes), or a bracketed IPv6 address
#: (a zone after ``%``); a port of digits.
_HOST = re.compile(r"(?:(?:[A-Za-z0-9\-._~]|%[0-9A-Fa-f]{2})+"
                   r"|\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9\-._~%]+)?\])(?::[0-9]*)?")
#: What ends a URL's authority (RFC 3986, 3.2): its path, query or fragment.
_AUTHORITY_END = re.compile(r"[/?#]")


#: A query parameter's name kept in a URL shown (``_query_names``): a short identifier.
#: Anything else may be a value sent without ``=`` (``?<token>``) and is hidden as one.
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,31}")


def _query_names(query: str) -> str:
    """``X-Amz-Credential=[hidden]&X-Amz-Signature=[hidden]``: each parameter's name
    where it looks like one, every value hidden (as request lines are logged)."""
    if not query:
        return query
    shown = []
    for parameter in query.split("&"):
        name, equals, _ = parameter.partition("=")
        shown.append(f"{name}={HIDDEN}" if equals and _PARAMETER_NAME.fullmatch(name)
                     else HIDDEN)
    return "&".join(shown)


def is_secret_key(key: Any) -> bool:
    """Whether a configuration key's value is never stored nor shown: it holds one of
    ``SECRET_KEY_PARTS``, or one of its words is one of ``SECRET_WORDS`` and its last
    is none of ``SETTING_WORDS``."""
    if not isinstance(key, str):
        return False
    folded = folded_key(key)
    if any(part in folded for part in SECRET_KEY_PARTS):
        return True
    words = key_words(key)
    return bool(words) and not SECRET_WORDS.isdisjoint(words) \
        and words[-1] not in SETTING_WORDS


def _profile_fits_connector(payload: dict[str, Any], checks: v.Checks) -> None:
    """OCPP 1.6 (3.13.2): a ChargePointMaxProfile is the station's (connector 0), a
    TxProfile a connector's transaction, and a TxDefaultProfile is for transactions to
    come, so it names none."""
    profile = payload.get("csChargingProfiles")
    if not isinstance(profile, dict):
        return
    purpose, connector = profile.get("chargingProfilePurpose"), payload.get("connectorId")
    if not checks.failed("connectorId"):
        if purpose == "TxProfile" and connector == 0:
            _fault(checks, "a TxProfile is for a connector's transaction, not connector 0",
                   "connectorId", "INVALID")
        if purpose == "ChargePointMaxProfile" and connector != 0:
            _fault(checks, "a ChargePointMaxProfile limits the whole station: connector 0",
                   "connectorId", "INVALID")
    if purpose == "TxDefaultProfile" and profile.get("transactionId") is not None:
        _fault(checks, "a TxDefaultProfile is for transactions to come, not one (use a "
               "TxProfile)", "csChargingProfiles.transactionId", "INVALID")


def _local_list(payload: dict[str, Any], checks: v.Checks) -> None:
    entries = [e for e in payload.get("localAuthorizationList") or () if isinstance(e, dict)]
    if entries and payload.get("listVersion") == 0:
        # GetLocalListVersion answers 0 for "no list": a list with tags has a version.
        _fault(checks, "a list with tags has version 1 or more (0 means no list)",
               "listVersion", "OUT_OF_RANGE")
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        # Id tags are upper-cased by now, as chargers compare them (case-insensitive):
        # two entries for one card, each with its own idTagInfo, contradict each other.
        # A tag its own rule refused (None) is no other entry's duplicate.
        tag = entry.get("idTag")
        if isinstance(tag, str) and tag in seen:
            _fault(checks, "this id tag is in the list already",
                   f"localAuthorizationList.{i}.idTag", "DUPLICATE")
        if isinstance(tag, str):
            seen.add(tag)
        # A Differential entry without idTagInfo removes the tag; a Full list has none.
        if payload.get("updateType") == "Full" and entry.get("idTagInfo") is None:
            _fault(checks, "a full list gives every tag's idTagInfo",
                   f"localAuthorizationList.{i}.idTagInfo", "REQUIRED")


def _walk(value: Any, path: str, checks: v.Checks) -> Any:
    """``value`` with each field's rule (``RULES``) applied; a field that fails it is
    kept in ``checks`` and is ``None`` here."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if isinstance(item, list) and key == "key":  # GetConfiguration: a list of keys
                out[key] = [checks(RULES["key"], k, f"{where}.{i}")
                            for i, k in enumerate(item)]
            elif key in RULES and item is not None and not isinstance(item, dict | list):
                out[key] = checks(RULES[key], item, where)
            else:
                out[key] = _walk(item, where, checks)
        return out
    if isinstance(value, list):
        return [_walk(item, f"{path}.{i}", checks) for i, item in enumerate(value)]
    return value


def _within_unit(schedule: dict[str, Any], where: str, checks: v.Checks) -> None:
    """Limits within what the schedule's unit makes believable (``MAX_LIMIT_PER_UNIT``);
    one refused by its own rule (``None`` here) is not judged again."""
    cap = MAX_LIMIT_PER_UNIT.get(schedule.get("chargingRateUnit", ""), MAX_LIMIT)
    unit = schedule.get("chargingRateUnit", "")
    limits = [(f"{where}.chargingSchedulePeriod.{i}.limit", period.get("limit"))
              for i, period in enumerate(schedule.get("chargingSchedulePeriod") or ())]
    limits.append((f"{where}.minChargingRate", schedule.get("minChargingRate")))
    for path, value in limits:
        if isinstance(value, int | float) and value > cap:
            _fault(checks, f"at most {v.number(cap)} {unit}".rstrip(), path, "OUT_OF_RANGE")


def _ordered(payload: dict[str, Any], checks: v.Checks) -> None:
    """Pairs of fields that only make sense in order, wherever a profile sits. A field
    refused by its own rule is ``None`` here, and judged against no other."""
    for profile_key in ("csChargingProfiles", "chargingProfile"):
        profile = payload.get(profile_key)
        if not isinstance(profile, dict):
            continue
        start, end = profile.get("validFrom"), profile.get("validTo")
        if start is not None and end is not None and end <= start:
            _fault(checks, "must be after validFrom", f"{profile_key}.validTo",
                   "OUT_OF_RANGE")
        schedule = profile.get("chargingSchedule") or {}
        periods = schedule.get("chargingSchedulePeriod")
        if periods is None:
            continue
        where = f"{profile_key}.chargingSchedule.chargingSchedulePeriod"
        if not periods:
            _fault(checks, "at least one period", where, "REQUIRED")
            continue
        starts = [period.get("startPeriod", 0) for period in periods]
        # The schedule starts with its first period: before it, no limit would apply.
        if starts[0] is not None and starts[0] != 0:
            _fault(checks, "the first period starts at 0", f"{where}.0.startPeriod",
                   "INVALID")
        _within_unit(schedule, f"{profile_key}.chargingSchedule", checks)
        # Each period's start is the previous one's end (OCPP 1.6 ChargingSchedulePeriod).
        for i in range(1, len(starts)):
            before, start_i = starts[i - 1], starts[i]
            if before is not None and start_i is not None and start_i <= before:
                _fault(checks, "periods must start in increasing order",
                       f"{where}.{i}.startPeriod", "INVALID")
    start, stop = payload.get("startTime"), payload.get("stopTime")
    if start is not None and stop is not None and stop <= start:
        _fault(checks, "must be after startTime", "stopTime", "OUT_OF_RANGE")
