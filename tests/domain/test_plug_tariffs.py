"""Tariffs by plug: a version may price only one plug standard or one power type, so a
station's DC plugs can cost more; the most specific version in force prices a session,
by the plug it was started on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.errors import ValidationError
from domain.policy import SYSTEM
from domain.query import Eq, all_of
from domain.services.tariffs import PricedAt, scopes_for, tariffs_in_force
from store.mongo import MongoStore
from store.sqlite import SqliteStore
from tests.domain.test_charging_telemetry import CP, World, world_on
from tests.support.mongomock_async import async_mongomock_database

AC, DC = d.PowerType.AC, d.PowerType.DC


def test_scopes_run_from_the_plug_standard_to_all_plugs() -> None:
    assert scopes_for(d.ConnectorType.CCS2) == (
        ("connector_type", d.ConnectorType.CCS2), ("power_type", DC), None)
    assert scopes_for(d.ConnectorType.TYPE2) == (
        ("connector_type", d.ConnectorType.TYPE2), ("power_type", AC), None)
    # NACS is both AC and DC: only its own standard's tariff or one for all plugs.
    assert scopes_for(d.ConnectorType.NACS) == (("connector_type", d.ConnectorType.NACS),
                                                None)
    assert scopes_for(None) == (None,)


@pytest.fixture(params=["sqlite", "mongo"])
async def plug_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """The charger's connector 1 is a CCS2 (DC) plug, connector 2 a Type 2 (AC) one."""
    store = SqliteStore(str(tmp_path / "plugs.db")) if request.param == "sqlite" \
        else MongoStore(async_mongomock_database(), sweep_every=None)
    async with world_on(store) as built:
        plug = await built.store.find_one(d.Connector, all_of(Eq("cp_id", CP),
                                                              Eq("connector_id", 1)))
        assert plug is not None
        await built.services.stations.update_connector(SYSTEM, plug.id,
                                                       type=d.ConnectorType.CCS2)
        yield built


async def _station(world: World) -> d.Station:
    station = await world.store.find_one(d.Station, Eq("cp_id", CP))
    assert station is not None
    return station


async def _price(world: World, price: str, **scope: Any) -> d.Tariff:
    return await world.services.tariffs.set_tariff(
        SYSTEM, station_id=(await _station(world)).id, currency="EUR", price_per_kwh=price,
        valid_from=utcnow() - timedelta(days=1), **scope)


async def _billed(world: World, connector_id: int) -> d.Session:
    """A session of 10 kWh on the connector, stopped."""
    charging = world.services.charging
    start = utcnow() - timedelta(hours=1)
    tx, _ = await charging.start_transaction(CP, connector_id, "TAG-1", 0, start)
    await charging.stop_transaction(CP, tx, 10_000, start + timedelta(minutes=30))
    return await world.session(tx)


async def test_dc_plugs_cost_more_and_the_rest_pay_the_general_price(plug_world: World
                                                                     ) -> None:
    await _price(plug_world, "0.39")
    await _price(plug_world, "0.59", power_type=DC)
    dc = await _billed(plug_world, 1)
    ac = await _billed(plug_world, 2)
    assert (dc.connector_type, dc.cost_minor) == (d.ConnectorType.CCS2, 590)
    assert (ac.connector_type, ac.cost_minor) == (d.ConnectorType.TYPE2, 390)


async def test_the_plug_standard_wins_over_the_power_type_and_the_general(
        plug_world: World) -> None:
    # Set in this order, so the newest version is not the one that wins.
    await _price(plug_world, "0.59", power_type=DC)
    await _price(plug_world, "0.69", connector_type=d.ConnectorType.CCS2)
    await _price(plug_world, "0.39")
    assert (await _billed(plug_world, 1)).cost_minor == 690
    assert (await _billed(plug_world, 2)).cost_minor == 390


async def test_a_page_prices_as_a_close_does(plug_world: World, monkeypatch: Any) -> None:
    """``tariffs_in_force`` (a page of sessions) picks what ``tariff_at`` (a close)
    picks, also beyond the versions one batch reads."""
    from domain.services import tariffs
    monkeypatch.setattr(tariffs, "VERSIONS_PER_BATCH", 2)
    monkeypatch.setattr(tariffs, "VERSIONS_AT_ONCE", 2)
    station = await _station(plug_world)
    dc = await _price(plug_world, "0.59", power_type=DC)
    for price in ("0.39", "0.40", "0.41"):  # newer general versions push it out of a batch
        await _price(plug_world, price)
    now = utcnow()
    plugs = [d.ConnectorType.CCS2, d.ConnectorType.TYPE2, d.ConnectorType.NACS, None]
    batch = await tariffs_in_force(plug_world.store, [PricedAt(station.id, None, now, plug)
                                                      for plug in plugs])
    alone = [await plug_world.services.tariffs.tariff_at(station, now, connector_type=plug)
             for plug in plugs]
    assert [t.id if t else None for t in batch] == [t.id if t else None for t in alone]
    assert [str(t.price_per_kwh) if t else None for t in batch] == [
        str(dc.price_per_kwh), "0.41", "0.41", "0.41"]


async def test_a_station_s_own_tariff_still_wins_over_its_company_s_dc_one(
        tmp_path: Path) -> None:
    """The company prices DC plugs higher, one station all plugs alike: the station's is
    the station's price, as a station's tariff always won over its company's."""
    async with world_on(SqliteStore(str(tmp_path / "company.db"))) as world:
        services = world.services
        company = await services.accounts.create_company(SYSTEM, name="Volt")
        station = await _station(world)
        await services.stations.update_station(SYSTEM, station.id, company_id=company.id)
        plug = await world.store.find_one(d.Connector, all_of(Eq("cp_id", CP),
                                                              Eq("connector_id", 1)))
        assert plug is not None
        await services.stations.update_connector(SYSTEM, plug.id, type=d.ConnectorType.CCS2)
        await services.tariffs.set_tariff(SYSTEM, company_id=company.id, currency="EUR",
                                          price_per_kwh="0.79", power_type=DC,
                                          valid_from=utcnow() - timedelta(days=1))
        assert (await _billed(world, 1)).cost_minor == 790
        await _price(world, "0.45")
        assert (await _billed(world, 1)).cost_minor == 450


async def test_one_scope_per_version(plug_world: World) -> None:
    with pytest.raises(ValidationError) as caught:
        await _price(plug_world, "0.5", power_type=DC, connector_type=d.ConnectorType.CCS2)
    assert (caught.value.field, caught.value.code) == ("powerType", "INVALID")
