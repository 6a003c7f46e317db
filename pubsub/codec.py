"""Domain events as JSON for the wire between instances."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

from domain.events import EVENT_TYPES, DomainEvent


class UndecodableEvent(ValueError):
    """A message on our channels that is not one of our events (skipped, logged)."""


def encode(event: DomainEvent) -> bytes:
    body: dict[str, Any] = {"topic": event.topic}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        body[field.name] = {"$dt": value.isoformat()} if isinstance(value, datetime) else value
    return json.dumps(body, separators=(",", ":")).encode()


def decode(raw: bytes | str) -> DomainEvent:
    try:
        body = json.loads(raw)
        event_type = EVENT_TYPES[body.pop("topic")]
        values: dict[str, Any] = {
            k: datetime.fromisoformat(v["$dt"]) if isinstance(v, dict) and "$dt" in v else v
            for k, v in body.items()}
        return event_type(**values)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UndecodableEvent(f"not an event: {raw[:200]!r}") from exc
