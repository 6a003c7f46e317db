"""When site load management recomputes: a new session only once its StartTransaction
has been answered (a charger refuses a TxProfile for a transaction it was not told of),
an ended one as soon as its end is published (``SiteLoad``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.clock import utcnow
from domain.entities import LimitAnswer, Registration, SiteAllocation, Station
from domain.policy import SYSTEM
from domain.query import Eq
from domain.services.site_load import SiteLoad
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, seed, start_central, stop_central


async def test_a_start_is_shared_out_once_answered_and_a_stop_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    monkeypatch.setattr(SiteLoad, "request_station",
                        lambda self, station_id: asked.append(station_id))
    central = await start_central(tmp_path / "central.db")
    try:
        await seed(central)
        station = central.stations["CP-1"]
        charging = central.services.charging
        tx, info = await charging.start_transaction("CP-1", 1, "TAG-OK", 1000, utcnow())
        assert info.status == "Accepted"
        assert asked == []  # the charger does not know the transaction yet
        await charging.start_answered("CP-1")
        assert asked == [station.id]
        await charging.stop_transaction("CP-1", tx, 2000, utcnow())
        assert asked == [station.id, station.id]
    finally:
        await stop_central(central)


async def test_a_charger_is_back_when_it_connects_and_when_its_boot_is_accepted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its site limits are sent again then (a reboot may have lost them); a boot
    answered Pending is not one after which the charger takes commands."""
    back: list[str] = []
    monkeypatch.setattr(SiteLoad, "charger_back",
                        lambda self, station_id: back.append(station_id))
    central = await start_central(tmp_path / "central.db")
    try:
        await seed(central)
        station = central.stations["CP-1"]
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            assert (await cp.boot()).status == "Accepted"
            await cp.heartbeat()  # answered after the boot's follow-up has run
        assert back == [station.id, station.id]
        await central.services.stations.update_station(
            SYSTEM, station.id, registration=Registration.PENDING)
        back.clear()
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            assert (await cp.boot()).status == "Pending"
            await cp.boot()
        assert back == [station.id]  # its connection only
    finally:
        await stop_central(central)


async def test_an_offline_charger_keeps_its_share_out_of_the_sharing(tmp_path: Path) -> None:
    """An offline charger goes on applying the last limit it was sent, so that share is
    held back: a session starting elsewhere on the site meanwhile gets only the rest."""
    central = await start_central(tmp_path / "central.db")
    try:
        await seed(central)
        services, charging = central.services, central.services.charging
        company = central.stations["CP-1"].company_id
        assert company is not None
        site = await services.sites.create_site(SYSTEM, name="Depot", company_id=company,
                                                max_power_kw=40)
        for cp_id in ("CP-1", "CP-OPEN"):
            await services.sites.assign_station(SYSTEM, central.stations[cp_id].id, site.id)
        await charging.set_online("CP-1", True)
        tx1, _ = await charging.start_transaction("CP-1", 2, "TAG-OK", 1000, utcnow())
        await charging.start_answered("CP-1")
        await services.site_load.settled()
        # No charger is connected here: the limit could not be delivered, and says so.
        [held] = await central.store.find_all(SiteAllocation, Eq("site_id", site.id))
        assert (held.transaction_id, held.power_kw, held.answer) == (
            tx1, 22.0, LimitAnswer.OFFLINE)
        await charging.set_online("CP-1", False)
        await charging.set_online("CP-OPEN", True)
        tx2, _ = await charging.start_transaction("CP-OPEN", 1, "TAG-OTHER", 1000, utcnow())
        await charging.start_answered("CP-OPEN")
        await services.site_load.settled()
        shares = {a.transaction_id: a.power_kw for a in await central.store.find_all(
            SiteAllocation, Eq("site_id", site.id))}
        assert shares == {tx1: 22.0, tx2: 18.0}
    finally:
        await services.site_load.close()
        await stop_central(central)


async def test_a_station_handed_to_another_company_leaves_its_site(tmp_path: Path) -> None:
    central = await start_central(tmp_path / "central.db")
    try:
        await seed(central)
        services = central.services
        station = central.stations["CP-1"]
        assert station.company_id is not None
        site = await services.sites.create_site(SYSTEM, name="Depot",
                                                company_id=station.company_id,
                                                max_power_kw=40)
        await services.sites.assign_station(SYSTEM, station.id, site.id)
        other = await services.accounts.create_company(SYSTEM, name="Elsewhere")
        moved = await services.stations.update_station(SYSTEM, station.id,
                                                       company_id=other.id)
        assert moved.site_id is None
        [stored] = await central.store.get_many(Station, [station.id])
        assert stored is not None and stored.site_id is None
    finally:
        await services.site_load.close()
        await stop_central(central)
