"""Prices are bounded in their currency's minor units (``validation.MAX_PRICE_MINOR``), not
by one number of major units whatever the currency (QA s25: 10,000 of any currency
refused a 15,000 CLP idle-fee cap and a 20,000 KRW session fee, everyday fees where a
unit is worth little, while 10,000 EUR per kWh was taken). Over both stores."""

from __future__ import annotations

from tests.graph.conftest import Api
from tests.graph.test_mutations import call, codes, gid
from tests.graph.world import World

BAND = {"days": ["MON"], "start": "07:00", "end": "20:00"}


async def _set(api: Api, world: World, **fields: object) -> dict[str, object]:
    return await call(api, world, "op_a", "setTariff", {
        "stationId": gid("station", world.stations["A-001"].id), **fields},
        "tariff { pricePerKwh sessionFee idleFeeCap energyBands { pricePerKwh } }")


async def test_fees_where_a_unit_is_worth_little_are_taken(api: Api, world: World) -> None:
    krw = await _set(api, world, currency="KRW", pricePerKwh="347", sessionFee="20000",
                     idlePricePerMinute="500", idleFeeCap="100000", timeZone="Asia/Seoul",
                     energyBands=[{**BAND, "pricePerKwh": "12000"}])
    assert krw["errors"] == []
    assert krw["tariff"] == {"pricePerKwh": "347", "sessionFee": "20000",
                             "idleFeeCap": "100000", "energyBands": [{"pricePerKwh": "12000"}]}
    clp = await _set(api, world, currency="CLP", pricePerKwh="390", idleFeeCap="15000")
    assert clp["errors"] == []


async def test_the_bound_is_a_hundred_million_minor_units(api: Api, world: World) -> None:
    """1,000,000 EUR, 100,000,000 JPY, 10,000 CLF (four digits): each is taken, a minor
    unit more is OUT_OF_RANGE, on every price field and band alike."""
    for currency, most, beyond in (("EUR", "1000000", "1000000.01"),
                                   ("JPY", "100000000", "100000001"),
                                   ("CLF", "10000", "10000.0001")):
        assert (await _set(api, world, currency=currency, pricePerKwh=most,
                           sessionFee=most))["errors"] == []
        refused = await _set(api, world, currency=currency, pricePerKwh=beyond,
                             pricePerMinute=beyond, sessionFee=beyond,
                             idlePricePerMinute=beyond, idleFeeCap=beyond, timeZone="UTC",
                             energyBands=[{**BAND, "pricePerKwh": beyond}])
        assert codes(refused) == [
            ("pricePerKwh", "OUT_OF_RANGE"), ("pricePerMinute", "OUT_OF_RANGE"),
            ("sessionFee", "OUT_OF_RANGE"), ("idlePricePerMinute", "OUT_OF_RANGE"),
            ("idleFeeCap", "OUT_OF_RANGE"), ("energyBands.0.pricePerKwh", "OUT_OF_RANGE")]
    # An unknown currency is its own error; its prices are bounded as two digits'.
    assert codes(await _set(api, world, currency="XYZ", pricePerKwh="1000000.01")) == [
        ("pricePerKwh", "OUT_OF_RANGE"), ("currency", "INVALID")]

