"""What a session costs. Exact decimal arithmetic, rounded once, half up, to the minor
unit of the tariff's currency (cents, whole yen, fils).

One computation (``cost_breakdown``) gives the total and its parts: the total billed
(``session_cost_minor``, stored as the session's ``cost_minor``) is its ``gross``, so a
receipt's lines always add up to what was billed, rounding included."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

from domain.currencies import minor_digits
from domain.entities import Tariff


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """A session's price in minor units of ``currency``: ``energy + time + fee == net``
    and ``net + tax == gross``; ``gross`` is what is billed."""

    energy: int
    time: int
    fee: int
    net: int
    tax: int
    gross: int
    currency: str


def cost_breakdown(tariff: Tariff, energy_wh: int, start: datetime, end: datetime
                   ) -> CostBreakdown:
    """(energy × price/kWh + minutes × price/min + session fee) plus tax, and its parts.
    The gross is the exact total with tax, rounded once (as it always was billed); the
    net is the exact net rounded the same way, the tax what is left. The net is split
    into its three parts by largest remainder: each part is its exact amount rounded
    down or up (never by more than one minor unit), chosen so that they add up."""
    digits = minor_digits(tariff.currency)
    energy_kwh = Decimal(max(energy_wh, 0)) / Decimal(1000)
    minutes = Decimal(max((end - start).total_seconds(), 0)) / Decimal(60)
    exact = (energy_kwh * tariff.price_per_kwh, minutes * tariff.price_per_minute,
             tariff.session_fee)
    net_exact = sum(exact, Decimal(0))
    gross = _rounded(net_exact * (Decimal(1) + tariff.tax_rate), digits)
    net = _rounded(net_exact, digits)
    energy, time, fee = _split(net, [part.scaleb(digits) for part in exact])
    return CostBreakdown(energy=energy, time=time, fee=fee, net=net, tax=gross - net,
                         gross=gross, currency=tariff.currency)


def session_cost_minor(tariff: Tariff, energy_wh: int, start: datetime, end: datetime) -> int:
    """Gross amount in minor units: (energy × price/kWh + minutes × price/min + session fee)
    plus tax."""
    return cost_breakdown(tariff, energy_wh, start, end).gross


def _rounded(amount: Decimal, digits: int) -> int:
    return int(amount.scaleb(digits).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _split(total: int, exact: list[Decimal]) -> list[int]:
    """Whole parts of ``exact`` (non-negative, in minor units) adding up to ``total``, the
    rounded sum of them: each rounded down, then the units left over go one each to the
    parts with the largest fractions (the first of equal ones). ``total`` exceeds the sum
    of the parts rounded down by less than their number plus one, so no part gets more
    than one unit (and a rounded-down sum never exceeds ``total``)."""
    floors = [int(part.quantize(Decimal(1), rounding=ROUND_FLOOR)) for part in exact]
    left = total - sum(floors)
    by_fraction = sorted(range(len(exact)), key=lambda i: -(exact[i] - floors[i]))
    for i in by_fraction[:left]:
        floors[i] += 1
    return floors
