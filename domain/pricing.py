"""What a session costs. Exact decimal arithmetic, rounded once, half up, to the minor
unit of the tariff's currency (cents, whole yen, fils)."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from domain.currencies import minor_digits
from domain.entities import Tariff


def session_cost_minor(tariff: Tariff, energy_wh: int, start: datetime, end: datetime) -> int:
    """Gross amount in minor units: (energy × price/kWh + minutes × price/min + session fee)
    plus tax."""
    energy_kwh = Decimal(max(energy_wh, 0)) / Decimal(1000)
    minutes = Decimal(max((end - start).total_seconds(), 0)) / Decimal(60)
    net = (energy_kwh * tariff.price_per_kwh + minutes * tariff.price_per_minute
           + tariff.session_fee)
    gross = net * (Decimal(1) + tariff.tax_rate)
    minor = gross.scaleb(minor_digits(tariff.currency))
    return int(minor.quantize(Decimal(1), rounding=ROUND_HALF_UP))
