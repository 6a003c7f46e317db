"""What a session costs. Exact decimal arithmetic, rounded once, half up, to the minor
unit of the tariff's currency (cents, whole yen, fils).

One computation (``cost_breakdown``) gives the total and its parts: the total billed
(``session_cost_minor``, stored as the session's ``cost_minor``) is its ``gross``, so a
receipt's lines always add up to what was billed, rounding included. The tax is the
rate applied to the net shown, rounded once (EU VAT practice: VAT on the invoice's net
total), and the gross their sum (QA s31: the gross used to be the exact total with tax
rounded once and the tax what was left, so 19 % of a net of 0.54 read 0.11).

A completed session's receipt (``receipt``) is that computation again over what it was
billed for, shown only when it gives exactly the bill; a session billed before the
minutes were counted exactly (638a0ed) may have been billed one minor unit off the
exact price, and its receipt is then its bill's computation of that time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from domain.apportion import largest_remainder
from domain.clock import exact_seconds
from domain.currencies import minor_digits
from domain.entities import Session, Tariff
from domain.tariff_bands import attributed_wh, bands_of


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """A session's price in minor units of ``currency``: ``energy + time + fee + idle
    == net`` and ``net + tax == gross``; ``gross`` is what is billed."""

    energy: int
    time: int
    fee: int
    idle: int
    net: int
    tax: int
    gross: int
    currency: str


def cost_breakdown(tariff: Tariff, energy_wh: int, start: datetime, end: datetime,
                   idle: timedelta = timedelta(0), band_wh: Sequence[int] | None = None
                   ) -> CostBreakdown:
    """(energy × price/kWh + minutes × price/min + session fee + idle fee) plus tax, and
    its parts (``idle``: how long the connector sat idle, ``idle_fee``; ``band_wh``: the
    energy split by the tariff's time-of-day bands, ``energy_amount``). The net is the
    exact net rounded half up to the currency's minor unit; the tax is that net times
    the tax rate, rounded half up once; the gross is net + tax. The net is split into
    its parts by largest remainder: each part is its exact amount rounded down or up
    (never by more than one minor unit), chosen so that they add up."""
    return _breakdown(tariff, energy_wh, start, _minutes(end - start), idle, band_wh)


def _breakdown(tariff: Tariff, energy_wh: int, start: datetime, minutes: Decimal,
               idle: timedelta, band_wh: Sequence[int] | None,
               taxed_total: bool = False) -> CostBreakdown:
    """``cost_breakdown`` for a duration of ``minutes``; ``taxed_total``: as bills
    before session 31 were priced (the gross the exact total with tax rounded once, the
    tax gross − net), for their receipts only (``receipt``)."""
    digits = minor_digits(tariff.currency)
    exact = (energy_amount(tariff, energy_wh, start, band_wh),
             minutes * tariff.price_per_minute,
             tariff.session_fee, idle_fee(tariff, idle))
    net_exact = sum(exact, Decimal(0))
    net = _rounded(net_exact, digits)
    # The rate on the net as shown (in minor units), not on the exact one.
    tax = _rounded(net_exact * (Decimal(1) + tariff.tax_rate), digits) - net \
        if taxed_total else _rounded(Decimal(net) * tariff.tax_rate, 0)
    # The idle fee last: of equal fractions the first gets the unit left over, as it
    # did before there was an idle line (the same lines for the same sessions).
    energy, time, fee, idle_line = largest_remainder(
        [part.scaleb(digits) for part in exact], net)
    return CostBreakdown(energy=energy, time=time, fee=fee, idle=idle_line, net=net,
                         tax=tax, gross=net + tax, currency=tariff.currency)


def energy_amount(tariff: Tariff, energy_wh: int, start: datetime,
                  band_wh: Sequence[int] | None = None) -> Decimal:
    """The exact (net) price of the energy: kWh × price per kWh; with time-of-day bands,
    the Wh of each band (``band_wh``, ``tariff_bands.attributed_wh``'s split; without
    it, all at the price in force at ``start``) at its price, the rest at the base
    price. A split that does not fit the tariff's bands (another version's) counts as
    none."""
    if not tariff.energy_bands:
        return Decimal(max(energy_wh, 0)) / Decimal(1000) * tariff.price_per_kwh
    prices = [band.price_per_kwh for band in bands_of(tariff)] + [tariff.price_per_kwh]
    if band_wh is None or len(band_wh) != len(prices):
        band_wh = attributed_wh(tariff, start, energy_wh, ())
    return sum((Decimal(wh) / Decimal(1000) * price
                for wh, price in zip(band_wh, prices, strict=True)), Decimal(0))


def idle_fee(tariff: Tariff, idle: timedelta) -> Decimal:
    """The exact (net) idle fee for ``idle`` time: the minutes beyond the tariff's grace
    (counted over the whole session, not per stretch: a car that flips between charging
    and SuspendedEV at the top of its battery gets one grace, not one per flip) times
    the idle price, at most the cap. Counted in whole seconds (``billed_idle_seconds``),
    so that a running estimate and the bill price the same idle time alike."""
    idle_minutes = Decimal(billed_idle_seconds(idle)) / Decimal(60)
    billed = max(idle_minutes - tariff.idle_grace_minutes, Decimal(0))
    amount = billed * tariff.idle_price_per_minute
    return amount if tariff.idle_fee_cap is None else min(amount, tariff.idle_fee_cap)


def billed_idle_seconds(idle: timedelta) -> int:
    """The whole seconds of idle time billed (and kept on a closed session): a fraction
    of a second is the driver's."""
    return max(int(idle.total_seconds()), 0)


def session_cost_minor(tariff: Tariff, energy_wh: int, start: datetime, end: datetime,
                       idle: timedelta = timedelta(0), band_wh: Sequence[int] | None = None
                       ) -> int:
    """Gross amount in minor units: (energy × price/kWh + minutes × price/min + session fee
    + idle fee) plus tax."""
    return cost_breakdown(tariff, energy_wh, start, end, idle, band_wh).gross


def receipt(tariff: Tariff, session: Session) -> CostBreakdown | None:
    """The lines of a completed session's bill (its ``cost_minor``): ``tariff``'s
    pricing of what it was billed for (its energy, split by band as measured at its
    close, its span, its idle seconds), or ``None`` when they do not add up to exactly
    what it was billed in its currency (the tariff may have changed since, a version an
    admin dated back: there is no true split to show).

    A session billed before its minutes were counted exactly (638a0ed) was priced from
    its duration as a float, which fell short of a half: 90.3 s at 1.00 EUR/min was
    billed 1.50, and is 1.51 exactly. When the exact pricing is not the bill, the float
    one is tried too and shown when it is (``_float_minutes``, kept for those receipts
    only): its lines add up to what was billed, and are the lines it was billed by. New
    bills are never priced by it."""
    if session.cost_minor is None or session.end_time is None:
        return None
    span = session.end_time - session.start_time
    # Today's pricing, then the earlier ones: a bill is never priced again, so one
    # billed before session 31 (its tax what the rounded total left) shows the lines it
    # was billed by, and one billed before 638a0ed those of its float minutes.
    for minutes, taxed_total in ((_minutes(span), False), (_minutes(span), True),
                                 (_float_minutes(span), True)):
        lines = _breakdown(tariff, session.energy_wh, session.start_time, minutes,
                           timedelta(seconds=session.idle_seconds or 0),
                           session.band_energy_wh, taxed_total)
        if lines.gross == session.cost_minor and lines.currency == session.currency:
            return lines
    return None


def _minutes(span: timedelta) -> Decimal:
    return max(exact_seconds(span), Decimal(0)) / Decimal(60)


def _float_minutes(span: timedelta) -> Decimal:
    """``span``'s minutes as bills before 638a0ed counted them: from its seconds as a
    float (90.3 s read 90.29999999999999715…). For the receipts of those bills only."""
    return Decimal(max(span.total_seconds(), 0)) / Decimal(60)


def _rounded(amount: Decimal, digits: int) -> int:
    return int(amount.scaleb(digits).quantize(Decimal(1), rounding=ROUND_HALF_UP))

