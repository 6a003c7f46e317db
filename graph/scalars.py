"""Scalars of our own beyond Strawberry's (``DateTime``, ``Decimal``, ``JSON``), mapped
in the schema's config (``SCALARS``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NewType

import dateutil.parser
import strawberry
from graphql import FloatValueNode, IntValueNode, ValueNode, value_from_ast_untyped

from domain.clock import to_millisecond
from domain.wire import rfc3339
from graph.exact_json import EXACT_MAX_NUMBERS, EXACT_MAX_SIZE, ExactFloat

#: GraphQL's ``Int`` is 32 bits by the spec: a meter register of a long-lived DC charger
#: (billions of Wh) or a large amount in minor units does not fit, and one such value
#: would fail the whole field for every viewer. Sent as a JSON number, exact to 2^53.
BigInt = NewType("BigInt", int)


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"BigInt cannot represent {value!r}")
    return value


def parse_instant(value: Any) -> datetime:
    """An ISO 8601 date-time as Strawberry reads it, kept to the millisecond: every
    instant the service makes has that precision and MongoDB stores no finer, so a
    bound like ``12:00:00.000001`` would mean one thing on SQLite and another there."""
    if not isinstance(value, str):
        raise ValueError(f"DateTime cannot represent {value!r}: expected a string")
    try:
        parsed = dateutil.parser.isoparse(value)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"DateTime cannot represent {value!r}: {exc}") from None
    # In UTC, as every domain time is (a naive one is left for validation to refuse
    # with its field). Year 1 at +14:00 is before the first instant there is: an
    # OverflowError escaped as an internal error (QA s18).
    try:
        return to_millisecond(parsed if parsed.tzinfo is None else parsed.astimezone(UTC))
    except OverflowError:
        raise ValueError(f"DateTime cannot represent {value!r}: out of the range of "
                         "dates") from None


#: A plain ASCII decimal. ``decimal.Decimal`` also reads "1_000", other scripts' digits
#: and "NaN"; a price written so is far more likely a mistake than meant.
_PLAIN_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"Decimal cannot represent {value!r}")
    # A JSON number with a fraction arrives with the digits it was written with
    # (``graph/exact_json.py``): ``str`` of its float kept 17 significant digits, and a
    # refund of 0.010000000000000001 EUR was paid back as 0.01 (review s25). A plain
    # float is one whose digits are gone (in a message too large to read them again,
    # review s25): refused, not rounded to whatever the float reads as.
    if isinstance(value, float) and not isinstance(value, ExactFloat):
        raise ValueError(f"Decimal cannot represent {value!r} exactly: a JSON number's "
                         "digits are kept only in a small request's variables; send the "
                         f'amount as a string ("{value!r}")')
    text = (value.text if isinstance(value, ExactFloat) else str(value)).strip()
    if _PLAIN_DECIMAL.fullmatch(text) is None:
        raise ValueError(f"Decimal cannot represent {value!r}: write a plain decimal "
                         "number such as 0.35")
    try:
        return Decimal(text)
    except ArithmeticError:  # decimal.InvalidOperation: an exponent beyond its range
        raise ValueError(f"Decimal cannot represent {value!r}: out of range") from None


def _decimal_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> Decimal:
    """A number written in the query, read from its own text: graphql-core's default
    reads it as a float first (review s25, as for a JSON number)."""
    if isinstance(node, FloatValueNode | IntValueNode):
        return _decimal(node.value)
    return _decimal(value_from_ast_untyped(node, variables))


SCALARS: dict[object, Any] = {
    Decimal: strawberry.scalar(
        name="Decimal",
        description="An exact decimal number (prices, rates, amounts in major units), "
                    "returned as a string (\"0.35\"): an amount with its currency's "
                    "minor digits (\"12.50\" EUR, \"100\" JPY), a price with them at "
                    "least and more only where it has them (\"0.0005\"), a rate "
                    "without trailing zeros (\"0.19\"), a signed meter reading "
                    "(`OcmfReading.value`) exactly as the meter signed it, every digit "
                    "(the signature covers them). Send it as a string, written "
                    "plainly (no `_`, no NaN): read exactly as written, every digit. A "
                    "number is read so too when written in the query, or in the "
                    "variables of a request (or websocket message) of at most "
                    f"{EXACT_MAX_SIZE // 1024} KiB holding at most {EXACT_MAX_NUMBERS} "
                    "numbers with a fraction or an exponent; beyond that a JSON number's "
                    "digits are not kept, and it is refused rather than rounded.",
        serialize=str,
        parse_value=_decimal,
        parse_literal=_decimal_literal,
    ),
    datetime: strawberry.scalar(
        name="DateTime",
        description="An instant, ISO 8601 in UTC to the millisecond "
                    "(2026-11-24T15:04:05.123Z). One sent in needs an offset (Z or +01:00) "
                    "and is read in UTC.",
        # One format for every instant (QA s17: six digits, none when the milliseconds
        # were 0, and "+00:00" while the CSV export wrote ".000Z").
        serialize=rfc3339,
        parse_value=parse_instant,
    ),
    BigInt: strawberry.scalar(
        name="BigInt",
        description="A whole number that may exceed 32 bits; a JSON number, exact up to "
                    "2^53.",
        serialize=_whole,
        parse_value=_whole,
    ),
}
