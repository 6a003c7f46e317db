"""Values beyond GraphQL's 32-bit ``Int`` read as ``BigInt``."""

from __future__ import annotations

from dataclasses import replace

from domain import entities as d
from domain.ids import new_id
from domain.ports import Insert
from domain.services import Services
from graph.exact_json import ExactFloat
from graph.ids import to_global_id
from graph.scalars import SCALARS, BigInt
from tests.graph.conftest import Api
from tests.graph.world import World

REGISTER = 5_000_000_000  # Wh: the register of a DC charger after some years


async def test_meter_registers_and_amounts_beyond_32_bits(api: Api, world: World,
                                                          services: Services) -> None:
    base = world.sessions["s3"]
    session = replace(base, id=new_id(), transaction_id=base.transaction_id + 1000,
                      meter_start_wh=REGISTER, meter_stop_wh=REGISTER + 12_000,
                      cost_minor=3_000_000_000, currency="EUR")
    payment = d.Payment(session_id=session.id, station_id=session.station_id,
                        user_id=session.user_id, amount_minor=3_000_000_000, currency="EUR")
    await services.ctx.store.write([Insert(session), Insert(payment)], [])
    data = await api.gql("""query($id: ID!) { node(id: $id) { ... on Session {
        meterStartWh meterStopWh energyKwh cost { amountMinor amount }
        payment { amount { amountMinor } } } } }""",
                         {"id": to_global_id("session", session.id)},
                         as_user=world.users["driver2"].id)
    assert data["node"] == {
        "meterStartWh": REGISTER, "meterStopWh": REGISTER + 12_000, "energyKwh": 12.0,
        "cost": {"amountMinor": 3_000_000_000, "amount": "30000000.00"},
        "payment": {"amount": {"amountMinor": 3_000_000_000}},
    }


def test_big_int_refuses_what_is_not_a_whole_number() -> None:
    scalar = SCALARS[BigInt]
    assert scalar.serialize(2**40) == 2**40
    for bad in (1.5, "12", True):
        try:
            scalar.serialize(bad)
        except ValueError:
            continue
        raise AssertionError(f"BigInt serialized {bad!r}")


def test_date_times_are_read_to_the_millisecond() -> None:
    """What the service stores: MongoDB keeps no finer, so a bound of 12:00:00.000001
    would include 12:00 on SQLite and exclude it there."""
    from datetime import UTC, datetime, timedelta, timezone

    import pytest

    parse = SCALARS[datetime].parse_value
    assert parse("2026-12-04T12:00:00.000001Z") == datetime(2026, 12, 4, 12, tzinfo=UTC)
    assert parse("2026-12-04T13:00:00.123999+01:00") == datetime(
        2026, 12, 4, 13, 0, 0, 123000, tzinfo=timezone(timedelta(hours=1)))
    assert parse("2026-12-04T12:00:00Z") == datetime(2026, 12, 4, 12, tzinfo=UTC)
    for bad in ("tomorrow", "2026-13-01T00:00:00Z", 1700000000):
        with pytest.raises(ValueError, match="DateTime cannot represent"):
            parse(bad)


def test_decimals_are_plain_ascii_numbers() -> None:
    """A price is written as digits with one point; what else ``decimal.Decimal`` reads
    (underscores, other scripts' digits, NaN) is far more likely a mistake."""
    from decimal import Decimal

    import pytest

    parse = SCALARS[Decimal].parse_value
    for text, value in (("0.35", "0.35"), (" 12 ", "12"), ("1e3", "1E+3"), (".5", "0.5"),
                        (ExactFloat("0.350"), "0.350"), (7, "7"), ("-0.10", "-0.10")):
        assert parse(text) == Decimal(value), text
    for bad in ("0.3_5", "1_000", "\u0663.\u0665", "NaN", "Infinity", "", "1.2.3", True):
        with pytest.raises(ValueError, match="Decimal cannot represent"):
            parse(bad)


def test_a_decimal_beyond_the_exponent_range_is_refused_in_plain_words() -> None:
    """QA s21: "1e9999999999999999999" told the client "[<class
    'decimal.InvalidOperation'>]"."""
    from decimal import Decimal

    import pytest

    with pytest.raises(ValueError) as raised:
        SCALARS[Decimal].parse_value("1e9999999999999999999")
    assert str(raised.value) == ("Decimal cannot represent '1e9999999999999999999': "
                                 "out of range")


SET_PRICE = """mutation($input: SetTariffInput!) { setTariff(input: $input) {
  tariff { pricePerKwh taxRate } errors { field code } } }"""


def set_price_body(company: str, price: str) -> bytes:
    """A raw body: the prices JSON numbers, their digits exactly as a client wrote them."""
    import json
    return json.dumps({"query": SET_PRICE, "variables": {"input": {
        "companyId": company, "currency": "EUR", "pricePerKwh": "PRICE",
        "taxRate": "TAX"}}}).replace('"PRICE"', price).replace('"TAX"', "0.19").encode()


async def test_a_decimal_sent_as_a_json_number_is_read_as_written(api: Api, world: World
                                                                  ) -> None:
    """Review s25: a JSON number was read as a float first, so a ``Decimal`` argument got
    the float's digits: a price of 0.5900 was stored as 0.59, and one of
    0.35000000000000001 (7 decimals more than a price may have) as 0.35."""
    company = to_global_id("company", world.companies["a"].id)
    headers = {"content-type": "application/json",
               "authorization": f"Bearer {api.token_for(world.users['op_a'].id)}"}

    async def set_price(price: str) -> dict[str, object]:
        r = await api.client.post("/graphql", content=set_price_body(company, price),
                                  headers=headers)
        return r.json()["data"]["setTariff"]  # type: ignore[no-any-return]

    # (A price reads with its currency's digits, trailing zeros beyond them trimmed: QA
    # s26. Its digits, as written, are what is kept.)
    assert await set_price("0.5901") == {
        "tariff": {"pricePerKwh": "0.5901", "taxRate": "0.19"}, "errors": []}
    assert await set_price("0.35000000000000001") == {
        "tariff": None, "errors": [{"field": "pricePerKwh", "code": "INVALID"}]}


async def test_a_decimal_sent_as_a_json_number_whose_digits_were_not_kept_is_refused(
        api: Api, world: World) -> None:
    """Review s26: a JSON number's digits are kept only in a small request's variables
    (the re-read is bounded). Beyond that the ``Decimal`` scalar gets a plain float, and
    refuses it telling the client to send a string, rather than round the price."""
    from decimal import Decimal

    import pytest

    from graph.exact_json import EXACT_MAX_NUMBERS

    company = to_global_id("company", world.companies["a"].id)
    headers = {"content-type": "application/json",
               "authorization": f"Bearer {api.token_for(world.users['op_a'].id)}"}
    many = ",".join(["0.5"] * (EXACT_MAX_NUMBERS + 1))

    def padded(price: str, tax: str) -> bytes:  # more numbers than are read exactly
        return set_price_body(company, price).replace(b"0.19", tax.encode()).replace(
            b'"variables": {', f'"variables": {{"pad": [{many}], '.encode())

    r = await api.client.post("/graphql", content=padded("0.59", "0.19"), headers=headers)
    answer = r.json()
    assert answer.get("data") is None
    assert [e["extensions"] for e in answer["errors"]] == [
        {"code": "BAD_USER_INPUT", "field": "input.pricePerKwh"},
        {"code": "BAD_USER_INPUT", "field": "input.taxRate"}]
    assert all("send the amount as a string" in e["message"] for e in answer["errors"])
    # The same amounts as strings.
    r = await api.client.post("/graphql", content=padded('"0.5901"', '"0.19"'),
                              headers=headers)
    assert r.json()["data"]["setTariff"] == {
        "tariff": {"pricePerKwh": "0.5901", "taxRate": "0.19"}, "errors": []}
    with pytest.raises(ValueError, match="send the amount as a string"):
        SCALARS[Decimal].parse_value(0.35)


def test_a_decimal_literal_is_read_from_its_text() -> None:
    """What a number written in the query reads as (review s25: as a float first)."""
    from decimal import Decimal

    from graphql import parse_value

    parse = SCALARS[Decimal].parse_literal
    assert parse(parse_value("0.0099999999999999999999999999999")) == Decimal(
        "0.0099999999999999999999999999999")
    assert str(parse(parse_value("0.5900"))) == "0.5900"
    assert parse(parse_value("12345678901234567890123")) == 12345678901234567890123
    assert parse(parse_value('"1.10"')) == Decimal("1.10")
    for bad in ("true", '"1_000"', "[1]"):
        try:
            parse(parse_value(bad))
        except ValueError:
            continue
        raise AssertionError(f"Decimal read {bad}")
