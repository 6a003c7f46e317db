"""Domain events as JSON bytes, for the wire between ChargeGraph instances.

The envelope is the event's fields plus its ``topic``, which picks the type on decode.
Datetimes travel as ISO 8601 strings with their offset; which fields are datetimes comes
from the event class's type hints, so no marker objects are needed and a ``result`` dict
from a charger can hold any JSON at all.

Decoding is a tolerant reader: keys this version does not know are ignored, so during a
rolling upgrade an older instance still delivers events a newer one adds fields to. What
cannot become an event raises ``UndecodableEvent``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from datetime import datetime
from typing import Any

from domain.events import EVENT_TYPES, DomainEvent


class UndecodableEvent(ValueError):
    """Bytes that are not one of our events (the Redis listener logs and skips them)."""


def encode(event: DomainEvent) -> bytes:
    """``event`` as compact JSON. Raises ``ValueError`` for a naive datetime (the domain
    keeps every time timezone-aware; guessing an offset would shift it) and ``TypeError``
    for a value JSON cannot carry."""
    body: dict[str, Any] = {"topic": event.topic}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if isinstance(value, datetime):
            if value.utcoffset() is None:
                raise ValueError(f"{type(event).__name__}.{field.name} is a naive datetime")
            value = value.isoformat()
        body[field.name] = value
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def decode(raw: bytes | str) -> DomainEvent:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise UndecodableEvent(f"not JSON: {_preview(raw)}") from exc
    if not isinstance(body, dict):
        raise UndecodableEvent(f"not a JSON object: {_preview(raw)}")
    topic = body.get("topic")
    event_type = EVENT_TYPES.get(topic) if isinstance(topic, str) else None
    if event_type is None:
        raise UndecodableEvent(f"unknown topic {topic!r}: {_preview(raw)}")
    values: dict[str, Any] = {}
    for name, hint in _HINTS[event_type.topic].items():
        if name in body:
            values[name] = _value(event_type, name, hint, body[name])
    try:
        return event_type(**values)
    except TypeError as exc:  # a required field is missing
        raise UndecodableEvent(f"{topic}: {exc}") from exc


def _field_hints(event_type: type[DomainEvent]) -> dict[str, Any]:
    """Init fields and their resolved hints (``domain.events`` uses postponed annotations,
    so ``Field.type`` is only a string)."""
    hints = typing.get_type_hints(event_type)
    return {f.name: hints[f.name] for f in dataclasses.fields(event_type) if f.init}


_HINTS = {topic: _field_hints(event_type) for topic, event_type in EVENT_TYPES.items()}


def _value(event_type: type[DomainEvent], name: str, hint: Any, value: Any) -> Any:
    allowed = _allowed_types(hint)
    if value is None and type(None) in allowed:
        return None
    if datetime in allowed and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise UndecodableEvent(f"{event_type.topic}.{name}: bad datetime") from exc
        if parsed.utcoffset() is None:
            raise UndecodableEvent(f"{event_type.topic}.{name}: datetime without offset")
        return parsed
    if allowed and not _matches(value, allowed):
        raise UndecodableEvent(f"{event_type.topic}.{name}: {type(value).__name__} where "
                               f"{hint} is expected")
    return value


def _allowed_types(hint: Any) -> tuple[type, ...]:
    """The runtime types a hint admits; empty means "do not check" (``Any``)."""
    if hint is Any:
        return ()
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        parts = [_allowed_types(h) for h in typing.get_args(hint)]
        return () if any(not p for p in parts) else tuple(t for p in parts for t in p)
    origin = typing.get_origin(hint)
    if isinstance(origin, type):
        return (origin,)  # dict[str, Any] -> dict: JSON decides what is inside
    return (hint,) if isinstance(hint, type) else ()


def _matches(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # a bool is an int to isinstance; not to an event
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True  # JSON has one number type; 7200 for a float field is fine
    return isinstance(value, allowed)


def _preview(raw: bytes | str) -> str:
    return repr(raw[:200])
