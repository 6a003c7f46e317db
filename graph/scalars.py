"""Scalars of our own beyond Strawberry's (``DateTime``, ``Decimal``, ``JSON``), mapped
in the schema's config (``SCALARS``)."""

from __future__ import annotations

from typing import Any, NewType

import strawberry

#: GraphQL's ``Int`` is 32 bits by the spec: a meter register of a long-lived DC charger
#: (billions of Wh) or a large amount in minor units does not fit, and one such value
#: would fail the whole field for every viewer. Sent as a JSON number, exact to 2^53.
BigInt = NewType("BigInt", int)


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"BigInt cannot represent {value!r}")
    return value


SCALARS: dict[object, Any] = {
    BigInt: strawberry.scalar(
        name="BigInt",
        description="A whole number that may exceed 32 bits; a JSON number, exact up to "
                    "2^53.",
        serialize=_whole,
        parse_value=_whole,
    ),
}
