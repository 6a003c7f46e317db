"""JSON from clients with the digits of its numbers in ``variables`` kept: the one reader
of request bodies, ``variables`` and websocket messages (``graph/http.py``,
``graph/live_ws.py``).

orjson reads a JSON number with a fraction or an exponent as a binary float, and a
``Decimal`` argument read from that float has lost the digits the client wrote: a refund
of 0.010000000000000001 EUR read as 0.01 and was paid back (review s25); a tariff price
alike. So the part of a message that holds arguments (``exact``: a request's
``variables``, a websocket message's ``payload.variables``) is read again by the
standard library, each such number as an ``ExactFloat``: still a float (a ``Float``
argument reads it as before), that keeps its text (the ``Decimal`` scalar reads that).

That second reading costs some 30 times orjson's per number, and it runs before any
authentication (and before a websocket's ``connection_init``): a 1 MB body of floats
held the event loop ~250 ms instead of 8 ms (review s25). It is bounded: only a message
of at most ``EXACT_MAX_SIZE`` characters whose part holds at most ``EXACT_MAX_NUMBERS``
such numbers is read again, and only that part (the rest is skipped by the standard
library's C reader, floats as plain floats). Beyond the bound the numbers stay plain
floats, which the ``Decimal`` scalar refuses (send the amount as a string) rather than
round. orjson stays the judge of what is JSON (it refuses lone surrogates and NaN) and
the fast path of every message: when the second reading fails (the standard library
reads less deep nesting than orjson's 1024 levels), the part keeps orjson's reading."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["BODY", "EXACT_MAX_NUMBERS", "EXACT_MAX_SIZE", "MESSAGE", "NOTHING",
           "VARIABLES", "ExactFloat", "encode_default", "loads"]

#: The largest message (in characters, or bytes as received) whose numbers are read
#: exactly: a mutation's variables are far smaller; ``MAX_BODY`` is 1 MB.
EXACT_MAX_SIZE = 64 * 1024
#: The most numbers with a fraction or an exponent one part may hold to be read exactly.
EXACT_MAX_NUMBERS = 256

#: Where the arguments are, as paths of keys (``()``: the whole value).
Paths = tuple[tuple[str, ...], ...]
BODY: Paths = (("variables",),)  # an HTTP request's body
MESSAGE: Paths = (("payload", "variables"),)  # a websocket message (either protocol)
VARIABLES: Paths = ((),)  # ``variables`` sent as a JSON-encoded string (a GET's)
NOTHING: Paths = ()  # ``extensions``: no argument in it


class ExactFloat(float):
    """A JSON number with a fraction or an exponent, as the float it reads as, with the
    text it was written as (``text``)."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> ExactFloat:
        value = super().__new__(cls, text)
        value.text = text
        return value


_SKIP = json.JSONDecoder()  # the C reader, floats plain: to step over other members
_EXACT = json.JSONDecoder(parse_float=ExactFloat)
_BLANK = re.compile(r"[ \t\n\r]*")
_MISSING = object()


def loads(raw: bytes | str, *, exact: Paths) -> Any:
    """``raw`` parsed; raises ``orjson.JSONDecodeError`` when it is not JSON. The parts at
    ``exact`` keep their numbers' text (``ExactFloat``) within the bounds above."""
    parsed = orjson.loads(raw)
    if not exact or len(raw) > EXACT_MAX_SIZE:
        return parsed
    text: str | None = None
    for path in exact:
        part = _at(parsed, path)
        if part is _MISSING or not 0 < _count_floats(part) <= EXACT_MAX_NUMBERS:
            continue
        if text is None:
            text = raw if isinstance(raw, str) else raw.decode()
        try:
            exact_part = _read_exactly(text, path)
        except (RecursionError, ValueError):  # deeper than the standard library reads
            continue
        if exact_part is _MISSING:
            continue
        if not path:
            return exact_part
        _at(parsed, path[:-1])[path[-1]] = exact_part
    return parsed


def _at(value: Any, path: tuple[str, ...]) -> Any:
    """What is at ``path`` in ``value`` (each step an object's member), or ``_MISSING``."""
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _count_floats(value: Any) -> int:
    """How many floats ``value`` (as orjson reads it) holds, counted to one past
    ``EXACT_MAX_NUMBERS`` (iteratively: orjson reads nesting deeper than Python's
    recursion limit)."""
    if type(value) is not dict and type(value) is not list:
        return int(type(value) is float)
    count = 0
    pending = [value]
    while pending:
        item = pending.pop()
        for member in item.values() if type(item) is dict else item:
            kind = type(member)
            if kind is float:
                count += 1
                if count > EXACT_MAX_NUMBERS:
                    return count
            elif kind is dict or kind is list:
                pending.append(member)
    return count


def _read_exactly(text: str, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in the JSON ``text``, read by the standard library with each
    number with a fraction or an exponent an ``ExactFloat``; ``_MISSING`` if absent."""
    start = 0
    for key in path:
        found = _member(text, start, key)
        if found is None:
            return _MISSING
        start = found
    return _EXACT.raw_decode(text, _blank(text, start))[0]


def _member(text: str, start: int, key: str) -> int | None:
    """Where the value of the member ``key`` of the object at ``start`` begins (its last
    one, as orjson keeps), or None; the other members are stepped over, not kept."""
    at = _blank(text, start)
    if text[at:at + 1] != "{":
        return None
    at = _blank(text, at + 1)
    if text[at:at + 1] == "}":
        return None
    found = None
    while True:
        name, at = _SKIP.raw_decode(text, at)
        at = _blank(text, at)
        if text[at:at + 1] != ":":
            raise ValueError("expected ':'")
        at = _blank(text, at + 1)
        if name == key:
            found = at
        at = _blank(text, _SKIP.raw_decode(text, at)[1])
        if text[at:at + 1] == "}":
            return found
        if text[at:at + 1] != ",":
            raise ValueError("expected ',' or '}'")
        at = _blank(text, at + 1)


def _blank(text: str, at: int) -> int:
    """Where the JSON whitespace from ``at`` ends."""
    blanks = _BLANK.match(text, at)
    assert blanks is not None  # it matches the empty string too
    return blanks.end()


def encode_default(value: Any) -> Any:
    """orjson's ``default`` for what ``loads`` made: an ``ExactFloat`` written back as the
    digits it came with (orjson writes no subclass of float by itself)."""
    if isinstance(value, ExactFloat):
        return orjson.Fragment(value.text)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
