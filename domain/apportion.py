"""Splitting a whole number into whole parts in proportion: the largest-remainder rule,
shared by a bill's lines (``pricing``) and a session's energy by price band
(``tariff_bands``), so that a stored split is priced again exactly alike."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_FLOOR, Decimal


def largest_remainder(exact: Sequence[Decimal], total: int) -> list[int]:
    """Whole parts of ``exact`` (non-negative) adding up to ``total``, the rounded sum of
    them: each rounded down, then the units left over go one each to the parts with the
    largest fractions (the first of equal ones). ``total`` exceeds the sum of the parts
    rounded down by less than their number plus one, so no part gets more than one unit
    (and a rounded-down sum never exceeds ``total``)."""
    floors = [int(part.quantize(Decimal(1), rounding=ROUND_FLOOR)) for part in exact]
    left = total - sum(floors)
    by_fraction = sorted(range(len(exact)), key=lambda i: -(exact[i] - floors[i]))
    for i in by_fraction[:left]:
        floors[i] += 1
    return floors
