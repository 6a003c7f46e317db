from datetime import UTC, datetime, timedelta
from decimal import Decimal

from domain.entities import Tariff
from domain.pricing import session_cost_minor

START = datetime(2026, 1, 1, 22, 0, tzinfo=UTC)


def test_energy_time_fee_and_tax() -> None:
    tariff = Tariff(company_id="c" * 24, price_per_kwh=Decimal("0.39"), currency="EUR",
                    price_per_minute=Decimal("0.01"), session_fee=Decimal("0.50"),
                    tax_rate=Decimal("0.19"))
    # 12.345 kWh * 0.39 = 4.81455; 90 min * 0.01 = 0.90; + 0.50 = 6.21455; * 1.19 = 7.3953145
    assert session_cost_minor(tariff, 12_345, START, START + timedelta(minutes=90)) == 740


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
