"""ISO 4217 currencies in circulation and the digits of their minor unit.

A tariff's currency decides how a cost is rounded and what ``amountMinor`` counts: cents
for EUR, whole yen for JPY, fils (1/1000) for KWD. Funds and precious-metal codes (XAU,
XDR, ...) are not money a driver pays and are refused.
"""

from __future__ import annotations

from decimal import Decimal

_ZERO = ("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF")
_THREE = ("BHD IQD JOD KWD LYD OMR TND")
_FOUR = ("CLF UYW")
_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP "
    "BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP "
    "GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT "
    "LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN "
    "NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP "
    "SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VED "
    "VES WST XCD XCG YER ZAR ZMW ZWG"
)

#: Code → digits after the decimal point of its minor unit.
MINOR_DIGITS: dict[str, int] = {
    code: digits
    for codes, digits in ((_TWO, 2), (_ZERO, 0), (_THREE, 3), (_FOUR, 4))
    for code in codes.split()
}


def minor_digits(code: str) -> int:
    """Digits of the minor unit; 2 for a code not in the table (stored before currencies
    were checked), the most common case."""
    return MINOR_DIGITS.get(code, 2)


def major_units(amount_minor: int, code: str | None) -> Decimal:
    """12.34 for 1234 EUR cents; 1234 for 1234 JPY."""
    return Decimal(amount_minor).scaleb(-minor_digits(code or ""))


def price_shown(price: Decimal, code: str | None) -> Decimal:
    """A price as the API writes it: the currency's minor digits at least, as every
    amount (``major_units``), and more only where the price has them: 0.35 EUR whether
    set as "0.35" or "0.3500", 2.00 for "2", 0.0005 kept. The price itself is stored as
    given; only its trailing zeros differ (QA s26: "0.5900" beside a fee of "2" and an
    amount of "2.00", as typed)."""
    digits = minor_digits(code or "")
    trimmed = price.normalize()
    if trimmed.as_tuple().exponent > -digits:  # type: ignore[operator]
        return price.quantize(Decimal(1).scaleb(-digits))
    return trimmed


def rate_shown(rate: Decimal) -> Decimal:
    """A rate (a tax rate, 0 to 1) without trailing zeros: 0.19 whether set as "0.190"
    or "0.19", 0 for "0.00"."""
    trimmed = rate.normalize()
    return trimmed if trimmed.as_tuple().exponent <= 0 else trimmed.quantize(Decimal(1))  # type: ignore[operator]


def finest_amount(code: str | None) -> str:
    """What an amount in ``code`` may be written with, as a refusal of a finer one
    says it: "at most 2 decimal places for EUR", "no decimal places for JPY" (QA s32:
    "whole EUR minor units" asked a driver to know what a minor unit is)."""
    digits = minor_digits(code or "")
    places = f"at most {digits} decimal places" if digits else "no decimal places"
    return f"{places} for {code}" if code else places


def minor_units(amount: Decimal, code: str | None) -> int | None:
    """1234 for 12.34 EUR; None when ``amount`` is finer than the currency's minor unit
    (12.345 EUR) or not a finite number."""
    if not amount.is_finite():
        return None
    digits = minor_digits(code or "")
    whole = amount.scaleb(digits).to_integral_value()
    # Checked against ``amount`` itself (comparisons are exact): ``scaleb`` rounds to
    # the context's 28 digits, so 0.0099999999999999999999999999999 EUR scaled read as
    # a whole cent, and a refund of it paid back 0.01.
    if whole.scaleb(-digits) != amount:
        return None
    return int(whole)
