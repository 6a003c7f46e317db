"""Time in one place: every domain time is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    # Millisecond precision: every store round-trips it exactly and OCPP timestamps carry no more.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(value: datetime) -> datetime:
    """Normalize an aware datetime to UTC; naive datetimes are rejected, never guessed."""
    if value.tzinfo is None:
        raise ValueError("datetime without a time zone")
    return value.astimezone(UTC)
