import dataclasses
import random
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from domain.clock import exact_seconds
from domain.currencies import minor_digits
from domain.entities import Tariff
from domain.pricing import CostBreakdown, cost_breakdown, session_cost_minor

START = datetime(2026, 1, 1, 22, 0, tzinfo=UTC)


def test_energy_time_fee_and_tax() -> None:
    tariff = Tariff(company_id="c" * 24, price_per_kwh=Decimal("0.39"), currency="EUR",
                    price_per_minute=Decimal("0.01"), session_fee=Decimal("0.50"),
                    tax_rate=Decimal("0.19"))
    # 12.345 kWh * 0.39 = 4.81455; 90 min * 0.01 = 0.90; + 0.50 = 6.21455 → 6.21 net;
    # tax 19 % of 6.21 = 1.1799 → 1.18; 7.39 (the exact total with tax, 7.3953145, was 7.40)
    assert session_cost_minor(tariff, 12_345, START, START + timedelta(minutes=90)) == 739


def test_rounding_half_up_and_no_negative_energy() -> None:
    tariff = Tariff(company_id="c" * 24, price_per_kwh=Decimal("0.25"), currency="EUR")
    assert session_cost_minor(tariff, 10, START, START) == 0  # 0.0025 EUR → 0 cents
    assert session_cost_minor(tariff, 20, START, START) == 1  # 0.005 EUR → 1 cent (half up)
    assert session_cost_minor(tariff, -500, START, START) == 0


def test_rounded_to_the_minor_unit_of_the_currency() -> None:
    def cost(currency: str) -> int:
        tariff = Tariff(company_id="c" * 24, price_per_kwh=Decimal("45.5"),
                        currency=currency)
        return session_cost_minor(tariff, 10_123, START, START)  # 460.5965 in major units
    assert cost("EUR") == 46_060  # cents
    assert cost("JPY") == 461  # whole yen
    assert cost("KWD") == 460_597  # fils


def test_major_units_follow_the_currency() -> None:
    from domain.currencies import major_units
    assert major_units(1234, "EUR") == Decimal("12.34")
    assert major_units(1234, "JPY") == Decimal(1234)
    assert major_units(1234, "BHD") == Decimal("1.234")
    assert major_units(1234, None) == Decimal("12.34")


def test_minor_units_are_exact_however_many_digits_an_amount_has() -> None:
    """What a refund's ``amount`` is read as: a whole count of the currency's minor unit,
    or nothing. Past 28 significant digits (the decimal context's precision) the scaled
    amount was rounded before it was checked: a refund of
    0.0099999999999999999999999999999 EUR paid back 0.01, and one of
    1.0000000000000000000000000001 JPY 1 yen, while 0.005 EUR was refused."""
    from domain.currencies import minor_units
    assert minor_units(Decimal("12.34"), "EUR") == 1234
    assert minor_units(Decimal("12.340000000000000000000000000000"), "EUR") == 1234
    assert minor_units(Decimal("1E+2"), "JPY") == 100
    assert minor_units(Decimal("1.234"), "KWD") == 1234
    assert minor_units(Decimal("-0.01"), "EUR") == -1
    for amount, code in (("0.005", "EUR"), ("0.0099999999999999999999999999999", "EUR"),
                         ("1.0000000000000000000000000001", "EUR"),
                         ("1.0000000000000000000000000001", "JPY"),
                         ("0.00100000000000000000000000001", "KWD"),
                         ("Infinity", "EUR"), ("NaN", "EUR")):
        assert minor_units(Decimal(amount), code) is None, (amount, code)


def test_the_finest_amount_is_said_in_the_currency_s_decimal_places() -> None:
    """How a refusal of an amount finer than the minor unit says what is allowed."""
    from domain.currencies import finest_amount
    assert finest_amount("EUR") == "at most 2 decimal places for EUR"
    assert finest_amount("KWD") == "at most 3 decimal places for KWD"
    assert finest_amount("JPY") == "no decimal places for JPY"


def _tariff(kwh: str, minute: str = "0", fee: str = "0", tax: str = "0",
            currency: str = "EUR") -> Tariff:
    return Tariff(company_id="c" * 24, price_per_kwh=Decimal(kwh), currency=currency,
                  price_per_minute=Decimal(minute), session_fee=Decimal(fee),
                  tax_rate=Decimal(tax))


def _half_up(amount: Decimal) -> int:
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _adds_up(b: CostBreakdown) -> None:
    assert b.energy + b.time + b.fee == b.net
    assert b.net + b.tax == b.gross
    assert min(b.energy, b.time, b.fee, b.net, b.tax) >= 0


def test_breakdown_of_the_example_adds_up_to_the_billed_total() -> None:
    b = cost_breakdown(_tariff("0.39", "0.01", "0.50", "0.19"), 12_345, START,
                       START + timedelta(minutes=90))
    # 4.81455 → 481, 0.90 → 90, 0.50 → 50: net 6.21455 → 621; tax 117.99 → 118
    assert (b.energy, b.time, b.fee, b.net, b.tax, b.gross, b.currency) == (
        481, 90, 50, 621, 118, 739, "EUR")


def test_the_tax_line_is_the_rate_on_the_net_shown() -> None:
    """QA s31: 0.062 kWh at 0.60/kWh, 31 s at 0.01/min, a 0.50 fee, 19 % tax: net
    0.5423… → 0.54, and 19 % of 0.54 is 0.1026 → 0.10. The tax was what the exact total
    with tax (0.6454… → 0.65) left: 0.11, not the rate on the net shown."""
    b = cost_breakdown(_tariff("0.60", "0.01", "0.50", "0.19"), 62, START,
                       START + timedelta(seconds=31))
    _adds_up(b)
    assert (b.energy, b.time, b.fee, b.net, b.tax, b.gross) == (4, 0, 50, 54, 10, 64)


def test_parts_rounded_alone_would_not_add_up() -> None:
    # Energy 0.005 EUR and time 0.005 EUR (half a cent each, each alone rounding up to
    # a cent), no tax: the net is exactly one cent, and so is the total.
    b = cost_breakdown(_tariff("0.25", "0.005"), 20, START, START + timedelta(minutes=1))
    _adds_up(b)
    assert (b.energy + b.time, b.net, b.tax, b.gross) == (1, 1, 0, 1)
    # Three parts of 0.4 cent each: 1.2 cents, one cent; 25 % tax on it is a quarter
    # cent, none (the exact total with tax, 1.5 cents, would have been two).
    b = cost_breakdown(_tariff("0.2", "0.004", "0.004", "0.25"), 20, START,
                       START + timedelta(minutes=1))
    _adds_up(b)
    assert (b.net, b.tax, b.gross) == (1, 0, 1)


def test_gross_is_the_billed_cost_on_awkward_values() -> None:
    rng = random.Random(7)
    prices = ["0", "0.000001", "0.333333", "0.005", "0.499999", "0.5", "45.5", "0.39"]
    taxes = ["0", "0.19", "0.07", "0.333333", "1", "0.000001"]
    for _ in range(3000):
        tariff = _tariff(rng.choice(prices), rng.choice(prices), rng.choice(prices),
                         rng.choice(taxes), rng.choice(["EUR", "JPY", "KWD"]))
        energy = rng.choice([0, 1, 5, 333, 12_345, 999_999, rng.randrange(10**7)])
        end = START + timedelta(seconds=rng.randrange(10**6), microseconds=rng.randrange(10**6))
        b = cost_breakdown(tariff, energy, START, end)
        _adds_up(b)
        assert b.gross == session_cost_minor(tariff, energy, START, end)
        # The net is the exact net rounded once; the tax the rate on that net (in
        # minor units) rounded once, half up; the gross their sum.
        digits = minor_digits(tariff.currency)
        exact = (Decimal(energy) / 1000 * tariff.price_per_kwh
                 + exact_seconds(end - START) / 60 * tariff.price_per_minute
                 + tariff.session_fee)
        assert b.net == _half_up(exact.scaleb(digits))
        assert b.tax == _half_up(b.net * tariff.tax_rate)
        assert b.gross == b.net + b.tax
        # Each part is within one minor unit of its exact amount.
        assert abs(b.energy - (Decimal(energy) / 1000 * tariff.price_per_kwh)
                   .scaleb(digits)) < 1


def test_idle_time_is_priced_in_whole_seconds_wherever_it_is_priced() -> None:
    """Review s20: the running estimate priced 59.999 s of idle time as such, the bill
    (which keeps whole seconds) as 59 s: at 0.60 a minute the estimate said 0.90 while
    endSession at the same instant billed 0.89."""
    tariff = Tariff(company_id="c" * 24, price_per_kwh=Decimal("0.30"), currency="EUR",
                    idle_price_per_minute=Decimal("0.60"))
    end = START + timedelta(minutes=30)
    almost = cost_breakdown(tariff, 1000, START, end, timedelta(seconds=59.999))
    whole = cost_breakdown(tariff, 1000, START, end, timedelta(seconds=59))
    assert almost == whole
    assert whole.idle == 59  # 59 s at 0.60/min = 0.59


def test_time_is_priced_from_the_exact_duration_not_a_float_of_it() -> None:
    """QA s27: 90.3 s at 1.00 EUR/min is 1.505 EUR, half up 1.51; the duration read as a
    float (90.29999999999999715…) billed 1.50, the live estimate too. Stamps carry
    milliseconds, so any duration of a tenth or hundredth of a second could land on
    the wrong side of a half."""
    tariff = Tariff(company_id="c" * 24, price_per_kwh=Decimal(0), currency="EUR",
                    price_per_minute=Decimal("1.00"))
    end = START + timedelta(seconds=90, milliseconds=300)
    assert session_cost_minor(tariff, 0, START, end) == 151
    assert cost_breakdown(tariff, 0, START, end).time == 151
    # 0.3 s at 0.1 KWD/min: 0.0005 KWD exactly, half up 1 fils (0 from the float).
    fils = Tariff(company_id="c" * 24, price_per_kwh=Decimal(0), currency="KWD",
                  price_per_minute=Decimal("0.1"))
    assert session_cost_minor(fils, 0, START, START + timedelta(milliseconds=300)) == 1


def test_band_energy_is_split_by_the_exact_durations() -> None:
    """The energy of a reading interval is spread over the bands by exact durations
    too (QA s27): 3 Wh over 0.3 s cut at 0.1 s is 1 Wh and 2 Wh, not 0.99999… and
    2.00000…, which the split then rounds."""
    from zoneinfo import ZoneInfo

    from domain.tariff_bands import _spread, bands_of
    tariff = Tariff(company_id="c" * 24, price_per_kwh=Decimal("0.30"), currency="EUR",
                    time_zone="UTC", energy_bands=[{
                        "days": ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"],
                        "start": "00:00", "end": "22:00", "price_per_kwh": "0.10"}])
    cut = START + timedelta(milliseconds=100)
    pieces = _spread(bands_of(tariff), ZoneInfo("UTC"), START,
                     START + timedelta(milliseconds=300), Decimal(3), [cut])
    assert [wh for _, wh in pieces] == [Decimal(1), Decimal(2)]


def test_a_receipt_shows_the_lines_a_session_was_billed_by() -> None:
    """Review s27: a bill is itemised exactly when it can be; one written before
    durations were priced exactly (90.3 s at 1.00 EUR/min billed 1.50, not 1.51) by the
    float computation it was billed by; a bill neither gives (another tariff's) not at
    all."""
    from domain.entities import Session, SessionState
    from domain.pricing import receipt
    tariff = Tariff(company_id="c" * 24, price_per_kwh=Decimal(0), currency="EUR",
                    price_per_minute=Decimal("1.00"))

    def billed(cost_minor: int) -> Session:
        return Session(transaction_id=1, station_id="s" * 24, cp_id="CP", connector_id=1,
                       id_tag="TAG", start_time=START, meter_start_wh=0, energy_wh=0,
                       state=SessionState.COMPLETED,
                       end_time=START + timedelta(seconds=90, milliseconds=300),
                       cost_minor=cost_minor, currency="EUR")
    exact = receipt(tariff, billed(151))
    assert exact is not None and (exact.time, exact.gross) == (151, 151)
    before = receipt(tariff, billed(150))
    assert before is not None and (before.time, before.net, before.gross) == (150, 150, 150)
    assert receipt(tariff, billed(149)) is None
    assert receipt(dataclasses.replace(tariff, currency="USD"), billed(151)) is None


def test_a_receipt_of_a_bill_taxed_on_its_total_shows_the_lines_it_was_billed_by() -> None:
    """A session billed before session 31 (the exact total with tax rounded once, the
    tax what it left) keeps its cost and shows the lines it was billed by; one billed
    now shows the rate on the net shown."""
    from domain.entities import Session, SessionState
    from domain.pricing import receipt
    tariff = _tariff("0.60", "0.01", "0.50", "0.19")

    def billed(cost_minor: int) -> Session:
        return Session(transaction_id=1, station_id="s" * 24, cp_id="CP", connector_id=1,
                       id_tag="TAG", start_time=START, meter_start_wh=0, energy_wh=62,
                       state=SessionState.COMPLETED, end_time=START + timedelta(seconds=31),
                       cost_minor=cost_minor, currency="EUR")
    now = receipt(tariff, billed(64))
    assert now is not None and (now.net, now.tax, now.gross) == (54, 10, 64)
    before = receipt(tariff, billed(65))
    assert before is not None and (before.net, before.tax, before.gross) == (54, 11, 65)
    assert receipt(tariff, billed(66)) is None
