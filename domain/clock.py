"""Time in one place: every domain time is timezone-aware UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal


def utcnow() -> datetime:
    # Millisecond precision: every store round-trips it exactly and OCPP timestamps carry no
    # more. From integer milliseconds: a third of the cost of now() + replace(), and exact
    # (a float's error at this magnitude is far below the microsecond it is rounded to).
    return datetime.fromtimestamp(time.time_ns() // 1_000_000 / 1000, UTC)


def to_millisecond(value: datetime) -> datetime:
    """``value`` cut to the millisecond: the precision every instant of the service has
    (and the most MongoDB stores), applied where times come in, at both doors."""
    if value.microsecond % 1000:
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    return value


def as_utc(value: datetime) -> datetime:
    """Normalize an aware datetime to UTC; naive datetimes are rejected, never guessed."""
    if value.tzinfo is None:
        raise ValueError("datetime without a time zone")
    return value.astimezone(UTC)



def exact_seconds(span: timedelta) -> Decimal:
    """``span`` in seconds, exactly: ``timedelta.total_seconds()`` is a float, 90.3 s
    read 90.29999999999999715…, and a price of it rounded half up fell short of a half
    (QA s27: 90.3 s at 1.00 EUR/min billed 1.50, not 1.51)."""
    return Decimal(span.days * 86_400 + span.seconds) + Decimal(span.microseconds).scaleb(-6)
