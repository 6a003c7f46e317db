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


async def test_a_start_naming_no_plug_is_not_refused_on_a_faulted_reserved_plug(
        central: Central) -> None:
    """The driver holds plug 2 with TAG-TWO; plug 2 then reports itself Faulted. Their
    start naming no plug was sent for plug 2 before the plug checks, and refused
    INVALID_STATE on ``connectorId``, a field they never sent, though plug 1 was free
    (review r27-misc). A reserved plug that cannot take the start is not named: the
    start goes as it came, naming none, and the charger picks a free plug."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 2,
                                                 "expiryDate": soon(), "idTag": "TAG-TWO"},
                         SELECTION, as_user="driver")
        assert held["reservation"]["state"] == "ACTIVE", held
        await cp.status(2, "Faulted", error_code="GroundFailure")
        start = await run(central, "remoteStartTransaction", {"cpId": "CP-1"}, START,
                          as_user="driver")
        assert start["errors"] == [] and start["status"] == "ACCEPTED", start
        assert [(p["id_tag"], p.get("connector_id")) for name, p in cp.received
                if name == "RemoteStartTransaction"] == [("TAG-TWO", None)]


async def test_a_start_naming_no_plug_at_a_faulted_charger_is_refused_on_the_station(
        central: Central) -> None:
    """The charger as a whole reports itself Faulted (connector 0) while the driver holds
    plug 2: their start naming no plug is refused on ``cpId`` (the field they sent, as
    the API says of a start naming none), not on ``connectorId``; nothing is sent."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 2,
                                                 "expiryDate": soon(), "idTag": "TAG-TWO"},
                         SELECTION, as_user="driver")
        assert held["reservation"]["state"] == "ACTIVE", held
        await cp.status(0, "Faulted", error_code="GroundFailure")

        async def down() -> bool:
            [now] = await central.store.find_all(d.Station, Eq("cp_id", "CP-1"))
            return now.status is d.ConnectorStatus.FAULTED
        await until(down)
        start = await run(central, "remoteStartTransaction", {"cpId": "CP-1"}, START,
                          as_user="driver")
        assert [(e["field"], e["code"]) for e in start["errors"]] == [
            ("cpId", "INVALID_STATE")], start
        assert "RemoteStartTransaction" not in [name for name, _ in cp.received]


async def test_an_operators_start_naming_no_plug_is_sent_for_the_plug_reserved(
        central: Central) -> None:
    """An operator starts the driver's reserved card (TAG-TWO, plug 2 held for it)
    naming no plug (support, on the phone with the driver). It went out naming none, the
    charger put it on plug 1 and the reservation stayed ACTIVE (review r27-misc): it is
    sent for plug 2, as a driver's is, and takes the reservation up."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 2,
                                                 "expiryDate": soon(), "idTag": "TAG-TWO"},
                         SELECTION, as_user="driver")
        assert held["reservation"]["state"] == "ACTIVE", held
        start = await run(central, "remoteStartTransaction",
                          {"cpId": "CP-1", "idTag": "TAG-TWO"}, START, as_user="op")
        assert start["errors"] == [] and start["status"] == "ACCEPTED", start
        assert [p for name, p in cp.received if name == "RemoteStartTransaction"] == [
            {"id_tag": "TAG-TWO", "connector_id": 2}]
        session = await started(central, held["reservation"]["reservationId"])
    assert (session.id_tag, session.connector_id) == ("TAG-TWO", 2)


async def test_a_drivers_start_finds_a_reservation_of_their_tag_before_it_was_issued(
        central: Central) -> None:
    """An admin reserved plug 2 for the id TAG-NEW (no card of it yet: no holder); it is
    then issued to the driver. Their start naming no card nor plug read only the
    reservations naming them as holder (review r27-misc): it went with TAG-OK and no
    plug. The charger holds plug 2 for the tag: the start goes with TAG-NEW for plug 2."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 2,
                                                 "expiryDate": soon(), "idTag": "TAG-NEW"},
                         SELECTION, as_user="admin")
        assert held["reservation"]["state"] == "ACTIVE", held
        await central.services.fleet.issue_id_tag(Viewer.of(central.users["driver"]),
                                                  tag="TAG-NEW")
        start = await run(central, "remoteStartTransaction", {"cpId": "CP-1"}, START,
                          as_user="driver")
        assert start["errors"] == [] and start["status"] == "ACCEPTED", start
        assert [p for name, p in cp.received if name == "RemoteStartTransaction"] == [
            {"id_tag": "TAG-NEW", "connector_id": 2}]


async def test_an_operators_start_naming_no_plug_is_not_sent_for_a_faulted_reserved_plug(
        central: Central) -> None:
    """Review r27-reserve3: README has an operator's start naming no plug go naming none
    when the reserved plug reports itself out of service; it was sent for the Faulted
    plug (the trial skipped staff's out-of-service check), which a charger rejects."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        held = await run(central, "reserveNow", {"cpId": "CP-1", "connectorId": 2,
                                                 "expiryDate": soon(), "idTag": "TAG-TWO"},
                         SELECTION, as_user="driver")
        assert held["reservation"]["state"] == "ACTIVE", held
        await cp.status(2, "Faulted", error_code="GroundFailure")
        start = await run(central, "remoteStartTransaction",
                          {"cpId": "CP-1", "idTag": "TAG-TWO"}, START, as_user="op")
        assert start["errors"] == [], start
        assert [(p["id_tag"], p.get("connector_id")) for name, p in cp.received
                if name == "RemoteStartTransaction"] == [("TAG-TWO", None)]
