"""``removeTariff`` over both stores (real sessions: ``tests/ocpp/test_tariff_removal.py``)."""

from __future__ import annotations

from datetime import timedelta

from domain.clock import utcnow
from domain.policy import SYSTEM
from domain.services import Services
from tests.graph.conftest import Api
from tests.graph.test_mutations import call, codes, gid
from tests.graph.world import World


async def test_a_removed_price_list_prices_only_what_started_before(
        api: Api, services: Services, world: World) -> None:
    """``removeTariff`` on both stores: the station's price list in force ends, a session
    started before keeps it, one started after is at its company's (see
    ``tests/ocpp/test_tariff_removal.py`` over real sessions)."""
    station = world.stations["A-001"]
    company = await services.tariffs.set_tariff(
        SYSTEM, company_id=world.companies["a"].id, currency="EUR", price_per_kwh="0.30",
        valid_from=utcnow() - timedelta(hours=2))
    own = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.55",
        valid_from=utcnow() - timedelta(hours=1))
    removed = await call(api, world, "op_a", "removeTariff", {"id": gid("tariff", own.id)},
                         "tariff { validUntil }")
    assert removed["errors"] == [] and removed["tariff"]["validUntil"] is not None
    before = utcnow() - timedelta(minutes=30)
    assert (await services.tariffs.tariff_at(station, before)).id == own.id  # type: ignore[union-attr]
    assert (await services.tariffs.tariff_at(station, utcnow())).id == company.id  # type: ignore[union-attr]
    data = await api.gql("{ stations(first: 10) { nodes { cpId tariff { pricePerKwh } } } }",
                         as_user=world.users["driver1"].id)
    [a001] = [s for s in data["stations"]["nodes"] if s["cpId"] == "A-001"]
    assert a001["tariff"] == {"pricePerKwh": "0.30"}  # its company's again
    again = await call(api, world, "op_a", "removeTariff", {"id": gid("tariff", own.id)},
                       "tariff { id }")
    assert codes(again) == [("id", "INVALID_STATE")]
