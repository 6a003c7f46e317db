"""Domain values as OCPP JSON: what goes out to chargers, directly or relayed through
another instance (``pubsub/command_relay.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def rfc3339(value: datetime) -> str:
    """``2026-11-24T15:04:05.123Z``: UTC, milliseconds, explicit zone."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wire_json(value: Any) -> Any:
    """``value`` as OCPP JSON: times as ``rfc3339``, decimals as numbers (the ``ocpp``
    package parses a charger's JSON floats into ``Decimal``), null members left out (OCPP
    leaves optional fields out rather than sending null)."""
    if isinstance(value, dict):
        return {k: wire_json(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [wire_json(v) for v in value]
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, Decimal):
        return float(value)
    return value
