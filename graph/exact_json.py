"""JSON from clients with its numbers' digits kept: the one reader of request bodies,
``variables`` and websocket messages (``graph/http.py``, ``graph/live_ws.py``).

orjson reads a JSON number with a fraction or an exponent as a binary float, and a
``Decimal`` argument read from that float has lost the digits the client wrote: a refund
of 0.010000000000000001 EUR read as 0.01 and was paid back (review s25); a tariff price
alike. A body with such a number is read again by the standard library, each of those
numbers as an ``ExactFloat``: still a float (a ``Float`` argument reads it as before),
that keeps its text (the ``Decimal`` scalar reads that). orjson stays the judge of what
is JSON (it refuses lone surrogates and NaN) and the fast path of every body without
such a number."""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["ExactFloat", "encode_default", "loads"]


class ExactFloat(float):
    """A JSON number with a fraction or an exponent, as the float it reads as, with the
    text it was written as (``text``)."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> ExactFloat:
        value = super().__new__(cls, text)
        value.text = text
        return value


def loads(raw: bytes | str) -> Any:
    """``raw`` parsed; raises ``orjson.JSONDecodeError`` when it is not JSON."""
    parsed = orjson.loads(raw)
    if not _has_float(parsed):
        return parsed
    try:
        return json.loads(raw, parse_float=ExactFloat)
    except RecursionError:  # deeper than the standard library reads (orjson: 1024)
        text = raw if isinstance(raw, str) else raw.decode()
        raise orjson.JSONDecodeError("nested too deeply", text, 0) from None


def _has_float(value: Any) -> bool:
    """Whether ``value`` holds a float anywhere (iteratively: orjson reads nesting deeper
    than Python's recursion limit)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float):
            return True
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def encode_default(value: Any) -> Any:
    """orjson's ``default`` for what ``loads`` made: an ``ExactFloat`` written back as the
    digits it came with (orjson writes no subclass of float by itself)."""
    if isinstance(value, ExactFloat):
        return orjson.Fragment(value.text)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
