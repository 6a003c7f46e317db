"""A driver's remote start on the plug their own reservation holds (QA s27): reserved
with one of their cards, the start that named no card (or named a car of theirs whose
own card is another) picked another of their cards and was refused "reserved for
another card", the driver standing at the plug held for them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain import entities as d
from domain.policy import Viewer
from domain.query import Eq
from domain.services import ConnectorSpec
from ocpp_bridge.simulator import SimulatorConfig, connected
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.ocpp.test_commands import run


@pytest.fixture
async def central(tmp_path: Path) -> AsyncIterator[Central]:
    c = await start_central(tmp_path / "central.db")
    await seed(c)
    driver = Viewer.of(c.users["driver"])
    c.vehicles["van"] = await c.services.fleet.add_vehicle(driver, license_plate="B-EV 2")
    c.tags["two"] = await c.services.fleet.issue_id_tag(driver, tag="TAG-TWO",
                                                        vehicle_id=c.vehicles["van"].id)
    yield c
    await stop_central(c)


SELECTION = "status reservation { reservationId state } errors { field code message }"
START = "status errors { field code message }"


def soon() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


async def started(central: Central, number: int) -> d.Session:
    """The session the charger started on reservation ``number``, once it used it."""
    async def used() -> bool:
        [now] = await central.store.find_all(d.Reservation, Eq("reservation_id", number))
        return now.state is d.ReservationState.USED
    await until(used)
    [session] = await central.store.find_all(d.Session, Eq("reservation_id", number))
    return session


@pytest.mark.parametrize("car", [None, "car"])
async def test_a_drivers_start_on_their_own_reservation_uses_the_reserved_card(
        central: Central, car: str | None) -> None:
    """The driver reserves plug 1 with their van's card (TAG-TWO), then taps start on it
    in the app: naming no card, or naming their car (whose own card is TAG-OK). Any card
    of theirs charges the car chosen, and only the reserved one may start on the plug
    held for it (OCPP 1.6, 5.13): the start is sent with TAG-TWO, takes up the
    reservation, and the session is booked to the car chosen (the van's card's van when
    none)."""
    given = {"connectorId": 1, **({"vehicleId": central.vehicles[car].id} if car else {})}
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                                 "expiryDate": soon(), "idTag": "TAG-TWO"},
                         SELECTION, as_user="driver")
        assert held["reservation"]["state"] == "ACTIVE", held
        start = await run(central, "remoteStartTransaction", {"cpId": "CP-1", **given},
                          START, as_user="driver")
        assert start["errors"] == [] and start["status"] == "ACCEPTED", start
        assert [p["id_tag"] for name, p in cp.received
                if name == "RemoteStartTransaction"] == ["TAG-TWO"]
        session = await started(central, held["reservation"]["reservationId"])
    assert (session.id_tag, session.vehicle_id) == (
        "TAG-TWO", central.vehicles[car or "van"].id)


async def test_a_drivers_start_naming_no_plug_sends_the_card_reserved_there(
        central: Central) -> None:
    """Naming no connector either (a single-cable app's start): the card reserved on the
    station goes, the one its charger lets start on the plug held for it."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                                 "expiryDate": soon(), "idTag": "TAG-TWO"},
                         SELECTION, as_user="driver")
        assert held["reservation"]["state"] == "ACTIVE", held
        start = await run(central, "remoteStartTransaction", {"cpId": "CP-1"}, START,
                          as_user="driver")
        assert start["errors"] == [] and start["status"] == "ACCEPTED", start
        assert [p["id_tag"] for name, p in cp.received
                if name == "RemoteStartTransaction"] == ["TAG-TWO"]


async def test_a_start_naming_another_card_of_theirs_is_still_refused(central: Central
                                                                       ) -> None:
    """A card named is the card sent: naming TAG-OK on the plug held for TAG-TWO is
    refused as before (the charger would refuse it), nothing sent."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 1,
                                                 "expiryDate": soon(), "idTag": "TAG-TWO"},
                         SELECTION, as_user="driver")
        assert held["reservation"]["state"] == "ACTIVE", held
        start = await run(central, "remoteStartTransaction",
                          {"cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK"}, START,
                          as_user="driver")
        assert [(e["field"], e["code"]) for e in start["errors"]] == [
            ("connectorId", "IN_USE")]
        assert [name for name, _ in cp.received] == ["ReserveNow"]


async def test_a_drivers_start_naming_no_plug_is_sent_for_the_plug_reserved(
        central: Central) -> None:
    """The driver holds plug 2 with TAG-TWO and taps start naming neither card nor plug.
    Sent with TAG-TWO alone, the charger put it on the first free plug (1): the session
    ran there, and the reservation stayed ACTIVE, plug 2 held and the driver unable to
    reserve again until its expiry (review r27-reserve). The start names the plug held
    for the card, takes the reservation up, and the session runs on plug 2."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 2,
                                                 "expiryDate": soon(), "idTag": "TAG-TWO"},
                         SELECTION, as_user="driver")
        assert held["reservation"]["state"] == "ACTIVE", held
        start = await run(central, "remoteStartTransaction", {"cpId": "CP-1"}, START,
                          as_user="driver")
        assert start["errors"] == [] and start["status"] == "ACCEPTED", start
        assert [p for name, p in cp.received if name == "RemoteStartTransaction"] == [
            {"id_tag": "TAG-TWO", "connector_id": 2}]
        session = await started(central, held["reservation"]["reservationId"])
    assert (session.id_tag, session.connector_id) == ("TAG-TWO", 2)


async def test_a_drivers_start_finds_their_reservation_among_many_on_the_station(
        central: Central) -> None:
    """A 12-plug site, its operator holding 11 plugs for their fleet's cards, the driver
    the 12th with TAG-TWO. Their start naming no card nor plug was judged on the
    station's first 10 live reservations read, not theirs (review r27-reserve): sent
    with TAG-OK, which no free plug served. Theirs is found, and their start takes it up."""
    op = Viewer.of(central.users["op"])
    site, _ = await central.services.stations.create_station(
        op, cp_id="CP-SITE", name="Site", company_id=central.stations["CP-1"].company_id,
        owner_id=central.users["op"].id,
        connectors=[ConnectorSpec(n, d.ConnectorType.TYPE2, 22) for n in range(1, 13)],
        password=STATION_PASSWORD)
    async with connected(central.url, "CP-SITE", password=STATION_PASSWORD,
                         config=SimulatorConfig(connectors=12)) as cp:
        await cp.boot()
        await cp.report_all()
        for n in range(1, 12):
            fleet = await run(central, "reserveNow", {
                "cpId": "CP-SITE", "connectorId": n, "expiryDate": soon(),
                "idTag": f"FLEET-{n:02}"}, SELECTION, as_user="op")
            assert fleet["reservation"]["state"] == "ACTIVE", fleet
        held = await run(central, "reserveNow", {"cpId": "CP-SITE", "connectorId": 12,
                                                 "expiryDate": soon(), "idTag": "TAG-TWO"},
                         SELECTION, as_user="driver")
        assert held["reservation"]["state"] == "ACTIVE", held
        start = await run(central, "remoteStartTransaction", {"cpId": "CP-SITE"}, START,
                          as_user="driver")
        assert start["errors"] == [] and start["status"] == "ACCEPTED", start
        assert [p["id_tag"] for name, p in cp.received
                if name == "RemoteStartTransaction"] == ["TAG-TWO"]
        session = await started(central, held["reservation"]["reservationId"])
    assert (session.station_id, session.id_tag) == (site.id, "TAG-TWO")
