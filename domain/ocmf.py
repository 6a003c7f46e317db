"""Reading an OCMF record (Open Charge Metering Format, SAFE e.V.): ``OCMF|{payload}|
{signature}``, two JSON objects. Enough of it to show what the meter signed (its readings'
values and times, the meter and gateway that signed them) beside the text, which stays
the evidence: nothing here checks the signature. A record that is not well-formed reads
as ``None``, never as an error; a field of the wrong type reads as absent."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

PREFIX = "OCMF|"

#: An OCMF time: local time with milliseconds after a comma, its UTC offset, then a space
#: and how the clock was set (U unknown, I informative, S synchronised, R relative).
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[,.](\d{1,3}))?"
                   r"([+-])(\d{2}):?(\d{2})(?: ([A-Z]))?")


@dataclass(frozen=True, slots=True)
class OcmfReading:
    """One reading (``RD``) of a record."""

    time: datetime | None  # TM, in UTC; None when it is no OCMF time
    time_status: str | None  # TM's clock flag
    transaction: str | None  # TX: B begin, C charging, E end, X exception…
    value: Decimal | None  # RV, exact as written
    unit: str | None  # RU: kWh, Wh…
    identification: str | None  # RI: OBIS code, e.g. 1-b:1.8.0
    current_type: str | None  # RT: AC, DC
    status: str | None  # ST: G good, T tampered, D deleted, R replaced…
    error_flags: str | None  # EF


@dataclass(frozen=True, slots=True)
class OcmfRecord:
    version: str | None  # FV
    gateway_id: str | None  # GI
    gateway_serial: str | None  # GS
    meter_vendor: str | None  # MV
    meter_model: str | None  # MM
    meter_serial: str | None  # MS
    meter_firmware: str | None  # MF
    pagination: str | None  # PG: T<n> transaction, F<n> fiscal
    charge_point_id: str | None  # CI
    readings: tuple[OcmfReading, ...]
    signature_algorithm: str | None  # SA
    signature: str | None  # SD


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is no JSON number")


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


def parse(text: str) -> OcmfRecord | None:
    """The record ``text`` holds; ``None`` unless it is ``OCMF|`` and two JSON objects
    separated by ``|``, the first with a list of readings (``RD``)."""
    if not text.startswith(PREFIX):
        return None
    try:
        payload, end = _DECODER.raw_decode(text, len(PREFIX))
        if text[end:end + 1] != "|":
            return None
        signature, end = _DECODER.raw_decode(text, end + 1)
    except (ValueError, RecursionError):  # not JSON, too deep, a number too long
        return None
    if end != len(text) or not isinstance(payload, dict) \
            or not isinstance(signature, dict):
        return None
    readings = payload.get("RD")
    if not isinstance(readings, list) or not all(isinstance(r, dict) for r in readings):
        return None
    return OcmfRecord(
        version=_text(payload, "FV"), gateway_id=_text(payload, "GI"),
        gateway_serial=_text(payload, "GS"), meter_vendor=_text(payload, "MV"),
        meter_model=_text(payload, "MM"), meter_serial=_text(payload, "MS"),
        meter_firmware=_text(payload, "MF"), pagination=_text(payload, "PG"),
        charge_point_id=_text(payload, "CI"),
        readings=tuple(_reading(r) for r in readings),
        signature_algorithm=_text(signature, "SA"), signature=_text(signature, "SD"))


def _reading(raw: dict[str, Any]) -> OcmfReading:
    time, status = parse_time(_text(raw, "TM"))
    value = raw.get("RV")
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        value = None
    return OcmfReading(time=time, time_status=status, transaction=_text(raw, "TX"),
                       value=Decimal(value) if value is not None else None,
                       unit=_text(raw, "RU"), identification=_text(raw, "RI"),
                       current_type=_text(raw, "RT"), status=_text(raw, "ST"),
                       error_flags=_text(raw, "EF"))


def parse_time(text: str | None) -> tuple[datetime | None, str | None]:
    """An OCMF time (``2018-07-24T13:22:04,000+0200 S``) in UTC, cut to the millisecond,
    and its clock flag; ``(None, None)`` for anything else."""
    match = _TIME.fullmatch(text) if text is not None else None
    if match is None:
        return None, None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    millis = int((match.group(7) or "0").ljust(3, "0"))
    sign = -1 if match.group(8) == "-" else 1
    offset = timedelta(hours=int(match.group(9)), minutes=int(match.group(10)))
    try:
        local = datetime(year, month, day, hour, minute, second, millis * 1000,
                         tzinfo=timezone(sign * offset))
        return local.astimezone(UTC), match.group(11)
    except (ValueError, OverflowError):  # 31 February, a day's offset, before year 1 in UTC
        return None, None


def _text(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) else None
