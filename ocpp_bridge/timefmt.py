"""Timestamps from chargers (times going out: ``domain.wire.rfc3339``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from domain.clock import to_millisecond
from ocpp_bridge.frames import (
    PROPERTY_CONSTRAINT_VIOLATION,
    TYPE_CONSTRAINT_VIOLATION,
    FrameError,
)

#: The seconds of a leap second in an RFC 3339 time ("23:59:60Z").
_LEAP_SECOND = re.compile(r"(?<=[Tt ]\d\d:\d\d:)60(?=[.,Zz+-]|$)")


def parse_timestamp(value: str, field: str, unique_id: str) -> datetime:
    """A charger's timestamp. Many chargers omit the zone; OCPP times are UTC, so a
    zoneless one is read as UTC rather than refused. A leap second (RFC 3339 allows
    ``23:59:60``; Python's datetime has none) is the last instant of its minute."""
    if isinstance(value, str) and _LEAP_SECOND.search(value):
        leap = parse_timestamp(_LEAP_SECOND.sub("59", value, count=1), field, unique_id)
        return leap.replace(microsecond=999_000)
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        try:  # RFC 3339 allows a lower-case "t" and "z"; fromisoformat does not
            parsed = datetime.fromisoformat(value.strip().upper())
        except ValueError as exc:
            raise FrameError(TYPE_CONSTRAINT_VIOLATION,
                             f"{field}: not an RFC 3339 date-time", unique_id) from exc
    except AttributeError as exc:
        raise FrameError(TYPE_CONSTRAINT_VIOLATION, f"{field}: not an RFC 3339 date-time",
                         unique_id) from exc
    parsed = to_millisecond(parsed)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00: before year 1 in UTC
        raise FrameError(PROPERTY_CONSTRAINT_VIOLATION, f"{field}: out of range",
                         unique_id) from exc
